"""``llmopt-server`` / ``python -m llmopt``: run the server until SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Sequence

from llmopt.config import SettingsError, parse_settings
from llmopt.errors import LLMOptError
from llmopt.logs import configure_logging
from llmopt.security import AuthConfigError

log = logging.getLogger("llmopt.server")


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_settings(argv)
    configure_logging(settings.log_level, settings.log_format)
    from llmopt.app import create_app  # after logging is set up: imports load onnxruntime & co.

    try:
        app = create_app(settings)
    except (AuthConfigError, SettingsError) as exc:  # a file the settings name cannot be used
        print(f"llmopt-server: error: {exc}", file=sys.stderr)
        return 2
    except (OSError, LLMOptError) as exc:
        log.error("cannot start: %s", exc)
        return 1
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("received %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        app.start()
        # A signal may land on any thread (grpc's own, a worker); Python runs the handler on the
        # main thread only when it wakes, so wake it often rather than block forever.
        while not stop.wait(0.2):
            pass
    finally:
        app.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
