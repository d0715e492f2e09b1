"""What the gateway's HTTP layer records: Prometheus request counts and latency per
route template, and a last-resort 500 problem for any unhandled exception."""

from __future__ import annotations

import logging
import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.gateway.problems import problem

log = logging.getLogger("im.gateway")


class Metrics:
    """Request counts and latency by route template (not raw path: bounded labels)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # A registry per app (or per standalone suite, shared with its other services):
        # several gateways in one process (tests) do not collide.
        self.registry = registry if registry is not None else CollectorRegistry()
        self.requests = Counter(
            "im_gateway_http_requests_total",
            "HTTP requests.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "im_gateway_http_request_duration_seconds",
            "HTTP request latency.",
            ["method", "route"],
            registry=self.registry,
        )


def _route_label(scope: Scope) -> str:
    """The route template (bounded label cardinality), never the raw path."""
    route = scope.get("route")  # set by FastAPI's own routes
    if route is None:
        # Plain Starlette routes (/docs, /openapi.json) do not record themselves.
        app = scope.get("app")
        for candidate in getattr(app, "routes", ()):
            if candidate.matches(scope)[0] is Match.FULL:
                route = candidate
                break
    return getattr(route, "path", None) or "unmatched"


class ObserveMiddleware:
    """Records metrics, and turns any unhandled exception into a 500 problem without
    a traceback in the answer (it goes to the log, once)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if response_started:
                raise  # too late for a problem body; let the server close the stream
            await problem(500, "internal", "internal error")(scope, receive, send_wrapper)
        finally:
            label = _route_label(scope)
            method = scope.get("method", "")
            self.metrics.requests.labels(method, label, str(status)).inc()
            self.metrics.latency.labels(method, label).observe(time.perf_counter() - started)
