"""Bulk import of users (``UserAdminService.ImportUsers``).

Hashing a password with argon2 costs ~10 ms of a core on purpose, which caps one-by-one
registration at about a hundred users a second. An import instead takes hashes made
elsewhere (argon2 in PHC format, stored as they are: an import from another system,
or a hash computed once for many test users) or users without a password, and writes
them in chunks of CHUNK rows, one transaction per chunk: thousands a second.

Rows are judged one by one: a bad row, a username taken already or repeated within
the request is reported with its index, and the others are imported all the same.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from im.db import UserRow
from im.v1 import admin_pb2
from im.validation import InvalidInput, require_clean_name

MAX_IMPORT_USERS = 10_000  # per call
CHUNK = 1000  # rows per transaction
MAX_HASH_CHARS = 255  # the column
# argon2 (id, i or d) in the PHC string format the argon2 libraries produce.
ARGON2_PHC = re.compile(
    r"\$argon2(id|i|d)\$v=\d+\$m=\d+,t=\d+,p=\d+\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+"
)


@dataclass(slots=True)
class Candidate:
    """A row that passed validation, waiting to be inserted."""

    index: int
    username: str  # normalized
    display_name: str
    password_hash: str  # "" until hashed (plain password) or for none at all
    password: str = ""


class RowError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def check_row(
    index: int,
    user: admin_pb2.ImportUser,
    username_ok: re.Pattern[str],
    password_chars: tuple[int, int],
    display_chars: int,
) -> Candidate:
    """Validates one row; raises RowError("invalid", why)."""
    if not username_ok.fullmatch(user.username):
        raise RowError(
            "invalid", "username must be 3 to 32 characters of letters, digits, '_', '.' or '-'"
        )
    if user.password and user.password_hash:
        raise RowError("invalid", "give password or password_hash, not both")
    if user.password_hash and not (
        len(user.password_hash) <= MAX_HASH_CHARS and ARGON2_PHC.fullmatch(user.password_hash)
    ):
        raise RowError("invalid", "password_hash must be an argon2 hash in PHC format")
    low, high = password_chars
    if user.password and not low <= len(user.password) <= high:
        raise RowError("invalid", f"password must be {low} to {high} characters")
    display_name = user.display_name.strip() or user.username
    if len(display_name) > display_chars:
        raise RowError("invalid", f"display_name must be at most {display_chars} characters")
    try:
        display_name = require_clean_name(display_name, "display_name")
    except InvalidInput as exc:
        raise RowError("invalid", str(exc)) from None
    return Candidate(index, user.username.lower(), display_name, user.password_hash, user.password)


def drop_repeats(
    candidates: Iterable[Candidate],
) -> tuple[list[Candidate], list[admin_pb2.ImportError]]:
    """The first row of each username; the later ones are errors."""
    seen: set[str] = set()
    kept, errors = [], []
    for c in candidates:
        if c.username in seen:
            errors.append(
                admin_pb2.ImportError(
                    index=c.index,
                    username=c.username,
                    code="duplicate_in_request",
                    message=f"username {c.username!r} appears earlier in this import",
                )
            )
            continue
        seen.add(c.username)
        kept.append(c)
    return kept, errors


class ImportTable:
    """Inserts validated rows in chunks. Blocking: run it in a worker thread."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def insert(
        self, candidates: list[Candidate], now: int
    ) -> tuple[list[admin_pb2.ImportedUser], list[admin_pb2.ImportError]]:
        imported: list[admin_pb2.ImportedUser] = []
        errors: list[admin_pb2.ImportError] = []
        for start in range(0, len(candidates), CHUNK):
            done, failed = self._chunk(candidates[start : start + CHUNK], now)
            imported += done
            errors += failed
        return imported, errors

    def _chunk(
        self, chunk: list[Candidate], now: int
    ) -> tuple[list[admin_pb2.ImportedUser], list[admin_pb2.ImportError]]:
        # Taken names are looked up first; a registration racing us between that and
        # the insert makes the insert fail whole: then once more, when it is visible.
        for attempt in range(2):
            try:
                return self._insert_chunk(chunk, now)
            except IntegrityError:
                if attempt == 1:
                    raise
        raise AssertionError("unreachable")

    def _insert_chunk(
        self, chunk: list[Candidate], now: int
    ) -> tuple[list[admin_pb2.ImportedUser], list[admin_pb2.ImportError]]:
        names = [c.username for c in chunk]
        with Session(self._engine) as db, db.begin():
            taken = set(db.scalars(select(UserRow.username).where(UserRow.username.in_(names))))
            fresh = [c for c in chunk if c.username not in taken]
            if fresh:
                db.execute(
                    UserRow.__table__.insert(),
                    [
                        {
                            "username": c.username,
                            "display_name": c.display_name,
                            "password_hash": c.password_hash,
                            "created_at": now,
                            "disabled": False,
                        }
                        for c in fresh
                    ],
                )
                ids = dict(
                    db.execute(
                        select(UserRow.username, UserRow.id).where(
                            UserRow.username.in_([c.username for c in fresh])
                        )
                    ).all()
                )
        errors = [
            admin_pb2.ImportError(
                index=c.index,
                username=c.username,
                code="username_taken",
                message=f"username {c.username!r} is taken",
            )
            for c in chunk
            if c.username in taken
        ]
        imported = [
            admin_pb2.ImportedUser(index=c.index, user_id=ids[c.username], username=c.username)
            for c in fresh
        ]
        return imported, errors
