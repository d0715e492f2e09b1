"""Exceptions raised by the client library (REST and socket)."""

from __future__ import annotations

from typing import Any

from im.v1 import wire_pb2


def error_code_name(code: int) -> str:
    """``ERROR_CODE_FORBIDDEN`` -> ``FORBIDDEN`` (unknown numbers stay numeric)."""
    try:
        return wire_pb2.ErrorCode.Name(code).removeprefix("ERROR_CODE_")
    except ValueError:
        return str(code)


def kick_reason_name(reason: int) -> str:
    try:
        return wire_pb2.KickReason.Name(reason).removeprefix("KICK_REASON_")
    except ValueError:
        return str(reason)


class ClientError(Exception):
    """Base of every error this package raises."""

    def to_dict(self) -> dict[str, Any]:
        return {"error": type(self).__name__, "detail": str(self)}


class ApiError(ClientError):
    """A gateway answer that was not 2xx, built from its problem+json body.

    ``status`` is 0 when the gateway could not be reached at all.
    """

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        title: str = "",
        retry_after: float | None = None,
    ) -> None:
        text = f"{status} {code}: {detail}" if detail else f"{status} {code}"
        if retry_after is not None:
            text += f" (retry after {retry_after:g} s)"
        super().__init__(text)
        self.status = status
        self.code = code
        self.detail = detail
        self.title = title
        # Seconds the gateway asked to wait (its Retry-After), e.g. on 429 and 503.
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": self.status,
            "code": self.code,
            "title": self.title,
            "detail": self.detail,
        }
        if self.retry_after is not None:
            out["retry_after"] = self.retry_after
        return out


class ConnectionClosed(ClientError):
    """The socket to the connector is gone (or was never open)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class AuthError(ClientError):
    """The connector refused the Auth frame (or did not answer it in time)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{error_code_name(code)}: {message}")
        self.code = code
        self.message = message

    @property
    def code_name(self) -> str:
        return error_code_name(self.code)

    def to_dict(self) -> dict[str, Any]:
        return {"error": "auth", "code": self.code_name, "message": self.message}


class SendError(ClientError):
    """The connector answered a Send with an Error frame."""

    def __init__(
        self, code: int, message: str, client_msg_id: str = "", retry_after_ms: int = 0
    ) -> None:
        super().__init__(f"{error_code_name(code)}: {message}")
        self.code = code
        self.message = message
        self.client_msg_id = client_msg_id
        # BUSY (and RATE_LIMITED): the connector's "not before" for sending it again.
        self.retry_after_ms = retry_after_ms

    @property
    def code_name(self) -> str:
        return error_code_name(self.code)

    def to_dict(self) -> dict[str, Any]:
        return {
            "error": "send",
            "code": self.code_name,
            "message": self.message,
            "client_msg_id": self.client_msg_id,
        }


class SendTimeout(SendError):
    """No SendAck after every attempt; the message may or may not have been accepted
    (resending with the same client_msg_id later is safe: sends are idempotent)."""

    def __init__(self, client_msg_id: str, attempts: int) -> None:
        super().__init__(
            wire_pb2.ERROR_CODE_UNAVAILABLE,
            f"no SendAck after {attempts} attempt(s)",
            client_msg_id,
        )
        self.attempts = attempts
