"""Bodies of the admin REST API (api_admin.py) and their conversion from the protos."""

from __future__ import annotations

from pydantic import BaseModel, Field

from im.v1 import admin_pb2, user_pb2

MAX_PASSWORD_CHARS = 1024  # as at login: the user service refuses beyond its own bound
MAX_HASH_CHARS = 255


class AdminUser(BaseModel):
    user_id: int = Field(description="Numeric user id.")
    username: str = Field(description="Login name (`deleted:<id>` once deleted).")
    display_name: str = Field(description="Name shown to others.")
    created_at: int = Field(description="Registration time, ms since the epoch.")
    disabled: bool = Field(description="No login, no session while set.")
    deleted: bool = Field(description="Deleted by an admin (also disabled, for good).")


class AdminUserResult(BaseModel):
    user: AdminUser
    sessions_ended: int = Field(description="Sessions ended by this operation.")


class ResetPasswordBody(BaseModel):
    password: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_PASSWORD_CHARS,
        description="The new password. Omitted: the server generates one and answers it "
        "once (it is not stored or logged anywhere).",
    )


class ResetPasswordResult(AdminUserResult):
    password: str | None = Field(
        None, description="The generated password (only when none was given)."
    )


class DeleteResult(AdminUserResult):
    messages_erased: int = Field(description="Message bodies erased (erase_messages=true).")
    groups_left: int = Field(
        description="Groups the user left now (one it owned passed on first) or dissolved "
        "(it was alone in them)."
    )


class AdminSessionOut(BaseModel):
    session_id: str
    device_id: str
    created_at: int = Field(description="Login time, ms since the epoch.")
    last_seen_at: int = Field(description="The login or the last token refresh, ms.")
    expires_at: int = Field(description="End of the refresh token, ms.")
    online: bool = Field(description="The device has a socket open now.")
    connector_id: str | None = Field(None, description="Where that socket is.")


class SessionsResult(BaseModel):
    user: AdminUser
    sessions: list[AdminSessionOut] = Field(description="Open sessions, newest first.")


class AdminUsers(BaseModel):
    users: list[AdminUser]


class ImportUserIn(BaseModel):
    username: str = Field(max_length=64)
    display_name: str = Field("", max_length=256)
    password: str | None = Field(
        None, max_length=MAX_PASSWORD_CHARS, description="Plain password: hashed here (slow)."
    )
    password_hash: str | None = Field(
        None,
        max_length=MAX_HASH_CHARS,
        description="argon2 hash in PHC format (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`), "
        "stored as it is.",
    )


class ImportBody(BaseModel):
    users: list[ImportUserIn] = Field(max_length=10_000, description="At most 10,000.")


class ImportedOut(BaseModel):
    index: int = Field(description="Position in the request's `users`.")
    user_id: int
    username: str


class ImportErrorOut(BaseModel):
    index: int
    username: str
    code: str = Field(description="`username_taken`, `duplicate_in_request` or `invalid`.")
    message: str


class ImportResult(BaseModel):
    imported: int = Field(description="How many users were created.")
    users: list[ImportedOut]
    errors: list[ImportErrorOut] = Field(description="Rows not imported, and why.")


def admin_user(u: user_pb2.User) -> AdminUser:
    return AdminUser(
        user_id=u.user_id,
        username=u.username,
        display_name=u.display_name,
        created_at=u.created_at,
        disabled=u.disabled,
        deleted=u.deleted,
    )


def sessions_result(listed: admin_pb2.ListSessionsResponse) -> SessionsResult:
    return SessionsResult(
        user=admin_user(listed.user),
        sessions=[
            AdminSessionOut(
                session_id=s.session_id,
                device_id=s.device_id,
                created_at=s.created_at,
                last_seen_at=s.last_seen_at,
                expires_at=s.expires_at,
                online=bool(s.connector_id),
                connector_id=s.connector_id or None,
            )
            for s in listed.sessions
        ],
    )


def import_users_pb(body: ImportBody) -> list[admin_pb2.ImportUser]:
    return [
        admin_pb2.ImportUser(
            username=u.username,
            display_name=u.display_name,
            password=u.password or "",
            password_hash=u.password_hash or "",
        )
        for u in body.users
    ]


def import_result(response: admin_pb2.ImportUsersResponse) -> ImportResult:
    return ImportResult(
        imported=len(response.imported),
        users=[
            ImportedOut(index=u.index, user_id=u.user_id, username=u.username)
            for u in response.imported
        ],
        errors=[
            ImportErrorOut(index=e.index, username=e.username, code=e.code, message=e.message)
            for e in response.errors
        ],
    )
