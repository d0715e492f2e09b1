"""imctl search against the real gateway harness."""

from __future__ import annotations

from typing import TYPE_CHECKING

from im.ids import direct_conversation_id
from tests.services.gateway.helpers import message

if TYPE_CHECKING:
    from tests.im.cli.conftest import Imctl
    from tests.services.gateway.conftest import Suite


async def test_search_everywhere_in_one_conversation_and_by_pages(
    suite: Suite, imctl: Imctl
) -> None:
    alice, bob = await suite.register("alice"), await suite.register("bob")
    await suite.register("carol")
    code, [group] = await imctl("group", "create", "team", "--members", "bob,carol")
    gid = group["conversation_id"]
    dm = direct_conversation_id(alice, bob)
    token = (await suite.login("bob"))["access_token"]
    r = await suite.client.post(
        "/v1/conversations/direct",
        json={"peer_id": alice},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 200
    await suite.store.insert_many(
        [
            message(dm, 1, bob, b"the Quarterly report is late"),
            message(gid, 1, alice, b"report due friday"),
            message(dm, 2, alice, b"unrelated"),
        ]
    )

    code, lines = await imctl("search", "REPORT")
    assert code == 0
    assert [(m["conversation_id"], m["sender"], m["text"]) for m in lines] == [
        (gid, "alice", "report due friday"),
        (dm, "bob", "the Quarterly report is late"),
    ]
    assert lines[1]["snippet"] == "the Quarterly report is late"
    code, lines = await imctl("search", "report", "--to", "bob")
    assert code == 0 and [m["conversation_id"] for m in lines] == [dm]
    code, lines = await imctl("search", "report", "-g", gid[2:])
    assert code == 0 and [m["conversation_id"] for m in lines] == [gid]
    code, lines = await imctl("search", "report", "-n", "1")
    assert code == 0 and [m["seq"] for m in lines] == [1] and lines[0]["conversation_id"] == gid
    code, lines = await imctl("search", "report", user="carol")
    assert code == 0 and [m["conversation_id"] for m in lines] == [gid]

    code, [problem] = await imctl("search", "***")
    assert code == 1 and "word" in problem["detail"]
    code, [problem] = await imctl("search", "report", "-c", dm, user="carol")
    assert code == 1 and problem["status"] == 403
