import subprocess
import sys
from pathlib import Path

import pytest

from llmopt.config import Settings, parse_settings, settings_table


def test_defaults_without_flags_or_env():
    assert parse_settings([], environ={}) == Settings()


def test_environment_overrides_defaults_and_flags_override_environment():
    env = {"LLMOPT_PORT": "6000", "LLMOPT_WORKERS": "3", "LLMOPT_LOG_FORMAT": "JSON"}
    s = parse_settings([], environ=env)
    assert (s.port, s.workers, s.log_format) == (6000, 3, "json")
    s = parse_settings(["--port", "7000"], environ=env)
    assert (s.port, s.workers) == (7000, 3)


def test_every_setting_has_flag_env_and_default():
    table = settings_table()
    names = {f.replace("--", "").replace("-", "_") for f, *_ in table}
    assert names == set(Settings.__dataclass_fields__)
    for flag, env, _default, help_text in table:
        assert env == "LLMOPT_" + flag[2:].replace("-", "_").upper()
        assert help_text


def test_stream_limits_and_idle_timeout():
    s = parse_settings([], environ={})
    assert (s.max_concurrent_rpcs, s.max_concurrent_streams, s.stream_idle_seconds) == (
        256,
        32,
        30.0,
    )
    s = parse_settings(
        ["--max-concurrent-streams", "4", "--stream-idle-seconds", "0"],
        environ={"LLMOPT_STREAM_IDLE_SECONDS": "5"},
    )
    assert (s.max_concurrent_streams, s.stream_idle_seconds) == (4, 0.0)  # 0: no idle limit
    assert (
        parse_settings([], environ={"LLMOPT_STREAM_IDLE_SECONDS": "0.5"}).stream_idle_seconds == 0.5
    )


def test_data_dir_is_a_path():
    assert parse_settings(["--data-dir", "/tmp/x"], environ={}).data_dir == Path("/tmp/x")


@pytest.mark.parametrize(
    ("argv", "env", "fragment"),
    [
        (["--port", "abc"], {}, "--port"),
        (["--port", "70000"], {}, "[0, 65535]"),
        (["--workers", "0"], {}, "--workers"),
        (["--log-format", "xml"], {}, "text, json"),
        (["--grace-seconds", "-1"], {}, "--grace-seconds"),
        (["--no-such-flag"], {}, "unrecognized"),
        ([], {"LLMOPT_MAX_CONCURRENT_RPCS": "lots"}, "LLMOPT_MAX_CONCURRENT_RPCS"),
        (["--max-concurrent-streams", "0"], {}, "--max-concurrent-streams"),
        (["--stream-idle-seconds", "-1"], {}, "--stream-idle-seconds"),
        (["--stream-workers", "8"], {}, "unrecognized"),  # replaced by --max-concurrent-streams
    ],
)
def test_bad_value_exits_2_with_one_clear_line(argv, env, fragment):
    proc = subprocess.run(
        [sys.executable, "-m", "llmopt", *argv],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **env},
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert fragment in lines[0]
    assert lines[0].startswith("llmopt-server: error:")


def test_help_documents_every_flag():
    out = subprocess.run(
        [sys.executable, "-m", "llmopt", "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    for flag, env, _default, _help in settings_table():
        assert flag in out
        assert env in out
