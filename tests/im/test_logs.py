"""Log lines: JSON parses line by line with the context fields at hand; text keeps the
classic line and appends the context."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from im import logs, tracing


@pytest.fixture
def json_log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger of the suite writing JSON lines into a buffer."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("im.test-logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield logger, buffer
    finally:
        logger.removeHandler(handler)


def lines(buffer: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_each_record_is_one_json_object_with_the_basics(json_log) -> None:  # type: ignore[no-untyped-def]
    logger, buffer = json_log
    logger.info("hello %s", "world")
    try:
        raise ValueError("multi\nline")
    except ValueError:
        logger.exception("it broke\nbadly")
    first, second = lines(buffer)  # two lines: newlines inside are escaped
    assert first["message"] == "hello world"
    assert first["level"] == "INFO"
    assert first["logger"] == "im.test-logs"
    assert first["timestamp"].endswith("+00:00")
    assert second["message"] == "it broke\nbadly"
    assert "ValueError: multi\nline" in second["exc_info"]


def test_the_context_at_hand_is_in_every_line(json_log) -> None:  # type: ignore[no-untyped-def]
    logger, buffer = json_log
    with logs.bound(service="connector", conn_id=7, user_id=42, device_id="phone"):
        logger.warning("slow client")
        # A field for one call only.
        logger.warning("dead letter", extra={"conversation_id": "d:1:2", "msg_id": 99})
    logger.info("outside")
    inside, one_call, outside = lines(buffer)
    assert inside | {"service": "connector", "conn_id": 7, "user_id": 42} == inside
    assert inside["device_id"] == "phone"
    assert (one_call["conversation_id"], one_call["msg_id"], one_call["conn_id"]) == (
        "d:1:2",
        99,
        7,
    )
    assert "conn_id" not in outside and "user_id" not in outside


async def test_tasks_inherit_the_context_they_were_started_in(json_log) -> None:  # type: ignore[no-untyped-def]
    logger, buffer = json_log

    async def work() -> None:
        logger.info("in a task")

    with logs.bound(request_id="req-1"):
        task = asyncio.get_running_loop().create_task(work())
    await task
    assert lines(buffer)[0]["request_id"] == "req-1"


def test_a_service_logger_names_its_service() -> None:
    record = logging.LogRecord("im.router.lanes", logging.INFO, __file__, 1, "behind", None, None)
    # Standalone: router code runs in a context a connector task set up (or the other
    # way round); the logger says whose line it is.
    with logs.bound(service="connector"):
        assert json.loads(logs.JsonFormatter().format(record))["service"] == "router"
        other = logging.LogRecord("im.bus.kafka", logging.INFO, __file__, 1, "x", None, None)
        assert json.loads(logs.JsonFormatter().format(other))["service"] == "connector"


def test_text_appends_the_context() -> None:
    record = logging.LogRecord("im.x", logging.INFO, __file__, 1, "hi", None, None)
    with logs.bound(service="gateway", request_id="abc", user_id=3):
        line = logs.TextFormatter().format(record)
    assert line.endswith("INFO im.x: hi [request_id=abc user_id=3]")
    plain = logs.TextFormatter().format(record)
    assert plain.endswith("INFO im.x: hi")


def test_lines_inside_a_recorded_span_name_the_trace(json_log) -> None:  # type: ignore[no-untyped-def]
    logger, buffer = json_log
    tracing.configure(SimpleSpanProcessor(InMemorySpanExporter()))
    try:
        span = tracing.start("work")
        with tracing.activate(span):
            logger.info("inside")
        logger.info("after")
    finally:
        tracing.disable()
    inside, after = lines(buffer)
    assert inside["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert inside["span_id"] == format(span.get_span_context().span_id, "016x")
    assert "trace_id" not in after


@pytest.fixture
def process_logging() -> Iterator[None]:
    """logs.setup changes the process's root logger and hooks: put them back."""
    root = logging.getLogger()
    level = root.level
    try:
        yield
    finally:
        logs.setup("INFO", "text")  # default hooks
        root.removeHandler(logs._handler)  # type: ignore[arg-type]
        logs._handler = None
        logs._process_service = ""
        root.setLevel(level)
        logging.captureWarnings(False)


@pytest.mark.usefixtures("process_logging")
def test_setup_replaces_only_its_own_handler() -> None:
    before = list(logging.getLogger().handlers)
    first, second = io.StringIO(), io.StringIO()
    logs.setup("INFO", "json", "router", stream=first)
    logs.setup("INFO", "json", "router", stream=second)
    logging.getLogger("im.adapters.test").info("from an adapter")
    assert first.getvalue() == ""
    line = json.loads(second.getvalue().splitlines()[-1])
    assert line["service"] == "router"  # the process's service, by default
    assert [h for h in logging.getLogger().handlers if h not in before] == [logs._handler]


@pytest.mark.usefixtures("process_logging")
def test_in_json_even_a_crash_is_a_json_line() -> None:
    stream = io.StringIO()
    logs.setup("INFO", "json", "gateway", stream=stream)
    try:
        raise OSError(98, "Address already in use")
    except OSError as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    (line,) = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert line["level"] == "CRITICAL" and "Address already in use" in line["exc_info"]
    logs.setup("INFO", "text", stream=io.StringIO())
    assert sys.excepthook is sys.__excepthook__
