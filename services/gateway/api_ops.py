"""Operations routes of the gateway: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.gateway.deps import GatewayDep
from services.gateway.models import ReadyStatus

router = APIRouter()


@router.get("/healthz", tags=["operations"])
async def healthz() -> dict[str, str]:
    """Liveness: the process serves HTTP."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=ReadyStatus,
    tags=["operations"],
    responses={503: {"model": ReadyStatus, "description": "Not ready"}},
)
async def readyz(gateway: GatewayDep) -> JSONResponse:
    """Readiness: user, group, the message store, a live registry view, a connector,
    a serving router, the bus and presence."""
    ok, checks = await gateway.readiness()
    body = ReadyStatus(status="ready" if ok else "not_ready", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


# On the API port only when configured so (create_app): else on an internal port.
metrics_router = APIRouter()


@metrics_router.get("/metrics", tags=["operations"], include_in_schema=False)
async def metrics_endpoint(request: Request) -> Response:
    """Prometheus text exposition."""
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
