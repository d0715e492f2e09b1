"""Python client of the IM suite: gateway REST client, connector socket, high-level session."""

from im.client.admin import AdminClient
from im.client.connection import Connection, Event, SeenIds, Transport
from im.client.errors import (
    ApiError,
    AuthError,
    ClientError,
    ConnectionClosed,
    SendError,
    SendTimeout,
    error_code_name,
    kick_reason_name,
)
from im.client.events import apply_event, display_text, is_event
from im.client.gateway import (
    ConnectorInfo,
    GatewayClient,
    HistoryPage,
    LoginResult,
    MemberPage,
    PostedMessage,
    SearchHit,
    SearchPage,
    as_group_id,
    message_from_json,
)
from im.client.reconnect import Reconnected, Reconnecting, ReconnectPolicy
from im.client.session import ImClient

__all__ = [
    "AdminClient",
    "ApiError",
    "AuthError",
    "ClientError",
    "Connection",
    "ConnectionClosed",
    "ConnectorInfo",
    "Event",
    "GatewayClient",
    "HistoryPage",
    "ImClient",
    "LoginResult",
    "MemberPage",
    "PostedMessage",
    "ReconnectPolicy",
    "Reconnected",
    "Reconnecting",
    "SearchHit",
    "SearchPage",
    "SeenIds",
    "SendError",
    "SendTimeout",
    "Transport",
    "apply_event",
    "as_group_id",
    "display_text",
    "error_code_name",
    "is_event",
    "kick_reason_name",
    "message_from_json",
]
