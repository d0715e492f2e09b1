"""Settings changes (``ConversationSettingsChanged``) pushed to the devices a Deliver
names: never stored nor retransmitted; a device that is not here (or not yet
authenticated) reads the settings from the conversation list instead."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from im.v1 import connector_pb2
from services.connector.conn import frame_payload


def push_settings(
    by_device: Mapping[tuple[int, str], Any],
    changes: Iterable[connector_pb2.SettingsChangeDelivery],
) -> int:
    """Frames written."""
    written = 0
    for item in changes:
        payload = frame_payload(conversation_settings_changed=item.change)
        for target in item.targets:
            conn = by_device.get((target.user_id, target.device_id))
            if conn is None or conn.closed or not conn.authed:
                continue
            conn.write(payload)
            written += 1
    return written
