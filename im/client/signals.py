"""What a client knows from typing and presence signals: who is typing where (each
STARTED lasts ``expires_in_ms`` unless refreshed; the clock is injectable), and the
last online/offline pushed for each 1:1 peer."""

from __future__ import annotations

from dataclasses import dataclass

from im.clock import Clock, SystemClock
from im.v1 import wire_pb2


class TypingTracker:
    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()
        # (conversation, user) -> clock.monotonic() when the STARTED runs out
        self._until: dict[tuple[str, int], float] = {}

    def on_typing(self, typing: wire_pb2.Typing) -> None:
        key = (typing.conversation_id, typing.user_id)
        if typing.state == wire_pb2.TYPING_STATE_STARTED and typing.expires_in_ms:
            self._until[key] = self._clock.monotonic() + typing.expires_in_ms / 1000.0
        else:
            self._until.pop(key, None)

    def stopped(self, conversation_id: str, user_id: int) -> None:
        """The user's message arrived: it is no longer typing it."""
        self._until.pop((conversation_id, user_id), None)

    def typing(self, conversation_id: str) -> list[int]:
        """Users typing in the conversation now, by user id."""
        now = self._clock.monotonic()
        for key in [k for k, until in self._until.items() if until <= now]:
            del self._until[key]
        return sorted(u for (c, u) in self._until if c == conversation_id)


@dataclass(frozen=True, slots=True)
class PeerPresence:
    online: bool
    last_seen_ms: int  # 0 unknown


class PresenceBook:
    """Last pushed presence per user (fill it from GET .../presence on start)."""

    def __init__(self) -> None:
        self._users: dict[int, PeerPresence] = {}

    def on_presence(self, presence: wire_pb2.Presence) -> None:
        self._users[presence.user_id] = PeerPresence(presence.online, presence.last_seen_ms)

    def set(self, user_id: int, online: bool, last_seen_ms: int | None) -> None:
        self._users[user_id] = PeerPresence(online, last_seen_ms or 0)

    def get(self, user_id: int) -> PeerPresence | None:
        return self._users.get(user_id)
