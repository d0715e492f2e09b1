"""Request and response models of the gateway's REST API, and the converters from
the gateway's views and protobuf messages to them. See docs/rest-api.md."""

from __future__ import annotations

import base64
from typing import Literal

from pydantic import BaseModel, Field

from im import events
from im.v1 import group_pb2, user_pb2, wire_pb2
from services.gateway.conversations import ConversationView, ReceiptsView
from services.gateway.groups import GroupView, role_name
from services.gateway.inputs import DisplayName, GroupName, Seq, UserId
from services.gateway.service import LoginResult
from services.gateway.settings_models import SettingsOut, settings_out

DEVICE_ID_PATTERN = r"^[A-Za-z0-9_.:\-]{1,64}$"
MAX_IDS_PER_REQUEST = 5000  # user ids per create/add: bounds one request's work
MAX_GROUP_NAME = 255


class RegisterRequest(BaseModel):
    username: str = Field(
        min_length=1, max_length=64, description="Unique login name.", examples=["alice"]
    )
    password: str = Field(
        min_length=1, max_length=1024, description="Password (hashed with argon2id)."
    )
    display_name: DisplayName = Field(
        "",
        max_length=128,
        description="Name shown to others (optional); no control or bidi characters.",
        examples=["Alice"],
    )


class RegisteredUser(BaseModel):
    user_id: int = Field(description="Numeric user id.")
    username: str = Field(description="Login name.")
    display_name: str = Field(description="Name shown to others.")


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=64, description="Login name.")
    password: str = Field(min_length=1, max_length=1024, description="Password.")
    device_id: str = Field(
        pattern=DEVICE_ID_PATTERN,
        description="Stable id of this device or app install, 1-64 characters of "
        "`A-Z a-z 0-9 _ . : -`. A new login of the same device replaces its older "
        "connection.",
        examples=["phone-1"],
    )


class ConnectorAddress(BaseModel):
    id: str = Field(description="Connector id (stable per connector pod).")
    tcp: str = Field(description="`host:port` of the length-prefixed TCP endpoint.")
    ws: str = Field(description="WebSocket URL, `ws://host:port/ws` (`wss://` with TLS).")
    tls: bool = Field(False, description="Both endpoints speak TLS: verify the certificate.")


class LoginResponse(BaseModel):
    access_token: str = Field(description="JWT (RS256); send it as `Bearer` and in `Auth`.")
    token_type: Literal["Bearer"] = Field("Bearer", description="Always `Bearer`.")
    expires_in: int = Field(description="Seconds until the token expires.")
    user_id: int = Field(description="The logged-in user.")
    device_id: str = Field(description="The device id the token is bound to.")
    connector: ConnectorAddress = Field(description="Where to open the real-time socket.")
    heartbeat_interval: float = Field(description="Seconds between client pings.")
    refresh_token: str = Field(
        description="Opaque; `POST /v1/auth/refresh` trades it for new tokens, once (a "
        "spent one used again ends the session). Keep it secret."
    )
    refresh_expires_in: int = Field(description="Seconds until the refresh token expires.")


class UserOut(BaseModel):
    user_id: int = Field(description="Numeric user id.")
    username: str = Field(description="Login name.")
    display_name: str = Field(description="Name shown to others.")
    created_at: int = Field(description="Registration time, milliseconds since the epoch.")
    deleted: bool = Field(
        False,
        description="The account was deleted by an admin: its username and display name "
        "were replaced; its messages are kept (or their bodies erased).",
    )


class UserView(UserOut):
    """Another user as the caller sees them."""

    blocked: bool = Field(default=False, description="Whether you blocked this user.")


class UserList(BaseModel):
    users: list[UserOut] = Field(description="Matching users (0 or 1 for a username).")


class DirectRequest(BaseModel):
    peer_id: UserId = Field(description="The other user of the 1:1 conversation.")


class ConversationOut(BaseModel):
    conversation_id: str = Field(description='`"d:<low>:<high>"` (direct) or `"g:<id>"`.')
    kind: Literal["direct", "group"] = Field(description="Conversation kind.")
    name: str = Field(description="Group name; empty for direct conversations.")
    peer_id: int | None = Field(description="The other user (direct only, else null).")
    last_seq: int = Field(description="Seq of the newest stored message (0: none).")
    delivered_seq: int = Field(description="This user's delivered cursor.")
    read_seq: int = Field(description="This user's read cursor.")
    unread: int = Field(
        description="Messages after the read cursor (and, in a group, after the user "
        "joined): last_seq - max(read_seq, joined_seq)."
    )
    dissolved: bool = Field(
        False, description="A dissolved group: its history is readable, nothing can be sent."
    )

    last_activity_at: int = Field(
        0,
        description="server_ts of the newest message (ms since the epoch); with none yet, "
        "when the conversation was created (or the user joined it).",
    )
    settings: SettingsOut | None = Field(
        None, description="This user's own settings of it (mute, pin, archive, name)."
    )


class ConversationList(BaseModel):
    conversations: list[ConversationOut] = Field(
        description="The user's conversations: pinned ones first, then by last activity, "
        "newest first (ties: by conversation_id)."
    )


class MessageOut(BaseModel):
    msg_id: str = Field(description="Unique, time-ordered 64-bit id as a decimal string.")
    conversation_id: str = Field(description="Conversation id.")
    seq: int = Field(description="Position in the conversation (gap-free from 1).")
    sender_id: int = Field(description="Sender's user id.")
    sender_device: str = Field(description="Sender's device id.")
    client_msg_id: str = Field(description="The sender's idempotency key.")
    content_type: str = Field(description='MIME type of the body, e.g. "text/plain".')
    body_b64: str = Field(description="Body, standard base64.")
    text: str | None = Field(
        description="The body as UTF-8 text when content_type starts with `text/`, else null."
    )
    server_ts: int = Field(description="Server time of acceptance, ms since the epoch.")
    refers_to: str | None = Field(
        None, description="Events (recall, edit): the msg_id they act on; else null."
    )
    edited_at: int | None = Field(
        None, description="When the text was last edited (ms since the epoch); else null."
    )
    recalled: bool = Field(
        False, description="Recalled by its sender or a group admin: its body is erased."
    )

    attachment_ids: list[str] = Field(
        default_factory=list,
        description="Attachments the message refers to: `GET /v1/attachments/{id}`.",
    )


class MessagePage(BaseModel):
    messages: list[MessageOut] = Field(description="Messages in ascending seq order.")
    has_more: bool = Field(description="More messages follow the last one of this page.")


class CursorRequest(BaseModel):
    seq: Seq = Field(description="Cumulative: everything up to this seq.")


RoleName = Literal["owner", "admin", "member"]


class CreateGroupRequest(BaseModel):
    name: GroupName = Field(
        min_length=1,
        max_length=MAX_GROUP_NAME,
        description="Group name; no control or bidi characters.",
        examples=["team"],
    )
    member_ids: list[UserId] = Field(
        default_factory=list,
        max_length=MAX_IDS_PER_REQUEST,
        description=f"Users to add besides the caller (at most {MAX_IDS_PER_REQUEST}; "
        "duplicates and the caller's own id are ignored). Every id must exist.",
    )
    history_visible: bool = Field(
        False,
        description="Members added later can read messages from before they joined.",
    )


class GroupOut(BaseModel):
    conversation_id: str = Field(description='The group\'s id, its conversation id `"g:<id>"`.')
    name: str = Field(description="Group name.")
    owner_id: int = Field(description="The owner (the creator).")
    member_count: int = Field(description="Members, the owner included.")
    history_visible: bool = Field(description="New members can read older messages.")
    created_at: int = Field(description="Creation time, milliseconds since the epoch.")
    my_role: RoleName = Field(description="The caller's role in the group.")
    description: str = Field("", description="Free text shown with the group.")
    avatar: str = Field("", description="An https URL or an attachment id; empty: none.")
    dissolved: bool = Field(False, description="No more sends, joins or changes.")
    dissolved_at: int = Field(0, description="When it was dissolved, ms; 0 while not.")


class AddMembersRequest(BaseModel):
    user_ids: list[UserId] = Field(
        min_length=1,
        max_length=MAX_IDS_PER_REQUEST,
        description=f"Users to add (1 to {MAX_IDS_PER_REQUEST}). Every id must exist.",
    )


class AddedMembers(BaseModel):
    added: list[int] = Field(
        description="The users that were added (those already members are left out)."
    )


class MemberOut(BaseModel):
    user_id: int = Field(description="The member.")
    role: RoleName = Field(description="Role in the group.")
    joined_seq: int = Field(description="The member sees messages with seq > joined_seq.")
    read_seq: int = Field(description="The member's read cursor.")
    joined_at: int = Field(description="When the member joined, ms since the epoch.")


class MemberPage(BaseModel):
    members: list[MemberOut] = Field(description="Members in ascending user id order.")
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )


class RoleRequest(BaseModel):
    role: Literal["admin", "member"] = Field(
        description="The new role. Ownership cannot be transferred."
    )


class ReaderPage(BaseModel):
    user_ids: list[int] = Field(description="Members in ascending user id order.")
    next_cursor: str | None = Field(
        description="Pass as `cursor` (with `list` set to this list) for the next page; "
        "null on the last page."
    )


class ReceiptsOut(BaseModel):
    conversation_id: str = Field(description="Conversation id.")
    seq: int = Field(description="The message asked about.")
    sender_id: int = Field(description="Its sender (counted in neither list).")
    read_count: int = Field(description="Members (not the sender) with read_seq >= seq.")
    unread_count: int = Field(
        description="Members (not the sender) who had joined before seq and not read it."
    )
    read_by: ReaderPage | None = Field(
        description="A page of who has read it; null unless `list` is read or both."
    )
    unread: ReaderPage | None = Field(
        description="A page of who has not read it; null unless `list` is unread or both."
    )


class ReadyStatus(BaseModel):
    status: Literal["ready", "not_ready"] = Field(description="Overall readiness.")
    checks: dict[str, str] = Field(
        description="Per dependency (user, group, message_store, registry, connectors, "
        "routers, bus, presence): `ok` or why not."
    )


# ------------------------------------------------------------------ converters
def user_out(u: user_pb2.User) -> UserOut:
    return UserOut(
        user_id=u.user_id,
        username=u.username,
        display_name=u.display_name,
        created_at=u.created_at,
        deleted=u.deleted,
    )


def conversation_out(v: ConversationView) -> ConversationOut:
    return ConversationOut(
        conversation_id=v.conversation_id,
        kind=v.kind,  # type: ignore[arg-type]
        name=v.name,
        peer_id=v.peer_id,
        last_seq=v.last_seq,
        delivered_seq=v.delivered_seq,
        read_seq=v.read_seq,
        unread=v.unread,
        dissolved=v.dissolved,
        last_activity_at=v.last_activity_at,
        settings=settings_out(v.settings, v.now_ms) if v.settings is not None else None,
    )


def message_out(m: wire_pb2.Message) -> MessageOut:
    text = None
    if m.content_type.startswith("text/") or m.content_type == events.EDIT:
        try:
            text = m.body.decode("utf-8")
        except UnicodeDecodeError:
            text = None  # body_b64 still carries it
    return MessageOut(
        msg_id=str(m.msg_id),
        conversation_id=m.conversation_id,
        seq=m.seq,
        sender_id=m.sender_id,
        sender_device=m.sender_device,
        client_msg_id=m.client_msg_id,
        content_type=m.content_type,
        body_b64=base64.b64encode(m.body).decode("ascii"),
        text=text,
        server_ts=m.server_ts,
        refers_to=str(m.refers_to) if m.refers_to else None,
        edited_at=m.edited_at or None,
        recalled=m.recalled,
        attachment_ids=list(m.attachment_ids),
    )


def group_out(v: GroupView) -> GroupOut:
    c = v.conversation
    return GroupOut(
        conversation_id=c.conversation_id,
        name=c.name,
        owner_id=c.owner_id,
        member_count=c.member_count,
        history_visible=c.history_visible,
        created_at=c.created_at,
        my_role=v.my_role,  # type: ignore[arg-type]
        description=c.description,
        avatar=c.avatar,
        dissolved=c.dissolved,
        dissolved_at=c.dissolved_at,
    )


def member_out(m: group_pb2.Member) -> MemberOut:
    return MemberOut(
        user_id=m.user_id,
        role=role_name(m.role),  # type: ignore[arg-type]
        joined_seq=m.joined_seq,
        read_seq=m.read_seq,
        joined_at=m.joined_at,
    )


def _reader_page(page: tuple[list[int], str | None] | None) -> ReaderPage | None:
    if page is None:
        return None
    return ReaderPage(user_ids=page[0], next_cursor=page[1])


def receipts_out(v: ReceiptsView) -> ReceiptsOut:
    return ReceiptsOut(
        conversation_id=v.conversation_id,
        seq=v.seq,
        sender_id=v.sender_id,
        read_count=v.read_count,
        unread_count=v.unread_count,
        read_by=_reader_page(v.read_by),
        unread=_reader_page(v.unread),
    )


def login_response(r: LoginResult) -> LoginResponse:
    info = r.connector
    return LoginResponse(
        access_token=r.access_token,
        expires_in=r.expires_in,
        user_id=r.user_id,
        device_id=r.device_id,
        connector=ConnectorAddress(
            id=info.connector_id,
            tcp=f"{info.host}:{info.tcp_port}",
            ws=f"{'wss' if info.tls else 'ws'}://{info.host}:{info.ws_port}/ws",
            tls=info.tls,
        ),
        heartbeat_interval=r.heartbeat_interval,
        refresh_token=r.refresh_token,
        refresh_expires_in=r.refresh_expires_in,
    )


class EditRequest(BaseModel):
    text: str = Field(
        max_length=1_000_000,  # characters; the byte limit of a send is checked after
        description="The new text (UTF-8, at most the body size limit of a send).",
    )
    client_msg_id: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="Idempotency key of this edit (or the Idempotency-Key header): a "
        "retry with the same key is answered with the first edit's event.",
    )


class MessageEventOut(BaseModel):
    msg_id: str = Field(description="The event's msg_id (decimal string).")
    conversation_id: str = Field(description="Conversation id.")
    refers_to: str = Field(description="The message it acts on (decimal string).")
    content_type: str = Field(description="application/vnd.im.recall or .edit.")
    server_ts: int = Field(description="Server time of acceptance, ms since the epoch.")
