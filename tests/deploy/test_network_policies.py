"""The deployment's network surface (deploy/k8s): internal gRPC binds and answers apart
from the public listeners, requires the suite's certificate, and NetworkPolicies let
only the suite's own pods reach it while the public ports stay open."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.deploy.test_manifests import (
    BASE_CONFIG,
    BASE_DOCS,
    DEFAULTS,
    GRPC_PORTS,
    HTTP_PROBED_GRPC_PORTS,
    INTERNAL_PORTS,
    INTERNAL_TLS_SECRET,
    MESSAGE_SENDER_LABELS,
    OVERLAYS,
    PUBLIC_PORTS,
    SERVED,
    SUITE_LABELS,
    docs_of,
    effective_config,
    pod_spec,
    setting,
)

POLICIES = docs_of("NetworkPolicy")


def labels_of(service: str) -> dict[str, str]:
    return SERVED[service][0]["spec"]["template"]["metadata"]["labels"]


def selects(policy: dict[str, Any], labels: dict[str, str]) -> bool:
    wanted = policy["spec"]["podSelector"].get("matchLabels", {})
    return wanted.items() <= labels.items()


def rules(service: str) -> list[dict[str, Any]]:
    """The ingress rules that apply to a service's pods."""
    found = []
    for policy in POLICIES.values():
        if selects(policy, labels_of(service)):
            assert policy["spec"]["policyTypes"] == ["Ingress"], policy["metadata"]["name"]
            found.extend(policy["spec"].get("ingress", []))
    return found


def allowed_from(service: str, port: int) -> list[list[dict[str, Any]] | None]:
    """For each rule opening ``port`` on the service: its sources (None: anyone)."""
    return [
        rule.get("from")
        for rule in rules(service)
        if any(p["port"] == port and p.get("protocol", "TCP") == "TCP" for p in rule["ports"])
    ]


def internal_ports(config: dict[str, str]) -> dict[str, int]:
    ports = {**GRPC_PORTS, **HTTP_PROBED_GRPC_PORTS}
    return {service: setting(config, name) for service, name in ports.items()}


@pytest.mark.parametrize("folder", [None, *OVERLAYS.values()], ids=["base", *OVERLAYS])
def test_internal_and_public_listeners_are_separate_settings(folder: Path | None) -> None:
    config = BASE_CONFIG if folder is None else effective_config(folder)
    # Both on the pod IP (other pods dial it); the NetworkPolicies decide who gets in.
    assert config["IM_HOST"] == "0.0.0.0"
    assert config["IM_INTERNAL_HOST"] == "0.0.0.0"
    # Safe by default: mutual TLS on, no escape hatch, no reflection.
    for name in ("IM_INTERNAL_CA_FILE", "IM_INTERNAL_CERT_FILE", "IM_INTERNAL_KEY_FILE"):
        assert config[name].startswith("/etc/im/internal-tls/"), name
    assert setting(config, "internal_insecure") is False
    assert setting(config, "grpc_reflection") is False
    public = {setting(config, n) for names in PUBLIC_PORTS.values() for n in names}
    internal = set(internal_ports(config).values())
    assert not public & internal
    assert setting(config, "grpc_health_port") not in public | internal


@pytest.mark.parametrize("service", sorted(set(GRPC_PORTS) | {"gateway"}))
def test_every_service_mounts_the_internal_certificate(service: str) -> None:
    workload, container = SERVED[service]
    folder = str(Path(BASE_CONFIG["IM_INTERNAL_CERT_FILE"]).parent)
    volumes = {
        v["name"]: v["secret"]
        for v in pod_spec(workload)["volumes"]
        if v.get("secret", {}).get("secretName") == INTERNAL_TLS_SECRET
    }
    assert len(volumes) == 1, volumes
    ((name, secret),) = volumes.items()
    mount = next(m for m in container["volumeMounts"] if m["name"] == name)
    assert mount["mountPath"] == folder and mount.get("readOnly") is True
    assert {i["path"] for i in secret["items"]} == {"ca.crt", "tls.crt", "tls.key"}
    assert secret["defaultMode"] & 0o007 == 0  # not world-readable


def test_everything_not_allowed_is_refused() -> None:
    deny = [p for p in POLICIES.values() if not p["spec"].get("ingress")]
    assert any(p["spec"]["podSelector"].get("matchLabels") == SUITE_LABELS for p in deny)
    for service in SERVED:
        assert labels_of(service).items() >= SUITE_LABELS.items(), service


@pytest.mark.parametrize("service", sorted(GRPC_PORTS))
def test_internal_grpc_answers_only_the_suites_pods(service: str) -> None:
    port = internal_ports(BASE_CONFIG)[service]
    sources = allowed_from(service, port)
    assert sources, f"{service}'s gRPC port {port} is not reachable by the suite"
    for source in sources:
        assert source, f"{service}'s gRPC port {port} is open to anyone"
        for peer in source:
            # Pods of this namespace (no namespaceSelector, no ipBlock), of the suite.
            assert set(peer) == {"podSelector"}, peer
            assert peer["podSelector"].get("matchLabels", {}).items() >= SUITE_LABELS.items()


def test_the_gateways_grpc_answers_the_suite_and_labelled_senders_only() -> None:
    port = internal_ports(BASE_CONFIG)["gateway"]
    sources = allowed_from("gateway", port)
    assert sources, f"the gateway's gRPC port {port} is not reachable"
    wanted = [SUITE_LABELS, MESSAGE_SENDER_LABELS]
    for source in sources:
        assert source, f"the gateway's gRPC port {port} is open to anyone"
        for peer in source:
            # Pods of this namespace only (no namespaceSelector, no ipBlock).
            assert set(peer) == {"podSelector"}, peer
            labels = peer["podSelector"].get("matchLabels", {})
            assert any(labels.items() >= w.items() for w in wanted), peer
    peers = [peer["podSelector"]["matchLabels"] for s in sources for peer in s or []]
    assert SUITE_LABELS in peers and MESSAGE_SENDER_LABELS in peers
    service = docs_of("Service")["gateway"]
    assert port in [p["port"] for p in service["spec"]["ports"]]


def test_the_admin_grpc_port_answers_only_the_suites_pods() -> None:
    sources = allowed_from("gateway", setting(BASE_CONFIG, "admin_grpc_port"))
    assert sources and all(sources), "the admin gRPC port must not be open to anyone"
    for source in sources:
        for peer in source or []:
            assert set(peer) == {"podSelector"}, peer
            assert peer["podSelector"].get("matchLabels", {}).items() >= SUITE_LABELS.items()


@pytest.mark.parametrize(
    ("service", "port"), [(s, n) for s, names in PUBLIC_PORTS.items() for n in names]
)
def test_public_ports_are_open(service: str, port: str) -> None:
    assert None in allowed_from(service, setting(BASE_CONFIG, port))


@pytest.mark.parametrize("service", sorted(GRPC_PORTS))
def test_probes_reach_the_health_port(service: str) -> None:
    assert None in allowed_from(service, setting(BASE_CONFIG, "grpc_health_port"))


def test_no_policy_opens_a_port_the_suite_does_not_serve() -> None:
    served = {setting(BASE_CONFIG, name) for name in DEFAULTS if name.endswith("_port")}
    for policy in POLICIES.values():
        for rule in policy["spec"].get("ingress", []):
            assert rule.get("ports"), f"{policy['metadata']['name']}: a rule for every port"
            assert {p["port"] for p in rule["ports"]} <= served, policy["metadata"]["name"]
    assert POLICIES and all(p in BASE_DOCS for p in POLICIES.values())


@pytest.mark.parametrize("service", sorted(INTERNAL_PORTS))
def test_metrics_are_scraped_off_the_public_ports_from_monitoring_only(service: str) -> None:
    (name,) = INTERNAL_PORTS[service]
    port = setting(BASE_CONFIG, name)
    public = {setting(BASE_CONFIG, n) for names in PUBLIC_PORTS.values() for n in names}
    assert port not in public | set(internal_ports(BASE_CONFIG).values())
    sources = allowed_from(service, port)
    assert sources and all(sources), f"{service}'s metrics port is open to anyone"
    for source in sources:
        assert source is not None
        assert all(set(peer) == {"namespaceSelector"} for peer in source), source
    template = SERVED[service][0]["spec"]["template"]
    assert template["metadata"]["annotations"]["prometheus.io/port"] == str(port)
