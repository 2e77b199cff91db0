"""Shared fixtures: a real coordinator on a loopback port chosen by the OS."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pfeddc.common.logs import configure_logging
from pfeddc.server.app import RunningServer, build_parser, start


@pytest.fixture(autouse=True, scope="session")
def _json_logs() -> None:
    configure_logging("json", "warning")


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    """Factory: coordinator(*flags) starts a real gRPC coordinator on 127.0.0.1:<free port>."""
    running: list[RunningServer] = []

    def _start(*flags: str, state_dir: Path | None = None) -> RunningServer:
        argv = ["--bind", "127.0.0.1", "--port", "0", "--state-dir", str(state_dir or tmp_path / "coord"),
                "--poll-interval", "0.1", *flags]
        server = start(build_parser().parse_args(argv))
        running.append(server)
        return server

    yield _start
    for server in running:
        server.stop(0)
