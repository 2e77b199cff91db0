"""README.md's "A federation by hand", run as written: certificates, an mTLS coordinator with tokens, and two
institutions' clients, each in the folder it received, whose ids come from their certificates.

Only what a test on one machine must change is changed, each listed in `localize`: the host name becomes
localhost (pfeddc-certs always names it), the paths become temporary ones, the rounds 2, and the coordinator
gets a free port, the tiny model, JSON logs and gentle learning rates."""

from __future__ import annotations

import json
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests_support import GENTLE_RATES, make_image_folder

from pfeddc.common.logs import Event

from .conftest import ENV

pytestmark = pytest.mark.integration  # starts real processes
README = Path(__file__).resolve().parents[2] / "README.md"
MODULES = {"pfeddc-certs": "pfeddc.server.ops.certs", "pfeddc-server": "pfeddc.server.app",
           "pfeddc-client": "pfeddc.client.app"}


def by_hand_commands() -> list[str]:
    section = README.read_text().split("## A federation by hand", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "README.md: 'A federation by hand' has no bash block"
    lines = block.group(1).replace("\\\n", " ").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def localize(command: str, tmp: Path, port: int, model: Path, data: Path, site: str) -> list[str]:
    command = (command.replace("coordinator.example.org:50051", f"localhost:{port}")
               .replace("/var/lib/pfeddc", str(tmp / "coordinator-state"))
               .replace("~/.pfeddc/client", str(tmp / f"state-{site}"))
               .replace("/data/my-images", str(data)).replace("--rounds 20", "--rounds 2"))
    argv = shlex.split(command)
    tool = argv[0]
    assert tool in MODULES, f"README.md runs {tool!r}, which this test does not know"
    if tool == "pfeddc-server":
        argv += ["--port", str(port), "--model", str(model), "--log-format", "json", "--linger", "5",
                 "--poll-interval", "0.2", *GENTLE_RATES]
    if tool == "pfeddc-client":
        argv += ["--log-format", "json"]
    return [sys.executable, "-m", MODULES[tool], *argv[1:]]


def wait_started(log: Path, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if line.startswith("{") and json.loads(line).get("event") == Event.SERVER_STARTED:
                return
        assert proc.poll() is None, log.read_text()[-3000:]
        time.sleep(0.2)
    pytest.fail(f"the coordinator did not start:\n{log.read_text()[-3000:]}")


def test_readme_federation_by_hand_runs_as_written(tmp_path: Path, tiny_model_dir: Path) -> None:
    commands = by_hand_commands()
    assert any("--token-file token" in c and "--tls-cert client.pem" in c for c in commands)
    assert not any("--client-id" in c for c in commands if c.startswith("pfeddc-client"))
    port = free_port()
    data = {site: make_image_folder(tmp_path / f"data-{site}", ["red", "green"], 6, seed=i)
            for i, site in enumerate(("hospital-a", "hospital-b"))}
    procs: list[subprocess.Popen[str]] = []
    cwd = tmp_path
    try:
        for command in commands:
            if command.startswith("cd "):
                cwd = tmp_path / "creds" / "clients" / command.split()[1]  # the folder the institution received
                continue
            if command.startswith("pfeddc-certs"):
                argv = localize(command, tmp_path, port, tiny_model_dir, tmp_path, "")
                done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=60, env=ENV)
                assert done.returncode == 0, done.stderr
            elif command.startswith("pfeddc-server"):
                log = tmp_path / "server.log"
                argv = localize(command, tmp_path, port, tiny_model_dir, tmp_path, "")
                server = subprocess.Popen(argv, cwd=tmp_path, stdout=log.open("w"), stderr=subprocess.STDOUT,
                                          text=True, env=ENV)
                procs.append(server)
                wait_started(log, server)
            else:  # the institution's command, as written, then the same for the second institution
                for site in ("hospital-a", "hospital-b"):
                    folder = cwd.parent / site
                    argv = localize(command, tmp_path, port, tiny_model_dir, data[site], site)
                    procs.append(subprocess.Popen(argv, cwd=folder, stdout=(tmp_path / f"{site}.log").open("w"),
                                                  stderr=subprocess.STDOUT, text=True, env=ENV))
        clients = procs[1:]
        assert len(clients) == 2
        for site, proc in zip(("hospital-a", "hospital-b"), clients, strict=True):
            assert proc.wait(300) == 0, (tmp_path / f"{site}.log").read_text()[-3000:]
            state = tmp_path / f"state-{site}"
            assert (state / "client_id").read_text().strip() == site  # from the certificate's common name
        assert procs[0].wait(60) == 0
        events = [json.loads(line) for line in (tmp_path / "server.log").read_text().splitlines()
                  if line.startswith("{")]
        assert sum(e["event"] == Event.ROUND_COMPLETED for e in events) == 2
        assert {e["client_id"] for e in events if e["event"] == Event.CLIENT_JOINED} == {"hospital-a", "hospital-b"}
        # no flag named the classes: the coordinator agreed them from the institutions' Joins, and shared the head
        agreed = [e for e in events if e["event"] == Event.CLASSES_AGREED]
        assert len(agreed) == 1 and agreed[0]["classes"] == ["green", "red"], agreed
        assert "head.sums.global[2, 16]:F32" in agreed[0]["tensors"]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
