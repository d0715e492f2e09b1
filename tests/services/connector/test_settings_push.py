"""Settings changes in a Deliver reach the named devices that are here and
authenticated, once each; nothing is reported missing or kept for a resend."""

from __future__ import annotations

from im.v1 import connector_pb2, wire_pb2
from tests.services.connector.helpers import authed


def settings_request(*targets: tuple[int, str]) -> connector_pb2.DeliverRequest:
    change = wire_pb2.ConversationSettingsChanged(
        conversation_id="g:7", muted_until=-1, pinned=True, name="Work", updated_at=5
    )
    refs = [connector_pb2.DeviceRef(user_id=u, device_id=d) for u, d in targets]
    return connector_pb2.DeliverRequest(
        settings_changes=[connector_pb2.SettingsChangeDelivery(change=change, targets=refs)]
    )


async def test_a_settings_change_reaches_the_users_devices_here(setup):
    core, issuer, *_ = setup
    phone = await authed(core, issuer, 1, "phone")
    laptop = await authed(core, issuer, 1, "laptop")
    reply = core.deliver(settings_request((1, "phone"), (1, "laptop"), (1, "elsewhere")))
    assert reply.pushed == 2 and not reply.missing
    for conn in (phone, laptop):
        frame = conn.last("conversation_settings_changed").conversation_settings_changed
        assert (frame.conversation_id, frame.muted_until, frame.pinned, frame.name) == (
            "g:7",
            -1,
            True,
            "Work",
        )
    assert not phone.pending  # not a message: never resent
