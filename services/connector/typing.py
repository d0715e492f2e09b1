"""Typing frames from clients: checked (conversation id, state, and the right to send
there: a member, neither of a blocked 1:1 pair nor of a dissolved group), rate limited
per connection, and relayed to the other members' online devices with the sender's
user id and an expiry. Never stored, never on the bus.

A Typing where the user may not send is answered as a Send would be (FORBIDDEN, the
same words): a blocked user learns no more from it than from a refused Send.

Over its rate a connection's Typing frames are dropped silently: typing is best
effort, a client refreshes it anyway, and an Error frame per excess keystroke would
be noise. The budget is its own, so typing can never use up the one of Sends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass

from im.clock import Clock
from im.config import Settings
from im.fanout import MemberCache
from im.ids import is_valid_conversation_id
from im.v1 import wire_pb2
from services.connector.authorizer import Authorizer, Signal
from services.connector.conn import Conn
from services.connector.relay import SignalRelay
from services.connector.timers import TokenBucket

log = logging.getLogger("im.connector")

E = wire_pb2
STATES = frozenset({E.TYPING_STATE_STARTED, E.TYPING_STATE_STOPPED})
MAX_INFLIGHT = 1000  # typing relays under way on one connector; more are dropped
MEMBER_LIST_MAX_AGE = 5.0  # seconds a group's member list is trusted without asking

Spawn = Callable[[Coroutine], asyncio.Task]


@dataclass(slots=True)
class TypingStats:
    received: int = 0
    relayed: int = 0
    rate_limited: int = 0  # dropped over the connection's typing rate
    overloaded: int = 0  # dropped: too many relays under way
    refused: int = 0  # invalid, or may not send there (answered with an Error frame)
    failures: int = 0  # a lookup failed: that typing frame is lost


class TypingRelay:
    def __init__(
        self,
        settings: Settings,
        authorizer: Authorizer,
        members: MemberCache,
        relay: SignalRelay,
        clock: Clock,
        spawn: Spawn,
    ) -> None:
        self._settings = settings
        self._authorizer = authorizer
        self._members = members
        self._relay = relay
        self._clock = clock
        self._spawn = spawn
        self._buckets: dict[int, TokenBucket] = {}  # conn id -> its typing budget
        self._inflight = 0
        self.stats = TypingStats()

    def forget_conn(self, conn: Conn) -> None:
        self._buckets.pop(conn.conn_id, None)

    def forget_conversation(self, conversation_id: str) -> None:
        self._members.forget(conversation_id)

    def on_typing(self, conn: Conn, typing: wire_pb2.Typing, request_id: int) -> None:
        self.stats.received += 1
        if not is_valid_conversation_id(typing.conversation_id):
            self._refuse(conn, E.ERROR_CODE_INVALID_ARGUMENT, "invalid conversation_id", request_id)
            return
        if typing.state not in STATES:
            self._refuse(
                conn, E.ERROR_CODE_INVALID_ARGUMENT, "state must be STARTED or STOPPED", request_id
            )
            return
        if not self._take(conn):
            self.stats.rate_limited += 1
            return
        if self._inflight >= MAX_INFLIGHT:
            self.stats.overloaded += 1
            return
        self._inflight += 1
        self._spawn(self._relay_one(conn, typing.conversation_id, typing.state, request_id))

    def _take(self, conn: Conn) -> bool:
        now = self._clock.monotonic()
        bucket = self._buckets.get(conn.conn_id)
        if bucket is None:
            s = self._settings
            bucket = self._buckets[conn.conn_id] = TokenBucket(
                s.typing_per_second, s.typing_burst, now
            )
        return bucket.take(now)

    def _refuse(self, conn: Conn, code: int, message: str, request_id: int) -> None:
        self.stats.refused += 1
        conn.fail(code, message, request_id=request_id)  # the connection stays open

    def _refusal(self, conversation_id: str) -> str:
        """The words of a refused Send: the same for a non-member and either side of a
        block (the blocked user is not told of it); a dissolved group says so."""
        if self._authorizer.is_read_only(conversation_id):
            return f"{conversation_id} is dissolved: it is read-only"
        return f"you cannot send to {conversation_id}"

    async def _relay_one(
        self, conn: Conn, conversation_id: str, state: int, request_id: int
    ) -> None:
        user_id = conn.user_id
        try:
            verdict = await self._authorizer.may_signal(user_id, conversation_id)
            if verdict is Signal.NOBODY:
                return  # their own 1:1 that no message created yet: nobody to tell
            if verdict is Signal.REFUSED:
                self._refuse(
                    conn, E.ERROR_CODE_FORBIDDEN, self._refusal(conversation_id), request_id
                )
                return
            audience = await self._members.audience(conversation_id)
            if len(audience.joined) > self._settings.typing_max_members:
                return
            others = [u for u in audience.joined if u != user_id]
            typing = wire_pb2.Typing(
                conversation_id=conversation_id,
                state=state,
                user_id=user_id,
                expires_in_ms=self._settings.typing_expiry_ms,
            )
            if await self._relay.send(others, typing=typing):
                self.stats.relayed += 1
        except Exception as exc:
            self.stats.failures += 1
            log.debug("typing in %s not relayed: %r", conversation_id, exc)
        finally:
            self._inflight -= 1
