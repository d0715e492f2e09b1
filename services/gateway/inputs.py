"""Constrained request values of the REST API: every integer within its column's
range, page cursors that name a real position, and names safe to show. Out of range is
a 422 problem at the edge, never a 500 or 503 from deep inside a request."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query
from pydantic import AfterValidator, Field

from im.validation import MAX_INT64, MAX_INT64_DIGITS, require_clean_name

# User and member ids (users.id, BIGINT).
UserId = Annotated[int, Field(gt=0, le=MAX_INT64)]
# A position in a conversation (messages.seq and the cursors, BIGINT); 0 = none.
Seq = Annotated[int, Field(ge=0, le=MAX_INT64)]

# A `next_cursor` handed out by a page: a member's user id, or empty for the first page.
CURSOR_PATTERN = rf"^(|[1-9][0-9]{{0,{MAX_INT64_DIGITS - 1}}})$"


def _cursor_in_range(cursor: str) -> str:
    if cursor and int(cursor) > MAX_INT64:
        raise ValueError("cursor is not a position of any page")
    return cursor


PageCursor = Annotated[
    str,
    Query(pattern=CURSOR_PATTERN, description="`next_cursor` of the previous page."),
    AfterValidator(_cursor_in_range),
]

UserIdPath = Annotated[int, Path(gt=0, le=MAX_INT64, description="User id.")]
AfterSeqQuery = Annotated[
    int, Query(ge=0, le=MAX_INT64, description="Return messages after this seq.")
]


def _display_name(value: str) -> str:
    return require_clean_name(value, "display_name")


def _group_name(value: str) -> str:
    return require_clean_name(value, "name")


# Pydantic turns the ValueError (InvalidInput) of these validators into a 422.
DisplayName = Annotated[str, AfterValidator(_display_name)]
GroupName = Annotated[str, AfterValidator(_group_name)]
