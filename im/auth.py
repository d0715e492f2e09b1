"""Access tokens (RS256 or EdDSA JWTs) and password hashing (argon2id, argon2-cffi).

Only the gateway holds the private key; connectors verify with the public key.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import jwt
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from im.config import Settings
from im.validation import InvalidInput, parse_id_text

# RS256 by default: connectors verify a token on every connect, and RSA verification is
# about 4x cheaper than Ed25519's here (~26k/s against ~6k/s per core); signing, which
# only the gateway does once per login, is the slow side and is dwarfed by argon2.
# Ed25519 (EdDSA) keys are accepted too: the algorithm follows the configured key.
DEFAULT_ALGORITHM = "RS256"
RSA_BITS = 2048
_SEGMENT = re.compile(rb"[A-Za-z0-9_-]*")
_REQUIRED = ("sub", "did", "sid", "exp", "iat", "iss")
MAX_TEXT_CLAIM = 128  # did and sid: device ids are at most 64, session ids 32


def _algorithm_for(key: object) -> str:
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return "RS256"
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "EdDSA"
    raise ValueError(f"unsupported JWT key type {type(key).__name__}: use RSA or Ed25519")


class TokenError(Exception):
    """The token is malformed, expired, or not signed by our key."""


@dataclass(frozen=True, slots=True)
class Claims:
    user_id: int
    device_id: str
    session_id: str
    expires_at: int


class TokenIssuer:
    def __init__(self, private_key_pem: bytes, issuer: str, ttl_seconds: int) -> None:
        self._key = serialization.load_pem_private_key(private_key_pem, password=None)
        self.algorithm = _algorithm_for(self._key)
        self._issuer = issuer
        self.ttl_seconds = ttl_seconds

    def issue(
        self,
        user_id: int,
        device_id: str,
        now: float | None = None,
        session_id: str | None = None,
    ) -> tuple[str, Claims]:
        """A token of a new session, or of ``session_id`` (a refresh keeps the session:
        revoking it then ends every token it was given)."""
        issued = int(now if now is not None else time.time())
        sid = session_id or uuid.uuid4().hex
        claims = Claims(user_id, device_id, sid, issued + self.ttl_seconds)
        token = jwt.encode(
            {
                "sub": str(user_id),
                "did": device_id,
                "sid": claims.session_id,
                "iss": self._issuer,
                "iat": issued,
                "exp": claims.expires_at,
            },
            self._key,
            algorithm=self.algorithm,
        )
        return token, claims


def _b64url(segment: bytes) -> bytes:
    return base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))


class TokenVerifier:
    """Verifies the gateway's tokens: a compact JWS with our algorithm and issuer, a
    valid signature, and unexpired claims.

    Tokens are issued by pyjwt; verification is done here because pyjwt 2.15 checks
    every base64 character in a Python loop, which is 60% of its decode time, on the
    connectors' connect path. The same checks are made: strict alphabet (one regex),
    the header's alg must be ours (never "none"), signature, issuer, required claims,
    exp and iat with leeway. tests/im/test_auth.py runs both against the same tokens.
    """

    def __init__(self, public_key_pem: bytes, issuer: str, leeway: float = 5.0) -> None:
        self._key = serialization.load_pem_public_key(public_key_pem)
        self.algorithm = _algorithm_for(self._key)
        self._issuer = issuer
        self._leeway = leeway
        if self.algorithm == "RS256":
            rsa_key = self._key
            pkcs1, sha256 = padding.PKCS1v15(), hashes.SHA256()

            def check(signature: bytes, signed: bytes) -> None:
                rsa_key.verify(signature, signed, pkcs1, sha256)  # type: ignore[union-attr]
        else:
            ed_key = self._key

            def check(signature: bytes, signed: bytes) -> None:
                ed_key.verify(signature, signed)  # type: ignore[union-attr,call-arg]

        self._check = check

    def verify(self, token: str, now: float | None = None) -> Claims:
        try:
            raw = token.encode("ascii")
            header_b64, payload_b64, signature_b64 = raw.split(b".")
            for part in (header_b64, payload_b64, signature_b64):
                if _SEGMENT.fullmatch(part) is None or len(part) % 4 == 1:
                    raise TokenError("malformed token segment")
            header = json.loads(_b64url(header_b64))
            if not isinstance(header, dict) or header.get("alg") != self.algorithm:
                raise TokenError("unexpected signing algorithm")
            try:
                self._check(_b64url(signature_b64), header_b64 + b"." + payload_b64)
            except InvalidSignature:
                raise TokenError("signature verification failed") from None
            data = json.loads(_b64url(payload_b64))
            if not isinstance(data, dict):
                raise TokenError("claims are not an object")
            missing = [c for c in _REQUIRED if c not in data]
            if missing:
                raise TokenError(f"token is missing the {missing[0]!r} claim")
            if data["iss"] != self._issuer:
                raise TokenError("invalid issuer")
            exp, iat = data["exp"], data["iat"]
            if not isinstance(exp, int) or not isinstance(iat, int):
                raise TokenError("exp and iat must be integers")
            current = time.time() if now is None else now
            if exp <= current - self._leeway:
                raise TokenError("signature has expired")
            if iat > current + self._leeway:
                raise TokenError("token is not yet valid (iat)")
            return Claims(
                _subject(data["sub"]),
                _text_claim(data["did"], "did"),
                _text_claim(data["sid"], "sid"),
                exp,
            )
        except TokenError:
            raise
        except (ValueError, TypeError, UnicodeError, binascii.Error) as exc:
            raise TokenError(f"malformed token: {exc}") from exc


def _subject(sub: object) -> int:
    """The user id in ``sub``: a decimal string in the users.id column's range. Anything
    else is refused here, so no caller ever holds an id no column or message can carry."""
    if not isinstance(sub, str):
        raise TokenError("sub must be a string")
    try:
        return parse_id_text(sub, "sub")
    except InvalidInput as exc:
        raise TokenError(str(exc)) from None


def _text_claim(value: object, name: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_TEXT_CLAIM:
        raise TokenError(f"{name} must be a string of 1 to {MAX_TEXT_CLAIM} characters")
    return value


def generate_key_pair(algorithm: str = DEFAULT_ALGORITHM) -> tuple[bytes, bytes]:
    """A new key pair as (private PEM, public PEM): RSA-2048 for RS256, or Ed25519."""
    if algorithm == "RS256":
        key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey = rsa.generate_private_key(
            public_exponent=65537, key_size=RSA_BITS
        )
    elif algorithm == "EdDSA":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        raise ValueError(f"unsupported algorithm {algorithm!r}")
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def load_keys(settings: Settings, need_private: bool) -> tuple[bytes | None, bytes]:
    """The configured key pair; without configuration, a dev pair kept in data_dir."""
    if settings.jwt_public_key_file:
        public = Path(settings.jwt_public_key_file).read_bytes()
        private = None
        if settings.jwt_private_key_file:
            private = Path(settings.jwt_private_key_file).read_bytes()
        elif need_private:
            raise ValueError("IM_JWT_PRIVATE_KEY_FILE is required to issue tokens")
        return private, public
    if settings.jwt_private_key_file:
        raise ValueError("IM_JWT_PUBLIC_KEY_FILE must be set with IM_JWT_PRIVATE_KEY_FILE")
    folder = settings.data_dir
    folder.mkdir(parents=True, exist_ok=True)
    private_path, public_path = folder / "jwt-private.pem", folder / "jwt-public.pem"
    if not private_path.exists():
        private, public = generate_key_pair()
        tmp = private_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(private)
        public_path.write_bytes(public)
        os.replace(tmp, private_path)
    return private_path.read_bytes(), public_path.read_bytes()


def password_hasher(settings: Settings) -> PasswordHasher:
    return PasswordHasher(
        time_cost=settings.argon2_time_cost,
        memory_cost=settings.argon2_memory_kib,
        parallelism=settings.argon2_parallelism,
        type=Type.ID,
    )


def verify_password(hasher: PasswordHasher, password_hash: str, password: str) -> bool:
    try:
        return hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
