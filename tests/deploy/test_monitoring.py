"""deploy/monitoring: the scrape configs find every service's metrics port, the alert
rules and the Grafana dashboard query only metrics the suite exports (or Prometheus's
own ``up``), every alert is explained in docs/operations.md. ``promtool`` checks the
rules too where it is installed (Debian: apt-get install prometheus)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from im.standalone import SERVICES
from tests.deploy.test_manifests import (
    BASE,
    BASE_CONFIG,
    ROOT,
    SERVED,
    container_ports,
    kustomization,
    metrics_port,
)

MONITORING = ROOT / "deploy" / "monitoring"
OPERATIONS = ROOT / "docs" / "operations.md"

# What the services export (name: type); counters carry their _total.
SUITE_METRICS = {
    "im_connector_connections": "gauge",
    "im_connector_frames_total": "counter",
    "im_connector_send_ack_seconds": "histogram",
    "im_connector_deliveries_total": "counter",
    "im_connector_retransmits_total": "counter",
    "im_connector_kicks_total": "counter",
    "im_connector_outbox_bytes": "gauge",
    "im_router_records_total": "counter",
    "im_router_batch_size": "histogram",
    "im_router_store_seconds": "histogram",
    "im_router_delivery_seconds": "histogram",
    "im_router_consumer_lag": "gauge",
    "im_router_seq_conflicts_total": "counter",
    "im_grpc_server_handled_total": "counter",
    "im_grpc_server_handling_seconds": "histogram",
    "im_gateway_http_requests_total": "counter",
    "im_gateway_http_request_duration_seconds": "histogram",
}
# prometheus_client's default process and platform collectors, in every process.
COLLECTOR_METRICS = {
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
    "python_gc_objects_collected_total",
    "python_gc_objects_uncollectable_total",
    "python_gc_collections_total",
    "python_info",
}
PROMETHEUS_SERIES = {"up"}  # written by Prometheus for every target it scrapes
# The labels alerts.yaml and dashboard.json use that the scrape configs must add.
TARGET_LABELS = {"namespace", "pod", "component"}
# One alert for each condition operations.md explains.
ALERTS = {
    "IMRouterConsumerLagGrowing",
    "IMDeliveryLatencyHigh",
    "IMRetransmitsHigh",
    "IMNoServingRouter",
    "IMNoConnector",
    "IMConnectorConnectionsZero",
    "IMDeadLetters",
}


def series_names() -> set[str]:
    names = set(COLLECTOR_METRICS | PROMETHEUS_SERIES)
    for name, kind in SUITE_METRICS.items():
        suffixes = ("_bucket", "_sum", "_count") if kind == "histogram" else ("",)
        names |= {name + s for s in suffixes}
    return names


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects (a light parse: enough for ours)."""
    expr = re.sub(r"\$\{?\w+\}?", "", expr)  # Grafana variables
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)  # label matchers, ranges
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    words = re.findall(r"(?<![\w:.])[A-Za-z_:][\w:]*(?![\w:])(?!\s*\()", expr)
    return set(words) - {"and", "or", "unless", "offset", "bool", "inf", "nan", "Inf", "NaN"}


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((MONITORING / "alerts.yaml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    return json.loads((MONITORING / "dashboard.json").read_text())


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def test_expression_parsing_finds_the_series() -> None:
    expr = (
        'deriv(sum by (namespace) (max by (topic, partition) (x_total{a="b c"}))[15m:1m]) > 0'
        ' and absent(up{component="router"} == 1) or rate(y_bucket[$__rate_interval]) > 1e3'
    )
    assert metric_names(expr) == {"x_total", "up", "y_bucket"}


# ------------------------------------------------------------------ alerts


def test_alert_rules_cover_the_operational_conditions() -> None:
    assert {rule["alert"] for rule in rules()} == ALERTS


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r["alert"])
def test_alert_queries_known_metrics_and_is_documented(rule: dict[str, Any]) -> None:
    names = metric_names(rule["expr"])
    assert names and names <= series_names(), names - series_names()
    assert rule["labels"]["severity"] in ("critical", "warning")
    assert {"summary", "description", "runbook"} <= set(rule["annotations"])
    anchor = rule["alert"].lower()
    assert rule["annotations"]["runbook"] == f"docs/operations.md#{anchor}"
    assert f"\n### {rule['alert']}\n" in OPERATIONS.read_text(), "explain it in operations.md"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_accepts_the_rules() -> None:
    out = subprocess.run(
        ["promtool", "check", "rules", str(MONITORING / "alerts.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


# ------------------------------------------------------------------ dashboard


def test_dashboard_is_grafana_json_over_a_chosen_prometheus() -> None:
    board = dashboard()
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 36
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert "namespace" in variables
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        box = panel["gridPos"]
        assert box["x"] + box["w"] <= 24, panel["title"]
        covered = {
            (x, y)
            for x in range(box["x"], box["x"] + box["w"])
            for y in range(box["y"], box["y"] + box["h"])
        }
        assert not covered & cells, f"{panel['title']} overlaps another panel"
        cells |= covered
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"
            assert panel["targets"], panel["title"]


def test_dashboard_queries_known_metrics_of_the_chosen_namespace() -> None:
    used: set[str] = set()
    for expr in dashboard_exprs():
        names = metric_names(expr)
        assert names and names <= series_names(), (expr, names - series_names())
        selectors = re.findall(r"[A-Za-z_:][\w:]*\{[^}]*\}|[A-Za-z_:][\w:]*\[", expr)
        assert all('namespace="$namespace"' in s for s in selectors), expr
        used |= names
    # Every metric the suite exports is on the board.
    used_bases = {re.sub(r"_(bucket|sum|count)$", "", n) for n in used}
    assert set(SUITE_METRICS) <= used_bases, set(SUITE_METRICS) - used_bases


# ------------------------------------------------------------------ scrape configs


def test_pod_monitor_selects_every_service_on_its_metrics_port() -> None:
    (monitor,) = yaml.safe_load_all((MONITORING / "podmonitor.yaml").read_text())
    assert (monitor["apiVersion"], monitor["kind"]) == ("monitoring.coreos.com/v1", "PodMonitor")
    assert monitor["metadata"]["namespace"] == kustomization(BASE)["namespace"]
    wanted = monitor["spec"]["selector"]["matchLabels"]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    for service in SERVICES:
        workload, container = SERVED[service]
        template = workload["spec"]["template"]["metadata"]
        assert wanted.items() <= template["labels"].items(), service
        assert container_ports(container)[endpoint["port"]] == metrics_port(service, BASE_CONFIG)
        assert template["annotations"]["prometheus.io/path"] == endpoint["path"]
    added = {r["targetLabel"] for r in endpoint["relabelings"]}
    assert TARGET_LABELS <= added | {"namespace", "pod"}  # the Operator adds those two


def test_plain_prometheus_job_keeps_annotated_metrics_ports() -> None:
    doc = yaml.safe_load((MONITORING / "prometheus-scrape.yaml").read_text())
    (job,) = doc["scrape_configs"]
    (discovery,) = job["kubernetes_sd_configs"]
    assert discovery["role"] == "pod"
    assert discovery["namespaces"]["names"] == [kustomization(BASE)["namespace"]]
    keeps = {
        tuple(r["source_labels"]): r["regex"]
        for r in job["relabel_configs"]
        if r.get("action") == "keep"
    }
    assert keeps == {
        ("__meta_kubernetes_pod_annotation_prometheus_io_scrape",): "true",
        ("__meta_kubernetes_pod_container_port_name",): "metrics",
    }
    added = {r["target_label"] for r in job["relabel_configs"] if "target_label" in r}
    assert TARGET_LABELS | {"__metrics_path__"} <= added
    for service in SERVICES:
        assert "metrics" in container_ports(SERVED[service][1]), service
