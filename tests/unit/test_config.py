import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmopt.config import Settings, is_loopback, parse_settings, settings_table


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


# -- TLS, auth and reflection settings ------------------------------------------------------

PEM = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


@pytest.fixture
def pem_files(tmp_path):
    paths = {}
    for name in ("cert", "key", "ca"):
        paths[name] = tmp_path / f"{name}.pem"
        paths[name].write_bytes(PEM)
    paths["tokens"] = tmp_path / "tokens"
    paths["tokens"].write_text("# none yet\n")
    return paths


def refusal(capsys, argv, environ=None) -> str:
    """The one error line parse_settings exits 2 with."""
    with pytest.raises(SystemExit) as exit_:
        parse_settings(argv, environ=environ or {})
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("llmopt-server: error:")
    return lines[0]


def test_security_defaults_are_off_and_open():
    s = Settings()
    assert (s.tls_cert, s.tls_key, s.tls_client_ca, s.auth_tokens, s.auth_jwt_key) == (None,) * 5
    assert (s.auth_jwt_issuer, s.auth_jwt_audience, s.reflection, s.require_auth) == (
        "",
        "",
        "open",
        False,
    )
    assert not s.tls and not s.auth and s.loopback


def test_tls_and_auth_settings_from_flags_and_environment(pem_files):
    env = {
        "LLMOPT_TLS_CERT": str(pem_files["cert"]),
        "LLMOPT_TLS_KEY": str(pem_files["key"]),
        "LLMOPT_AUTH_TOKENS": str(pem_files["tokens"]),
        "LLMOPT_AUTH_JWT_ISSUER": "https://issuer.example",
        "LLMOPT_REFLECTION": "AUTH",
        "LLMOPT_REQUIRE_AUTH": "yes",
    }
    s = parse_settings([], environ=env)
    assert (s.tls_cert, s.tls_key, s.auth_tokens) == (
        pem_files["cert"],
        pem_files["key"],
        pem_files["tokens"],
    )
    issuer = "https://issuer.example"
    assert (s.auth_jwt_issuer, s.reflection, s.require_auth) == (issuer, "auth", True)
    assert s.tls and s.auth
    s = parse_settings(
        ["--tls-client-ca", str(pem_files["ca"]), "--reflection=off", "--auth-jwt-audience=x"],
        environ=env,
    )
    assert (s.tls_client_ca, s.reflection, s.auth_jwt_audience) == (pem_files["ca"], "off", "x")


def test_a_missing_or_unreadable_file_exits_2_naming_it(capsys, tmp_path, pem_files):
    missing = tmp_path / "missing.pem"
    line = refusal(capsys, ["--tls-cert", str(missing)])
    assert "--tls-cert" in line and str(missing) in line
    line = refusal(capsys, [], {"LLMOPT_AUTH_TOKENS": str(missing)})
    assert "LLMOPT_AUTH_TOKENS" in line and str(missing) in line
    line = refusal(capsys, ["--auth-jwt-key", str(tmp_path)])  # a directory
    assert str(tmp_path) in line
    not_pem = tmp_path / "notes.txt"
    not_pem.write_text("hello")
    line = refusal(capsys, ["--tls-key", str(not_pem)])
    assert str(not_pem) in line and "PEM" in line
    unreadable = tmp_path / "secret.pem"
    unreadable.write_bytes(PEM)
    unreadable.chmod(0)
    try:
        if not os.access(unreadable, os.R_OK):  # root reads anything
            line = refusal(capsys, ["--tls-cert", str(unreadable)])
            assert str(unreadable) in line
    finally:
        unreadable.chmod(0o600)


def test_tls_settings_that_do_not_go_together_exit_2(capsys, pem_files):
    line = refusal(capsys, ["--tls-cert", str(pem_files["cert"])])
    assert "--tls-cert needs --tls-key" in line
    line = refusal(capsys, ["--tls-key", str(pem_files["key"])])
    assert "--tls-key needs --tls-cert" in line
    line = refusal(capsys, ["--tls-client-ca", str(pem_files["ca"])])
    assert "--tls-client-ca" in line
    assert "reflection" in refusal(capsys, ["--reflection", "closed"])


def test_require_auth_needs_both_tls_and_auth(capsys, pem_files):
    tls = ["--tls-cert", str(pem_files["cert"]), "--tls-key", str(pem_files["key"])]
    auth = ["--auth-tokens", str(pem_files["tokens"])]
    line = refusal(capsys, ["--require-auth"])
    assert "TLS" in line and "--auth-tokens" in line
    assert "--auth-tokens" in refusal(capsys, ["--require-auth", *tls])
    assert "--tls-cert" in refusal(capsys, ["--require-auth", *auth])
    assert parse_settings(["--require-auth", *tls, *auth], environ={}).require_auth


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.1.2.3", False),
        ("example.com", False),
    ],
)
def test_loopback_hosts(host, loopback):
    assert is_loopback(host) is loopback
    assert Settings(host=host).loopback is loopback
