"""`pfeddc-certs`: a federation CA, the coordinator's certificate, one certificate and token per client.

  pfeddc-certs init   --out DIR --host coordinator.example.org [--host 10.0.0.5]
  pfeddc-certs client --out DIR --client-id hospital-a
  pfeddc-certs admin  --out DIR --name ops          (reads `pfeddc-server status`)

Client certificates carry the client id as their common name; the coordinator's `--tls-client-ca` then ties
each client id to its certificate. Tokens go to the client in clear (DIR/clients/<id>/token) and to the
coordinator as SHA-256 digests (DIR/tokens.json). Admin credentials carry "admin:<name>" (a name no client id
can have) as common name and token key. The coordinator's certificate names the in-cluster Service of the
Kubernetes manifests (pfeddc-coordinator.pfeddc.svc...) besides --host. Private keys and tokens are written
with mode 0600.

The federation's operator runs it (beside the coordinator, in the base torch-free install); each institution
only receives the files. A client takes its id from its certificate with `common.transport.common_name`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import json
import os
import secrets
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ...common.envflags import add_version, apply_env_defaults
from ...common.ids import client_id_problem
from ...common.serde import atomic_write
from ...common.transport import ADMIN_ID_PREFIX, token_digest

Key = ec.EllipticCurvePrivateKey
# The Service and namespace of deploy/k8s/coordinator (tests/deploy/test_manifests.py checks they agree).
COORDINATOR_SERVICE = "pfeddc-coordinator"
DEFAULT_NAMESPACE = "pfeddc"


def cluster_names(service: str, namespace: str) -> list[str]:
    """The names a pod in the cluster may use for the coordinator's Service."""
    if not service:
        return []
    names = [service]
    if namespace:
        names += [f"{service}.{namespace}", f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local"]
    return names


def _write(path: Path, data: bytes, private: bool) -> None:
    atomic_write(path, data)
    os.chmod(path, 0o600 if private else 0o644)


def _key_pem(key: Key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def new_key() -> Key:
    return ec.generate_private_key(ec.SECP256R1())


def create_ca(name: str = "pfeddc federation CA", days: int = 3650) -> tuple[Key, x509.Certificate]:
    key = new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def issue(ca_key: Key, ca_cert: x509.Certificate, common_name: str, hosts: list[str] | None = None,
          server: bool = False, days: int = 365, not_before: dt.datetime | None = None) -> tuple[Key, x509.Certificate]:
    """A leaf certificate: server (with DNS/IP SANs) or client (common name = client id)."""
    key = new_key()
    start = not_before or dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    sans: list[x509.GeneralName] = []
    for host in hosts or []:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    if not server:
        sans.append(x509.DNSName(common_name))
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def load_ca(out: Path) -> tuple[Key, x509.Certificate]:
    try:
        key = serialization.load_pem_private_key((out / "ca.key").read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate((out / "ca.pem").read_bytes())
    except FileNotFoundError as exc:
        raise ValueError(f"no CA in {out}: run `pfeddc-certs init --out {out}` first") from exc
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key, cert


def init(out: Path, hosts: list[str], days: int, service: str = COORDINATOR_SERVICE,
         namespace: str = DEFAULT_NAMESPACE) -> list[Path]:
    if (out / "ca.key").exists():
        raise ValueError(f"{out} already holds a CA (ca.key); refusing to overwrite it")
    ca_key, ca_cert = create_ca()
    names = set(hosts) | {"localhost", "127.0.0.1"} | set(cluster_names(service, namespace))
    key, cert = issue(ca_key, ca_cert, hosts[0] if hosts else COORDINATOR_SERVICE, sorted(names), server=True,
                      days=days)
    files = {"ca.key": (_key_pem(ca_key), True), "ca.pem": (_cert_pem(ca_cert), False),
             "coordinator.key": (_key_pem(key), True), "coordinator.pem": (_cert_pem(cert), False)}
    for name, (data, private) in files.items():
        _write(out / name, data, private)
    if not (out / "tokens.json").exists():
        _write(out / "tokens.json", b"{}\n", True)
    return [out / n for n in files]


def add_client(out: Path, client_id: str, days: int) -> list[Path]:
    """Issue (or rotate) a client's certificate and token; the old token stops working at once. The id must be
    one the coordinator accepts (common/ids.py): no ':' (admin identities are `admin:<name>`), no '/'."""
    problem = client_id_problem(client_id)
    if problem:
        raise ValueError(problem)
    return _add_identity(out, client_id, out / "clients" / client_id, "client", days)


def add_admin(out: Path, name: str, days: int) -> list[Path]:
    """Issue (or rotate) an admin credential: it reads the coordinator's status, and cannot join as a client."""
    problem = client_id_problem(name)  # the same rule: it names a folder too
    if problem:
        raise ValueError(problem.replace("client_id", "admin name", 1))
    return _add_identity(out, ADMIN_ID_PREFIX + name, out / "admins" / name, "admin", days)


def _add_identity(out: Path, identity: str, folder: Path, stem: str, days: int) -> list[Path]:
    ca_key, ca_cert = load_ca(out)
    key, cert = issue(ca_key, ca_cert, identity, days=days)
    token = secrets.token_hex(32)  # 256 bits; hex never starts with "-", so `--token VALUE` always parses
    _write(folder / f"{stem}.key", _key_pem(key), True)
    _write(folder / f"{stem}.pem", _cert_pem(cert), False)
    _write(folder / "ca.pem", _cert_pem(ca_cert), False)
    _write(folder / "token", token.encode() + b"\n", True)
    tokens_path = out / "tokens.json"
    tokens = json.loads(tokens_path.read_text()) if tokens_path.exists() else {}
    tokens[identity] = token_digest(token)
    _write(tokens_path, json.dumps(tokens, indent=1, sort_keys=True).encode() + b"\n", True)
    return [folder / n for n in (f"{stem}.key", f"{stem}.pem", "ca.pem", "token")] + [tokens_path]


def days(text: str) -> int:
    """A validity in whole days, at least 1: 0 would issue a certificate already expired, and a negative one
    one that the cryptography library refuses with a raw error."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"--days must be at least 1, got {value} (a certificate valid for {value} "
                                         "days is expired the moment it is issued)")
    return value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pfeddc-certs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    i = sub.add_parser("init", help="create the federation CA and the coordinator's certificate")
    i.add_argument("--out", type=Path, required=True, help="credentials folder (keep ca.key offline)")
    i.add_argument("--host", action="append", default=[],
                   help="DNS name or IP clients use to reach the coordinator (repeatable); localhost and "
                        "127.0.0.1 are always included")
    i.add_argument("--days", type=days, default=365, help="validity of the coordinator certificate, in days")
    i.add_argument("--service", default=COORDINATOR_SERVICE,
                   help="Kubernetes Service of the coordinator, named in the certificate with its in-cluster DNS "
                        "names; '' for none (default: %(default)s)")
    i.add_argument("--namespace", default=DEFAULT_NAMESPACE,
                   help="namespace of that Service (default: %(default)s)")
    c = sub.add_parser("client", help="issue or rotate one client's certificate and token")
    c.add_argument("--out", type=Path, required=True, help="the credentials folder made by init")
    c.add_argument("--client-id", required=True, help="the client's id (its certificate's common name)")
    c.add_argument("--days", type=days, default=365, help="validity of the client certificate, in days")
    a = sub.add_parser("admin", help="issue or rotate an admin credential (for pfeddc-server status)")
    a.add_argument("--out", type=Path, required=True, help="the credentials folder made by init")
    a.add_argument("--name", required=True, help="who holds it; its identity is admin:<name>")
    a.add_argument("--days", type=days, default=90, help="validity of the admin certificate, in days")
    add_version(p)
    for sub_parser in (i, c, a):
        apply_env_defaults(sub_parser, siblings=[s for s in (i, c, a) if s is not sub_parser])
    args = p.parse_args(argv)
    try:
        if args.command == "init":
            written = init(args.out, args.host, args.days, args.service, args.namespace)
        elif args.command == "client":
            written = add_client(args.out, args.client_id, args.days)
        else:
            written = add_admin(args.out, args.name, args.days)
    except ValueError as exc:
        print(f"pfeddc-certs: error: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
