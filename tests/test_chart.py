"""The Helm chart: it lints, renders manifests Kubernetes' schemas accept
(strictly), wires the probes to the health endpoints, and refuses values that
cannot work with a message naming the value."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).parent.parent
CHART = ROOT / "charts" / "procession"
MINIMAL = [
    "--set",
    "app=procession.examples.apps:rebase_app",
    "--set",
    "kafka.bootstrapServers=k:9092",
]
KUBERNETES = os.environ.get("PROCESSION_KUBERNETES_VERSION", "1.34.0")


def helm() -> str:
    found = shutil.which("helm") or str(ROOT / ".tools" / "bin" / "helm")
    if not Path(found).exists():
        pytest.fail("helm is not installed: ./dev test builds it into .tools/bin (needs go)")
    return found


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def render(*values: str) -> list[dict[str, Any]]:
    out = run(helm(), "template", "t", str(CHART), *values)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.mark.parametrize(
    "values", [MINIMAL, ["--values", str(CHART / "ci" / "values.yaml")]], ids=["minimal", "ci"]
)
def test_the_chart_lints_and_renders_what_kubernetes_accepts(
    values: list[str], tmp_path: Path
) -> None:
    lint = run(helm(), "lint", "--strict", str(CHART), *values)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    out = run(helm(), "template", "t", str(CHART), *values)
    assert out.returncode == 0, out.stderr
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(out.stdout)
    validate = str(Path(sys.executable).parent / "kubernetes-validate")
    check = run(validate, "--strict", "-k", KUBERNETES, str(rendered))
    assert check.returncode == 0, check.stdout + check.stderr
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(out.stdout) if d)
    assert {"ConfigMap", "Deployment", "Job", "PodDisruptionBudget"} <= set(kinds)


def test_probes_use_the_health_endpoints_and_pods_run_as_non_root() -> None:
    docs = render(*MINIMAL, "--set", "health.port=9999")
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    assert sorted(deployments) == ["t-procession-processor", "t-procession-worker"]
    for name, d in deployments.items():
        pod = d["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["args"][:2] == [
            name.rsplit("-", 1)[1],
            "procession.examples.apps:rebase_app",
        ]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["ports"] == [{"name": "health", "containerPort": 9999}]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["PROCESSION_HEALTH_PORT"] == "9999"
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        # the pod's labels are what its PDB and Deployment select
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert d["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (job,) = [d for d in docs if d["kind"] == "Job"]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert job["spec"]["template"]["spec"]["containers"][0]["args"][:3] == [
        "topics",
        "create",
        "procession.examples.apps:rebase_app",
    ]


def test_each_role_can_have_its_own_health_port_for_host_network_pods_on_one_node() -> None:
    # with hostNetwork a processor and a worker on one node cannot share a port
    docs = render(*MINIMAL, "--set", "hostNetwork=true", "--set", "worker.healthPort=9998")
    ports = {}
    for d in docs:
        if d["kind"] == "Deployment":
            pod = d["spec"]["template"]["spec"]
            (container,) = pod["containers"]
            env = {e["name"]: e.get("value") for e in container["env"]}
            assert pod["hostNetwork"] is True
            assert env["PROCESSION_HEALTH_PORT"] == str(container["ports"][0]["containerPort"])
            annotations = d["spec"]["template"]["metadata"]["annotations"]
            assert annotations["prometheus.io/port"] == env["PROCESSION_HEALTH_PORT"]
            ports[d["metadata"]["name"]] = container["ports"][0]["containerPort"]
    assert ports == {"t-procession-processor": 8080, "t-procession-worker": 9998}


def test_sasl_credentials_reach_the_pods_from_a_secret() -> None:
    docs = render("--values", str(CHART / "ci" / "values.yaml"))
    (secret,) = [d for d in docs if d["kind"] == "Secret"]
    (worker,) = [
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("worker")
    ]
    env = {e["name"]: e for e in worker["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": secret["metadata"]["name"],
        "key": "password",
    }
    assert env["KAFKA_SSL_CAFILE"]["value"] == "/etc/procession/kafka-tls/ca.crt"
    assert "replicas" not in worker["spec"]  # the HPA owns it
    (hpa,) = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    assert hpa["spec"]["metrics"][0]["external"]["metric"]["selector"]["matchLabels"] == {
        "consumergroup": "procession-demo.workers"
    }


def _env(docs: list[dict[str, Any]], role: str) -> dict[str, Any]:
    (found,) = [
        d
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet") and d["metadata"]["name"].endswith(role)
    ]
    return {e["name"]: e for e in found["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_the_kafka_client_and_static_membership_reach_every_pod() -> None:
    plain = _env(render(*MINIMAL), "processor")
    assert plain["PROCESSION_KAFKA_CLIENT"]["value"] == "librdkafka"
    assert "PROCESSION_INSTANCE_ID" not in plain  # dynamic members: a rollout moves at once
    static = render(
        *MINIMAL, "--set", "kafka.staticMembership=true", "--set", "kafka.client=aiokafka"
    )
    for role in ("processor", "worker"):
        env = _env(static, role)
        assert env["PROCESSION_KAFKA_CLIENT"]["value"] == "aiokafka"
        assert env["PROCESSION_INSTANCE_ID"]["valueFrom"] == {
            "fieldRef": {"fieldPath": "metadata.name"}  # unique per pod, kept across restarts
        }


def test_a_statefulset_keeps_pod_names_for_static_members(tmp_path: Path) -> None:
    values = [
        *MINIMAL,
        "--set",
        "workload=StatefulSet",
        "--set",
        "kafka.staticMembership=true",
        "--set",
        "worker.autoscaling.enabled=true",
        "--set",
        "worker.autoscaling.consumerGroup=procession.workers",
    ]
    docs = render(*values)
    sets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "StatefulSet"}
    assert sorted(sets) == ["t-procession-processor", "t-procession-worker"]
    assert not [d for d in docs if d["kind"] == "Deployment"]
    for name, d in sets.items():
        assert d["spec"]["serviceName"] == name
        assert d["spec"]["podManagementPolicy"] == "Parallel"  # all start at once
        assert "strategy" not in d["spec"]  # a Deployment's field: refused by the API
    (hpa,) = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "StatefulSet"
    env = _env(docs, "processor")
    assert env["PROCESSION_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    out = run(helm(), "template", "t", str(CHART), *values)
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(out.stdout)
    validate = str(Path(sys.executable).parent / "kubernetes-validate")
    check = run(validate, "--strict", "-k", KUBERNETES, str(rendered))
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["--set", "kafka.bootstrapServers=k:9092"], "set app: the MODULE:APP every pod runs"),
        (["--set", "app=a:b"], "set kafka.bootstrapServers"),
        (
            [*MINIMAL, "--set", "processor.replicas=7"],
            "processor.replicas (7) is more than topics.partitions (6)",
        ),
        ([*MINIMAL, "--set", "kafka.securityProtocol=SASL_SSL"], "set kafka.sasl.username"),
        (
            [*MINIMAL, "--set", "kafka.securityProtocol=TLS"],
            "at '/kafka/securityProtocol': value must be one of",
        ),
        ([*MINIMAL, "--set", "app=not an app"], "at '/app'"),
        ([*MINIMAL, "--set", "worker.replica=2"], "additional properties 'replica' not allowed"),
        ([*MINIMAL, "--set", "workload=DaemonSet"], "at '/workload': value must be one of"),
        (
            [*MINIMAL, "--set", "worker.autoscaling.enabled=true"],
            "worker.autoscaling.consumerGroup",
        ),
    ],
)
def test_values_that_cannot_work_are_refused_by_name(values: list[str], expected: str) -> None:
    out = run(helm(), "template", "t", str(CHART), *values)
    assert out.returncode != 0
    assert expected in out.stderr, out.stderr
