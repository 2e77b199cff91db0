"""pfeddc-certs: the coordinator's certificate names the in-cluster Service; admin credentials are no client's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from pfeddc.server.ops import certs


def sans(path: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(n.value) for n in names}


def test_init_names_the_in_cluster_service_by_default(tmp_path: Path) -> None:
    assert certs.main(["init", "--out", str(tmp_path / "a"), "--host", "fl.example.org"]) == 0
    names = sans(tmp_path / "a" / "coordinator.pem")
    assert {"fl.example.org", "localhost", "127.0.0.1", "pfeddc-coordinator", "pfeddc-coordinator.pfeddc.svc",
            "pfeddc-coordinator.pfeddc.svc.cluster.local"} <= names
    assert certs.main(["init", "--out", str(tmp_path / "b"), "--namespace", "fl", "--service", "coord"]) == 0
    assert "coord.fl.svc" in sans(tmp_path / "b" / "coordinator.pem")
    assert certs.main(["init", "--out", str(tmp_path / "c"), "--service", ""]) == 0
    assert not any("svc" in n for n in sans(tmp_path / "c" / "coordinator.pem"))


def test_admin_credential_is_an_identity_no_client_can_have(tmp_path: Path) -> None:
    assert certs.main(["init", "--out", str(tmp_path)]) == 0
    assert certs.main(["admin", "--out", str(tmp_path), "--name", "ops"]) == 0
    cert = x509.load_pem_x509_certificate((tmp_path / "admins" / "ops" / "admin.pem").read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "admin:ops"
    assert "admin:ops" in json.loads((tmp_path / "tokens.json").read_text())
    with pytest.raises(ValueError, match="admin name 'a:b' must be"):
        certs.add_admin(tmp_path, "a:b", 30)


@pytest.mark.parametrize("client_id", ["admin:evil", "../x", "a/b", "", "_lead", "x" * 5000])
def test_client_ids_are_checked_as_the_coordinator_checks_them(tmp_path: Path, client_id: str,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert certs.main(["init", "--out", str(tmp_path / "creds")]) == 0
    assert certs.main(["client", "--out", str(tmp_path / "creds"), "--client-id", client_id]) == 2
    err = capsys.readouterr().err
    assert "client_id" in err and len(err) < 300  # named, never echoed whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["creds"]  # nothing written outside the folder
    assert not (tmp_path / "creds" / "clients").exists()
    assert client_id not in json.loads((tmp_path / "creds" / "tokens.json").read_text())


def test_issued_tokens_pass_as_a_command_line_value(tmp_path: Path) -> None:
    """A token once began with '-' (1 in 64 with URL-safe base64), and `--token VALUE` then failed to parse:
    every issued token must be a plain value for argparse, whatever the draw."""
    from pfeddc.client.app import run_parser

    assert certs.main(["init", "--out", str(tmp_path)]) == 0
    for i in range(40):
        assert certs.main(["client", "--out", str(tmp_path), "--client-id", f"site-{i}"]) == 0
        token = (tmp_path / "clients" / f"site-{i}" / "token").read_text().strip()
        assert len(token) == 64 and not token.startswith("-")
        args = run_parser().parse_args(["--data", "d", "--server", "h:1", "--token", token])
        assert args.token == token


@pytest.mark.parametrize("days", ["0", "-1"])
def test_certs_refuse_a_validity_below_one_day(tmp_path: Path, days: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        certs.main(["init", "--out", str(tmp_path / "c"), "--days", days])
    assert info.value.code == 2
    assert f"--days must be at least 1, got {days}" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
