"""Offline push through a webhook: batches of notifications POSTed as JSON to the
operator's endpoint (a relay to APNs/FCM), signed with HMAC-SHA256.

The request, in full (docs/operations.md, "Offline push"):

    POST <IM_PUSH_WEBHOOK_URL>
    Content-Type: application/json
    X-IM-Timestamp: <unix seconds when this attempt was signed>
    X-IM-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>." + raw body)>
    X-IM-Delivery: <id of the batch, the same on every retry of it>

    {"notifications": [{"user_id", "conversation_id", "msg_id" (string), "seq",
      "sender_id", "content_type", "server_ts", "preview" (string or null)}, ...]}

A receiver recomputes the signature over the raw body it got, compares in constant
time, and refuses a timestamp more than a few minutes from its clock (a replayed
request); ``verify`` below is the reference. Retries re-sign with a fresh timestamp.

Nothing here is on the router's delivery path: ``offer`` only appends to a bounded
queue (full: dropped and counted), one background task sends. 5xx answers, 408/429,
timeouts and connection errors are retried with exponential backoff; any other 4xx
is final (the receiver refuses the batch as it is). A recalled message's
notifications are taken out of the queue, and out of a batch before its next retry.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import json
import logging
import uuid
from collections.abc import Set
from dataclasses import dataclass
from urllib.parse import urlparse

import httpx

from im.clock import Clock, SystemClock
from im.ports import PushNotification, PushStats

log = logging.getLogger("im.push")

SIGNATURE_HEADER = "X-IM-Signature"
TIMESTAMP_HEADER = "X-IM-Timestamp"
DELIVERY_HEADER = "X-IM-Delivery"
SIGNATURE_VERSION = "v1"
RETRY_STATUSES = frozenset({408, 429})  # 4xx that mean "later", not "never"
DROP_LOG_EVERY = 10.0  # seconds between warnings about a full queue
CLOSE_GRACE = 2.0  # seconds the queue gets to drain at shutdown


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return f"{SIGNATURE_VERSION}={mac.hexdigest()}"


def verify(
    secret: bytes, timestamp: str, signature: str, body: bytes, now_s: int, tolerance: int = 300
) -> bool:
    """What a receiver checks: the signature over this very body, and a timestamp
    within ``tolerance`` seconds of its own clock."""
    try:
        at = int(timestamp)
    except ValueError:
        return False
    if abs(now_s - at) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, at, body), signature)


def payload(batch: list[PushNotification]) -> bytes:
    return json.dumps(
        {
            "notifications": [
                {
                    "user_id": n.user_id,
                    "conversation_id": n.conversation_id,
                    "msg_id": str(n.msg_id),  # 64-bit: beyond JSON's safe integers
                    "seq": n.seq,
                    "sender_id": n.sender_id,
                    "content_type": n.content_type,
                    "server_ts": n.server_ts,
                    "preview": n.preview,
                }
                for n in batch
            ]
        },
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()


@dataclass(frozen=True, slots=True)
class WebhookOptions:
    url: str
    secret: str = ""
    timeout: float = 5.0  # seconds per attempt
    batch_size: int = 100  # notifications per request
    queue_size: int = 10_000  # notifications waiting; more are dropped
    max_attempts: int = 5  # per batch, the first included
    retry_base: float = 0.5  # seconds before the first retry; doubled each time
    retry_max: float = 30.0
    linger: float = 0.05  # seconds a short batch waits for company


class WebhookPushNotifier:
    def __init__(
        self,
        options: WebhookOptions,
        clock: Clock | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.options = options
        self.stats = PushStats()
        self._clock = clock or SystemClock()
        self._transport = transport
        self._secret = options.secret.encode()
        self._queue: collections.deque[PushNotification] = collections.deque()
        # (conversation, msg_id) recalled while a batch is being sent (None: none is).
        self._recalled_in_flight: set[tuple[str, int]] | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._client: httpx.AsyncClient | None = None
        self._dropped_since_log = 0
        self._last_drop_log = float("-inf")
        self._where = urlparse(options.url).netloc  # never log the path: it may hold a token
        self._idle = asyncio.Event()  # nothing queued, nothing being sent
        self._idle.set()

    # ------------------------------------------------------------------ intake

    def offer(self, notifications: list[PushNotification]) -> int:
        room = max(0, self.options.queue_size - len(self._queue))
        taken = notifications[:room]
        self._queue.extend(taken)
        self.stats.queued += len(taken)
        if len(taken) < len(notifications):
            self._dropped(len(notifications) - len(taken))
        if taken:
            self._idle.clear()
            self._wake.set()
        return len(taken)

    def withdraw(self, messages: Set[tuple[str, int]]) -> None:
        """Recalled (conversation_id, msg_id): out of the queue now, out of the batch
        being sent before its next attempt."""
        kept = [n for n in self._queue if (n.conversation_id, n.msg_id) not in messages]
        if len(kept) < len(self._queue):
            self.stats.withdrawn += len(self._queue) - len(kept)
            self._queue = collections.deque(kept)
        if self._recalled_in_flight is not None:
            self._recalled_in_flight |= messages

    def _dropped(self, count: int) -> None:
        self.stats.dropped += count
        self._dropped_since_log += count
        now = self._clock.monotonic()
        if now - self._last_drop_log >= DROP_LOG_EVERY:
            log.warning(
                "push queue full (%d): dropped %d notifications",
                self.options.queue_size,
                self._dropped_since_log,
            )
            self._last_drop_log = now
            self._dropped_since_log = 0

    def pending(self) -> int:
        return len(self._queue)

    # --------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        if self._task is not None:
            return
        if not self._secret:
            log.warning("push webhook without IM_PUSH_WEBHOOK_SECRET: requests are not signed")
        # httpx logs every request with its full URL at INFO: the URL may hold a token,
        # and one line per batch is noise. Failures are logged here, without the path.
        logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger("httpx").level))
        self._client = httpx.AsyncClient(timeout=self.options.timeout, transport=self._transport)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            try:
                await asyncio.wait_for(self._idle.wait(), CLOSE_GRACE)
            except TimeoutError:
                pass
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._queue:
            self._dropped(len(self._queue))
            self._queue.clear()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def idle(self) -> None:
        """Until everything offered so far was sent or given up on (tests)."""
        await self._idle.wait()

    # ------------------------------------------------------------------ sending

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
            if len(self._queue) < self.options.batch_size and self.options.linger > 0:
                await self._clock.sleep(self.options.linger)
            batch = [
                self._queue.popleft() for _ in range(min(self.options.batch_size, len(self._queue)))
            ]
            if not batch:
                continue
            try:
                await self._send(batch)
            except asyncio.CancelledError:
                raise
            except Exception:  # never let one batch end the sender
                self.stats.failed += len(batch)
                log.exception("push batch of %d failed", len(batch))

    async def _send(self, batch: list[PushNotification]) -> None:
        self._recalled_in_flight = set()
        try:
            await self._send_attempts(batch)
        finally:
            self._recalled_in_flight = None

    async def _send_attempts(self, batch: list[PushNotification]) -> None:
        body = payload(batch)
        delivery = uuid.uuid4().hex
        attempt = 0
        while True:
            attempt += 1
            outcome = await self._attempt(body, delivery)
            if outcome is None:
                self.stats.sent += len(batch)
                return
            retryable, why = outcome
            if not retryable or attempt >= self.options.max_attempts:
                self.stats.failed += len(batch)
                log.warning(
                    "push to %s failed for %d notifications after %d attempt(s): %s",
                    self._where,
                    len(batch),
                    attempt,
                    why,
                )
                return
            delay = min(self.options.retry_max, self.options.retry_base * 2 ** (attempt - 1))
            log.info("push to %s: %s; retrying in %.1f s", self._where, why, delay)
            await self._clock.sleep(delay)
            kept = self._without_recalled(batch)
            if kept is not batch:
                # The same delivery id with fewer notifications: a receiver that got an
                # earlier attempt (its answer lost) has all of them already.
                if not kept:
                    return
                batch, body = kept, payload(kept)

    def _without_recalled(self, batch: list[PushNotification]) -> list[PushNotification]:
        """``batch`` itself when none of its messages was recalled meanwhile."""
        recalled = self._recalled_in_flight
        if not recalled:
            return batch
        recalled_ids = set(recalled)
        recalled.clear()
        kept = [n for n in batch if (n.conversation_id, n.msg_id) not in recalled_ids]
        if len(kept) == len(batch):
            return batch
        self.stats.withdrawn += len(batch) - len(kept)
        return kept

    async def _attempt(self, body: bytes, delivery: str) -> tuple[bool, str] | None:
        """None when the receiver took the batch, else (retry it?, why not)."""
        assert self._client is not None
        timestamp = self._clock.wall_ms() // 1000
        headers = {
            "Content-Type": "application/json",
            DELIVERY_HEADER: delivery,
            TIMESTAMP_HEADER: str(timestamp),
        }
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(self._secret, timestamp, body)
        try:
            response = await self._client.post(self.options.url, content=body, headers=headers)
        except httpx.TimeoutException:
            return True, "timed out"
        except httpx.TransportError as exc:
            return True, f"connection failed ({type(exc).__name__})"
        if response.is_success:
            return None
        status = response.status_code
        return status >= 500 or status in RETRY_STATUSES, f"HTTP {status}"
