"""TLS, mTLS and tokens on loopback with credentials from pfeddc-certs: who gets in, and the errors others see."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from tests_support import StartCoordinator

from pfeddc.client.connection import Backoff, Connection
from pfeddc.common.messages import Code, Refused
from pfeddc.common.tlsprobe import CredentialError
from pfeddc.common.transport import TlsFiles
from pfeddc.server.ops import certs

pytestmark = pytest.mark.integration  # starts real processes


@pytest.fixture(scope="module")
def creds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("creds")
    assert certs.main(["init", "--out", str(out), "--host", "coordinator.test"]) == 0
    for cid in ("site-a", "site-b"):
        assert certs.main(["client", "--out", str(out), "--client-id", cid]) == 0
    return out


def client_tls(creds: Path, cid: str) -> TlsFiles:
    folder = creds / "clients" / cid
    return TlsFiles(folder / "ca.pem", folder / "client.pem", folder / "client.key")


def connect(port: int, cid: str, tls: TlsFiles, token: str | None = None) -> Connection:
    return Connection(f"localhost:{port}", cid, tls, token, Backoff(0.01, 0.02, 1), rpc_timeout_s=5)


def test_certs_writes_private_files_0600_and_token_digests(creds: Path) -> None:
    for path in [creds / "ca.key", creds / "coordinator.key", creds / "clients" / "site-a" / "client.key",
                 creds / "clients" / "site-a" / "token", creds / "tokens.json"]:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    tokens = json.loads((creds / "tokens.json").read_text())
    assert set(tokens) == {"site-a", "site-b"} and all(v.startswith("sha256:") for v in tokens.values())
    assert certs.main(["init", "--out", str(creds)]) == 2  # never overwrites a CA


def test_mtls_accepts_the_right_client_and_refuses_another_identity(coordinator: StartCoordinator, creds: Path) -> None:
    server = coordinator("--tls-cert", str(creds / "coordinator.pem"), "--tls-key", str(creds / "coordinator.key"),
                         "--tls-client-ca", str(creds / "ca.pem"), "--rounds", "1")
    a = connect(server.port, "site-a", client_tls(creds, "site-a"))
    a.join(5, a.federation().spec)
    impostor = connect(server.port, "site-a", client_tls(creds, "site-b"))
    with pytest.raises(Refused) as info:
        impostor.federation()
    assert info.value.code == Code.PERMISSION_DENIED
    assert "certificate is for ['site-b']" in info.value.message


def test_wrong_ca_expired_certificate_and_plaintext_are_refused(
    coordinator: StartCoordinator, creds: Path, tmp_path: Path
) -> None:
    server = coordinator("--tls-cert", str(creds / "coordinator.pem"), "--tls-key", str(creds / "coordinator.key"),
                         "--tls-client-ca", str(creds / "ca.pem"), "--rounds", "1")
    other = tmp_path / "other"
    certs.main(["init", "--out", str(other)])
    certs.main(["client", "--out", str(other), "--client-id", "site-a"])
    # each is configuration, named at the first failed call (no retries), not "unreachable"
    with pytest.raises(CredentialError, match=f"--tls-ca {other / 'clients' / 'site-a' / 'ca.pem'} did not sign"):
        connect(server.port, "site-a", client_tls(other, "site-a")).federation()

    ca_key, ca_cert = certs.load_ca(creds)
    key, cert = certs.issue(ca_key, ca_cert, "site-a", days=1,
                            not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=3))
    (tmp_path / "old.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "old.key").write_bytes(certs._key_pem(key))
    expired = TlsFiles(creds / "ca.pem", tmp_path / "old.pem", tmp_path / "old.key")
    with pytest.raises(CredentialError, match=f"--tls-cert {tmp_path / 'old.pem'} expired on"):
        connect(server.port, "site-a", expired).federation()

    with pytest.raises(CredentialError, match="speaks TLS and this call did not: pass --tls-ca"):
        connect(server.port, "site-a", TlsFiles()).federation()


def test_tokens_tie_each_client_id_to_its_token(coordinator: StartCoordinator, creds: Path) -> None:
    server = coordinator("--tls-cert", str(creds / "coordinator.pem"), "--tls-key", str(creds / "coordinator.key"),
                         "--tokens", str(creds / "tokens.json"), "--rounds", "1")
    server_only = TlsFiles(ca=creds / "ca.pem")
    token_a = (creds / "clients" / "site-a" / "token").read_text().strip()
    token_b = (creds / "clients" / "site-b" / "token").read_text().strip()
    connect(server.port, "site-a", server_only, token_a).federation()
    with pytest.raises(Refused) as info:
        connect(server.port, "site-a", server_only, token_b).federation()
    assert info.value.code == Code.PERMISSION_DENIED and "not valid for client_id 'site-a'" in info.value.message
    with pytest.raises(Refused) as info:
        connect(server.port, "site-a", server_only).federation()
    assert info.value.code == Code.UNAUTHENTICATED


def test_rotating_a_client_token_revokes_the_old_one(tmp_path: Path) -> None:
    from pfeddc.common.transport import token_digest
    from pfeddc.server.wire.auth import load_tokens

    certs.main(["init", "--out", str(tmp_path)])
    certs.main(["client", "--out", str(tmp_path), "--client-id", "site-a"])
    old = (tmp_path / "clients" / "site-a" / "token").read_text().strip()
    certs.main(["client", "--out", str(tmp_path), "--client-id", "site-a"])
    new = (tmp_path / "clients" / "site-a" / "token").read_text().strip()
    tokens = load_tokens(tmp_path / "tokens.json")
    assert tokens["site-a"] == token_digest(new) != token_digest(old)
