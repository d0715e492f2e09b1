"""Helpers of the group service's tests (fixtures in conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import create_engine, update

from im.config import Settings
from im.db import MemberRow
from im.v1 import group_pb2, group_pb2_grpc
from services.group.app import build

Stub = group_pb2_grpc.GroupServiceStub
OWNER = group_pb2.MEMBER_ROLE_OWNER
ADMIN = group_pb2.MEMBER_ROLE_ADMIN
MEMBER = group_pb2.MEMBER_ROLE_MEMBER


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"data_dir": data_dir, "host": "127.0.0.1", "group_grpc_port": 0}
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def running_group_service(settings: Settings) -> AsyncIterator[Stub]:
    app = build(settings)
    await app.start()
    channel = grpc.aio.insecure_channel(app.endpoints()["grpc"])
    try:
        yield group_pb2_grpc.GroupServiceStub(channel)
    finally:
        await channel.close()
        await app.stop()


async def status_of(call: Callable[[], Awaitable[Any]]) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call()
    return caught.value.code()


async def create_group(
    stub: Stub, owner: int = 1, members: list[int] | None = None, name: str = "team"
) -> group_pb2.Conversation:
    reply = await stub.CreateGroup(
        group_pb2.CreateGroupRequest(owner_id=owner, name=name, member_ids=members or [])
    )
    return reply.conversation


async def add(
    stub: Stub, conversation_id: str, actor: int, user_ids: list[int], at_seq: int = 0
) -> list[group_pb2.Member]:
    reply = await stub.AddMembers(
        group_pb2.AddMembersRequest(
            conversation_id=conversation_id, actor_id=actor, user_ids=user_ids, at_seq=at_seq
        )
    )
    return list(reply.members)


async def remove(stub: Stub, conversation_id: str, actor: int, user_id: int) -> None:
    await stub.RemoveMember(
        group_pb2.RemoveMemberRequest(
            conversation_id=conversation_id, actor_id=actor, user_id=user_id
        )
    )


async def member_count(stub: Stub, conversation_id: str) -> int:
    reply = await stub.GetConversation(
        group_pb2.GetConversationRequest(conversation_id=conversation_id)
    )
    return reply.conversation.member_count


async def cursors(stub: Stub, conversation_id: str, user_id: int) -> tuple[int, int]:
    reply = await stub.GetCursors(
        group_pb2.GetCursorsRequest(conversation_id=conversation_id, user_ids=[user_id])
    )
    (member,) = reply.members
    return member.delivered_seq, member.read_seq


async def update_cursors(stub: Stub, *updates: tuple[str, int, int, int]) -> int:
    reply = await stub.UpdateCursors(
        group_pb2.UpdateCursorsRequest(
            updates=[
                group_pb2.CursorUpdate(conversation_id=c, user_id=u, delivered_seq=d, read_seq=r)
                for c, u, d, r in updates
            ]
        )
    )
    return reply.applied


def make_admin(settings: Settings, conversation_id: str, user_id: int) -> None:
    # There is no RPC to change roles yet; set it the way an operator would.
    engine = create_engine(settings.resolved_database_url())
    try:
        with engine.begin() as conn:
            conn.execute(
                update(MemberRow)
                .where(MemberRow.conversation_id == conversation_id, MemberRow.user_id == user_id)
                .values(role=ADMIN)
            )
    finally:
        engine.dispose()
