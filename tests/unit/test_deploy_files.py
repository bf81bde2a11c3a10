"""The deployment files: they parse, agree with each other and with monitoring/, and the generated
PrometheusRule is exactly the rule files. No Docker or Kubernetes needed: what those would
reject first (a bad path, a wrong port, a selector that matches nothing) is checked here."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.monitoring.exprs import files_matched_by_rule_files

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
MONITORING = REPO / "monitoring"
GENERATOR = REPO / "scripts/deploy/gen_prometheus_rule.py"

YAML_FILES = sorted(
    p for root in (DEPLOY, MONITORING) for p in root.rglob("*") if p.suffix in (".yml", ".yaml")
)


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def test_there_are_yaml_files_to_check() -> None:
    assert DEPLOY / "docker-compose.yml" in YAML_FILES
    assert K8S / "deployment.yaml" in YAML_FILES
    assert MONITORING / "alertmanager/alertmanager.yml" in YAML_FILES


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_yaml_file_parses(path: Path) -> None:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert documents, f"{path} is empty"
    assert all(isinstance(d, dict) for d in documents)


# --- the generated PrometheusRule ------------------------------------------------------------


def test_the_prometheus_rule_is_what_the_generator_writes(tmp_path: Path) -> None:
    fresh = tmp_path / "prometheusrule.yaml"
    subprocess.run([sys.executable, str(GENERATOR), "--output", str(fresh)], check=True)
    assert (K8S / "prometheusrule.yaml").read_text() == fresh.read_text(), (
        "deploy/k8s/prometheusrule.yaml is stale: run scripts/deploy/gen_prometheus_rule.py"
    )


def test_the_prometheus_rule_holds_exactly_the_rule_files_groups() -> None:
    rule = load(K8S / "prometheusrule.yaml")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["kind"] == "PrometheusRule"
    files = sorted((MONITORING / "prometheus/rules").glob("*.yml"))
    assert files
    groups = [group for path in files for group in load(path)["groups"]]
    assert rule["spec"]["groups"] == groups


def test_the_generator_notices_a_changed_rule_file(tmp_path: Path) -> None:
    """`--check` fails on a stale manifest: the test above is not comparing a file to itself."""
    stale = tmp_path / "prometheusrule.yaml"
    stale.write_text((K8S / "prometheusrule.yaml").read_text().replace("for: 10m", "for: 11m", 1))
    check = [sys.executable, str(GENERATOR), "--check", "--output", str(stale)]
    assert subprocess.run(check, capture_output=True).returncode == 1


# --- the image ------------------------------------------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """Instructions per stage as (INSTRUCTION, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, arguments = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), arguments.strip()))
    return stages


def final_stage(instruction: str) -> list[str]:
    return [args for name, args in dockerfile_stages()[-1] if name == instruction]


def test_the_image_runs_as_a_numeric_non_root_user() -> None:
    users = final_stage("USER")
    assert users, "the final stage has no USER: it would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), "a numeric uid lets runAsNonRoot check it without /etc/passwd"
    assert int(uid) != 0

    deployment = k8s_kind("Deployment")
    pod = deployment["spec"]["template"]["spec"]["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == int(uid)


def test_the_image_has_a_healthcheck_on_healthz_in_python() -> None:
    checks = final_stage("HEALTHCHECK")
    assert len(checks) == 1
    command = checks[0]
    assert "/healthz" in command
    assert "python" in command
    assert not re.search(r"\b(curl|wget)\b", command), "the slim image has neither"


def test_the_image_listens_where_it_says() -> None:
    env = " ".join(final_stage("ENV"))
    assert "AIORCH_HOST=0.0.0.0" in env, "127.0.0.1 in a container is unreachable from outside"
    port = re.search(r"AIORCH_PORT=(\d+)", env)
    assert port is not None
    assert final_stage("EXPOSE") == [port.group(1)]
    assert final_stage("ENTRYPOINT") == ['["aiorch"]']


def test_the_build_context_holds_what_the_dockerfile_copies() -> None:
    """`.dockerignore` excludes everything, then lets in what the build stage copies."""
    ignore = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    ignore = [line for line in ignore if line and not line.startswith("#")]
    assert ignore[0] == "*"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copies = [args for stage in dockerfile_stages() for name, args in stage if name == "COPY"]
    sources = [s for args in copies if "--from" not in args for s in shlex.split(args)[:-1]]
    assert sources
    for source in sources:
        assert source.rstrip("/") in allowed, f"COPY {source}: excluded by .dockerignore"
        assert (REPO / source).exists()


# --- docker compose ---------------------------------------------------------------------------

COMPOSE = DEPLOY / "docker-compose.yml"
REPLICAS = ("aiorch-1", "aiorch-2")


def compose() -> dict[str, Any]:
    data: dict[str, Any] = load(COMPOSE)
    return data


def mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Bind mounts of a compose service: container path -> host path."""
    out = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            out[target] = (DEPLOY / source).resolve()
    return out


def test_compose_runs_every_part_of_the_stack() -> None:
    services = compose()["services"]
    for name in (*REPLICAS, "lb", "redis", "prometheus", "alertmanager", "grafana"):
        assert name in services
        assert "profiles" not in services[name], f"{name} must start without a profile"
    for name in ("mock-upstream", "traffic"):
        assert services[name]["profiles"] == ["mock"]


def test_compose_replicas_share_redis_and_build_one_image() -> None:
    services = compose()["services"]
    for name in REPLICAS:
        replica = services[name]
        assert replica["environment"]["AIORCH_REDIS_URL"] == "redis://redis:6379/0"
        assert replica["depends_on"]["redis"]["condition"] == "service_healthy"
        assert replica["build"]["context"] == ".."
        assert (DEPLOY / replica["build"]["context"] / replica["build"]["dockerfile"]).exists()
    images = {s["image"] for n, s in services.items() if n in (*REPLICAS, "mock-upstream")}
    assert images == {"aiorch:local"}
    # Every service on our image can build it, so `up --build` never pulls it from a registry.
    for service in services.values():
        if service.get("image") == "aiorch:local":
            assert "build" in service


def test_compose_bind_mounts_exist() -> None:
    for name, service in compose()["services"].items():
        for target, source in mounts(service).items():
            assert source.exists(), f"{name}: {source} (mounted at {target}) does not exist"


def test_compose_prometheus_loads_our_rules_and_scrapes_each_replica() -> None:
    services = compose()["services"]
    prometheus = mounts(services["prometheus"])
    config_path = prometheus["/etc/prometheus/prometheus.yml"]
    config = load(config_path)
    assert prometheus["/etc/prometheus/rules"] == (MONITORING / "prometheus/rules").resolve()
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]

    [job] = config["scrape_configs"]
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert sorted(targets) == [f"{name}:8000" for name in REPLICAS]
    [alertmanagers] = config["alerting"]["alertmanagers"]
    assert alertmanagers["static_configs"][0]["targets"] == ["alertmanager:9093"]
    assert alertmanager_mount() == MONITORING / "alertmanager/alertmanager.yml"

    # Alike where it matters: the rules count on the job name and the scrape interval.
    reference = load(MONITORING / "prometheus/prometheus.yml")
    assert config["global"] == {
        k: reference["global"][k] for k in ("scrape_interval", "evaluation_interval")
    }
    [reference_job] = reference["scrape_configs"]
    assert (job["job_name"], job["metrics_path"]) == (
        reference_job["job_name"],
        reference_job["metrics_path"],
    )


def alertmanager_mount() -> Path:
    return mounts(compose()["services"]["alertmanager"])["/etc/alertmanager/alertmanager.yml"]


def test_compose_grafana_is_provisioned_with_our_dashboard() -> None:
    grafana = mounts(compose()["services"]["grafana"])
    providers = load(grafana["/etc/grafana/provisioning/dashboards"] / "aiorch.yml")
    [provider] = providers["providers"]
    dashboards = grafana[provider["options"]["path"]]
    assert (dashboards / "ai_services.json").exists()

    # The compose datasource is monitoring/'s with Prometheus's compose address, nothing more.
    [ours] = load(grafana["/etc/grafana/provisioning/datasources"] / "prometheus.yml")[
        "datasources"
    ]
    [reference] = load(MONITORING / "grafana/provisioning/datasources/prometheus.yml")[
        "datasources"
    ]
    assert ours["url"] == "http://prometheus:9090"
    assert {**ours, "url": None} == {**reference, "url": None}


def test_compose_mock_profile_points_the_replicas_at_the_mock() -> None:
    services = compose()["services"]
    command = services["mock-upstream"]["command"]
    port = command[command.index("--port") + 1]
    key = command[command.index("--api-key") + 1]
    env = dict(
        line.split("=", 1)
        for line in (DEPLOY / "mock.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert env["COMPOSE_PROFILES"] == "mock"
    assert env["QWEN_OLLAMA_URL"] == f"http://mock-upstream:{port}"
    assert env["KIMI_BASE_URL"] == f"http://mock-upstream:{port}/v1"
    assert env["KIMI_API_KEY"] == key
    for name in env.keys() - {"COMPOSE_PROFILES"}:
        for replica in REPLICAS:
            assert services[replica]["environment"][name] == f"${{{name}:-}}"


def test_compose_load_balancer_spreads_over_both_replicas() -> None:
    lb = mounts(compose()["services"]["lb"])
    conf = lb["/etc/nginx/nginx.conf"].read_text()
    assert sorted(re.findall(r"server (aiorch-\d):8000", conf)) == list(REPLICAS)
    assert "proxy_buffering off" in conf  # streamed answers


@pytest.mark.prometheus
def test_compose_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("`promtool` is not on PATH; run scripts/ci/test-deps.sh", pytrace=False)
    text = (DEPLOY / "prometheus/prometheus.yml").read_text()
    # Where compose mounts the rules, here the rules themselves: promtool checks them too.
    rules = str(MONITORING / "prometheus/rules")
    config = tmp_path / "prometheus.yml"
    config.write_text(text.replace("/etc/prometheus/rules", rules))
    result = subprocess.run([promtool, "check", "config", str(config)], capture_output=True)
    output = (result.stdout + result.stderr).decode()
    assert result.returncode == 0, output
    rules = sorted(p.resolve() for p in (MONITORING / "prometheus/rules").glob("*.yml"))
    assert rules
    assert files_matched_by_rule_files(config) == rules


# --- Kubernetes -------------------------------------------------------------------------------


def k8s_documents() -> list[dict[str, Any]]:
    kustomization = load(K8S / "kustomization.yaml")
    documents = []
    for resource in kustomization["resources"]:
        documents += [d for d in yaml.safe_load_all((K8S / resource).read_text()) if d]
    return documents


def k8s_kind(kind: str) -> dict[str, Any]:
    [document] = [d for d in k8s_documents() if d["kind"] == kind]
    return document


def test_kustomization_lists_every_manifest() -> None:
    listed = set(load(K8S / "kustomization.yaml")["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present
    kinds = {d["kind"] for d in k8s_documents()}
    assert kinds >= {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ServiceMonitor",
        "PrometheusRule",
        "ConfigMap",
    }


def container() -> dict[str, Any]:
    [main] = k8s_kind("Deployment")["spec"]["template"]["spec"]["containers"]
    return main


def test_deployment_probes_resources_and_security() -> None:
    main = container()
    assert main["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert main["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert main["startupProbe"]["httpGet"]["path"] == "/healthz"
    requests = main["resources"]["requests"]
    assert requests["cpu"]  # the HPA's utilisation is relative to it
    assert requests["memory"]
    assert main["resources"]["limits"]["memory"]
    security = main["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]


def test_deployment_settings_come_from_the_configmap_and_secret() -> None:
    sources = container()["envFrom"]
    assert {"configMapRef": {"name": k8s_kind("ConfigMap")["metadata"]["name"]}} in sources
    secrets = [s["secretRef"] for s in sources if "secretRef" in s]
    assert secrets == [{"name": "aiorch-secrets", "optional": True}]
    assert "AIORCH_REDIS_URL" in k8s_kind("ConfigMap")["data"]


def test_deployment_multiprocess_directory_is_writable() -> None:
    """The root filesystem is read-only: the metrics directory must be on a mounted volume."""
    env = {e["name"]: e.get("value") for e in container()["env"]}
    directory = Path(env["PROMETHEUS_MULTIPROC_DIR"])
    mounted = [Path(m["mountPath"]) for m in container()["volumeMounts"]]
    assert any(directory.is_relative_to(m) for m in mounted)


def test_deployment_drains_within_its_grace_period() -> None:
    from aiorch.config import ServerSettings

    spec = k8s_kind("Deployment")["spec"]["template"]["spec"]
    pause = re.search(
        r"sleep\((\d+)\)", " ".join(container()["lifecycle"]["preStop"]["exec"]["command"])
    )
    assert pause is not None
    drain = int(pause.group(1)) + ServerSettings().shutdown_grace_seconds
    assert drain < spec["terminationGracePeriodSeconds"]


def test_selectors_find_the_pods_and_ports_match() -> None:
    deployment = k8s_kind("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = k8s_kind("Service")

    def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
        return bool(selector) and selector.items() <= labels.items()

    assert selects(deployment["spec"]["selector"]["matchLabels"], pod_labels)
    assert selects(service["spec"]["selector"], pod_labels)
    assert selects(k8s_kind("PodDisruptionBudget")["spec"]["selector"]["matchLabels"], pod_labels)
    monitor = k8s_kind("ServiceMonitor")
    assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])

    port_names = {p["name"] for p in container()["ports"]}
    [service_port] = service["spec"]["ports"]
    assert service_port["targetPort"] in port_names
    assert {e["port"] for e in monitor["spec"]["endpoints"]} == {service_port["name"]}
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"

    hpa = k8s_kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2  # so that the PDB can let one go


def test_the_rules_job_label_is_the_service_name() -> None:
    """Under a ServiceMonitor the job label is the Service's name; the alerts select on it."""
    jobs = set(re.findall(r'job="([^"]+)"', (K8S / "prometheusrule.yaml").read_text()))
    assert jobs == {k8s_kind("Service")["metadata"]["name"]}
