"""Typing and presence as the client keeps them: a STARTED runs out after its
expires_in_ms (on the fake clock), a STOPPED or the user's message ends it."""

from __future__ import annotations

from im.client.signals import PresenceBook, TypingTracker
from im.clock import FakeClock
from im.v1 import wire_pb2

STARTED, STOPPED = wire_pb2.TYPING_STATE_STARTED, wire_pb2.TYPING_STATE_STOPPED


def typing(user: int, state: int = STARTED, conv: str = "d:1:2", ms: int = 5000) -> wire_pb2.Typing:
    return wire_pb2.Typing(conversation_id=conv, user_id=user, state=state, expires_in_ms=ms)


def test_typing_runs_out_after_its_expiry_unless_refreshed() -> None:
    clock = FakeClock()
    tracker = TypingTracker(clock)
    tracker.on_typing(typing(1))
    tracker.on_typing(typing(3, conv="g:9"))
    assert tracker.typing("d:1:2") == [1]
    clock.advance(4.0)
    tracker.on_typing(typing(1))  # refreshed
    clock.advance(4.0)
    assert tracker.typing("d:1:2") == [1]
    clock.advance(1.5)
    assert tracker.typing("d:1:2") == []
    assert tracker.typing("g:9") == []


def test_stopped_and_a_message_end_typing() -> None:
    tracker = TypingTracker(FakeClock())
    tracker.on_typing(typing(1))
    tracker.on_typing(typing(1, STOPPED))
    assert tracker.typing("d:1:2") == []
    tracker.on_typing(typing(2))
    tracker.stopped("d:1:2", 2)
    assert tracker.typing("d:1:2") == []


def test_presence_book_keeps_the_last_push() -> None:
    book = PresenceBook()
    book.set(2, True, None)
    book.on_presence(wire_pb2.Presence(user_id=2, online=False, last_seen_ms=1234))
    assert book.get(2) is not None and (book.get(2).online, book.get(2).last_seen_ms) == (
        False,
        1234,
    )
    assert book.get(5) is None
