"""deploy/kubernetes, checked without a cluster: rendered with `kubectl kustomize` (the
base, and the base with the service-monitor component), validated against the
Kubernetes API's schemas, and held to what the Dockerfile, compose.yaml, the README's
Configuration table and the code say.

The schemas are the ones the kubernetes-validate package ships, used strictly (an
unknown field, such as a misspelt `readinesProbe`, is an error). It has none for
custom resources, so the ServiceMonitors get a check of their own.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import kubernetes_validate
import pytest
import yaml

from swaps.replica import ReplicaSettings

from .processes import ReplicaProcess, drop_namespace, free_port, wait_until
from .test_deploy_files import ROOT, dockerfile_commands, env_file
from .test_settings import manage

KUBERNETES = ROOT / "deploy" / "kubernetes"
BASE = KUBERNETES / "base"
SERVICE_MONITOR = KUBERNETES / "components" / "service-monitor"
SECRET_EXAMPLE = KUBERNETES / "secret.env.example"
SECRET = "hotswap"
# The oldest Kubernetes the manifests are meant for, and the newest kubernetes-validate
# has schemas for: a field too new for the first or an API removed by the second fails.
KUBERNETES_VERSIONS = ["1.29", kubernetes_validate.latest_version()]
CUSTOM_RESOURCE_GROUPS = ("monitoring.coreos.com/",)
ROLES = {
    "web": ("Deployment", "hotswap-web"),
    "replica": ("Deployment", "hotswap-replica"),
    "worker": ("Deployment", "hotswap-worker"),
    "migrate": ("Job", "hotswap-migrate"),
}
# Roles whose process reads hotswap_site/settings.py (replicas read ReplicaSettings).
DJANGO_ROLES = ["web", "worker", "migrate"]
NO_KUBECTL = (
    "kubectl not found on PATH: these tests render deploy/kubernetes with `kubectl "
    "kustomize`. Install kubectl 1.27 or newer (it has kustomize built in): "
    "https://kubernetes.io/docs/tasks/tools/ (Debian/Ubuntu: the `kubectl` package from "
    "pkgs.k8s.io; or `gcloud components install kubectl`)."
)
LONG_KEY = "k3Q9-not-a-real-key-but-long-and-varied-enough-zx81-QWERTY-7741"


def kustomize(directory: Path) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail(NO_KUBECTL, pytrace=False)
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return [document for document in yaml.safe_load_all(result.stdout) if document]


@pytest.fixture(scope="module")
def base() -> list[dict]:
    return kustomize(BASE)


@pytest.fixture(scope="module")
def monitored(tmp_path_factory) -> list[dict]:
    """The base with the service-monitor component, from an overlay as a user writes one."""
    overlay = tmp_path_factory.mktemp("overlay")
    # kustomize refuses absolute paths to a base or component.
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(BASE, overlay)],
        "components": [os.path.relpath(SERVICE_MONITOR, overlay)],
    }
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return kustomize(overlay)


# -- reading the rendered objects ------------------------------------------------------------


def find(objects: list[dict], kind: str, name: str) -> dict:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def workload(objects: list[dict], role: str) -> dict:
    return find(objects, *ROLES[role])


def pod_spec(objects: list[dict], role: str) -> dict:
    return workload(objects, role)["spec"]["template"]["spec"]


def pod_labels(objects: list[dict], role: str) -> dict[str, str]:
    return workload(objects, role)["spec"]["template"]["metadata"]["labels"]


def container(objects: list[dict], role: str) -> dict:
    (only,) = pod_spec(objects, role)["containers"]
    return only


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def container_port(spec: dict, port: int | str) -> int:
    """A probe's or a Service's port: a number, or the name of one of the container's."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in spec.get("ports", []) if p.get("name") == port]
    return number


def command_port(spec: dict, option: str = "--port") -> int:
    """A port the process binds: its `--port` argument (REST), or `--grpc-port`'s."""
    command = spec["command"]
    return int(command[command.index(option) + 1])


def command_ports(spec: dict) -> set[int]:
    return {command_port(spec, o) for o in ("--port", "--grpc-port") if o in spec["command"]}


def secret_example() -> dict[str, str]:
    return env_file(SECRET_EXAMPLE)


def config_map(objects: list[dict], name: str) -> dict[str, str]:
    return find(objects, "ConfigMap", name).get("data", {})


def environment(objects: list[dict], spec: dict, secret: dict[str, str]) -> dict[str, str]:
    """The environment the container starts with: ConfigMaps as rendered, `secret` as the
    Secret. A reference to a missing ConfigMap or key fails here, as the pod would."""
    env: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        if "configMapRef" in source:
            env.update(config_map(objects, source["configMapRef"]["name"]))
        else:
            assert source["secretRef"]["name"] == SECRET
            env.update(secret)
    for variable in spec.get("env", []):
        if "value" in variable:
            env[variable["name"]] = variable["value"]
            continue
        reference = variable["valueFrom"]
        if "configMapKeyRef" in reference:
            ref = reference["configMapKeyRef"]
            env[variable["name"]] = config_map(objects, ref["name"])[ref["key"]]
        else:
            ref = reference["secretKeyRef"]
            assert ref["name"] == SECRET
            env[variable["name"]] = secret[ref["key"]]
    return env


def role_environment(objects: list[dict], role: str) -> dict[str, str]:
    return environment(objects, container(objects, role), secret_example())


def secret_keys_read(objects: list[dict]) -> set[str]:
    keys = set()
    for role in ROLES:
        spec = container(objects, role)
        for variable in spec.get("env", []):
            ref = variable.get("valueFrom", {}).get("secretKeyRef")
            if ref is not None:
                keys.add((ref["name"], ref["key"]))
        for source in spec.get("envFrom", []):
            if "secretRef" in source:
                keys |= {(source["secretRef"]["name"], key) for key in secret_example()}
    return keys


def configuration_table() -> set[str]:
    """The variables the README's Configuration table documents."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    names = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            names |= set(re.findall(r"`([A-Z][A-Z0-9_]*)`", line.split("|")[1]))
    return names


def replica_settings_read() -> set[str]:
    """Every variable ReplicaSettings.from_env looks at."""

    class Recording(dict):
        def __init__(self) -> None:
            super().__init__()
            self.read: set[str] = set()

        def get(self, name, default=None):
            self.read.add(name)
            # The one a replica cannot start without: a key of the length it needs.
            return "k" * 64 if name == "HOTSWAP_FLEET_KEY" else default

    recording = Recording()
    ReplicaSettings.from_env(recording)
    return recording.read


def quantity(value: str | int) -> float:
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    text = str(value)
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def prestop_seconds(spec: dict) -> float:
    pre_stop = spec.get("lifecycle", {}).get("preStop", {})
    if "sleep" in pre_stop:
        return float(pre_stop["sleep"]["seconds"])
    command = pre_stop.get("exec", {}).get("command", [])
    return float(command[1]) if command[:1] == ["sleep"] else 0.0


def django_setting(name: str, env: dict[str, str], tmp_path: Path) -> str:
    """A setting as a fresh process with `env` reads it (no database needed)."""
    env = {**env, "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    env.pop("HOTSWAP_RUN_DIR", None)
    code = f"from django.conf import settings; print(settings.{name})"
    result = manage("shell", "--no-imports", "-c", code, tmp_path=tmp_path, **env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


# -- the Kubernetes API accepts every object ---------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_follows_the_kubernetes_api_schema(base, monitored, version):
    problems = []
    for obj in [*base, *monitored]:
        if obj["apiVersion"].startswith(CUSTOM_RESOURCE_GROUPS):
            continue  # no schema shipped for custom resources: checked below
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            problems.append(f"{obj['kind']}/{obj['metadata']['name']}: {error.message}")
    assert problems == []


def test_service_monitors_scrape_a_port_their_service_has(monitored):
    monitors = [o for o in monitored if o["kind"] == "ServiceMonitor"]
    services = [o for o in monitored if o["kind"] == "Service"]
    token_sources = {
        (v["valueFrom"]["secretKeyRef"]["name"], v["valueFrom"]["secretKeyRef"]["key"])
        for v in container(monitored, "web")["env"]
        if v["name"] == "HOTSWAP_METRICS_TOKEN"
    }
    scraped = set()
    for monitor in monitors:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        selected = [
            s
            for s in services
            if selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
        ]
        assert len(selected) == 1, f"{monitor['metadata']['name']} selects {len(selected)}"
        (service,) = selected
        port_names = {p["name"] for p in service["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in port_names
            assert endpoint["path"] == "/metrics"
            if "authorization" in endpoint:
                # The token Prometheus sends is the one the console checks.
                credentials = endpoint["authorization"]["credentials"]
                assert (credentials["name"], credentials["key"]) in token_sources
        scraped.add(service["metadata"]["name"])
    assert scraped == {"hotswap-web", "hotswap-replica"}


def test_with_the_service_monitors_no_pod_is_scraped_twice(monitored):
    annotated = [
        o["metadata"]["name"]
        for o in monitored
        if o["kind"] == "Deployment"
        and o["spec"]["template"]["metadata"].get("annotations", {}).get("prometheus.io/scrape")
        == "true"
    ]
    assert annotated == []


# -- the same roles, commands and ports as the Dockerfile and compose.yaml -----------------------


def test_base_runs_every_role(base):
    workloads = {
        (o["kind"], o["metadata"]["name"]) for o in base if o["kind"] in ("Deployment", "Job")
    }
    assert workloads == set(ROLES.values())


def test_web_runs_the_images_default_command(base):
    cmd, _ = dockerfile_commands()
    assert container(base, "web")["command"] == cmd


@pytest.mark.parametrize("role", ["replica", "worker", "migrate"])
def test_role_runs_the_command_the_dockerfile_documents_and_compose_runs(base, role):
    _, header = dockerfile_commands()
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    command = container(base, role)["command"]
    assert shlex.join(command) in header
    assert command == compose["services"][role]["command"]


def test_every_role_runs_the_one_image(base):
    images = {container(base, role)["image"] for role in ROLES}
    assert len(images) == 1


@pytest.mark.parametrize("role", ["web", "replica"])
def test_service_sends_traffic_to_the_port_the_process_binds(base, role):
    service = find(base, "Service", f"hotswap-{role}")
    spec = container(base, role)
    assert selects(service["spec"]["selector"], pod_labels(base, role))
    for port in service["spec"]["ports"]:
        assert container_port(spec, port["targetPort"]) in command_ports(spec)
        # the port compose's clients use too
        assert port["port"] == container_port(spec, port["targetPort"])


# -- replicas: selection, probes, shutdown -------------------------------------------------------


def test_replica_service_budget_and_spread_select_only_the_replica_pods(base):
    selectors = {
        "Service": find(base, "Service", "hotswap-replica")["spec"]["selector"],
        "PodDisruptionBudget": find(base, "PodDisruptionBudget", "hotswap-replica")["spec"][
            "selector"
        ]["matchLabels"],
        "Deployment": workload(base, "replica")["spec"]["selector"]["matchLabels"],
        **{
            f"spread {c['topologyKey']}": c["labelSelector"]["matchLabels"]
            for c in pod_spec(base, "replica").get("topologySpreadConstraints", [])
        },
    }
    for what, selector in selectors.items():
        assert selects(selector, pod_labels(base, "replica")), what
        for other in ["web", "worker", "migrate"]:
            assert not selects(selector, pod_labels(base, other)), f"{what} selects {other}"


def test_replica_budget_lets_a_node_drain_but_never_takes_every_replica(base):
    budget = find(base, "PodDisruptionBudget", "hotswap-replica")["spec"]
    replicas = workload(base, "replica")["spec"]["replicas"]
    allowed = budget.get("maxUnavailable", replicas - budget.get("minAvailable", replicas))
    assert 0 < allowed < replicas


def test_replica_rollout_starts_a_ready_replica_before_stopping_one(base):
    deployment = workload(base, "replica")
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert "readinessProbe" in container(base, "replica")


def test_replica_probes_ask_the_endpoints_the_gateway_answers(base):
    spec = container(base, "replica")
    assert spec["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert spec["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    for probe in ["readinessProbe", "livenessProbe", "startupProbe"]:
        if probe in spec:
            assert container_port(spec, spec[probe]["httpGet"]["port"]) == command_port(spec)


@pytest.fixture(scope="module")
def drain_timeout(base, tmp_path_factory) -> float:
    """HOTSWAP_DRAIN_TIMEOUT as the worker, which runs the drains, reads it."""
    env = role_environment(base, "worker")
    return float(django_setting("HOTSWAP_DRAIN_TIMEOUT", env, tmp_path_factory.mktemp("drain")))


def test_replica_grace_period_outlasts_prestop_and_a_drain(base, drain_timeout):
    grace = pod_spec(base, "replica")["terminationGracePeriodSeconds"]
    assert grace > prestop_seconds(container(base, "replica")) + drain_timeout


def test_worker_grace_period_outlasts_a_drain(base, drain_timeout):
    assert pod_spec(base, "worker")["terminationGracePeriodSeconds"] > drain_timeout


@pytest.fixture(scope="module")
def manifest_replica(base, redis_url, tmp_path_factory) -> Iterator[ReplicaProcess]:
    """A replica started with the manifest's command and environment, nothing more."""
    spec = container(base, "replica")
    port = free_port()
    ports = {
        str(command_port(spec)): str(port),
        str(command_port(spec, "--grpc-port")): str(free_port()),
    }
    command = [
        sys.executable if part == "python" else ports.get(part, part) for part in spec["command"]
    ]
    namespace = f"test-{uuid.uuid4().hex}"
    env = {
        **environment(base, spec, {**secret_example(), "REDIS_URL": redis_url}),
        "HOTSWAP_NAMESPACE": namespace,
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
    }
    log_path = tmp_path_factory.mktemp("replica") / "replica.log"
    with log_path.open("wb") as log:
        popen = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    replica = ReplicaProcess(popen=popen, log_path=log_path, port=port, replica_id="kubernetes")
    try:
        yield replica.wait_live()
    finally:
        replica.stop()
        drop_namespace(redis_url, namespace)


def probe_url(replica: ReplicaProcess, spec: dict, probe: dict) -> str:
    assert container_port(spec, probe["httpGet"]["port"]) == command_port(spec)
    return f"{replica.url}{probe['httpGet']['path']}"


@pytest.mark.fleet
def test_replica_probes_pass_on_a_replica_run_as_the_manifest_runs_it(base, manifest_replica):
    spec = container(base, "replica")
    probes = [spec[name] for name in ("startupProbe", "livenessProbe", "readinessProbe")]
    wait_until(
        lambda: all(
            httpx.get(probe_url(manifest_replica, spec, p), timeout=2).status_code == 200
            for p in probes
        ),
        timeout=30,
        what="every probe of the replica to pass",
    )


@pytest.mark.parametrize("role", ["web", "replica"])
def test_scrape_annotations_name_the_port_and_path_of_the_metrics(base, role):
    annotations = workload(base, role)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == command_port(container(base, role))
    assert annotations["prometheus.io/path"] == "/metrics"


@pytest.mark.fleet
def test_replica_answers_its_scrape_annotation(base, manifest_replica):
    annotations = workload(base, "replica")["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == command_port(container(base, "replica"))
    response = httpx.get(f"{manifest_replica.url}{annotations['prometheus.io/path']}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")


# -- the environment ---------------------------------------------------------------------------


def test_every_variable_the_pods_get_is_in_the_configuration_table(base):
    documented = configuration_table()
    given = {name for role in ROLES for name in role_environment(base, role)}
    assert sorted(given - documented) == []


def test_no_pod_gets_service_link_variables(base):
    # Service links would add HOTSWAP_WEB_PORT, HOTSWAP_REPLICA_SERVICE_HOST and more.
    assert [
        role for role in ROLES if pod_spec(base, role).get("enableServiceLinks") is not False
    ] == []


def test_replicas_get_neither_the_database_nor_the_secret_key(base):
    env = role_environment(base, "replica")
    assert "REDIS_URL" in env
    assert "DATABASE_URL" not in env
    assert "SECRET_KEY" not in env


def test_replicas_get_only_what_a_replica_reads(base):
    assert sorted(set(role_environment(base, "replica")) - replica_settings_read()) == []


@pytest.mark.parametrize("role", DJANGO_ROLES)
def test_control_plane_and_replicas_agree_on_the_fleet_settings(base, role):
    replica, control_plane = role_environment(base, "replica"), role_environment(base, role)
    fleet = replica_settings_read()
    assert {n: replica.get(n) for n in fleet} == {n: control_plane.get(n) for n in fleet}


def test_web_environment_passes_check_deploy(base, tmp_path):
    env = role_environment(base, "web")
    env.update(SECRET_KEY=LONG_KEY, DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}")
    env.pop("HOTSWAP_RUN_DIR")  # manage() gives the process a run directory of its own
    result = manage("check", "--deploy", "--fail-level", "WARNING", tmp_path=tmp_path, **env)
    assert result.returncode == 0, result.stderr


def test_secret_example_has_every_key_the_pods_read(base):
    assert secret_keys_read(base) == {(SECRET, key) for key in secret_example()}


def test_secret_example_is_never_a_working_secret():
    assert [k for k, v in secret_example().items() if "REPLACE-ME" not in v] == []


def test_applying_the_base_never_overwrites_the_secret(base):
    assert [o["metadata"]["name"] for o in base if o["kind"] == "Secret"] == []


# -- a release ---------------------------------------------------------------------------------


def release_selector() -> dict[str, set[str]]:
    """The `-l` of the migrate step kustomization.yaml documents, as {label: values}."""
    text = (BASE / "kustomization.yaml").read_text()
    (selector,) = re.findall(r"kubectl apply -k \S+ -l '([^']+)'", text)
    key, values = re.fullmatch(r"(\S+) in \(([^)]*)\)", selector).groups()
    return {key: set(values.split(","))}


def test_migrate_step_applies_the_job_and_its_config_but_no_deployment(base):
    ((key, values),) = release_selector().items()
    applied = [o for o in base if o["metadata"].get("labels", {}).get(key) in values]
    kinds = {(o["kind"], o["metadata"]["name"]) for o in applied}
    job = container(base, "migrate")
    needed = {("ConfigMap", s["configMapRef"]["name"]) for s in job.get("envFrom", [])}
    assert ROLES["migrate"] in kinds
    assert needed <= kinds
    assert [name for kind, name in kinds if kind == "Deployment"] == []


# -- security and resources --------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_container_runs_unprivileged_on_a_read_only_root(base, role):
    pod = pod_spec(base, role).get("securityContext", {})
    spec = container(base, role)
    context = {**pod, **spec.get("securityContext", {})}
    assert context["runAsNonRoot"] is True
    # The image's user has no fixed uid; by name the kubelet cannot check it is not root.
    assert isinstance(context["runAsUser"], int) and context["runAsUser"] > 0
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert not context.get("privileged", False)


@pytest.mark.parametrize("role", ROLES)
def test_container_has_requests_within_its_limits(base, role):
    resources = container(base, role)["resources"]
    for resource in ["cpu", "memory"]:
        assert quantity(resources["requests"][resource]) <= quantity(resources["limits"][resource])


@pytest.mark.parametrize("role", ROLES)
def test_every_mount_names_a_volume_of_its_pod(base, role):
    volumes = {v["name"] for v in pod_spec(base, role)["volumes"]}
    mounts = {m["name"] for m in container(base, role)["volumeMounts"]}
    assert mounts <= volumes


@pytest.mark.parametrize("role", ROLES)
def test_tmp_is_writable(base, role):
    mounts = {m["mountPath"]: m for m in container(base, role)["volumeMounts"]}
    assert not mounts["/tmp"].get("readOnly", False)


@pytest.mark.parametrize("role", DJANGO_ROLES)
def test_settings_can_create_the_run_dir(base, role):
    # settings.py creates HOTSWAP_RUN_DIR at start; on a read-only root it must be a volume.
    run_dir = role_environment(base, role)["HOTSWAP_RUN_DIR"]
    mounts = {m["mountPath"]: m for m in container(base, role)["volumeMounts"]}
    assert not mounts[run_dir].get("readOnly", False)


def test_web_replicas_and_migrations_see_the_artifacts_where_compose_puts_them(base):
    # Migrations too: 0009 pins the versions registered before digests to their files.
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    target = compose["x-artifacts"]["target"]
    claims = {}
    for role in ["web", "replica", "migrate"]:
        volumes = {v["name"]: v for v in pod_spec(base, role)["volumes"]}
        (mount,) = [m for m in container(base, role)["volumeMounts"] if m["mountPath"] == target]
        claims[role] = volumes[mount["name"]]["persistentVolumeClaim"]["claimName"]
    find(base, "PersistentVolumeClaim", claims["web"])
    assert claims["replica"] == claims["migrate"] == claims["web"]
