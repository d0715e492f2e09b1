"""Access tokens (EdDSA JWTs, pyjwt) and password hashing (argon2id, argon2-cffi).

Only the gateway holds the private key; connectors verify with the public key.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import jwt
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from im.config import Settings

ALGORITHM = "EdDSA"


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
        self._issuer = issuer
        self.ttl_seconds = ttl_seconds

    def issue(self, user_id: int, device_id: str, now: float | None = None) -> tuple[str, Claims]:
        issued = int(now if now is not None else time.time())
        claims = Claims(user_id, device_id, uuid.uuid4().hex, issued + self.ttl_seconds)
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
            algorithm=ALGORITHM,
        )
        return token, claims


class TokenVerifier:
    def __init__(self, public_key_pem: bytes, issuer: str, leeway: float = 5.0) -> None:
        self._key = serialization.load_pem_public_key(public_key_pem)
        self._issuer = issuer
        self._leeway = leeway

    def verify(self, token: str) -> Claims:
        try:
            data = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["sub", "did", "sid", "exp", "iat", "iss"]},
            )
            return Claims(int(data["sub"]), str(data["did"]), str(data["sid"]), int(data["exp"]))
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise TokenError(str(exc)) from exc


def generate_key_pair() -> tuple[bytes, bytes]:
    """A new Ed25519 key pair as (private PEM, public PEM)."""
    key = Ed25519PrivateKey.generate()
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
