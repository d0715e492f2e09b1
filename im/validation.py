"""Shape rules shared by every entry point (REST, gRPC, tokens): integer ranges that
the storage columns can hold, page cursors, and names that are safe to show.

Pure functions without I/O: each surface turns a refusal into its own error (422,
INVALID_ARGUMENT, AUTH_FAILED).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

# Ids, seqs and cursors are stored in signed 64-bit (BIGINT) columns: larger values
# cannot exist, and handing one to a driver or to protobuf fails deep inside a request.
MAX_INT64 = (1 << 63) - 1
MAX_INT64_DIGITS = len(str(MAX_INT64))

# Invisible characters that reorder or hide the text around them (bidi embeddings,
# overrides, isolates and marks): a name holding one can pass for another name.
BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
# Line and paragraph separators break a name over lines in most UIs and logs.
LINE_BREAKS = frozenset("\u2028\u2029")


class InvalidInput(ValueError):
    """A value outside what the system can store or safely show."""


def is_id(value: int) -> bool:
    """A user, group or row id: 1 .. 2^63-1."""
    return 0 < value <= MAX_INT64


def require_ids(values: Iterable[int], what: str) -> list[int]:
    ids = list(values)
    if not all(is_id(v) for v in ids):
        raise InvalidInput(f"{what} must be user ids from 1 to {MAX_INT64}")
    return ids


def parse_id_text(text: str, what: str) -> int:
    """A decimal id as text (token subjects, page cursors): ASCII digits only, no sign,
    no spaces, in range."""
    if not (text.isascii() and text.isdigit() and len(text) <= MAX_INT64_DIGITS):
        raise InvalidInput(f"{what} must be a decimal id")
    value = int(text)
    if not is_id(value):
        raise InvalidInput(f"{what} must be from 1 to {MAX_INT64}")
    return value


def unsafe_char(text: str) -> str | None:
    """The first character that must not appear in a shown name, or None.

    Control characters (NUL, ESC sequences...) can rewrite terminals and logs; bidi
    controls make a name read differently from what it is. Other format characters
    stay allowed: the zero-width joiner is part of many emoji."""
    for ch in text:
        if ch in BIDI_CONTROLS or ch in LINE_BREAKS or unicodedata.category(ch) == "Cc":
            return ch
    return None


def require_clean_name(text: str, what: str) -> str:
    ch = unsafe_char(text)
    if ch is not None:
        raise InvalidInput(f"{what} must not contain control characters (found U+{ord(ch):04X})")
    return text
