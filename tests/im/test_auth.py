"""Access tokens (EdDSA JWT) and argon2id password hashes."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest

from im.auth import (
    TokenError,
    TokenIssuer,
    TokenVerifier,
    generate_key_pair,
    load_keys,
    password_hasher,
    verify_password,
)
from im.config import Settings

ISSUER = "im-gateway"


@pytest.fixture(scope="module")
def keys() -> tuple[bytes, bytes]:
    return generate_key_pair()


def issuer_for(keys: tuple[bytes, bytes], issuer: str = ISSUER, ttl: int = 600) -> TokenIssuer:
    return TokenIssuer(keys[0], issuer, ttl)


def test_issue_then_verify_round_trip(keys: tuple[bytes, bytes]) -> None:
    token, claims = issuer_for(keys).issue(42, "phone-1")
    verified = TokenVerifier(keys[1], ISSUER).verify(token)
    assert verified == claims
    assert (verified.user_id, verified.device_id) == (42, "phone-1")
    assert verified.expires_at == pytest.approx(time.time() + 600, abs=5)
    # Every issue is its own session.
    assert issuer_for(keys).issue(42, "phone-1")[1].session_id != claims.session_id


def test_expired_token_is_rejected(keys: tuple[bytes, bytes]) -> None:
    long_ago = time.time() - 600 - 60  # expired a minute ago: well past the leeway
    token, _ = issuer_for(keys).issue(42, "phone-1", now=long_ago)
    with pytest.raises(TokenError):
        TokenVerifier(keys[1], ISSUER).verify(token)


def test_token_signed_with_another_key_is_rejected(keys: tuple[bytes, bytes]) -> None:
    token, _ = issuer_for(generate_key_pair()).issue(42, "phone-1")
    with pytest.raises(TokenError):
        TokenVerifier(keys[1], ISSUER).verify(token)


def test_token_of_another_issuer_is_rejected(keys: tuple[bytes, bytes]) -> None:
    token, _ = issuer_for(keys, issuer="someone-else").issue(42, "phone-1")
    with pytest.raises(TokenError):
        TokenVerifier(keys[1], ISSUER).verify(token)


def test_tampered_token_is_rejected(keys: tuple[bytes, bytes]) -> None:
    token, _ = issuer_for(keys).issue(42, "phone-1")
    header, payload, signature = token.split(".")
    forged_payload = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB")
    with pytest.raises(TokenError):
        TokenVerifier(keys[1], ISSUER).verify(f"{header}.{forged_payload}.{signature}")


@pytest.mark.parametrize("garbage", ["", "not-a-token", "a.b.c", "eyJhbGciOiJub25lIn0.e30."])
def test_garbage_token_is_rejected(keys: tuple[bytes, bytes], garbage: str) -> None:
    with pytest.raises(TokenError):
        TokenVerifier(keys[1], ISSUER).verify(garbage)


def test_dev_key_pair_is_created_once_and_kept_private(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    private, public = load_keys(settings, need_private=True)
    assert private is not None
    assert load_keys(settings, need_private=False) == (private, public)
    mode = stat.S_IMODE((tmp_path / "jwt-private.pem").stat().st_mode)
    assert mode == 0o600
    token, claims = TokenIssuer(private, ISSUER, 60).issue(1, "d")
    assert TokenVerifier(public, ISSUER).verify(token) == claims


def test_argon2_verify_true_and_false() -> None:
    hasher = password_hasher(Settings(argon2_time_cost=1, argon2_memory_kib=8192))
    stored = hasher.hash("s3cret-password")
    assert stored.startswith("$argon2id$")
    assert verify_password(hasher, stored, "s3cret-password")
    assert not verify_password(hasher, stored, "wrong-password")
    assert not verify_password(hasher, "not-a-hash", "s3cret-password")
