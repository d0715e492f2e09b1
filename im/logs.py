"""Log lines with the context at hand: JSON for machines, text for a terminal.

``IM_LOG_FORMAT=json`` writes one JSON object per line: ``timestamp``, ``level``,
``logger``, ``message`` and the context fields that are set (``service``,
``request_id``, ``conn_id``, ``user_id``, ``device_id``, ``conversation_id``,
``msg_id``; ``trace_id`` and ``span_id`` inside a recorded span). Text, the default,
appends the same fields in brackets.

The context lives in a ``ContextVar``: it is set where a connection, a request or a
gRPC call is handled (``bind``, ``bound``, ``use``), and every task started from
there inherits it, so existing log calls gain the fields without being rewritten. A
field can also be given for one call: ``log.warning("...", extra={"msg_id": m})``.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from types import MappingProxyType, TracebackType
from typing import Any, Literal, TextIO

from im import tracing

CONTEXT_FIELDS = (
    "service",
    "request_id",
    "conn_id",
    "user_id",
    "device_id",
    "conversation_id",
    "msg_id",
)
SERVICES = frozenset({"gateway", "user", "group", "connector", "router"})

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_context: ContextVar[Mapping[str, Any]] = ContextVar("im_log_context", default=_EMPTY)
# The service of a process that runs one (``imctl serve router``); standalone runs all
# five and names each by the context its tasks were started in.
_process_service = ""
_handler: logging.Handler | None = None


# ------------------------------------------------------------------ context


def current() -> Mapping[str, Any]:
    """The context fields set here (never modify it: build a new one)."""
    return _context.get()


def with_fields(**fields: Any) -> Mapping[str, Any]:
    """The current context plus ``fields`` (empty values are left out), as a new
    mapping to hand to ``use`` later, e.g. once per connection."""
    merged = dict(_context.get())
    merged.update((k, v) for k, v in fields.items() if v is not None and v != "")
    return merged


def use(fields: Mapping[str, Any]) -> Token[Mapping[str, Any]]:
    """Make ``fields`` (from ``with_fields``) the context; one ``ContextVar.set``, for
    paths that run often (a connection's frames)."""
    return _context.set(fields)


def bind(**fields: Any) -> Token[Mapping[str, Any]]:
    """Add ``fields`` to the context until ``reset`` (or the end of the task)."""
    return _context.set(with_fields(**fields))


def reset(token: Token[Mapping[str, Any]]) -> None:
    _context.reset(token)


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    token = bind(**fields)
    try:
        yield
    finally:
        _context.reset(token)


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The context of one log record: the context at the call, ``extra`` fields, the
    service (a service's own logger names it: in standalone the router also runs
    connector code), and the current span when traces are recorded."""
    fields = dict(_context.get())
    attrs = record.__dict__
    for name in CONTEXT_FIELDS:
        if name in attrs:
            fields[name] = attrs[name]
    parts = record.name.split(".", 2)
    if len(parts) > 1 and parts[0] == "im" and parts[1] in SERVICES:
        fields["service"] = parts[1]
    elif "service" not in fields and _process_service:
        fields["service"] = _process_service
    if tracing.enabled:
        fields.update(tracing.current_ids())
    return fields


# --------------------------------------------------------------- formatters


class JsonFormatter(logging.Formatter):
    """One JSON object per line (newlines in messages and tracebacks are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in record_fields(record).items():
            out.setdefault(name, value)
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The classic line, then the context in brackets: ``[conn_id=3 user_id=7]``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        fields = record_fields(record)
        fields.pop("service", None)  # the logger name says it
        if not fields:
            return line
        return line + " [" + " ".join(f"{k}={v}" for k, v in fields.items()) + "]"


def setup(
    level: str = "INFO",
    fmt: Literal["text", "json"] = "text",
    service: str = "",
    stream: TextIO | None = None,
) -> None:
    """Send every logger's records (ours, uvicorn's, kafka's, kazoo's) to ``stream``
    (stderr) in ``fmt``. Called again, it replaces its own handler only."""
    global _handler, _process_service
    _process_service = service
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    root.setLevel(level.upper())
    _handler = handler
    # Warnings, an uncaught exception (a port taken at start-up) and errors Python can
    # only report (in __del__) would otherwise be bare text lines between the JSON ones.
    json_only = fmt == "json"
    logging.captureWarnings(json_only)
    sys.excepthook = _log_uncaught if json_only else sys.__excepthook__
    sys.unraisablehook = _log_unraisable if json_only else sys.__unraisablehook__


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    logging.getLogger("im").critical("uncaught exception: %r", exc, exc_info=(kind, exc, tb))


def _log_unraisable(unraisable: Any) -> None:
    logging.getLogger("im").warning(
        "%s: %r",
        unraisable.err_msg or "Exception ignored in",
        unraisable.object,
        exc_info=(unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback),
    )
