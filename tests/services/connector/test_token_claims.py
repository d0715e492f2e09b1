"""A validly signed token whose claims no column can hold is refused with
AUTH_FAILED and the connection closed (it used to pass and hang the socket)."""

from __future__ import annotations

import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from im.auth import TokenIssuer, TokenVerifier, generate_key_pair
from im.v1 import wire_pb2
from tests.services.connector.helpers import open_conn

E = wire_pb2
ISSUER = "test"


@pytest.fixture(scope="module")
def pair() -> tuple[bytes, bytes]:
    return generate_key_pair()


@pytest.fixture
def keys(pair: tuple[bytes, bytes]) -> tuple[TokenIssuer, TokenVerifier]:
    """Overrides conftest's: these tests sign their own claims with the same key."""
    return TokenIssuer(pair[0], ISSUER, 3600), TokenVerifier(pair[1], ISSUER)


def signed(private_pem: bytes, sub: object) -> str:
    now = int(time.time())
    claims = {"sub": sub, "did": "phone", "sid": "s1", "iss": ISSUER, "iat": now, "exp": now + 60}
    key = serialization.load_pem_private_key(private_pem, password=None)
    return jwt.encode(claims, key, algorithm="RS256")


@pytest.mark.parametrize("sub", [str(2**70), str(2**63), "-5", "0", "x", 7])
async def test_token_with_impossible_subject_is_refused_and_closed(
    setup, pair: tuple[bytes, bytes], sub: object
) -> None:
    core, *_ = setup
    conn = open_conn(core)
    core.on_frame(conn, wire_pb2.Frame(auth=wire_pb2.Auth(token=signed(pair[0], sub))))
    await core.wait_background()
    assert conn.last("error").error.code == E.ERROR_CODE_AUTH_FAILED
    assert conn.was_closed
    assert "auth_ok" not in conn.kinds()


async def test_largest_subject_is_admitted(setup, pair: tuple[bytes, bytes]) -> None:
    core, *_ = setup
    conn = open_conn(core)
    core.on_frame(conn, wire_pb2.Frame(auth=wire_pb2.Auth(token=signed(pair[0], str(2**63 - 1)))))
    await core.wait_background()
    assert conn.last("auth_ok").auth_ok.user_id == 2**63 - 1
    assert not conn.was_closed
