"""imctl conversations, history and read against the real gateway harness."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from im import events
from im.ids import direct_conversation_id
from tests.services.gateway.helpers import message

if TYPE_CHECKING:
    from tests.im.cli.conftest import Imctl
    from tests.services.gateway.conftest import Suite


async def test_conversations_history_and_read(suite: Suite, imctl: Imctl) -> None:
    alice, bob = await suite.register("alice"), await suite.register("bob")
    await suite.register("carol")
    code, [group] = await imctl("group", "create", "team", "--members", "bob,carol")
    assert code == 0
    gid = group["conversation_id"]
    dm = direct_conversation_id(alice, bob)
    code, _ = await imctl("read", "--to", "carol")  # no 1:1 yet: nothing to read
    assert code == 0
    _, headers = 0, {"Authorization": f"Bearer {(await suite.login('bob'))['access_token']}"}
    r = await suite.client.post(
        "/v1/conversations/direct", json={"peer_id": alice}, headers=headers
    )
    assert r.status_code == 200
    await suite.store.insert_many(
        [message(dm, seq, bob if seq % 2 else alice) for seq in range(1, 26)]
        + [message(gid, 1, bob)]
    )

    code, listed = await imctl("conversations")
    assert code == 0
    by_id = {c["conversation_id"]: c for c in listed}
    assert (by_id[dm]["title"], by_id[dm]["peer"], by_id[dm]["last_seq"]) == ("@bob", "bob", 25)
    assert (by_id[gid]["title"], by_id[gid]["unread"]) == ("team", 1)

    code, lines = await imctl("history", "--to", "bob")
    assert code == 0
    assert [m["seq"] for m in lines] == list(range(6, 26))  # the last 20
    assert {(m["sender_id"], m["sender"]) for m in lines} == {(alice, "alice"), (bob, "bob")}
    assert lines[-1]["text"] == "hello 25"
    code, lines = await imctl("history", "-g", gid[2:], "--last", "5")
    assert code == 0 and [(m["seq"], m["sender"]) for m in lines] == [(1, "bob")]
    code, lines = await imctl("history", "-c", dm, "--after-seq", "3", "--limit", "2")
    assert code == 0 and [m["seq"] for m in lines] == [4, 5]

    code, [read] = await imctl("read", "-g", gid)
    assert code == 0 and read == {"conversation_id": gid, "read_seq": 1}
    code, [read] = await imctl("read", "--to", "bob", "--seq", "10")
    assert code == 0 and read == {"conversation_id": dm, "read_seq": 10}
    code, unread = await imctl("conversations", "--unread")
    assert code == 0 and [(c["conversation_id"], c["unread"]) for c in unread] == [(dm, 15)]

    code, [problem] = await imctl("read", "-g", "999")
    assert code == 1 and problem["error"] == "usage" and "g:999" in problem["detail"]
    code, [problem] = await imctl("history", "--to", "alice")
    assert code == 1 and problem["error"] == "usage"


async def test_history_says_what_a_group_event_was(suite: Suite, imctl: Imctl) -> None:
    alice, bob = await suite.register("alice"), await suite.register("bob")
    carol = await suite.register("carol")
    code, [group] = await imctl("group", "create", "team", "--members", "bob")
    gid = group["conversation_id"]
    added = json.dumps({"actor_id": alice, "user_ids": [carol]}).encode()
    await suite.store.insert_many(
        [message(gid, 1, alice, added, events.GROUP_MEMBERS_ADDED), message(gid, 2, bob)]
    )
    code, lines = await imctl("history", "-g", gid)
    assert code == 0
    assert [(m["seq"], m.get("event")) for m in lines] == [(1, "alice added carol"), (2, None)]
    assert lines[0]["text"] is None  # the body is the event's data, not a text
