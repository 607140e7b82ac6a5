"""Shared fixtures: the real server process, started once per session or per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from tests.support.server import ServerProcess


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server shared by the integration tests that do not restart or kill it."""
    proc = ServerProcess(tmp_path_factory.mktemp("shared") / "data").start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with server.channel() as ch:
        yield ch


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start private servers (restartable, killable); every one is stopped after the test."""
    started: list[ServerProcess] = []

    def make(*args: str, data_dir: Path | None = None, start: bool = True, **kw) -> ServerProcess:
        proc = ServerProcess(data_dir or tmp_path / f"data{len(started)}", args, **kw)
        started.append(proc)
        return proc.start() if start else proc

    yield make
    for proc in started:
        proc.stop()
