"""Steady chat traffic for the fault suite, and a record of everything the clients saw.

Senders behave like a careful app: one message at a time, each with its own
client_msg_id, retried under that same id until it is acknowledged. A lost socket (or
a kick) means logging in again (the gateway may hand out the other connector) and
reconnecting; a refused connect means logging in again too. Receivers stay
connected, log in again when dropped and sync after every (re)connect, as the design
asks of every client.

Times are ``time.monotonic()`` throughout, the same clock the fault timeline uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import httpx

from im.client import (
    ApiError,
    AuthError,
    ClientError,
    Connection,
    ConnectionClosed,
    ImClient,
    SendError,
    SendTimeout,
    error_code_name,
)
from im.ids import direct_conversation_id
from im.v1 import wire_pb2
from tests.e2e.helpers import PASSWORD, unique

ACK_TIMEOUT = 3.0  # per attempt; the connector answers UNAVAILABLE within its publish timeout
HTTP_TIMEOUT = 5.0
MAX_BACKOFF = 1.0  # between retries: also the resolution of the recovery times


def now() -> float:
    return time.monotonic()


def describe(exc: BaseException) -> str:
    """A short, stable label of a failure, for counting."""
    if isinstance(exc, SendTimeout):
        return "send: no SendAck in time"
    if isinstance(exc, SendError):
        return f"send: {error_code_name(exc.code)}"
    if isinstance(exc, AuthError):
        return f"auth: {exc.code_name}"
    if isinstance(exc, ApiError):
        return f"gateway: {exc.status} {exc.code}"
    if isinstance(exc, ConnectionClosed):
        reason = exc.reason.split(":")[0].split("(")[0].strip()
        return f"socket: {reason}"
    return f"unexpected: {type(exc).__name__}: {exc}"


class Backoff:
    """0.1 s doubling to MAX_BACKOFF, with jitter; reset after a success."""

    def __init__(self) -> None:
        self.delay = 0.1

    def reset(self) -> None:
        self.delay = 0.1

    async def wait(self, stop: asyncio.Event | None = None) -> None:
        delay = self.delay * random.uniform(0.8, 1.2)
        self.delay = min(self.delay * 2, MAX_BACKOFF)
        if stop is None:
            await asyncio.sleep(delay)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)


# ---------------------------------------------------------------------- records


@dataclass
class SentMessage:
    client_msg_id: str
    conversation_id: str
    sender: str
    text: str
    first_try: float
    tries: int = 0
    acked_at: float | None = None
    msg_id: int | None = None


@dataclass
class Received:
    msg_id: int
    client_msg_id: str
    conversation_id: str
    seq: int
    at: float
    origin: str  # "live" (pushed on the socket) or "sync" (pulled from history)


class RecordingClient(ImClient):
    """An ImClient that remembers how each message it handed out arrived: live on the
    socket, or pulled from history (the sync after connecting, or a gap it filled)."""

    def __init__(self, gateway_url: str) -> None:
        super().__init__(gateway_url, http_timeout=HTTP_TIMEOUT)
        self.origins: dict[int, str] = {}
        self._pulling = 0

    async def _pull(self, cid: str, after_seq: int, until_seq: int | None) -> int:
        self._pulling += 1
        try:
            return await super()._pull(cid, after_seq, until_seq)
        finally:
            self._pulling -= 1

    def _emit(self, message: wire_pb2.Message) -> bool:
        fresh = super()._emit(message)
        if fresh:
            self.origins[message.msg_id] = "sync" if self._pulling else "live"
        return fresh


# ------------------------------------------------------------------ participants


class Participant:
    """One user on one device, with its own client."""

    def __init__(self, gateway_url: str, role: str) -> None:
        self.name = unique(role)  # also the username
        self.device = "dev1"
        self.client = RecordingClient(gateway_url)
        self.connects = 0  # successful (re)connects, the first one included
        self.failures: Counter[str] = Counter()
        self.close_reasons: Counter[str] = Counter()
        self.connector_ids: list[str] = []  # the connector of each successful connect
        self._noted: Connection | None = None

    @property
    def user_id(self) -> int:
        return self.client.user_id

    @property
    def connected(self) -> bool:
        conn = self.client.connection
        return conn is not None and not conn.closed

    async def register(self) -> None:
        await self.client.register(self.name, PASSWORD)

    async def connect(self, *, sync: bool, stop: asyncio.Event | None = None) -> bool:
        """Log in (again) and connect, retrying with backoff until it works or ``stop``
        is set. A fresh login each time: the connector handed out before may be dead."""
        previous = self.client.connection
        if previous is not None:
            if not previous.closed:
                return True
            self._note_close(previous)
        backoff = Backoff()
        while stop is None or not stop.is_set():
            try:
                await self.client.login(self.name, PASSWORD, self.device)
                await self.client.connect(sync=sync)
            except Exception as exc:  # every failure is retried; the kinds are counted
                self.failures[describe(exc)] += 1
                await backoff.wait(stop)
                continue
            self.connects += 1
            self.connector_ids.append(self.client.connection.connector_id)
            return True
        return False

    def _note_close(self, conn: Connection) -> None:
        """Count why a connection ended, once, unless we closed it ourselves."""
        if conn is self._noted or conn.close_reason == "closed by the client":
            return
        self._noted = conn
        self.close_reasons[conn.close_reason or "closed"] += 1

    async def disconnect(self) -> None:
        if self.client.connection is not None:
            await self.client.connection.close()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.close()


class Sender(Participant):
    """Sends ~``rate`` messages per second to one conversation, one at a time."""

    def __init__(self, gateway_url: str, role: str, rate: float, log: dict[str, SentMessage]):
        super().__init__(gateway_url, role)
        self.period = 1.0 / rate
        self.conversation_id = ""
        self.log = log  # shared record of every message sent, by client_msg_id
        self.sent = 0

    def next_message(self) -> SentMessage:
        self.sent += 1
        cmid = f"{self.name}-{self.sent}"
        message = SentMessage(
            client_msg_id=cmid,
            conversation_id=self.conversation_id,
            sender=self.name,
            text=f"{cmid} to {self.conversation_id}",
            first_try=now(),
        )
        self.log[cmid] = message
        return message

    async def run(self, stop_sending: asyncio.Event, give_up: asyncio.Event) -> None:
        """Send until ``stop_sending``; the message in flight then is still retried
        until acked, or until ``give_up``."""
        due = now()
        while not stop_sending.is_set():
            await self.deliver(self.next_message(), give_up)
            # Steady pace; after a long stall, go on from now rather than burst.
            due = max(due + self.period, now())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop_sending.wait(), due - now())

    async def deliver(self, message: SentMessage, give_up: asyncio.Event) -> None:
        """Until acked: (re)connect when needed, send under the same client_msg_id."""
        backoff = Backoff()
        while not give_up.is_set():
            if not self.connected and not await self.connect(sync=False, stop=give_up):
                return
            message.tries += 1
            try:
                ack = await self.client.send(
                    message.conversation_id,
                    message.text,
                    client_msg_id=message.client_msg_id,
                    ack_timeout=ACK_TIMEOUT,
                    attempts=1,
                )
            except SendTimeout as exc:
                # The same connection keeps going: a repeat of the id is answered with
                # the first attempt's outcome once it has one.
                self.failures[describe(exc)] += 1
                continue
            except Exception as exc:
                self.failures[describe(exc)] += 1
                await backoff.wait(give_up)
                continue
            message.acked_at = now()
            message.msg_id = ack.msg_id
            return


class Receiver(Participant):
    """Stays connected and records every message it is handed, live or by sync."""

    def __init__(self, gateway_url: str, role: str) -> None:
        super().__init__(gateway_url, role)
        self.received: dict[int, Received] = {}
        self.duplicates = 0  # the same msg_id handed out twice (the client dedupes)
        self._stop = asyncio.Event()

    def note(self, message: wire_pb2.Message) -> None:
        if message.msg_id in self.received:
            self.duplicates += 1
            return
        self.received[message.msg_id] = Received(
            msg_id=message.msg_id,
            client_msg_id=message.client_msg_id,
            conversation_id=message.conversation_id,
            seq=message.seq,
            at=now(),
            origin=self.client.origins.get(message.msg_id, "live"),
        )

    async def consume(self) -> None:
        """Record the stream of the current connection until it ends."""
        async for event in self.client.events():
            if isinstance(event, wire_pb2.Message):
                self.note(event)

    async def run(self) -> None:
        while not self._stop.is_set():
            if not await self.connect(sync=True, stop=self._stop):
                return
            if self._stop.is_set():
                break
            await self.consume()
        await self.disconnect()

    async def stop(self) -> None:
        """End ``run``: no reconnect after this."""
        self._stop.set()
        await self.disconnect()

    async def resync(self, timeout: float) -> bool:
        """Log in, connect, sync, take what arrives for a moment, disconnect.
        False if no connection could be made within ``timeout``."""
        give_up = asyncio.Event()
        timer = asyncio.get_running_loop().call_later(timeout, give_up.set)
        try:
            if not await self.connect(sync=True, stop=give_up):
                return False
        finally:
            timer.cancel()
        consumer = asyncio.create_task(self.consume())
        await asyncio.sleep(1.0)  # retransmits and live messages still under way
        await self.disconnect()  # ends the stream after what is queued
        await consumer
        return True


# ----------------------------------------------------------------------- traffic


@dataclass
class Conversation:
    conversation_id: str
    sender: Sender
    receivers: list[Receiver]


@dataclass
class Traffic:
    """``pairs`` 1:1 conversations and one group (a sender and ``group_receivers``
    others), every sender at ``rate`` messages per second."""

    gateway_url: str
    pairs: int = 9
    group_receivers: int = 2
    rate: float = 2.0
    sent: dict[str, SentMessage] = field(default_factory=dict)
    conversations: list[Conversation] = field(default_factory=list)
    stop_sending_event: asyncio.Event = field(default_factory=asyncio.Event)
    give_up_event: asyncio.Event = field(default_factory=asyncio.Event)
    _sender_tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _receiver_tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def senders(self) -> list[Sender]:
        return [c.sender for c in self.conversations]

    @property
    def receivers(self) -> list[Receiver]:
        return [r for c in self.conversations for r in c.receivers]

    @property
    def participants(self) -> Iterable[Participant]:
        return [*self.senders, *self.receivers]

    async def setup(self) -> None:
        """Register and log in everyone, create the group, connect everyone."""
        for i in range(self.pairs):
            sender = Sender(self.gateway_url, f"s{i}", self.rate, self.sent)
            receiver = Receiver(self.gateway_url, f"r{i}")
            self.conversations.append(Conversation("", sender, [receiver]))
        group = Conversation(
            "",
            Sender(self.gateway_url, "gs", self.rate, self.sent),
            [Receiver(self.gateway_url, f"gr{i}") for i in range(self.group_receivers)],
        )
        self.conversations.append(group)
        await asyncio.gather(*(p.register() for p in self.participants))
        await asyncio.gather(
            *(p.client.login(p.name, PASSWORD, p.device) for p in self.participants)
        )
        for conv in self.conversations[:-1]:
            (receiver,) = conv.receivers
            conv.conversation_id = direct_conversation_id(conv.sender.user_id, receiver.user_id)
        created = await group.sender.client.gateway.create_group(
            unique("faults"), [r.user_id for r in group.receivers]
        )
        group.conversation_id = created["conversation_id"]
        for conv in self.conversations:
            conv.sender.conversation_id = conv.conversation_id
        await asyncio.gather(
            *(r.connect(sync=True) for r in self.receivers),
            *(s.connect(sync=False) for s in self.senders),
        )

    def start(self) -> None:
        self._receiver_tasks = [asyncio.create_task(r.run()) for r in self.receivers]
        self._sender_tasks = [
            asyncio.create_task(s.run(self.stop_sending_event, self.give_up_event))
            for s in self.senders
        ]

    async def stop_sending(self, drain_timeout: float) -> int:
        """No new messages; wait (bounded) until the ones in flight are acked.
        Returns how many were abandoned unacknowledged."""
        self.stop_sending_event.set()
        _done, pending = await asyncio.wait(self._sender_tasks, timeout=drain_timeout)
        if pending:
            self.give_up_event.set()
            await asyncio.gather(*pending)
        for task in self._sender_tasks:
            task.result()  # a bug in the driver must not pass silently
        return sum(1 for m in self.sent.values() if m.acked_at is None)

    def missing_live(self) -> int:
        """Acked messages some receiver of their conversation does not hold yet."""
        acked: dict[str, set[int]] = {}
        for m in self.sent.values():
            if m.msg_id is not None:
                acked.setdefault(m.conversation_id, set()).add(m.msg_id)
        return sum(
            len(acked.get(conv.conversation_id, set()) - r.received.keys())
            for conv in self.conversations
            for r in conv.receivers
        )

    async def wait_delivered(self, grace: float) -> None:
        """Give delivery up to ``grace`` seconds to bring every acked message."""
        deadline = now() + grace
        while now() < deadline:
            if not self.missing_live():
                return
            await asyncio.sleep(0.25)

    async def resync_receivers(self, timeout: float) -> list[str]:
        """Every receiver reconnects and syncs once more; names of those that could not."""
        await asyncio.gather(*(r.stop() for r in self.receivers))
        await asyncio.gather(*self._receiver_tasks)
        ok = await asyncio.gather(*(r.resync(timeout) for r in self.receivers))
        return [r.name for r, good in zip(self.receivers, ok, strict=True) if not good]

    async def history(self, timeout: float) -> dict[str, list[wire_pb2.Message]]:
        """Every conversation's stored messages, read through the gateway as its sender."""
        result: dict[str, list[wire_pb2.Message]] = {}
        for conv in self.conversations:
            result[conv.conversation_id] = await read_history(conv.sender, timeout)
        return result

    async def close(self) -> None:
        self.stop_sending_event.set()
        self.give_up_event.set()
        for receiver in self.receivers:
            await receiver.stop()
        tasks = [*self._sender_tasks, *self._receiver_tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(p.close() for p in self.participants))


async def read_history(sender: Sender, timeout: float) -> list[wire_pb2.Message]:
    """The whole history of the sender's conversation; retried (bounded) on errors."""
    deadline = now() + timeout
    backoff = Backoff()
    while True:
        try:
            if sender.client.gateway.token is None:
                await sender.client.login(sender.name, PASSWORD, sender.device)
            return [m async for m in sender.client.gateway.history_all(sender.conversation_id)]
        except ClientError as exc:
            if now() > deadline:
                raise AssertionError(
                    f"history of {sender.conversation_id} unreadable for {timeout:.0f} s: {exc}"
                ) from exc
            await backoff.wait()


class ReadinessProbe:
    """Polls the gateway's /readyz in the background and keeps its answers over time."""

    def __init__(self, gateway_url: str, interval: float = 0.5) -> None:
        self.url = f"{gateway_url}/readyz"
        self.interval = interval
        self.samples: list[tuple[float, bool]] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=2.0) as http:
            while True:
                try:
                    ok = (await http.get(self.url)).status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.samples.append((now(), ok))
                await asyncio.sleep(self.interval)

    def not_ready_seconds(self, since: float) -> float:
        """How long /readyz failed after ``since`` (each failing answer counts until
        the next answer)."""
        samples = [(t, ok) for t, ok in self.samples if t >= since]
        return sum(later - t for (t, ok), (later, _) in itertools.pairwise(samples) if not ok)

    def failed_between(self, start: float, end: float) -> bool:
        return any(not ok for t, ok in self.samples if start <= t <= end)

    def ready_again_after(self, since: float) -> float | None:
        """Seconds from ``since`` to the first ready answer after the last failing one."""
        after = [(t, ok) for t, ok in self.samples if t >= since]
        last_bad = max((t for t, ok in after if not ok), default=None)
        good = [t for t, ok in after if ok and (last_bad is None or t > last_bad)]
        return (good[0] - since) if good else None

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def fresh_pair_chat(gateway_url: str, timeout: float) -> str | None:
    """Two users new to the system register, log in, connect, and one message goes
    live from one to the other, with the retries any client makes: what every new
    client needs once a fault is over (a registry that lost its nodes or a presence
    store that came back empty shows here). None if it worked, else what did not."""
    alice = Sender(gateway_url, "fresh-s", 1.0, {})
    bob = Receiver(gateway_url, "fresh-r")
    step = "register"
    try:
        async with asyncio.timeout(timeout):
            await register_until_done(alice)
            await register_until_done(bob)
            step = "log in and connect"
            await bob.connect(sync=True)
            await alice.connect(sync=False)
            step = "send"
            alice.conversation_id = direct_conversation_id(alice.user_id, bob.user_id)
            message = alice.next_message()
            await alice.deliver(message, asyncio.Event())  # bounded by the timeout
            step = "receive"
            async for got in bob.client.messages():
                if got.msg_id == message.msg_id:
                    if bob.client.origins.get(got.msg_id) != "live":
                        return "new users: the message came only by sync, not live"
                    return None
            return f"new users: the receiver's connection ended: {bob.client.close_reason}"
    except TimeoutError:
        failures = dict(alice.failures + bob.failures)
        return f"new users: stuck at '{step}' for {timeout:.0f} s (retried: {failures})"
    finally:
        await alice.close()
        await bob.close()


async def register_until_done(user: Participant) -> None:
    """Register, retrying (the caller bounds the time); 409: an earlier try got through."""
    backoff = Backoff()
    while True:
        try:
            await user.register()
            return
        except ApiError as exc:
            if exc.status == 409:
                return
            user.failures[describe(exc)] += 1
            await backoff.wait()


async def wait_ready(gateway_url: str, timeout: float) -> str | None:
    """None once /readyz answers 200 within ``timeout``; else its last answer."""
    deadline = now() + timeout
    last = "no answer"
    async with httpx.AsyncClient(timeout=2.0) as http:
        while now() < deadline:
            try:
                reply = await http.get(f"{gateway_url}/readyz")
                if reply.status_code == 200:
                    return None
                last = f"{reply.status_code} {reply.text[:300]}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            await asyncio.sleep(0.5)
    return last
