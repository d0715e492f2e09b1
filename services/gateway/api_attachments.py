"""Attachment routes of the gateway: upload (streamed, size-limited, type-checked),
download and metadata (owner, or member of a conversation it was sent to; 404 for
anyone else). See docs/rest-api.md."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from im import attachments
from im.ports import AttachmentMeta
from services.gateway.attachments import AttachmentOps
from services.gateway.deps import Auth, GatewayDep
from services.gateway.errors import ApiError
from services.gateway.problems import problem_responses
from services.gateway.service import Gateway

router = APIRouter()

UPLOAD_PATH = "/v1/attachments"

AttachmentId = Annotated[
    str, Path(max_length=64, description="The id `POST /v1/attachments` returned.")
]


class AttachmentOut(BaseModel):
    attachment_id: str = Field(description="Unguessable id (22 URL-safe characters).")
    owner_id: int = Field(description="The user who uploaded it.")
    filename: str = Field(description="The file name, sanitized.")
    content_type: str = Field(description="Media type, as uploaded (without parameters).")
    size: int = Field(description="Bytes.")
    sha256: str = Field(description="SHA-256 of the bytes, hex.")
    created_at: int = Field(description="Upload time, ms since the epoch.")


def attachment_out(m: AttachmentMeta) -> AttachmentOut:
    return AttachmentOut(
        attachment_id=m.attachment_id,
        owner_id=m.owner_id,
        filename=m.filename,
        content_type=m.content_type,
        size=m.size,
        sha256=m.sha256,
        created_at=m.created_ms,
    )


def _ops(gateway: Gateway) -> AttachmentOps:
    if gateway.attachment_ops is None:
        raise ApiError(404, "not_found", "attachments are not enabled")
    return gateway.attachment_ops


@router.post(
    UPLOAD_PATH,
    status_code=201,
    response_model=AttachmentOut,
    tags=["attachments"],
    responses=problem_responses(400, 401, 408, 413, 415, 422, 429, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "The file's bytes as they are (not multipart); its media type "
            "in Content-Type.",
            "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def upload(
    gateway: GatewayDep,
    claims: Auth,
    request: Request,
    filename: Annotated[
        str, Query(max_length=1024, description="The file's name (sanitized before storing).")
    ] = "",
) -> AttachmentOut:
    """Upload a file for messages: the body is the file, streamed to the store (the
    size limit is `IM_MAX_ATTACHMENT_BYTES`, the accepted types
    `IM_ATTACHMENT_CONTENT_TYPES`). Send its id in a message's `attachment_ids`: the
    members of that conversation may then download it."""
    ops = _ops(gateway)
    content_type = ops.content_type(request.headers.get("content-type"))
    await ops.check_rate(claims.user_id)
    meta = await ops.upload(claims.user_id, filename, content_type, request.stream())
    return attachment_out(meta)


class AttachmentLimits(BaseModel):
    max_bytes: int = Field(description="Largest upload (IM_MAX_ATTACHMENT_BYTES).")
    content_types: list[str] = Field(
        description="Accepted media types (`type/*`: a family; `*/*`: any)."
    )
    max_per_message: int = Field(description="Most attachment_ids one message may carry.")
    quota_bytes: int = Field(
        description="Most bytes of attachments the caller may keep stored "
        "(IM_ATTACHMENT_QUOTA_BYTES; 0: no quota)."
    )
    used_bytes: int = Field(description="Bytes of attachments the caller stored.")


@router.get(
    "/v1/attachments/limits",
    response_model=AttachmentLimits,
    tags=["attachments"],
    responses=problem_responses(401, 404, 503),
)
async def limits(gateway: GatewayDep, claims: Auth) -> AttachmentLimits:
    """What uploads may be, and how much of the caller's quota is used: check a file
    against it before sending it (a refused upload's 413 may reach a client that is
    still sending as a broken connection)."""
    settings = gateway.settings
    return AttachmentLimits(
        max_bytes=settings.max_attachment_bytes,
        content_types=attachments.parse_allowlist(settings.attachment_content_types),
        max_per_message=settings.max_attachments_per_message,
        quota_bytes=settings.attachment_quota_bytes,
        used_bytes=await _ops(gateway).used(claims.user_id),
    )


@router.get(
    "/v1/attachments/{attachment_id}",
    response_class=StreamingResponse,
    tags=["attachments"],
    responses={
        200: {
            "description": "The file's bytes, with its Content-Type and a Content-Disposition "
            "`attachment` naming it.",
            "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
        },
        **problem_responses(401, 404, 422, 503),
    },
)
async def download(
    gateway: GatewayDep, claims: Auth, attachment_id: AttachmentId
) -> StreamingResponse:
    """Download an attachment: its owner, or a member of a conversation where the owner
    sent it and who may see that message. 404 for anyone else."""
    meta, chunks = await _ops(gateway).open(claims.user_id, attachment_id)
    return StreamingResponse(
        chunks,
        media_type=meta.content_type,
        headers={
            "Content-Length": str(meta.size),
            "Content-Disposition": attachments.content_disposition(meta.filename),
            "X-Content-Type-Options": "nosniff",
            "ETag": f'"{meta.sha256}"',
        },
    )


@router.get(
    "/v1/attachments/{attachment_id}/meta",
    response_model=AttachmentOut,
    tags=["attachments"],
    responses=problem_responses(401, 404, 422, 503),
)
async def meta(gateway: GatewayDep, claims: Auth, attachment_id: AttachmentId) -> AttachmentOut:
    """An attachment's metadata, for whoever may download it."""
    return attachment_out(await _ops(gateway).readable(claims.user_id, attachment_id))
