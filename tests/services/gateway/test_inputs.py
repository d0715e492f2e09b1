"""Every integer of the REST API stays within its column's range, names are safe to
show, and tokens carry a storable user id: anything else is a 422 (or 401) problem,
never a 500 or 503."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from im.auth import load_keys
from tests.services.gateway.helpers import assert_problem

if TYPE_CHECKING:
    from .conftest import Suite

TOO_BIG = 2**63  # one past the BIGINT columns
WAY_TOO_BIG = 2**70


async def test_user_id_past_the_column_range_is_422(suite: Suite) -> None:
    _, headers = await suite.user("alice")
    r = await suite.client.get(f"/v1/users/{TOO_BIG}", headers=headers)
    assert_problem(r, 422, "invalid_request")
    for bad in ("0", "-5", str(WAY_TOO_BIG)):
        assert_problem(
            await suite.client.get(f"/v1/users/{bad}", headers=headers), 422, "invalid_request"
        )
    # The largest storable id is a well-formed question with a plain answer.
    r = await suite.client.get(f"/v1/users/{TOO_BIG - 1}", headers=headers)
    assert_problem(r, 404, "not_found")


@pytest.mark.parametrize("peer_id", [TOO_BIG, WAY_TOO_BIG, -5, 0])
async def test_direct_peer_past_the_column_range_is_422(suite: Suite, peer_id: int) -> None:
    _, headers = await suite.user("alice")
    r = await suite.client.post(
        "/v1/conversations/direct", json={"peer_id": peer_id}, headers=headers
    )
    body = assert_problem(r, 422, "invalid_request")
    assert "peer_id" in body["detail"]


async def test_integer_with_thousands_of_digits_is_a_problem_not_a_crash(suite: Suite) -> None:
    _, headers = await suite.user("alice")
    r = await suite.client.post(
        "/v1/conversations/direct",
        content=b'{"peer_id": ' + b"9" * 5000 + b"}",
        headers={**headers, "Content-Type": "application/json"},
    )
    # Python's JSON parser refuses integers of over 4300 digits: the body does not
    # parse at all, which FastAPI answers with 400.
    assert_problem(r, 400, "invalid_request")


async def test_history_after_seq_past_the_column_range_is_422(suite: Suite) -> None:
    _, headers = await suite.user("alice")
    bob = await suite.register("bob")
    cid = (
        await suite.client.post("/v1/conversations/direct", json={"peer_id": bob}, headers=headers)
    ).json()["conversation_id"]
    url = f"/v1/conversations/{cid}/messages"
    for bad in (TOO_BIG, WAY_TOO_BIG, -1):
        r = await suite.client.get(url, params={"after_seq": bad}, headers=headers)
        assert_problem(r, 422, "invalid_request")
    r = await suite.client.get(url, params={"after_seq": TOO_BIG - 1}, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json() == {"messages": [], "has_more": False}
    for verb in ("ack", "read"):
        r = await suite.client.post(
            f"/v1/conversations/{cid}/{verb}", json={"seq": TOO_BIG}, headers=headers
        )
        assert_problem(r, 422, "invalid_request")


async def test_page_cursors_past_the_column_range_are_422(suite: Suite) -> None:
    _, headers = await suite.user("alice")
    bob = await suite.register("bob")
    r = await suite.client.post(
        "/v1/groups", json={"name": "team", "member_ids": [bob]}, headers=headers
    )
    gid = r.json()["conversation_id"]
    members = f"/v1/groups/{gid}/members"
    receipts = f"/v1/conversations/{gid}/receipts"
    for bad in (str(WAY_TOO_BIG), str(TOO_BIG), "-5", "0", "abc", "1" * 40):
        r = await suite.client.get(members, params={"cursor": bad}, headers=headers)
        assert_problem(r, 422, "invalid_request")
        r = await suite.client.get(receipts, params={"seq": 1, "cursor": bad}, headers=headers)
        assert_problem(r, 422, "invalid_request")
    # A cursor at the end of the range is the (empty) page after every member.
    r = await suite.client.get(members, params={"cursor": str(TOO_BIG - 1)}, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json() == {"members": [], "next_cursor": None}


@pytest.mark.parametrize(
    "name",
    ["nul\x00byte", "\x1b[2J\x1b[31mred", "gnp.\u202eexe", "\u2066isolate\u2069", "cr\rlf"],
)
async def test_names_with_control_or_bidi_characters_are_422(suite: Suite, name: str) -> None:
    r = await suite.client.post(
        "/v1/auth/register",
        json={"username": "mallory", "password": "secret-pass-1", "display_name": name},
    )
    body = assert_problem(r, 422, "invalid_request")
    assert "display_name" in body["detail"]
    _, headers = await suite.user("alice")
    r = await suite.client.post("/v1/groups", json={"name": name}, headers=headers)
    body = assert_problem(r, 422, "invalid_request")
    assert "name" in body["detail"]


async def test_names_with_accents_and_emoji_are_accepted(suite: Suite) -> None:
    name = "Zoë \U0001f469\u200d\U0001f4bb"
    r = await suite.client.post(
        "/v1/auth/register",
        json={"username": "zoe", "password": "secret-pass-1", "display_name": name},
    )
    assert r.status_code == 201, r.text
    assert r.json()["display_name"] == name


def _token(suite: Suite, sub: object) -> str:
    """A token signed with the gateway's own key: only its claims are wrong."""
    private, _ = load_keys(suite.settings, need_private=True)
    assert private is not None
    key = serialization.load_pem_private_key(private, password=None)
    now = int(time.time())
    claims = {
        "sub": sub,
        "did": "phone",
        "sid": "s-1",
        "iss": suite.settings.jwt_issuer,
        "iat": now,
        "exp": now + 60,
    }
    return jwt.encode(claims, key, algorithm="RS256")


@pytest.mark.parametrize("sub", [str(WAY_TOO_BIG), str(TOO_BIG), "-5", "0", "x", 7])
async def test_signed_token_with_impossible_subject_is_401(suite: Suite, sub: object) -> None:
    for path in ("/v1/users/me", "/v1/conversations"):
        r = await suite.client.get(path, headers={"Authorization": f"Bearer {_token(suite, sub)}"})
        assert_problem(r, 401, "unauthorized")
    # The same key and claims with a real user id pass.
    alice = await suite.register("alice")
    r = await suite.client.get(
        "/v1/users/me", headers={"Authorization": f"Bearer {_token(suite, str(alice))}"}
    )
    assert r.status_code == 200, r.text
