"""im.client.events: applying recall and edit events to a local view."""

from __future__ import annotations

from im import events
from im.client import apply_event, display_text, is_event
from im.v1 import wire_pb2


def m(msg_id: int, seq: int, text: str = "", kind: str = "text/plain", **kw) -> wire_pb2.Message:  # type: ignore[no-untyped-def]
    return wire_pb2.Message(
        msg_id=msg_id,
        conversation_id="g:1",
        seq=seq,
        content_type=kind,
        body=text.encode(),
        server_ts=100 * seq,
        **kw,
    )


def view_of(messages: list[wire_pb2.Message]) -> dict[int, wire_pb2.Message]:
    view: dict[int, wire_pb2.Message] = {}
    for message in messages:
        if not apply_event(view, message):
            view[message.msg_id] = message
    return view


def test_edits_then_a_recall_leave_the_current_state() -> None:
    stream = [
        m(1, 1, "helo"),
        m(2, 2, "other"),
        m(3, 3, "hello", events.EDIT, refers_to=1),
        m(4, 4, "", events.RECALL, refers_to=2),
        m(5, 5, "late", events.EDIT, refers_to=2),  # after the recall: nothing
        m(6, 6, "", events.RECALL, refers_to=99),  # not in the view: left alone
    ]
    view = view_of(stream)
    assert list(view) == [1, 2]
    assert display_text(view[1]) == "hello (edited)" and view[1].edited_at == 300
    assert display_text(view[2]) == "(message recalled)" and view[2].body == b""
    # Applying the events again (a replay, a duplicate delivery) changes nothing.
    for event in stream[2:]:
        assert apply_event(view, event)
    assert display_text(view[1]) == "hello (edited)" and view[2].recalled


def test_an_event_of_another_conversation_is_ignored() -> None:
    view = {1: m(1, 1, "mine")}
    stranger = m(2, 2, "", events.RECALL, refers_to=1)
    stranger.conversation_id = "g:2"
    assert is_event(stranger) and apply_event(view, stranger)
    assert not view[1].recalled and not is_event(view[1])
