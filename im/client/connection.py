"""One live socket to a connector (docs/protocol.md), over TCP or WebSocket.

``Connection.open`` authenticates, then a reader task dispatches frames: SendAcks and
send Errors resolve the pending ``send`` call, Delivers are deduplicated by msg_id and
queued as events (Message, Receipt, Kick; Typing and Presence signals, and the Error
refusing a Typing), and DeliverAcks are batched. A heartbeat task
pings at the interval from AuthOk and gives up on a connector silent for three of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Literal

from im.client.errors import (
    AuthError,
    ConnectionClosed,
    SendError,
    SendTimeout,
    error_code_name,
    kick_reason_name,
)
from im.client.transports import _Link, _TcpLink, _WsLink
from im.client.transports import tls_context as tls_context  # callers build ``tls=`` here
from im.protocol import DEFAULT_MAX_FRAME, ProtocolError
from im.v1 import wire_pb2

log = logging.getLogger("im.client")

# Least wait before sending a Send the connector refused as BUSY again.
BUSY_RETRY_MIN_MS = 50

Transport = Literal["tcp", "ws"]
Event = (
    wire_pb2.Message
    | wire_pb2.Receipt
    | wire_pb2.Kick
    | wire_pb2.Typing
    | wire_pb2.Presence
    | wire_pb2.Error
    | wire_pb2.ConversationSettingsChanged
)
MAX_TYPING_REQUESTS = 64  # request ids of recent Typing frames, to match their refusals

# Errors after which the connector closes the stream (docs/protocol.md "Errors").
_FATAL_ERRORS = frozenset(
    {
        wire_pb2.ERROR_CODE_BAD_FRAME,
        wire_pb2.ERROR_CODE_FRAME_TOO_LARGE,
        wire_pb2.ERROR_CODE_AUTH_REQUIRED,
        wire_pb2.ERROR_CODE_AUTH_FAILED,
        wire_pb2.ERROR_CODE_AUTH_TIMEOUT,
        wire_pb2.ERROR_CODE_HEARTBEAT_TIMEOUT,
    }
)

_END = object()  # queued once when the event stream ends


class SeenIds:
    """Bounded set of msg_ids, oldest forgotten first (dict keeps insertion order)."""

    __slots__ = ("_ids", "_max")

    def __init__(self, max_size: int = 100_000) -> None:
        self._ids: dict[int, None] = {}
        self._max = max(1, max_size)

    def add(self, msg_id: int) -> bool:
        """Remember ``msg_id``; False if it was already there (a duplicate)."""
        if msg_id in self._ids:
            return False
        self._ids[msg_id] = None
        if len(self._ids) > self._max:
            del self._ids[next(iter(self._ids))]
        return True

    def __contains__(self, msg_id: object) -> bool:
        return msg_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)


# ----------------------------------------------------------------- connection


class Connection:
    """An authenticated socket to a connector. Build it with ``await Connection.open``."""

    def __init__(
        self,
        link: _Link,
        auth_ok: wire_pb2.AuthOk,
        *,
        transport: Transport,
        ack_every: int,
        ack_delay_ms: float,
        auto_ack: bool,
        dedupe_size: int,
        heartbeat_interval: float | None,
        heartbeat_misses: float,
        early_frames: list[wire_pb2.Frame] | None = None,
    ) -> None:
        self._link = link
        self.auth_ok = auth_ok
        self.transport = transport
        self.user_id: int = auth_ok.user_id
        self.device_id: str = auth_ok.device_id
        self.connector_id: str = auth_ok.connector_id
        self.heartbeat_interval: float = heartbeat_interval or (
            auth_ok.heartbeat_interval_ms / 1000.0 if auth_ok.heartbeat_interval_ms else 20.0
        )
        self._heartbeat_misses = heartbeat_misses
        self.ack_every = max(1, ack_every)
        self.ack_delay = max(0.0, ack_delay_ms / 1000.0)
        self.auto_ack = auto_ack

        # counters, for tests and benchmarks
        self.duplicates = 0
        self.delivered = 0  # Deliver frames received (duplicates included)
        self.retransmits = 0  # Send frames resent for want of a SendAck
        self.busy_refusals = 0  # Sends the connector refused as BUSY, then sent again
        # How the client waits out a BUSY retry-after (tests put a fake clock's here).
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        self.pings = 0
        self.last_rtt: float | None = None

        self.kick: wire_pb2.Kick | None = None
        self.error: wire_pb2.Error | None = None  # the fatal Error that closed us, if any
        self.close_reason: str | None = None

        self._seen = SeenIds(dedupe_size)
        self._events: asyncio.Queue[object] = asyncio.Queue()
        self._pending: dict[str, asyncio.Future[wire_pb2.SendAck]] = {}
        self._request_ids = itertools.count(2)  # 1 was the Auth frame
        self._typing_requests: dict[int, None] = {}  # recent ones, oldest first
        self._ping_sent_at: float | None = None
        self._last_recv = time.monotonic()

        # acks: highest seq acknowledged (or to acknowledge) per conversation
        self._acked: dict[str, int] = {}
        self._ack_pending: dict[str, int] = {}
        self._ack_count = 0
        self._ack_timer: asyncio.TimerHandle | None = None
        self._bg: set[asyncio.Task[None]] = set()

        self._closed = asyncio.Event()
        self._reader_task = asyncio.create_task(
            self._read_loop(early_frames or []), name="im-client-reader"
        )
        self._heartbeat_task = asyncio.create_task(
            self._heartbeat_loop(), name="im-client-heartbeat"
        )

    # ------------------------------------------------------------------ opening

    @classmethod
    async def open(
        cls,
        address: str,
        token: str,
        transport: Transport = "tcp",
        *,
        ack_every: int = 1,
        ack_delay_ms: float = 50.0,
        auto_ack: bool = True,
        dedupe_size: int = 100_000,
        connect_timeout: float = 10.0,
        auth_timeout: float = 10.0,
        max_frame_bytes: int = DEFAULT_MAX_FRAME,
        heartbeat_interval: float | None = None,
        heartbeat_misses: float = 3.0,
        tls: ssl.SSLContext | None = None,
    ) -> Connection:
        """Connect, send Auth, wait for AuthOk (AuthError on an Error or no answer).

        ``tls``: speak TLS, verifying the connector's certificate with this context (see
        ``tls_context``); a ``wss://`` address always does, with the system's CAs unless
        given one.

        ``auto_ack=False`` leaves DeliverAcks to the caller (``ack``), which then only
        acknowledges what it has really taken over; ImClient uses that.
        ``heartbeat_interval`` overrides the interval the connector announces.
        """
        if transport not in ("tcp", "ws"):
            raise ValueError(f"transport must be 'tcp' or 'ws', not {transport!r}")
        from websockets.exceptions import WebSocketException

        link: _Link
        try:
            async with asyncio.timeout(connect_timeout):
                if transport == "tcp":
                    link = await _TcpLink.connect(address, max_frame_bytes, tls)
                else:
                    link = await _WsLink.connect(address, max_frame_bytes, connect_timeout, tls)
        except (OSError, TimeoutError, WebSocketException) as exc:
            # one exception type for "could not reach the connector"
            raise ConnectionClosed(f"cannot connect to {address}: {exc!r}") from exc
        try:
            auth_ok, early = await cls._authenticate(link, token, auth_timeout)
        except BaseException:
            await link.close()
            raise
        return cls(
            link,
            auth_ok,
            transport=transport,
            ack_every=ack_every,
            ack_delay_ms=ack_delay_ms,
            auto_ack=auto_ack,
            dedupe_size=dedupe_size,
            heartbeat_interval=heartbeat_interval,
            heartbeat_misses=heartbeat_misses,
            early_frames=early,
        )

    @staticmethod
    async def _authenticate(
        link: _Link, token: str, timeout: float
    ) -> tuple[wire_pb2.AuthOk, list[wire_pb2.Frame]]:
        """AuthOk and whatever frames came in the same read after it (keep those!)."""
        frame = wire_pb2.Frame(request_id=1, auth=wire_pb2.Auth(token=token))
        await link.send([frame.SerializeToString()])
        try:
            async with asyncio.timeout(timeout):
                while True:
                    frames = await link.recv()
                    for i, answer in enumerate(frames):
                        kind = answer.WhichOneof("kind")
                        if kind == "auth_ok":
                            return answer.auth_ok, frames[i + 1 :]
                        if kind == "error":
                            raise AuthError(answer.error.code, answer.error.message)
                        if kind == "kick":
                            raise AuthError(
                                wire_pb2.ERROR_CODE_AUTH_FAILED,
                                f"kicked: {kick_reason_name(answer.kick.reason)}",
                            )
                        # anything else before AuthOk is unexpected; ignore it
        except TimeoutError:
            raise AuthError(wire_pb2.ERROR_CODE_AUTH_TIMEOUT, "no AuthOk in time") from None
        except ConnectionClosed as exc:
            # closed without an Error frame: a connection problem, not a verdict on the token
            raise ConnectionClosed(f"before AuthOk: {exc.reason}") from exc
        except OSError as exc:
            raise ConnectionClosed(f"before AuthOk: {exc!r}") from exc
        except ProtocolError as exc:
            raise AuthError(exc.code, exc.message) from exc

    # ----------------------------------------------------------------- sending

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def _check_open(self) -> None:
        if self._closed.is_set():
            raise ConnectionClosed(self.close_reason or "closed")

    async def _write(self, payloads: list[bytes]) -> None:
        self._check_open()
        try:
            await self._link.send(payloads)
        except ConnectionClosed as exc:
            await self._shutdown(exc.reason)
            raise
        except OSError as exc:
            await self._shutdown(f"connection lost: {exc!r}")
            raise ConnectionClosed(self.close_reason or "connection lost") from exc

    async def send(
        self,
        conversation_id: str,
        body: bytes | str,
        content_type: str = "text/plain",
        client_msg_id: str | None = None,
        ack_timeout: float = 5.0,
        attempts: int = 3,
        busy_retries: int = 5,
        attachment_ids: list[str] | None = None,
    ) -> wire_pb2.SendAck:
        """Send one message; resend the identical frame until a SendAck arrives.
        ``attachment_ids``: uploads of this user (``GatewayClient.upload_file``) the
        message refers to; the conversation's members may then download them.

        A Send the connector refuses as BUSY (overloaded) is sent again after the
        retry-after it names, up to ``busy_retries`` times (0: the BUSY SendError is
        raised at once). Raises SendError on any other Error frame answering it,
        SendTimeout when no SendAck came after ``attempts`` tries, ConnectionClosed
        when the socket went away.
        """
        cmid = client_msg_id or str(uuid.uuid4())
        if cmid in self._pending:
            raise ValueError(f"a send with client_msg_id {cmid!r} is already in flight")
        data = body.encode() if isinstance(body, str) else bytes(body)
        payload = wire_pb2.Frame(
            request_id=next(self._request_ids),
            send=wire_pb2.Send(
                client_msg_id=cmid,
                conversation_id=conversation_id,
                content_type=content_type,
                body=data,
                attachment_ids=attachment_ids or [],
            ),
        ).SerializeToString()
        for refusals in itertools.count():
            try:
                return await self._send_frame(cmid, payload, ack_timeout, attempts)
            except SendError as exc:
                if exc.code != wire_pb2.ERROR_CODE_BUSY or refusals >= busy_retries:
                    raise
                self.busy_refusals += 1
                await self.sleep(max(exc.retry_after_ms, BUSY_RETRY_MIN_MS) / 1000.0)
        raise AssertionError("unreachable")

    async def _send_frame(
        self, cmid: str, payload: bytes, ack_timeout: float, attempts: int
    ) -> wire_pb2.SendAck:
        """One Send frame, resent until its SendAck or Error arrives."""
        future: asyncio.Future[wire_pb2.SendAck] = asyncio.get_running_loop().create_future()
        self._pending[cmid] = future
        try:
            for attempt in range(max(1, attempts)):
                if attempt:
                    self.retransmits += 1
                await self._write([payload])  # the same bytes: same client_msg_id
                try:
                    return await asyncio.wait_for(asyncio.shield(future), ack_timeout)
                except TimeoutError:
                    continue
            raise SendTimeout(cmid, max(1, attempts))
        finally:
            if self._pending.get(cmid) is future:
                del self._pending[cmid]
            if not future.done():
                future.cancel()
            elif not future.cancelled():
                future.exception()  # mark an answer that came too late as seen

    async def read(self, conversation_id: str, seq: int) -> None:
        """Report that the user has read ``conversation_id`` up to ``seq``."""
        frame = wire_pb2.Frame(read=wire_pb2.Read(conversation_id=conversation_id, seq=seq))
        await self._write([frame.SerializeToString()])

    async def typing(self, conversation_id: str, started: bool = True) -> None:
        """Tell the other members the user is (no longer) typing. Best effort: nothing
        answers it, except an Error event (FORBIDDEN, INVALID_ARGUMENT) when refused.
        While the user types, send it again every few seconds (before expires_in_ms)."""
        request_id = next(self._request_ids)
        self._typing_requests[request_id] = None
        if len(self._typing_requests) > MAX_TYPING_REQUESTS:
            del self._typing_requests[next(iter(self._typing_requests))]
        state = wire_pb2.TYPING_STATE_STARTED if started else wire_pb2.TYPING_STATE_STOPPED
        frame = wire_pb2.Frame(
            request_id=request_id,
            typing=wire_pb2.Typing(conversation_id=conversation_id, state=state),
        )
        await self._write([frame.SerializeToString()])

    async def ping(self) -> None:
        self._ping_sent_at = time.monotonic()
        self.pings += 1
        frame = wire_pb2.Frame(request_id=next(self._request_ids), ping=wire_pb2.Ping())
        await self._write([frame.SerializeToString()])

    # -------------------------------------------------------------------- acks

    async def ack(self, conversation_id: str, seq: int) -> None:
        """Acknowledge everything up to ``seq`` (batched: ack_every / ack_delay_ms)."""
        self._note_ack(conversation_id, seq)
        await self._maybe_flush()

    def _note_ack(self, conversation_id: str, seq: int) -> None:
        top = max(self._acked.get(conversation_id, 0), seq)
        self._acked[conversation_id] = top
        self._ack_pending[conversation_id] = top
        self._ack_count += 1

    async def _maybe_flush(self) -> None:
        if not self._ack_pending:
            return
        if self._ack_count >= self.ack_every or self.ack_delay == 0:
            await self.flush_acks()
        elif self._ack_timer is None:
            self._ack_timer = asyncio.get_running_loop().call_later(
                self.ack_delay, self._on_ack_timer
            )

    def _on_ack_timer(self) -> None:
        self._ack_timer = None
        self._spawn(self.flush_acks())

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    async def flush_acks(self) -> None:
        """Send the pending DeliverAcks now (one per conversation, one write)."""
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        if not self._ack_pending:
            return
        payloads = [
            wire_pb2.Frame(
                deliver_ack=wire_pb2.DeliverAck(conversation_id=cid, seq=seq)
            ).SerializeToString()
            for cid, seq in self._ack_pending.items()
        ]
        self._ack_pending.clear()
        self._ack_count = 0
        if self.closed:
            return
        with contextlib.suppress(ConnectionClosed):
            await self._write(payloads)

    # ------------------------------------------------------------------ events

    async def events(self) -> AsyncIterator[Event]:
        """Message, Receipt, ConversationSettingsChanged and Kick objects until the
        connection ends.

        After the end, ``close_reason`` (and ``kick`` / ``error``) say why.
        """
        while True:
            item = await self._events.get()
            if item is _END:
                self._events.put_nowait(_END)  # later iterators end at once too
                return
            yield item  # type: ignore[misc]

    async def next_event(self, timeout: float | None = None) -> Event | None:
        """The next event, or None at the end of the stream (TimeoutError on timeout)."""
        async with asyncio.timeout(timeout):
            item = await self._events.get()
        if item is _END:
            self._events.put_nowait(_END)
            return None
        return item  # type: ignore[return-value]

    # ------------------------------------------------------------------ reading

    async def _read_loop(self, frames: list[wire_pb2.Frame]) -> None:
        reason = "connection closed by the connector"
        try:
            while not self._closed.is_set():
                for frame in frames:
                    if not await self._dispatch(frame):
                        return
                await self._maybe_flush()  # acks of this batch (a no-op when none)
                frames = await self._link.recv()
                self._last_recv = time.monotonic()
        except ConnectionClosed as exc:
            reason = exc.reason
        except ProtocolError as exc:
            reason = f"protocol error: {exc.message}"
        except OSError as exc:
            reason = f"connection lost: {exc!r}"
        except asyncio.CancelledError:
            reason = "closed"
            raise
        finally:
            await self._shutdown(reason)

    async def _dispatch(self, frame: wire_pb2.Frame) -> bool:
        """Handle one frame; False when the stream is over."""
        kind = frame.WhichOneof("kind")
        if kind == "deliver":
            self._on_deliver(frame.deliver.message)
        elif kind == "send_ack":
            future = self._pending.get(frame.send_ack.client_msg_id)
            if future is not None and not future.done():
                future.set_result(frame.send_ack)
        elif kind == "pong":
            if self._ping_sent_at is not None:
                self.last_rtt = time.monotonic() - self._ping_sent_at
                self._ping_sent_at = None
        elif kind == "receipt":
            self._events.put_nowait(frame.receipt)
        elif kind == "typing":
            self._events.put_nowait(frame.typing)
        elif kind == "presence":
            self._events.put_nowait(frame.presence)
        elif kind == "conversation_settings_changed":
            # This user's own settings changed (on this device or another).
            self._events.put_nowait(frame.conversation_settings_changed)
        elif kind == "kick":
            self.kick = frame.kick
            self._events.put_nowait(frame.kick)
            reason = f"kicked: {kick_reason_name(frame.kick.reason)}"
            if frame.kick.detail:
                reason += f" ({frame.kick.detail})"
            await self._shutdown(reason)
            return False
        elif kind == "error":
            if self._typing_requests.pop(frame.request_id, 0) is None:
                self._events.put_nowait(frame.error)  # a Typing was refused
                return True
            return await self._on_error(frame.error)
        else:
            log.debug("ignoring unexpected %s frame", kind)
        return True

    def _on_deliver(self, message: wire_pb2.Message) -> None:
        self.delivered += 1
        cid = message.conversation_id
        fresh = self._seen.add(message.msg_id)
        if fresh:
            self._events.put_nowait(message)
        else:
            self.duplicates += 1
        if self.auto_ack:
            self._note_ack(cid, message.seq)
        elif not fresh and self._acked.get(cid, 0) >= message.seq:
            # a resend of something already acked: our ack was lost, say it again
            self._note_ack(cid, self._acked[cid])

    async def _on_error(self, error: wire_pb2.Error) -> bool:
        future = self._pending.get(error.client_msg_id) if error.client_msg_id else None
        if future is not None:
            if not future.done():
                future.set_exception(
                    SendError(error.code, error.message, error.client_msg_id, error.retry_after_ms)
                )
            return True
        if error.code in _FATAL_ERRORS:
            self.error = error
            await self._shutdown(f"error: {error_code_name(error.code)}: {error.message}")
            return False
        log.warning("connector error %s: %s", error_code_name(error.code), error.message)
        return True

    async def _heartbeat_loop(self) -> None:
        interval = self.heartbeat_interval
        try:
            while not self._closed.is_set():
                await asyncio.sleep(interval)
                if time.monotonic() - self._last_recv > interval * self._heartbeat_misses:
                    # TCP may look fine while the connector app is gone
                    await self._shutdown("heartbeat timeout: the connector went silent")
                    return
                with contextlib.suppress(ConnectionClosed):
                    await self.ping()
        except asyncio.CancelledError:
            pass

    # ----------------------------------------------------------------- closing

    async def _shutdown(self, reason: str) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self.close_reason = reason
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        current = asyncio.current_task()
        for task in (self._heartbeat_task, self._reader_task):
            if task is not current and not task.done():
                task.cancel()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionClosed(reason))
        self._events.put_nowait(_END)
        await self._link.close()

    async def close(self) -> None:
        """Flush pending acks, then close the socket; the event stream ends."""
        if not self._closed.is_set():
            with contextlib.suppress(ConnectionClosed, OSError):
                await self.flush_acks()
            await self._shutdown("closed by the client")
        for task in (self._reader_task, self._heartbeat_task, *self._bg):
            if task is not asyncio.current_task():
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def wait_closed(self) -> str:
        await self._closed.wait()
        return self.close_reason or "closed"

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
