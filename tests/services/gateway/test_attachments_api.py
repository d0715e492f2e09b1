"""Attachments over the gateway's REST API: upload limits and types, who may download
(owner, members of a linked conversation who may see the message, nobody else), and
the headers of a download. What the router does when it stores a message (the message,
then its link) is done on the stores directly here."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

import pytest

from im.events import RECALL
from im.ids import direct_conversation_id
from im.ports import AttachmentLink
from tests.services.gateway.helpers import assert_problem, message
from tests.services.gateway.test_guards import app_of, endless, run_asgi

if TYPE_CHECKING:
    from .conftest import Suite

Headers = dict[str, str]
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40


async def upload(
    suite: Suite,
    headers: Headers,
    data: Any = PNG,
    content_type: str | None = "image/png",
    filename: str = "cat.png",
) -> Any:
    extra = {"Content-Type": content_type} if content_type is not None else {}
    return await suite.client.post(
        "/v1/attachments",
        params={"filename": filename},
        content=data,
        headers={**headers, **extra},
    )


async def uploaded(suite: Suite, headers: Headers, data: bytes = PNG) -> dict[str, Any]:
    r = await upload(suite, headers, data)
    assert r.status_code == 201, r.text
    return r.json()


async def share(suite: Suite, attachment_id: str, conversation_id: str, seq: int, sender: int):
    """A message of ``sender`` carrying the attachment, stored and linked as the router
    does; returns how many links counted."""
    sent = message(conversation_id, seq, sender)
    sent.attachment_ids.append(attachment_id)
    await suite.store.insert_many([sent])
    store = suite.gateway.gateway.attachment_ops.store  # type: ignore[union-attr]
    return await store.link([AttachmentLink(attachment_id, conversation_id, seq, sender)])


async def recall(suite: Suite, conversation_id: str, seq: int, seq_of_recall: int) -> None:
    """The recall event of message ``seq``, stored and applied as the router does."""
    (target,) = await suite.store.history(conversation_id, seq - 1, 1)
    event = message(conversation_id, seq_of_recall, target.sender_id, b"", RECALL)
    event.refers_to = target.msg_id
    await suite.store.insert_many([event])
    assert await suite.store.apply_events([event]) == []


async def test_upload_returns_id_size_type_and_sha256(suite: Suite) -> None:
    alice_id, alice = await suite.user("alice")
    body = await uploaded(suite, alice)
    assert len(body["attachment_id"]) == 22
    assert body["size"] == len(PNG)
    assert body["sha256"] == hashlib.sha256(PNG).hexdigest()
    assert body["content_type"] == "image/png"
    assert body["owner_id"] == alice_id and body["filename"] == "cat.png"
    again = await uploaded(suite, alice)
    assert again["attachment_id"] != body["attachment_id"]


async def test_the_owner_downloads_with_safe_headers(suite: Suite) -> None:
    _, alice = await suite.user("alice")
    r = await upload(suite, alice, filename='../../x"y\r\n.png')
    attachment_id = r.json()["attachment_id"]
    r = await suite.client.get(f"/v1/attachments/{attachment_id}", headers=alice)
    assert r.status_code == 200 and r.content == PNG
    assert r.headers["content-type"] == "image/png"
    assert r.headers["content-length"] == str(len(PNG))
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["content-disposition"].startswith('attachment; filename="xy .png"')
    assert r.headers["cache-control"] == "no-store"
    meta = await suite.client.get(f"/v1/attachments/{attachment_id}/meta", headers=alice)
    assert meta.json()["filename"] == "xy .png"


async def test_uploads_need_a_token(suite: Suite) -> None:
    assert_problem(await upload(suite, {}), 401, "unauthorized")
    assert_problem(await suite.client.get("/v1/attachments/" + "a" * 22), 401, "unauthorized")


@pytest.mark.parametrize("settings_overrides", [{"max_attachment_bytes": 1000}])
async def test_too_large_is_413_declared_or_streamed(suite: Suite) -> None:
    _, alice = await suite.user("alice")
    app = app_of(suite)
    # A declared length over the limit: refused before a byte is read (or auth is asked).
    out = await run_asgi(app, "POST", "/v1/attachments", {"Content-Length": "1001"}, endless(1000))
    assert out.status == 413 and out.bytes_read == 0
    assert json.loads(out.body)["code"] == "payload_too_large"
    # Streamed (chunked): cut off at the limit, nothing kept.
    out = await run_asgi(app, "POST", "/v1/attachments", alice, endless(100))
    assert out.status == 413 and 1000 < out.bytes_read <= 1100
    folder = suite.settings.data_dir / "attachments"
    assert not any((folder / "partial").iterdir())
    assert not any((folder / "blobs").rglob("*?" * 22))
    assert (await upload(suite, alice, b"x" * 1000)).status_code == 201
    # The rest of the API keeps its own limit.
    r = await suite.client.post("/v1/auth/login", content=b"{" + b" " * 2000 + b"}")
    assert_problem(r, 422, "invalid_request")


@pytest.mark.parametrize(
    "settings_overrides", [{"attachment_quota_bytes": 2500, "max_attachment_bytes": 2000}]
)
async def test_uploads_past_the_users_quota_are_413(suite: Suite) -> None:
    _, alice = await suite.user("alice")
    _, bob = await suite.user("bob")
    assert (await upload(suite, alice, b"a" * 1500)).status_code == 201
    # 1000 bytes are left: a larger file is refused, streamed or not, and kept nowhere.
    assert_problem(await upload(suite, alice, b"b" * 1001), 413, "quota_exceeded")
    streamed = iter([b"s" * 100] * 15)  # chunked: 1500 bytes, within the size limit
    out = await run_asgi(app_of(suite), "POST", "/v1/attachments", alice, streamed)
    assert out.status == 413 and json.loads(out.body)["code"] == "quota_exceeded"
    assert (await upload(suite, alice, b"c" * 1000)).status_code == 201
    assert_problem(await upload(suite, alice, b"d"), 413, "quota_exceeded")  # full
    # The size limit is still its own answer, and bob's quota is his own.
    assert_problem(await upload(suite, bob, b"e" * 2001), 413, "payload_too_large")
    assert (await upload(suite, bob, b"f" * 2000)).status_code == 201
    limits = (await suite.client.get("/v1/attachments/limits", headers=alice)).json()
    assert (limits["quota_bytes"], limits["used_bytes"]) == (2500, 2500)


async def test_types_outside_the_allowlist_are_415(suite: Suite) -> None:
    _, alice = await suite.user("alice")
    for bad in ("text/html", "image/svg+xml", "nonsense", "application/x-msdownload"):
        assert_problem(await upload(suite, alice, content_type=bad), 415, "unsupported_media_type")
    r = await upload(suite, alice, b"hello", content_type="text/plain; charset=utf-8")
    assert r.status_code == 201 and r.json()["content_type"] == "text/plain"
    # No Content-Type: generic bytes, which the default list accepts.
    r = await upload(suite, alice, b"\x00\x01", content_type=None)
    assert r.status_code == 201 and r.json()["content_type"] == "application/octet-stream"


@pytest.mark.parametrize("settings_overrides", [{"attachment_uploads_per_hour": 2}])
async def test_uploads_are_rate_limited_per_user(suite: Suite) -> None:
    _, alice = await suite.user("alice")
    _, bob = await suite.user("bob")
    await uploaded(suite, alice)
    await uploaded(suite, alice)
    r = await upload(suite, alice)
    assert_problem(r, 429, "rate_limited")
    assert int(r.headers["retry-after"]) > 0
    await uploaded(suite, bob)  # someone else's uploads are not counted


async def test_member_of_a_linked_conversation_reads_strangers_get_404(suite: Suite) -> None:
    alice_id, alice = await suite.user("alice")
    bob_id, bob = await suite.user("bob")
    _, carol = await suite.user("carol")
    r = await suite.client.post("/v1/conversations/direct", json={"peer_id": bob_id}, headers=alice)
    direct = r.json()["conversation_id"]
    assert direct == direct_conversation_id(alice_id, bob_id)
    attachment_id = (await uploaded(suite, alice))["attachment_id"]
    url = f"/v1/attachments/{attachment_id}"

    # Before any message refers to it: only alice.
    assert_problem(await suite.client.get(url, headers=bob), 404, "not_found")
    assert await share(suite, attachment_id, direct, 1, alice_id) == 1
    r = await suite.client.get(url, headers=bob)
    assert r.status_code == 200 and r.content == PNG
    assert (await suite.client.get(url + "/meta", headers=bob)).status_code == 200
    # carol is in no linked conversation: as if it did not exist.
    stranger = assert_problem(await suite.client.get(url, headers=carol), 404, "not_found")
    unknown = assert_problem(
        await suite.client.get("/v1/attachments/" + "b" * 22, headers=carol), 404, "not_found"
    )
    assert stranger["detail"] == unknown["detail"]
    assert_problem(await suite.client.get(url + "/meta", headers=carol), 404, "not_found")
    assert_problem(
        await suite.client.get("/v1/attachments/..%2F..", headers=alice), 404, "not_found"
    )


async def test_a_message_of_someone_else_links_nothing(suite: Suite) -> None:
    _, alice = await suite.user("alice")
    mallory_id, _ = await suite.user("mallory")
    _, carol = await suite.user("carol")
    attachment_id = (await uploaded(suite, alice))["attachment_id"]
    # mallory sends alice's id to carol: the message refers to it, but shares nothing.
    r = await suite.client.post(
        "/v1/conversations/direct", json={"peer_id": mallory_id}, headers=carol
    )
    conversation = r.json()["conversation_id"]
    assert await share(suite, attachment_id, conversation, 1, mallory_id) == 0
    assert_problem(
        await suite.client.get(f"/v1/attachments/{attachment_id}", headers=carol), 404, "not_found"
    )


async def test_a_later_member_reads_only_what_was_sent_after_joining(suite: Suite) -> None:
    alice_id, alice = await suite.user("alice")
    bob_id, _ = await suite.user("bob")
    dave_id, dave = await suite.user("dave")
    r = await suite.client.post(
        "/v1/groups", json={"name": "team", "member_ids": [bob_id]}, headers=alice
    )
    gid = r.json()["conversation_id"]
    first = (await uploaded(suite, alice))["attachment_id"]
    await share(suite, first, gid, 1, alice_id)
    r = await suite.client.post(
        f"/v1/groups/{gid}/members", json={"user_ids": [dave_id]}, headers=alice
    )
    assert r.status_code == 200, r.text
    # dave joined after seq 1 in a group without visible history.
    assert_problem(
        await suite.client.get(f"/v1/attachments/{first}", headers=dave), 404, "not_found"
    )
    await share(suite, first, gid, 2, alice_id)  # sent again: now dave sees it
    r = await suite.client.get(f"/v1/attachments/{first}", headers=dave)
    assert r.status_code == 200 and r.content == PNG


async def test_a_recalled_message_shares_its_attachment_no_more(suite: Suite) -> None:
    alice_id, alice = await suite.user("alice")
    bob_id, bob = await suite.user("bob")
    r = await suite.client.post("/v1/conversations/direct", json={"peer_id": bob_id}, headers=alice)
    direct = r.json()["conversation_id"]
    attachment_id = (await uploaded(suite, alice))["attachment_id"]
    url = f"/v1/attachments/{attachment_id}"
    await share(suite, attachment_id, direct, 1, alice_id)
    assert (await suite.client.get(url, headers=bob)).status_code == 200
    await recall(suite, direct, 1, 2)
    assert_problem(await suite.client.get(url, headers=bob), 404, "not_found")
    assert_problem(await suite.client.get(url + "/meta", headers=bob), 404, "not_found")
    r = await suite.client.get(url, headers=alice)  # the owner's upload stays hers
    assert r.status_code == 200 and r.content == PNG
    # Sent again in a new message: shared again.
    await share(suite, attachment_id, direct, 3, alice_id)
    assert (await suite.client.get(url, headers=bob)).status_code == 200


async def test_a_store_that_fails_is_503(suite: Suite, monkeypatch: pytest.MonkeyPatch) -> None:
    from im.ports import BackendUnavailable

    _, alice = await suite.user("alice")
    attachment_id = (await uploaded(suite, alice))["attachment_id"]
    store = suite.gateway.gateway.attachment_ops.store  # type: ignore[union-attr]

    async def down(*_args: Any, **_kwargs: Any) -> Any:
        raise BackendUnavailable("attachment store", "down")

    monkeypatch.setattr(store, "meta", down)
    monkeypatch.setattr(store, "put", down)
    url = f"/v1/attachments/{attachment_id}"
    assert_problem(await suite.client.get(url, headers=alice), 503, "unavailable")
    assert_problem(await upload(suite, alice), 503, "unavailable")


@pytest.mark.parametrize("settings_overrides", [{"max_attachment_bytes": 1234}])
async def test_limits_are_told(suite: Suite) -> None:
    _, alice = await suite.user("alice")
    r = await suite.client.get("/v1/attachments/limits", headers=alice)
    assert r.status_code == 200
    body = r.json()
    assert body["max_bytes"] == 1234 and "image/png" in body["content_types"]
    assert body["max_per_message"] == 10
