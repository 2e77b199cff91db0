"""Credential problems name their cause and are configuration (exit 2), not an outage after minutes of retries."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs
from tests_support import StartCoordinator

from pfeddc.client.connection import Backoff, Connection
from pfeddc.common.logs import Event
from pfeddc.common.messages import Refused
from pfeddc.common.spec import TensorSpec
from pfeddc.common.tlsprobe import CredentialError, diagnose
from pfeddc.common.transport import TlsFiles, read_token
from pfeddc.server.ops import certs, status_cli

FLAGS = ("--rounds", "2", "--method", "promptfl", "--text-ctx", "4")
SPEC = [TensorSpec("text.global", (4, 128))]


@pytest.fixture(scope="module")
def creds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two federations' credentials (`a` is the coordinator's; `b` another CA's) and an expired client cert."""
    root = tmp_path_factory.mktemp("creds")
    for name in ("a", "b"):
        assert certs.main(["init", "--out", str(root / name)]) == 0
        assert certs.main(["client", "--out", str(root / name), "--client-id", "site-a"]) == 0
    ca_key, ca_cert = certs.load_ca(root / "a")
    key, cert = certs.issue(ca_key, ca_cert, "site-x", days=1,
                            not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=10))
    (root / "old.pem").write_bytes(certs._cert_pem(cert))
    (root / "old.key").write_bytes(certs._key_pem(key))
    return root


def mtls(coordinator: StartCoordinator, creds: Path, *flags: str) -> str:
    a = creds / "a"
    server = coordinator(*FLAGS, "--tls-cert", str(a / "coordinator.pem"), "--tls-key", str(a / "coordinator.key"),
                         "--tls-client-ca", str(a / "ca.pem"), *flags)
    return f"127.0.0.1:{server.port}"


def test_diagnose_names_the_certificate_at_fault(coordinator: StartCoordinator, creds: Path) -> None:
    target = mtls(coordinator, creds)
    plain = f"127.0.0.1:{coordinator(*FLAGS, state_dir=creds / 'plain-state').port}"
    site, other = creds / "a" / "clients" / "site-a", creds / "b" / "clients" / "site-a"
    good = TlsFiles(site / "ca.pem", site / "client.pem", site / "client.key")
    assert diagnose(target, good) is None
    assert diagnose(f"localhost:{target.rsplit(':', 1)[1]}", good) is None
    cases = {
        "did not sign the coordinator's certificate": TlsFiles(other / "ca.pem", site / "client.pem",
                                                               site / "client.key"),
        "requires a client certificate": TlsFiles(site / "ca.pem"),
        f"refused --tls-cert {other / 'client.pem'}": TlsFiles(site / "ca.pem", other / "client.pem",
                                                               other / "client.key"),
        f"--tls-cert {creds / 'old.pem'} expired on": TlsFiles(site / "ca.pem", creds / "old.pem", creds / "old.key"),
        "is not the key of --tls-cert": TlsFiles(site / "ca.pem", site / "client.pem", other / "client.key"),
        "speaks TLS and this call did not: pass --tls-ca": TlsFiles(),
    }
    for expected, tls in cases.items():
        problem = diagnose(target, tls)
        assert problem and expected in problem, (expected, problem)
    problem = diagnose(plain, good)
    assert problem and "does not speak TLS on this port" in problem
    assert diagnose(plain, TlsFiles()) is None
    assert diagnose("127.0.0.1:1", good) is None  # nothing listens: the network, not a credential


def test_client_with_the_wrong_ca_stops_at_once_with_a_configuration_error(coordinator: StartCoordinator,
                                                                           creds: Path) -> None:
    target = mtls(coordinator, creds)
    site, other = creds / "a" / "clients" / "site-a", creds / "b" / "clients" / "site-a"
    conn = Connection(target, "site-a", TlsFiles(other / "ca.pem", site / "client.pem", site / "client.key"),
                      backoff=Backoff(0.5, 30, 10), rpc_timeout_s=10)
    started = time.monotonic()
    with pytest.raises(CredentialError, match=f"--tls-ca {other / 'ca.pem'} did not sign"):
        conn.federation()
    assert time.monotonic() - started < 10  # not 10 attempts of backoff (100 s and more)
    assert isinstance(CredentialError("x"), ValueError)  # pfeddc-client maps ValueError to exit 2


def test_status_cli_diagnoses_a_plaintext_call_to_a_tls_port_as_configuration(
        coordinator: StartCoordinator, creds: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = mtls(coordinator, creds)
    assert status_cli.main(["--server", target, "--timeout", "3"]) == 2
    assert "speaks TLS and this call did not" in capsys.readouterr().err
    assert status_cli.main(["--server", "127.0.0.1:1", "--timeout", "3"]) == 3
    assert "nothing accepts connections at 127.0.0.1:1" in capsys.readouterr().err


def test_coordinator_logs_a_refused_token_at_warning_at_a_bounded_rate(coordinator: StartCoordinator,
                                                                        tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.json"
    tokens.write_text('{"site-a": "right"}')
    server = coordinator(*FLAGS, "--tokens", str(tokens))
    with capture_logs() as logs:
        for _ in range(3):
            conn = Connection(f"127.0.0.1:{server.port}", "site-a", token="wrong", backoff=Backoff(0.05, 0.1, 1))
            with pytest.raises(Refused, match="not one this coordinator issued"):
                conn.join(10, SPEC)
            conn.close()
    refused = [e for e in logs if e["event"] == Event.CALLER_REFUSED]
    assert len(refused) == 1 and refused[0]["log_level"] == "warning" and refused[0]["code"] == "UNAUTHENTICATED"


def test_read_token_strips_the_file_and_refuses_an_empty_or_missing_one(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("abc123\n")
    assert read_token(None, tmp_path / "token") == "abc123"
    assert read_token("xyz", None) == "xyz"
    (tmp_path / "empty").write_text("\n")
    for path, message in ((tmp_path / "empty", "is empty"), (tmp_path / "missing", "cannot read --token-file")):
        with pytest.raises(ValueError, match=message):
            read_token(None, path)
    with pytest.raises(ValueError, match="either --token or --token-file"):
        read_token("xyz", tmp_path / "token")


def test_status_cli_refuses_an_empty_token_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "token").write_text("  \n")
    assert status_cli.main(["--server", "127.0.0.1:1", "--token-file", str(tmp_path / "token")]) == 2
    assert "--token-file" in capsys.readouterr().err
