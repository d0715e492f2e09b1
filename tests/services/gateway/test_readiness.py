"""The gateway's readiness follows its view of the registry: without a live session
the connectors it would hand out at login may be long gone."""

from __future__ import annotations

from tests.services.gateway.conftest import Suite


async def test_not_ready_without_a_live_registry_view(suite: Suite, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    assert (await suite.client.get("/readyz")).status_code == 200
    monkeypatch.setattr(suite.registry, "healthy", lambda: False)  # the session is lost
    r = await suite.client.get("/readyz")
    assert r.status_code == 503
    checks = r.json()["checks"]
    assert checks["registry"].startswith("no live registry session")
    # The cached view still lists a connector and a router: only this check says no.
    assert checks["connectors"] == checks["routers"] == "ok"
    monkeypatch.undo()
    assert (await suite.client.get("/readyz")).status_code == 200
