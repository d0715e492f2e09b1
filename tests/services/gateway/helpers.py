"""Helpers shared by the gateway's REST tests."""

from __future__ import annotations

import itertools

import httpx

from im.v1 import wire_pb2

PROBLEM = "application/problem+json"
_msg_ids = itertools.count(1_000_000_000_000_000_000)  # > 2**53: must travel as a string


def assert_problem(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["code"] == code
    assert body["status"] == status
    assert body["type"] == f"https://im.example/problems/{code}"
    assert body["title"] and isinstance(body["detail"], str)
    assert "Traceback" not in r.text
    return body


def message(
    conversation_id: str, seq: int, sender: int, body: bytes = b"", content_type: str = ""
) -> wire_pb2.Message:
    """A stored message as the router would write it."""
    return wire_pb2.Message(
        msg_id=next(_msg_ids),
        conversation_id=conversation_id,
        seq=seq,
        sender_id=sender,
        sender_device="phone",
        client_msg_id=f"c{seq}",
        content_type=content_type or "text/plain",
        body=body or f"hello {seq}".encode(),
        server_ts=1_800_000_000_000 + seq,
    )
