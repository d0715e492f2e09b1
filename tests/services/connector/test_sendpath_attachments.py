"""A Send's attachment_ids are checked at the connector: at most
IM_MAX_ATTACHMENTS_PER_MESSAGE, each a well-formed id, no repeats; the ids travel on
to the bus with the message."""

from __future__ import annotations

from im.attachments import new_attachment_id
from im.v1 import bus_pb2, wire_pb2
from tests.services.connector.helpers import authed
from tests.services.connector.test_sendpath import answers


def send_with(core, conn, cid: str, ids: list[str]) -> None:  # type: ignore[no-untyped-def]
    frame = wire_pb2.Frame(
        send=wire_pb2.Send(
            client_msg_id=cid,
            conversation_id="d:1:2",
            content_type="text/plain",
            body=b"see attached",
            attachment_ids=ids,
        )
    )
    core.on_frame(conn, frame)


async def test_attachment_ids_are_checked_and_carried(setup, clock):
    core, issuer, bus, _kv = setup
    conn = await authed(core, issuer, 1)
    good = [new_attachment_id() for _ in range(core.settings.max_attachments_per_message)]
    sends = {
        "ok": good,
        "too-many": [*good, new_attachment_id()],
        "malformed": ["../../etc/passwd"],
        "repeated": [good[0], good[0]],
    }
    for cid, ids in sends.items():
        send_with(core, conn, cid, ids)
        await core.wait_background()
        clock.advance(1.0)  # the rate limit refills
    assert answers(conn) == {
        "ok": "ack",
        "too-many": "ERROR_CODE_INVALID_ARGUMENT",
        "malformed": "ERROR_CODE_INVALID_ARGUMENT",
        "repeated": "ERROR_CODE_INVALID_ARGUMENT",
    }
    records = await bus.consumer(["im.messages"], "g").poll(100, 0.01)
    (message,) = [bus_pb2.InboundMessage.FromString(r.value).message for r in records]
    assert list(message.attachment_ids) == good
