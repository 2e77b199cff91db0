"""Shared fixtures: a real coordinator on a loopback port chosen by the OS, and a tiny CLIP on disk."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests_support import StartCoordinator, make_tiny_model_dir

from pfeddc.common.logs import configure_logging
from pfeddc.server.app import RunningServer, build_parser, start


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow (minutes to an hour)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked slow are deselected (reported as such, never silently passed) unless --run-slow."""
    if config.getoption("--run-slow"):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]


@pytest.fixture(autouse=True, scope="session")
def _json_logs() -> None:
    configure_logging("json", "warning")


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[StartCoordinator]:
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


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny CLIP saved like a real one (built once per session)."""
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-clip"))
