"""The group lifecycle's storage on a fake clock, on SQLite and (integration) MySQL:
info changes, ownership transfer, dissolution, invite links and join requests."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from im import ids as im_ids
from im.clock import FakeClock
from im.db import create_schema, make_engine
from im.ids import MsgIdGenerator
from im.sqlservice import ServiceError
from services.group.lifecycle import LifecycleStore
from services.group.store import ADMIN, MEMBER, OWNER, GroupStore

HOUR_MS = 3_600_000


class Stores:
    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        create_schema(self.engine)
        self.clock = FakeClock()
        # A random node id: runs on a shared MySQL never meet each other's groups.
        ids = MsgIdGenerator(random.randrange(1, 1000), self.clock)
        self.groups = GroupStore(self.engine, max_group_size=5, ids=ids, clock=self.clock)
        self.life = LifecycleStore(self.engine, max_group_size=5, clock=self.clock)
        self.base = random.randrange(1 << 40, 1 << 50)  # user ids of this run

    def users(self, count: int) -> list[int]:
        return [self.base + i for i in range(1, count + 1)]

    def role(self, cid: str, user_id: int) -> int | None:
        member = self.groups.check_member(cid, user_id)
        return None if member is None else member.role

    def link(self, cid: str, actor: int, **kw):  # type: ignore[no-untyped-def]
        expires = kw.pop("expires_at", self.clock.wall_ms() + HOUR_MS)
        return self.life.create_link(
            cid, actor, expires, kw.pop("max_uses", 0), kw.pop("approval", False)
        )


@pytest.fixture(params=["sqlite", pytest.param("mysql", marks=pytest.mark.integration)])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'im.db'}"
    else:
        url = request.getfixturevalue("mysql_url")
    s = Stores(url)
    yield s
    s.engine.dispose()


def code_of(call) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    with pytest.raises(ServiceError) as caught:
        call()
    return caught.value.code


def test_info_changes_bump_the_version_once_and_no_op_changes_nothing(stores: Stores) -> None:
    owner, admin, plain = stores.users(3)
    cid = stores.groups.create_group(owner, "team", [admin, plain]).conversation_id
    stores.groups.set_member_role(cid, owner, admin, ADMIN)

    conv, changed = stores.life.update_info(cid, admin, {"name": "crew", "description": "hi"})
    assert changed and conv.name == "crew" and conv.description == "hi"
    version = conv.change_version
    again, changed = stores.life.update_info(cid, owner, {"name": "crew"})
    assert not changed and again.change_version == version
    assert code_of(lambda: stores.life.update_info(cid, plain, {"name": "x"})) == (
        grpc.StatusCode.PERMISSION_DENIED
    )


def test_transfer_makes_the_old_owner_an_admin_who_can_then_leave(stores: Stores) -> None:
    owner, heir, outsider = stores.users(3)
    cid = stores.groups.create_group(owner, "team", [heir]).conversation_id
    assert code_of(lambda: stores.groups.remove_member(cid, owner, owner)) == (
        grpc.StatusCode.FAILED_PRECONDITION
    )
    assert code_of(lambda: stores.life.transfer(cid, heir, owner)) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    assert code_of(lambda: stores.life.transfer(cid, owner, outsider)) == (
        grpc.StatusCode.NOT_FOUND
    )

    members, version = stores.life.transfer(cid, owner, heir)
    assert [(m.user_id, m.role) for m in members] == [(heir, OWNER), (owner, ADMIN)]
    assert version > 0
    assert stores.groups.get_conversation(cid).owner_id == heir
    stores.groups.remove_member(cid, owner, owner)  # the old owner leaves
    assert stores.role(cid, owner) is None and stores.role(cid, heir) == OWNER


def test_a_dissolved_group_refuses_every_change_but_can_be_left(stores: Stores) -> None:
    owner, admin, plain, newcomer = stores.users(4)
    cid = stores.groups.create_group(owner, "team", [admin, plain]).conversation_id
    stores.groups.set_member_role(cid, owner, admin, ADMIN)
    token = stores.link(cid, owner).token
    assert code_of(lambda: stores.life.dissolve(cid, admin)) == grpc.StatusCode.PERMISSION_DENIED

    conv, changed = stores.life.dissolve(cid, owner)
    assert changed and conv.dissolved and conv.dissolved_at == stores.clock.wall_ms()
    assert stores.life.dissolve(cid, owner)[1] is False  # once is enough
    assert stores.groups.is_dissolved(cid)
    refused = [
        lambda: stores.life.update_info(cid, owner, {"name": "x"}),
        lambda: stores.life.transfer(cid, owner, admin),
        lambda: stores.groups.add_members(cid, owner, [newcomer], 0),
        lambda: stores.groups.remove_member(cid, owner, plain),
        lambda: stores.groups.set_member_role(cid, owner, plain, ADMIN),
        lambda: stores.link(cid, owner),
    ]
    for call in refused:
        assert code_of(call) == grpc.StatusCode.FAILED_PRECONDITION
    # Its links were revoked with it.
    assert code_of(lambda: stores.life.join_by_link(token, newcomer, 0)) == (
        grpc.StatusCode.NOT_FOUND
    )
    stores.groups.remove_member(cid, plain, plain)
    assert stores.role(cid, plain) is None


def test_a_link_joins_until_it_expires_is_used_up_or_revoked(stores: Stores) -> None:
    owner, a, b, c, d = stores.users(5)
    cid = stores.groups.create_group(owner, "team", []).conversation_id
    link = stores.link(cid, owner, max_uses=2)
    assert len(link.token) >= 32 and link.link_id and link.uses == 0

    joined = stores.life.join_by_link(link.token, a, 7)
    assert joined.member.user_id == a and joined.member.joined_seq == 7
    assert joined.change_version > 0 and not joined.pending
    again = stores.life.join_by_link(link.token, a, 9)
    assert again.already_member and again.change_version == 0  # no use spent
    stores.life.join_by_link(link.token, b, 9)
    assert code_of(lambda: stores.life.join_by_link(link.token, c, 9)) == (
        grpc.StatusCode.FAILED_PRECONDITION  # used up
    )

    short = stores.link(cid, owner, expires_at=stores.clock.wall_ms() + 1000)
    peek = stores.life.join_by_link(short.token, c, 0, dry_run=True)
    assert peek.conversation.conversation_id == cid and stores.role(cid, c) is None
    stores.clock.advance(2.0)
    assert code_of(lambda: stores.life.join_by_link(short.token, c, 0)) == (
        grpc.StatusCode.FAILED_PRECONDITION  # expired
    )

    open_link = stores.link(cid, owner)
    revoked = stores.life.revoke_link(cid, owner, open_link.link_id)
    assert revoked.revoked and not revoked.token
    assert code_of(lambda: stores.life.join_by_link(open_link.token, d, 0)) == (
        grpc.StatusCode.NOT_FOUND
    )
    assert code_of(lambda: stores.life.join_by_link("not-a-token", d, 0)) == (
        grpc.StatusCode.NOT_FOUND
    )
    listed = {x.link_id: x for x in stores.life.list_links(cid, owner)}
    assert listed[link.link_id].uses == 2 and listed[open_link.link_id].revoked
    assert all(not x.token for x in listed.values())  # never shown again


def test_a_link_respects_the_group_size_limit(stores: Stores) -> None:
    owner, *others = stores.users(6)
    cid = stores.groups.create_group(owner, "team", others[:4]).conversation_id  # 5 = full
    link = stores.link(cid, owner)
    assert code_of(lambda: stores.life.join_by_link(link.token, others[4], 0)) == (
        grpc.StatusCode.FAILED_PRECONDITION
    )


def test_only_managers_handle_links_and_requests(stores: Stores) -> None:
    owner, plain, outsider = stores.users(3)
    cid = stores.groups.create_group(owner, "team", [plain]).conversation_id
    link = stores.link(cid, owner)
    for actor in (plain, outsider):
        for call in (
            lambda a=actor: stores.link(cid, a),
            lambda a=actor: stores.life.list_links(cid, a),
            lambda a=actor: stores.life.revoke_link(cid, a, link.link_id),
            lambda a=actor: stores.life.list_requests(cid, a),
        ):
            assert code_of(call) == grpc.StatusCode.PERMISSION_DENIED
    past = stores.clock.wall_ms()
    assert code_of(lambda: stores.link(cid, owner, expires_at=past)) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )


def test_approval_files_one_request_that_an_admin_approves_or_rejects(stores: Stores) -> None:
    owner, asker, other = stores.users(3)
    cid = stores.groups.create_group(owner, "team", []).conversation_id
    link = stores.link(cid, owner, approval=True)

    first = stores.life.join_by_link(link.token, asker, 0)
    assert first.pending and not first.member.user_id and stores.role(cid, asker) is None
    assert stores.life.join_by_link(link.token, asker, 0).pending  # filed once
    stores.life.join_by_link(link.token, other, 0)
    pending = stores.life.list_requests(cid, owner)
    assert [r.user_id for r in pending] == [asker, other]
    assert pending[0].link_id == link.link_id

    members, version = stores.life.decide(cid, owner, asker, True, 5)
    assert [m.user_id for m in members] == [asker] and members[0].joined_seq == 5
    assert version > 0 and stores.role(cid, asker) == MEMBER
    assert stores.life.decide(cid, owner, other, False, 0) == ([], 0)
    assert stores.role(cid, other) is None
    assert stores.life.list_requests(cid, owner) == []
    assert code_of(lambda: stores.life.decide(cid, owner, other, True, 0)) == (
        grpc.StatusCode.NOT_FOUND  # decided already
    )


def test_membership_changes_report_their_change_version(stores: Stores) -> None:
    owner, a, b = stores.users(3)
    cid = stores.groups.create_group(owner, "team", []).conversation_id
    added, v1 = stores.groups.add_members(cid, owner, [a, b], 0)
    assert len(added) == 2 and v1 == 1
    assert stores.groups.add_members(cid, owner, [a], 0) == ([], 0)  # nothing changed
    _, v2 = stores.groups.set_member_role(cid, owner, a, ADMIN)
    assert stores.groups.set_member_role(cid, owner, a, ADMIN)[1] == 0
    _, v3 = stores.groups.remove_member(cid, owner, b)
    assert (v1, v2, v3) == (1, 2, 3)
    assert stores.groups.get_conversation(cid).change_version == 3


def test_a_link_token_never_starts_like_a_command_line_option(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `imctl group join -abc...` would take the token for an option.
    run = uuid.uuid4().hex  # token hashes are unique on the shared MySQL
    drawn = iter([f"-option-like-{run}", f"word-like-{run}"])
    monkeypatch.setattr(im_ids.secrets, "token_urlsafe", lambda nbytes: next(drawn))
    owner, member = stores.users(2)
    cid = stores.groups.create_group(owner, "team", [member]).conversation_id
    assert stores.link(cid, owner).token == f"word-like-{run}"
