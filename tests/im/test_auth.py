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


# ------------------------------------------- our verifier agrees with pyjwt's decode

import base64 as _b64  # noqa: E402
import json as _json  # noqa: E402
import time as _time  # noqa: E402

import jwt as _jwt  # noqa: E402
import pytest as _pytest  # noqa: E402

from im.auth import Claims as _Claims  # noqa: E402
from im.auth import TokenError as _TokenError  # noqa: E402
from im.auth import TokenIssuer as _Issuer  # noqa: E402
from im.auth import TokenVerifier as _Verifier  # noqa: E402
from im.auth import generate_key_pair as _pair  # noqa: E402


def _seg(obj: dict) -> str:
    return _b64.urlsafe_b64encode(_json.dumps(obj).encode()).rstrip(b"=").decode()


def _pyjwt_accepts(token: str, public_pem: bytes, algorithm: str) -> bool:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_public_key(public_pem)
    try:
        _jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            issuer="iss",
            leeway=5,
            options={"require": ["sub", "did", "sid", "exp", "iat", "iss"]},
        )
        return True
    except (_jwt.PyJWTError, ValueError, TypeError):
        return False


def _cases(private: bytes, public: bytes, algorithm: str) -> dict[str, str]:
    issuer = _Issuer(private, "iss", 600)
    good, _ = issuer.issue(7, "phone")
    head, body, sig = good.split(".")
    now = int(_time.time())
    claims = {"sub": "7", "did": "phone", "sid": "s", "iss": "iss", "iat": now, "exp": now + 60}
    other_private, _other_public = _pair(algorithm)
    return {
        "valid": good,
        "expired": _Issuer(private, "iss", 1).issue(7, "d", now=now - 3600)[0],
        "future iat": _Issuer(private, "iss", 600).issue(7, "d", now=now + 3600)[0],
        "other issuer": _Issuer(private, "someone", 600).issue(7, "d")[0],
        "other key": _Issuer(other_private, "iss", 600).issue(7, "d")[0],
        "tampered claims": f"{head}.{_seg({**claims, 'sub': '8'})}.{sig}",
        "alg none": f"{_seg({'alg': 'none', 'typ': 'JWT'})}.{_seg(claims)}.",
        "hs256 with the public key": _jwt.encode(
            claims, "not-our-key-but-long-enough-32b!", algorithm="HS256"
        ),
        "missing sid": _jwt.encode(
            {k: v for k, v in claims.items() if k != "sid"},
            _load_private(private),
            algorithm=algorithm,
        ),
        "bad alphabet": f"{head}.{body}!.{sig}",
        "two parts": f"{head}.{body}",
        "not ascii": f"{head}.{body}.{sig}é",
    }


def _load_private(pem: bytes):  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives import serialization

    return serialization.load_pem_private_key(pem, password=None)


@_pytest.mark.parametrize("algorithm", ["RS256", "EdDSA"])
def test_verifier_agrees_with_pyjwt_on_good_and_bad_tokens(algorithm: str) -> None:
    private, public = _pair(algorithm)
    verifier = _Verifier(public, "iss")
    assert verifier.algorithm == algorithm
    for name, token in _cases(private, public, algorithm).items():
        expected = _pyjwt_accepts(token, public, algorithm)
        try:
            got = verifier.verify(token)
            accepted = True
        except _TokenError:
            accepted = False
        assert accepted == expected, name
        if accepted:
            assert got == _Claims(7, "phone", got.session_id, got.expires_at)
    assert _pyjwt_accepts(_cases(private, public, algorithm)["valid"], public, algorithm)


# ------------------------------------------------- claims outside what we can store


def _signed(private: bytes, **overrides: object) -> str:
    now = int(_time.time())
    claims = {"sub": "7", "did": "phone", "sid": "s1", "iss": "iss", "iat": now, "exp": now + 60}
    claims.update(overrides)
    return _jwt.encode(claims, _load_private(private), algorithm="RS256")


@_pytest.mark.parametrize(
    "claims",
    [
        {"sub": str(2**70)},
        {"sub": str(2**63)},
        {"sub": "-5"},
        {"sub": "0"},
        {"sub": "x"},
        {"sub": " 7"},
        {"sub": "+7"},
        {"sub": "\u0667"},  # an Arabic-Indic digit: int() takes it, no column should
        {"sub": 7},
        {"did": {"a": 1}},
        {"did": ""},
        {"sid": "s" * 500},
    ],
    ids=repr,
)
def test_validly_signed_token_with_an_impossible_claim_is_rejected(claims: dict) -> None:
    private, public = _pair("RS256")
    verifier = _Verifier(public, "iss")
    assert verifier.verify(_signed(private)).user_id == 7  # the same token otherwise passes
    with _pytest.raises(_TokenError):
        verifier.verify(_signed(private, **claims))


def test_largest_user_id_is_accepted() -> None:
    private, public = _pair("RS256")
    claims = _Verifier(public, "iss").verify(_signed(private, sub=str(2**63 - 1)))
    assert claims.user_id == 2**63 - 1
