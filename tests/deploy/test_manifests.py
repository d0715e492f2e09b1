"""Static checks of the container image recipe (Dockerfile) and the Kubernetes manifests
(deploy/k8s): fast, no cluster and no Docker engine needed.

They tie the deployment to the code: every ``IM_*`` variable is a real setting, every
container runs a real service, ports and probes match the settings, the connector is a
StatefulSet behind a headless Service. Where ``kubectl`` (or ``kustomize``) is
installed, the overlays are also rendered and checked as a cluster would get them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from im.config import Settings
from im.grpcutil import LIVENESS
from im.standalone import SERVICES

yaml = pytest.importorskip(
    "yaml", reason="PyYAML is needed to check deploy/k8s (the dev extra should pin it)"
)

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
BASE = K8S / "base"
OVERLAYS = {p.name: p for p in sorted((K8S / "overlays").iterdir()) if p.is_dir()}
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

IMAGE = "im-suite"  # the image name the manifests use; overlays retag/rename it
CONFIG_MAP = "im-config"
ENV_SECRET = "im-secrets"
JWT_SECRET = "im-jwt-keys"
INTERNAL_TLS_SECRET = "im-internal-tls"
SUITE_LABELS = {"app.kubernetes.io/name": "im"}  # every pod of the suite carries it
# Services with an internal gRPC server (mutual TLS) and its plaintext health port.
GRPC_PORTS = {
    "user": "user_grpc_port",
    "group": "group_grpc_port",
    "connector": "connector_grpc_port",
    "router": "router_grpc_port",
}
# Internal gRPC of services whose probes are HTTP (no plaintext health port): the
# gateway's MessageService, for the suite's pods and labelled internal callers.
HTTP_PROBED_GRPC_PORTS = {"gateway": "gateway_grpc_port"}
MESSAGE_SENDER_LABELS = {"im.example/message-sender": "true"}
PUBLIC_PORTS = {
    "gateway": ["gateway_port"],
    "connector": ["connector_tcp_port", "connector_ws_port"],
}
# Internal listeners that are not gRPC (Prometheus /metrics): reached from the
# monitoring namespace only.
INTERNAL_PORTS = {
    "gateway": ["gateway_metrics_port"],
    **{service: ["metrics_port"] for service in ("user", "group", "connector", "router")},
}
# The gateway's admin gRPC (mutual TLS + admin token): reached from the suite's pods.
ADMIN_GRPC_PORTS = {"gateway": ["admin_grpc_port"]}
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job")
# Services with nothing to probe (none today). test_services_without_health_endpoint
# fails if one gets a port, so its probes are added then.
NO_HEALTH_ENDPOINT: set[str] = set()
HPA_SERVICES = {"gateway", "user", "group", "router"}
SETTINGS = {f"IM_{name.upper()}" for name in Settings.model_fields}
DEFAULTS = Settings.model_fields


# ------------------------------------------------------------------ loading


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def yaml_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*") if p.suffix in (".yaml", ".yml"))


def kustomization_dirs() -> list[Path]:
    return sorted(p.parent for p in K8S.rglob("kustomization.yaml"))


def kustomization(folder: Path) -> dict[str, Any]:
    return load_docs(folder / "kustomization.yaml")[0]


def env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value
    return values


def generator_values(folder: Path, generator: dict[str, Any]) -> dict[str, str]:
    values: dict[str, str] = {}
    for name in generator.get("envs", []):
        values.update(env_file(folder / name))
    for literal in generator.get("literals", []):
        key, _, value = literal.partition("=")
        values[key] = value
    return values


def resources(folder: Path) -> list[dict[str, Any]]:
    """The documents a kustomization builds from (before its patches), recursively."""
    docs: list[dict[str, Any]] = []
    for entry in kustomization(folder).get("resources", []):
        path = (folder / entry).resolve()
        docs.extend(resources(path) if path.is_dir() else load_docs(path))
    return docs


def patch_docs(folder: Path) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for patch in kustomization(folder).get("patches", []):
        if "path" in patch:
            docs.extend(load_docs(folder / patch["path"]))
        elif "patch" in patch:
            docs.extend(d for d in yaml.safe_load_all(patch["patch"]) if d)
    return docs


def effective_config(folder: Path) -> dict[str, str]:
    """im-config as the kustomization at ``folder`` generates it (base, then merges)."""
    values: dict[str, str] = {}
    for entry in kustomization(folder).get("resources", []):
        path = (folder / entry).resolve()
        if path.is_dir():
            values.update(effective_config(path))
        else:
            for doc in load_docs(path):
                if doc.get("kind") == "ConfigMap" and doc["metadata"]["name"] == CONFIG_MAP:
                    values.update(doc.get("data", {}))
    for generator in kustomization(folder).get("configMapGenerator", []):
        if generator["name"] == CONFIG_MAP:
            if generator.get("behavior") == "replace":
                values = {}
            values.update(generator_values(folder, generator))
    return values


def setting(config: dict[str, str], name: str) -> Any:
    """A setting's value with this config: the ConfigMap's, else the code's default."""
    key = f"IM_{name.upper()}"
    if key in config:
        return getattr(Settings(**{name: config[key]}), name)  # parsed as the code does
    return DEFAULTS[name].default


def metrics_port(service: str, config: dict[str, str]) -> int:
    """The port a service serves /metrics on."""
    (name,) = INTERNAL_PORTS[service]
    return setting(config, name)


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def is_im_image(image: str) -> bool:
    name = image.rsplit("/", 1)[-1].split("@")[0].split(":")[0]
    return name == IMAGE


def im_workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        d
        for d in docs
        if d.get("kind") in WORKLOAD_KINDS
        and any(is_im_image(c.get("image", "")) for c in pod_spec(d)["containers"])
    ]


def served(container: dict[str, Any]) -> str:
    """The service a container runs ("db upgrade" for the migration)."""
    args = container.get("args", [])
    if args[:1] == ["serve"] and len(args) == 2:
        return args[1]
    return " ".join(args)


def by_service(docs: list[dict[str, Any]]) -> dict[str, tuple[dict, dict]]:
    """service name -> (workload, its im container)."""
    found = {}
    for workload in im_workloads(docs):
        for container in pod_spec(workload)["containers"]:
            if is_im_image(container["image"]):
                assert served(container) not in found, f"two runs of {served(container)}"
                found[served(container)] = (workload, container)
    return found


def env_value(container: dict[str, Any], name: str) -> dict[str, Any] | None:
    for item in container.get("env", []):
        if item["name"] == name:
            return item
    return None


def walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def container_ports(container: dict[str, Any]) -> dict[str, int]:
    return {
        p.get("name", str(p["containerPort"])): p["containerPort"]
        for p in container.get("ports", [])
    }


def expected_ports(service: str, config: dict[str, str]) -> set[int]:
    names = list(PUBLIC_PORTS.get(service, [])) + INTERNAL_PORTS.get(service, [])
    names += ADMIN_GRPC_PORTS.get(service, [])
    if service in GRPC_PORTS:
        names += [GRPC_PORTS[service], "grpc_health_port"]
    if service in HTTP_PROBED_GRPC_PORTS:
        names.append(HTTP_PROBED_GRPC_PORTS[service])
    return {setting(config, n) for n in names}


def probe_port(container: dict[str, Any], probe: dict[str, Any]) -> int:
    ports = container_ports(container)
    for kind in ("grpc", "httpGet", "tcpSocket"):
        if kind in probe:
            port = probe[kind]["port"]
            if isinstance(port, str):
                assert port in ports, f"probe names unknown port {port!r}"
                return ports[port]
            return port
    raise AssertionError(f"probe without a port: {probe}")


BASE_DOCS = resources(BASE)
BASE_CONFIG = effective_config(BASE)
SERVED = by_service(BASE_DOCS)


def docs_of(kind: str, docs: list[dict[str, Any]] = BASE_DOCS) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d.get("kind") == kind}


# ------------------------------------------------------------------ the YAML itself


def test_every_yaml_file_parses_into_kubernetes_objects() -> None:
    files = yaml_files()
    assert len(files) >= 10, files
    for path in files:
        docs = load_docs(path)
        assert docs, f"{path} is empty"
        for doc in docs:
            assert isinstance(doc, dict), path
            assert doc.get("apiVersion") and doc.get("kind"), f"{path}: {doc}"
            if doc["kind"] != "Kustomization":
                assert doc.get("metadata", {}).get("name"), f"{path}: object without a name"


def test_there_is_a_dev_and_a_production_overlay() -> None:
    assert {"dev", "production"} <= set(OVERLAYS)


@pytest.mark.parametrize("folder", kustomization_dirs(), ids=lambda p: str(p.relative_to(K8S)))
def test_kustomization_lists_only_files_that_exist(folder: Path) -> None:
    k = kustomization(folder)
    for entry in k.get("resources", []):
        path = (folder / entry).resolve()
        assert path.is_file() or (path / "kustomization.yaml").is_file(), f"missing {entry}"
    for patch in k.get("patches", []):
        if "path" in patch:
            assert (folder / patch["path"]).is_file(), f"missing patch {patch['path']}"
    for generator in k.get("configMapGenerator", []) + k.get("secretGenerator", []):
        for name in generator.get("envs", []):
            assert (folder / name).is_file(), f"missing env file {name}"
        for entry in generator.get("files", []):
            assert (folder / entry.split("=")[-1]).is_file(), f"missing file {entry}"


@pytest.mark.parametrize("folder", kustomization_dirs(), ids=lambda p: str(p.relative_to(K8S)))
def test_every_file_in_a_kustomization_folder_is_used(folder: Path) -> None:
    k = kustomization(folder)
    used = {Path(e).name for e in k.get("resources", []) if (folder / e).is_file()}
    used |= {p["path"] for p in k.get("patches", []) if "path" in p}
    for generator in k.get("configMapGenerator", []) + k.get("secretGenerator", []):
        used |= set(generator.get("envs", []))
        used |= {e.split("=")[-1] for e in generator.get("files", [])}
    present = {p.name for p in folder.iterdir() if p.is_file()} - {"kustomization.yaml"}
    assert present <= used, f"not in kustomization.yaml: {sorted(present - used)}"


def test_im_variables_everywhere_are_real_settings() -> None:
    names: set[str] = set()
    for path in yaml_files():
        for doc in load_docs(path):
            for node in walk(doc):
                if isinstance(node.get("env"), list):
                    names |= {item["name"] for item in node["env"]}
            if doc.get("kind") in ("ConfigMap", "Secret"):
                names |= set(doc.get("data", {})) | set(doc.get("stringData", {}))
    for folder in kustomization_dirs():
        k = kustomization(folder)
        for generator in k.get("configMapGenerator", []) + k.get("secretGenerator", []):
            names |= set(generator_values(folder, generator))
    im_names = {n for n in names if n.startswith("IM_")}
    assert {"IM_BUS_URL", "IM_CONNECTOR_ID", "IM_JWT_PUBLIC_KEY_FILE"} <= im_names
    assert im_names <= SETTINGS, f"not settings: {sorted(im_names - SETTINGS)}"


# ------------------------------------------------------------------ configuration


@pytest.mark.parametrize("folder", [BASE, *OVERLAYS.values()], ids=lambda p: p.name)
def test_shared_config_is_a_distributed_deployment(folder: Path) -> None:
    config = effective_config(folder)
    assert config["IM_HOST"] == "0.0.0.0"
    assert config["IM_AUTO_MIGRATE"] == "false"
    assert config["IM_BUS_URL"].startswith("kafka://")
    assert config["IM_REGISTRY_URL"].startswith("zk://")
    assert config["IM_KV_URL"].startswith("redis://")
    assert config["IM_MESSAGE_STORE_URL"].startswith("mongodb://")
    # The database URL carries a password: the Secret has it, never the ConfigMap.
    assert "IM_DATABASE_URL" not in config
    services = docs_of("Service", resources(folder))
    for name, port in (("user", "user_grpc_port"), ("group", "group_grpc_port")):
        host, _, addr_port = config[f"IM_{name.upper()}_SERVICE_ADDR"].rpartition(":")
        assert host in (name, f"{name}.im", f"{name}.im.svc.cluster.local")
        assert int(addr_port) == setting(config, port)
        assert int(addr_port) in {p["port"] for p in services[name]["spec"]["ports"]}
    # Every value is valid for its setting's type.
    Settings(**{k[3:].lower(): v for k, v in config.items()})


def test_the_example_secret_has_what_the_pods_read() -> None:
    example = {d["metadata"]["name"]: d for d in load_docs(K8S / "secret.example.yaml")}
    assert "IM_DATABASE_URL" in example[ENV_SECRET]["stringData"]
    assert set(example[JWT_SECRET]["stringData"]) == {"jwt-private.pem", "jwt-public.pem"}
    assert set(example[INTERNAL_TLS_SECRET]["stringData"]) == {"ca.crt", "tls.crt", "tls.key"}
    text = (K8S / "secret.example.yaml").read_text()
    assert "CHANGE-ME" in text and "PLACEHOLDER" in text and "secret manager" in text
    # Never applied by a kustomization: it would overwrite the real secrets.
    for folder in kustomization_dirs():
        k = kustomization(folder)
        listed = [*k.get("resources", []), *(p.get("path", "") for p in k.get("patches", []))]
        assert not [e for e in listed if e.endswith("secret.example.yaml")], folder


# ------------------------------------------------------------------ workloads


def test_every_service_and_the_migration_run_from_the_one_image() -> None:
    assert set(SERVED) == {*SERVICES, "db upgrade"}, sorted(SERVED)
    job, _ = SERVED["db upgrade"]
    assert job["kind"] == "Job"
    assert pod_spec(job)["restartPolicy"] in ("OnFailure", "Never")
    for name in SERVICES:
        workload, _ = SERVED[name]
        assert workload["kind"] == ("StatefulSet" if name == "connector" else "Deployment")


@pytest.mark.parametrize("service", sorted(SERVED))
def test_container_has_resources_security_and_config(service: str) -> None:
    workload, container = SERVED[service]
    spec = pod_spec(workload)
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind]), kind
    pod_security = spec.get("securityContext", {})
    security = container["securityContext"]
    assert security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is True
    assert security.get("runAsUser", pod_security.get("runAsUser", 0)) != 0
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert "ALL" in security["capabilities"]["drop"]
    assert spec.get("automountServiceAccountToken") is False
    # A read-only root filesystem needs a writable /tmp.
    tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
    volume = next(v for v in spec["volumes"] if v["name"] == tmp["name"])
    assert "emptyDir" in volume
    refs = container["envFrom"]
    assert {"configMapRef": {"name": CONFIG_MAP}} in refs
    assert {"secretRef": {"name": ENV_SECRET}} in refs
    # The Secret comes after the ConfigMap, so settings in it override the ConfigMap's.
    assert refs.index({"secretRef": {"name": ENV_SECRET}}) > refs.index(
        {"configMapRef": {"name": CONFIG_MAP}}
    )


@pytest.mark.parametrize("service", sorted(set(SERVICES) - NO_HEALTH_ENDPOINT))
def test_container_ports_and_probes_match_the_settings(service: str) -> None:
    _, container = SERVED[service]
    ports = set(container_ports(container).values())
    assert ports == expected_ports(service, BASE_CONFIG)
    for kind in ("readinessProbe", "livenessProbe"):
        assert probe_port(container, container[kind]) in ports, kind
    if "startupProbe" in container:
        assert probe_port(container, container["startupProbe"]) in ports


def test_services_without_health_endpoint() -> None:
    for service in NO_HEALTH_ENDPOINT:
        _, container = SERVED[service]
        assert not expected_ports(service, BASE_CONFIG)
        assert not container.get("ports"), f"{service} has a port now: probe it"


def test_gateway_probes_its_health_endpoints() -> None:
    _, container = SERVED["gateway"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


@pytest.mark.parametrize("service", sorted(GRPC_PORTS))
def test_grpc_services_use_native_grpc_probes_on_the_health_port(service: str) -> None:
    _, container = SERVED[service]
    # The kubelet's gRPC probes cannot present a client certificate: they ask the
    # plaintext health-only port, never the mutual-TLS one.
    health = setting(BASE_CONFIG, "grpc_health_port")
    assert health and health != setting(BASE_CONFIG, GRPC_PORTS[service])
    for kind in ("readinessProbe", "startupProbe", "livenessProbe"):
        # grpc probes take a number, not a port name
        assert container[kind]["grpc"]["port"] == health, kind
    # Liveness asks whether the event loop answers, not whether a dependency is up.
    assert container["livenessProbe"]["grpc"]["service"] == LIVENESS


def test_connector_is_a_statefulset_with_a_headless_service() -> None:
    workload, container = SERVED["connector"]
    assert workload["kind"] == "StatefulSet"
    service = docs_of("Service")[workload["spec"]["serviceName"]]
    assert service["spec"]["clusterIP"] == "None"
    labels = workload["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    # The kubelet's probes and Prometheus (pod discovery) reach the pod itself.
    pod_only = {setting(BASE_CONFIG, "grpc_health_port"), setting(BASE_CONFIG, "metrics_port")}
    ports = set(container_ports(container).values()) - pod_only
    assert {p["port"] for p in service["spec"]["ports"]} == ports
    # Its registry id is the pod's name (downward API), stable across restarts.
    fields = {
        item["name"]: item["valueFrom"]["fieldRef"]["fieldPath"]
        for item in container["env"]
        if "fieldRef" in item.get("valueFrom", {})
    }
    connector_id = env_value(container, "IM_CONNECTOR_ID")
    assert connector_id is not None
    if "value" in connector_id:
        var = re.fullmatch(r"\$\((\w+)\)", connector_id["value"])
        assert var and fields[var.group(1)] == "metadata.name"
    else:
        assert connector_id["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    # It advertises its stable DNS name under the headless Service (or its pod IP).
    advertise = env_value(container, "IM_ADVERTISE_HOST")
    assert advertise is not None
    if "value" in advertise:
        assert advertise["value"].startswith("$(POD_NAME).")
        assert f".{service['metadata']['name']}." in advertise["value"]
        for var in re.findall(r"\$\((\w+)\)", advertise["value"]):
            assert var in fields
    else:
        assert advertise["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"


def test_connector_gets_time_to_drain() -> None:
    connector = pod_spec(SERVED["connector"][0])["terminationGracePeriodSeconds"]
    assert connector >= 60
    for name in set(SERVICES) - {"connector"}:
        assert pod_spec(SERVED[name][0]).get("terminationGracePeriodSeconds", 30) < connector


def test_only_the_gateway_has_the_private_key() -> None:
    for name, (workload, container) in SERVED.items():
        private = env_value(container, "IM_JWT_PRIVATE_KEY_FILE")
        public = env_value(container, "IM_JWT_PUBLIC_KEY_FILE")
        assert (private is not None) == (name == "gateway"), name
        assert (public is not None) == (name in ("gateway", "connector")), name
        mounted = set()
        for volume in pod_spec(workload).get("volumes", []):
            if volume.get("secret", {}).get("secretName") != JWT_SECRET:
                continue
            mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
            assert mount.get("readOnly") is True
            items = volume["secret"].get("items")
            assert items, "mount the keys as listed items, so the connector gets only one"
            mounted |= {(f"{mount['mountPath']}/{i['path']}", i["key"]) for i in items}
        expected = set()
        if private is not None:
            expected.add((private["value"], "jwt-private.pem"))
        if public is not None:
            expected.add((public["value"], "jwt-public.pem"))
        assert mounted == expected, name


def test_services_select_workloads_and_their_ports() -> None:
    services = docs_of("Service")
    assert set(services) == {"gateway", "user", "group", "connector"}  # router: none
    assert services["gateway"]["spec"]["ports"][0]["port"] == setting(BASE_CONFIG, "gateway_port")
    for name, service in services.items():
        workload, container = SERVED[name]
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items(), name
        ports = container_ports(container)
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            assert target in ports or target in ports.values(), (name, target)


def test_disruption_budgets_cover_every_service() -> None:
    budgets = docs_of("PodDisruptionBudget")
    assert set(budgets) == set(SERVICES)
    for name, budget in budgets.items():
        labels = SERVED[name][0]["spec"]["template"]["metadata"]["labels"]
        assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()


def hpa_router_ceiling(docs: list[dict[str, Any]], config: dict[str, str]) -> None:
    partitions = setting(config, "topic_partitions")
    for doc in docs:
        if doc.get("kind") == "HorizontalPodAutoscaler" and doc["metadata"]["name"] == "router":
            if "maxReplicas" in doc.get("spec", {}):
                assert doc["spec"]["maxReplicas"] <= partitions, "routers > partitions"


def test_autoscalers_for_the_stateless_services() -> None:
    hpas = docs_of("HorizontalPodAutoscaler")
    assert set(hpas) == HPA_SERVICES  # connectors are scaled by hand
    for name, hpa in hpas.items():
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", name)
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        # The HPA owns the count: a replicas field would reset it on every apply.
        assert "replicas" not in SERVED[name][0]["spec"], name
    hpa_router_ceiling(BASE_DOCS, BASE_CONFIG)
    for folder in OVERLAYS.values():
        hpa_router_ceiling(patch_docs(folder), effective_config(folder))


@pytest.mark.parametrize("name", sorted(OVERLAYS))
def test_overlay_pins_the_image(name: str) -> None:
    images = kustomization(OVERLAYS[name]).get("images", [])
    ours = [i for i in images if i["name"] == IMAGE]
    assert len(ours) == 1 and ours[0].get("newTag") not in (None, "", "latest")
    if name == "production":
        assert ours[0]["newTag"] != "dev"


# Rendered overlays: tests/deploy/test_rendered_manifests.py (kubectl kustomize, then
# kubernetes-validate --strict).


# ------------------------------------------------------------------ Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        current += " " + line.removesuffix("\\").strip() if current else line.removesuffix("\\")
        if not line.endswith("\\"):
            joined.append(current.strip())
            current = ""
    result = []
    for line in joined:
        op, _, args = line.partition(" ")
        result.append((op.upper(), args.strip()))
    return result


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    return instructions[last_from:]


def test_dockerfile_base_image_is_pinned_and_multi_stage() -> None:
    instructions = dockerfile_instructions()
    args = dict(a.split("=", 1) for op, a in instructions if op == "ARG" and "=" in a)
    images = []
    for op, rest in instructions:
        if op == "FROM":
            image = rest.split()[0]
            images.append(re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image))
    assert len(images) >= 2, "builder + runtime stages"
    for image in images:
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", image), image
    assert any(
        op == "COPY" and "--from=builder" in a and "/opt/venv" in a for op, a in final_stage()
    )


def test_dockerfile_generates_the_protobuf_modules_before_installing() -> None:
    runs = " && ".join(a for op, a in dockerfile_instructions() if op == "RUN")
    assert "python -m im.protogen" in runs
    assert runs.index("python -m im.protogen") < runs.index("pip install --no-deps .")


def test_dockerfile_installs_no_dev_or_test_extras() -> None:
    for op, args in dockerfile_instructions():
        assert "[dev" not in args and "test-servers" not in args, (op, args)


def test_dockerfile_installs_the_locked_runtime_dependencies_only() -> None:
    """Dependencies come from the runtime lock at their hashes; the project's own install
    resolves nothing more."""
    installs = [a for op, a in dockerfile_instructions() if op == "RUN" and "pip install" in a]
    assert installs[0] == "pip install --require-hashes -r requirements/runtime.lock"
    assert all("--no-deps" in a for a in installs[1:]), installs


def test_dockerfile_runs_imctl_as_a_non_root_user() -> None:
    stage = final_stage()
    ops = dict(stage)  # the last of each instruction wins, as in Docker
    assert json.loads(ops["ENTRYPOINT"]) == ["imctl"]
    assert json.loads(ops["CMD"]) == ["serve", "gateway"]
    user = ops["USER"].split(":")[0]
    assert user not in ("root", "0")
    exposed = {int(p.split("/")[0]) for p in ops["EXPOSE"].split()}
    ports = {name for name in DEFAULTS if name.endswith("_port")}
    # 0: a listener that is off unless configured (the probes' health port)
    assert exposed == {DEFAULTS[name].default for name in ports} - {0}


def test_dockerignore_lets_in_exactly_what_the_build_copies() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "an allowlist: everything else stays out"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied = set()
    for op, args in dockerfile_instructions():
        if op == "COPY" and "--from" not in args:
            copied |= {s.rstrip("/") for s in args.split()[:-1]}
    assert copied == allowed
