"""FastAPI dependencies the gateway's routes share: the ``Gateway``, the caller's
verified token claims, and the ids taken from paths."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from im import logs
from im.auth import Claims
from im.validation import MAX_INT64
from services.gateway.errors import unauthorized
from services.gateway.groups import group_id_from_path
from services.gateway.service import Gateway

_bearer = HTTPBearer(auto_error=False, description="Access token from `POST /v1/auth/login`.")


def _gateway(request: Request) -> Gateway:
    return request.app.state.gateway


GatewayDep = Annotated[Gateway, Depends(_gateway)]


async def _claims(
    gateway: GatewayDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Claims:
    if credentials is None:
        raise unauthorized("missing bearer token")
    claims = await gateway.authenticate(credentials.credentials)
    # The rest of the request logs as this user (the request's task ends the binding).
    logs.bind(user_id=claims.user_id, device_id=claims.device_id)
    return claims


Auth = Annotated[Claims, Depends(_claims)]
ConversationId = Annotated[
    str, Path(max_length=64, description='Conversation id, e.g. "d:1:2" or "g:7".')
]


def _group_id(
    group_id: Annotated[
        str,
        Path(
            max_length=64,
            description='The group\'s conversation id "g:<digits>" (":" may be sent as '
            '"%3A"), or just the digits.',
        ),
    ],
) -> str:
    return group_id_from_path(group_id)


GroupId = Annotated[str, Depends(_group_id)]
MemberId = Annotated[int, Path(gt=0, le=MAX_INT64, description="The member's user id.")]
