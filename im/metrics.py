"""Prometheus metrics shared by every service.

One ``MetricsRegistry`` per process in distributed mode (served on ``IM_METRICS_PORT``
by ``MetricsServer``; the gateway serves its own on ``IM_GATEWAY_METRICS_PORT``), one
per suite in standalone mode (the gateway's ``/metrics`` serves it): several suites in
one process (tests) never register a name twice.

Services count in plain integers and ``Distribution``s on their stats objects; a
collector per service turns those into metric families at scrape time, so the hot
paths pay an integer addition or a bisect, never a lock or a label lookup. Scrapes run
on the event loop (the HTTP servers here are uvicorn in the loop), so collectors may
read the services' state without locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from bisect import bisect_left
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any

import grpc
import uvicorn
from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    make_asgi_app,
)
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from im.httpserve import QuietServer, bind_socket

log = logging.getLogger("im.metrics")

# Latency buckets (seconds) for everything from an in-process call to a publish that
# waits out a broker failover (publish_timeout is 10 s).
SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STARTUP_TIMEOUT = 10.0
SHUTDOWN_GRACE = 5.0


class Distribution:
    """A histogram for hot paths, exported by a collector at scrape time.

    ``observe`` is a bisect and two additions (~0.1 µs); prometheus_client's
    ``Histogram.observe`` takes a lock and costs ~0.7 µs, which per message adds up.
    Meant for one thread (the event loop) and a collector that runs on it."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float] = SECONDS) -> None:
        self.bounds = tuple(sorted(bounds))
        self.counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound
        self.total = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound falls in that bucket (Prometheus' le).
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, float]]:
        """(le, observations <= le) per bound and +Inf, as Prometheus exposes them."""
        out = []
        running = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append(("+Inf" if bound == float("inf") else _le(bound), float(running)))
        return out


def _le(bound: float) -> str:
    return floatToGoString(bound)


def histogram_family(
    name: str,
    documentation: str,
    series: Iterable[tuple[Sequence[str], Distribution]],
    labels: Sequence[str] = (),
) -> HistogramMetricFamily:
    """One histogram family from ``Distribution``s, one per label value tuple."""
    family = HistogramMetricFamily(name, documentation, labels=list(labels))
    for values, dist in series:
        buckets = dist.cumulative()
        family.add_metric(list(values), buckets, dist.total)
    return family


class StatsCollector(Collector):
    """A collector whose families come from a function that reads a service's stats.

    ``describe`` returns what a scrape would, so the registry refuses a second
    collector with the same names (two connectors on one registry) at registration."""

    def __init__(self, families: Callable[[], Iterable[Any]]) -> None:
        self._families = families

    def collect(self) -> Iterable[Any]:
        return list(self._families())

    def describe(self) -> Iterable[Any]:
        return self.collect()


class MetricsRegistry:
    """The metrics of one process (distributed) or one standalone suite: a
    ``CollectorRegistry`` with the process and Python collectors, what the services
    register, and the gRPC server metrics every gRPC server of it shares."""

    def __init__(self, process_collectors: bool = True) -> None:
        self.registry = CollectorRegistry()
        if process_collectors:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        self._grpc: GrpcServerMetrics | None = None

    def register(self, collector: Collector) -> None:
        self.registry.register(collector)

    def collect_stats(self, families: Callable[[], Iterable[Any]]) -> StatsCollector:
        """Register a collector that builds its families from ``families()`` per scrape."""
        collector = StatsCollector(families)
        self.register(collector)
        return collector

    def grpc_server(self) -> GrpcServerMetrics:
        """The interceptor that counts every call of the gRPC servers sharing this
        registry (created on first use: processes without gRPC servers do not show
        empty families)."""
        if self._grpc is None:
            self._grpc = GrpcServerMetrics(self.registry)
        return self._grpc


# ------------------------------------------------------------------- gRPC servers

_Behavior = Callable[..., Any]


class GrpcServerMetrics(grpc.aio.ServerInterceptor):
    """Counts gRPC server calls by service, method, type and status code, and times
    them: ``im_grpc_server_handled_total`` and ``im_grpc_server_handling_seconds``.

    Handlers are wrapped once per registered method and kept (the server's generic
    handlers return the same object for a method every time); label children are bound
    once per method and code, so a call costs two clock reads, a counter and a
    histogram observation."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.handled = Counter(
            "im_grpc_server_handled_total",
            "gRPC calls completed by the server, by status code.",
            ["grpc_service", "grpc_method", "grpc_type", "grpc_code"],
            registry=registry,
        )
        self.seconds = Histogram(
            "im_grpc_server_handling_seconds",
            "Time from a gRPC call's arrival to its completion by the server.",
            ["grpc_service", "grpc_method", "grpc_type"],
            buckets=SECONDS,
            registry=registry,
        )
        # id(original handler) -> (original, wrapped); the original is kept so its id
        # is never reused while the entry lives.
        self._wrapped: dict[int, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:  # unknown method: grpc answers UNIMPLEMENTED itself
            return handler
        entry = self._wrapped.get(id(handler))
        if entry is None or entry[0] is not handler:
            entry = (handler, self._wrap(handler_call_details.method, handler))
            self._wrapped[id(handler)] = entry
        return entry[1]

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        service, _, name = method.lstrip("/").rpartition("/")
        if handler.unary_unary is not None:
            kind, behavior = "unary", handler.unary_unary
            factory = grpc.unary_unary_rpc_method_handler
        elif handler.unary_stream is not None:
            kind, behavior = "server_stream", handler.unary_stream
            factory = grpc.unary_stream_rpc_method_handler
        elif handler.stream_unary is not None:
            kind, behavior = "client_stream", handler.stream_unary
            factory = grpc.stream_unary_rpc_method_handler
        else:
            kind, behavior = "bidi_stream", handler.stream_stream
            factory = grpc.stream_stream_rpc_method_handler
        timed = self._timed(behavior, _Outcome(self, service or "unknown", name, kind))
        if timed is None:
            return handler  # a synchronous handler (none of ours): left as it is
        return factory(
            timed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    @staticmethod
    def _timed(behavior: _Behavior, outcome: _Outcome) -> _Behavior | None:
        """The behavior, of the same kind (grpc.aio tells coroutines from async
        generators by the function), recording its outcome."""
        if inspect.isasyncgenfunction(behavior):

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator:
                started = time.perf_counter()
                code = grpc.StatusCode.UNKNOWN
                try:
                    async for item in behavior(request, context):
                        yield item
                    code = _status(context, grpc.StatusCode.OK)
                except BaseException as exc:
                    code = _failure(context, exc)
                    raise
                finally:
                    outcome.record(code, started)

            return stream
        if inspect.iscoroutinefunction(behavior):

            async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
                started = time.perf_counter()
                code = grpc.StatusCode.UNKNOWN
                try:
                    response = await behavior(request, context)
                    code = _status(context, grpc.StatusCode.OK)
                    return response
                except BaseException as exc:
                    code = _failure(context, exc)
                    raise
                finally:
                    outcome.record(code, started)

            return call
        return None


class _Outcome:
    """The label children of one method, bound once."""

    __slots__ = ("_handled", "_labels", "_metrics", "_seconds")

    def __init__(self, metrics: GrpcServerMetrics, service: str, method: str, kind: str) -> None:
        self._metrics = metrics
        self._labels = (service, method, kind)
        self._seconds = metrics.seconds.labels(*self._labels)
        self._handled: dict[grpc.StatusCode, Any] = {}

    def record(self, code: grpc.StatusCode, started: float) -> None:
        self._seconds.observe(time.perf_counter() - started)
        child = self._handled.get(code)
        if child is None:
            child = self._handled[code] = self._metrics.handled.labels(*self._labels, code.name)
        child.inc()


def _status(context: grpc.aio.ServicerContext, default: grpc.StatusCode) -> grpc.StatusCode:
    """The code the handler set (``set_code`` or ``abort``), else ``default``."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):  # some grpc versions hand back the numeric code
        for candidate in grpc.StatusCode:
            if candidate.value[0] == code:
                return candidate
    return default


def _failure(context: grpc.aio.ServicerContext, exc: BaseException) -> grpc.StatusCode:
    # Cancelled: the call's task; GeneratorExit: a stream the caller stopped reading.
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return grpc.StatusCode.CANCELLED
    # context.abort raises AbortError after setting the code; anything else is a bug
    # in the handler, which grpc answers UNKNOWN.
    return _status(context, grpc.StatusCode.UNKNOWN)


# ----------------------------------------------------------------- HTTP exposition


class MetricsServer:
    """Prometheus exposition of a registry on its own address, served by uvicorn in
    this event loop (so collectors run on the loop and read service state safely).

    A port that cannot be bound is logged and skipped: metrics must not keep a service
    from serving (several processes on one test host would clash on the default)."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry, owner: str) -> None:
        self._host = host
        self._wanted = port
        self._registry = registry
        self._owner = owner  # for the log: whose metrics these are
        self._server: QuietServer | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = 0

    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}/metrics"

    async def start(self) -> None:
        try:
            sock = bind_socket(self._host, self._wanted)
        except OSError as exc:
            where = f"{self._host}:{self._wanted}"
            log.error("%s /metrics not served: %s: %s", self._owner, where, exc)
            return
        config = uvicorn.Config(
            make_asgi_app(registry=self._registry),
            log_level="warning",
            access_log=False,
            lifespan="off",
            server_header=False,
        )
        self._server = QuietServer(config)
        name = f"{self._owner}-metrics"
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name=name)
        deadline = asyncio.get_running_loop().time() + STARTUP_TIMEOUT
        while not self._server.started and not self._task.done():
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.01)
        if not self._server.started:
            sock.close()
            await self.stop()
            log.error("%s /metrics server did not start", self._owner)
            return
        self.port = sock.getsockname()[1]
        log.info("%s metrics on %s", self._owner, self.url())

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), SHUTDOWN_GRACE)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        except Exception:
            log.exception("%s metrics server failed", self._owner)
        self._server = None
        self._task = None
        self.port = 0
