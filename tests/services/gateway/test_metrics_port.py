"""Where the gateway serves /metrics: on the API port in standalone, on an internal
port only in distributed mode (or when configured so)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import pytest

from im.config import Settings
from services.gateway.app import metrics_on_api
from tests.services.gateway.helpers import assert_problem

if TYPE_CHECKING:
    from .conftest import Suite

INTERNAL = {"gateway_metrics": "internal", "gateway_metrics_port": 0}
# A distributed deployment's settings; the suite's backends stay in-process.
DISTRIBUTED = {"registry_url": "zk://127.0.0.1:2181/im", "gateway_metrics_port": 0}


def test_auto_means_api_port_in_standalone_only() -> None:
    assert metrics_on_api(Settings())
    assert not metrics_on_api(Settings(registry_url="zk://zk:2181/im"))
    assert not metrics_on_api(Settings(gateway_metrics="internal"))
    assert metrics_on_api(Settings(registry_url="zk://zk:2181/im", gateway_metrics="api"))


@pytest.mark.parametrize("settings_overrides", [INTERNAL, DISTRIBUTED], ids=["internal", "auto"])
async def test_metrics_leave_the_public_port(suite: Suite) -> None:
    assert_problem(await suite.client.get("/metrics"), 404, "not_found")
    await suite.client.get("/healthz")
    url = suite.gateway.endpoints()["metrics"]
    assert url.startswith(f"http://{suite.settings.internal_host}:")
    assert not url.startswith(suite.gateway.endpoints()["http"])
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.get(url)
    assert r.status_code == 200
    assert 'route="/healthz",status="200"' in r.text
    assert 'route="unmatched",status="404"' in r.text  # the refused /metrics on the API


async def test_standalone_keeps_metrics_on_the_api_port(suite: Suite) -> None:
    assert "metrics" not in suite.gateway.endpoints()
    r = await suite.client.get("/metrics")
    assert r.status_code == 200 and "im_gateway_http_requests_total" in r.text


@pytest.mark.parametrize("settings_overrides", [INTERNAL])
async def test_metrics_port_stops_with_the_gateway(suite: Suite) -> None:
    url = suite.gateway.endpoints()["metrics"]
    await suite.gateway.stop()
    async with httpx.AsyncClient(timeout=5) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(url)
