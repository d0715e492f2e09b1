"""The message search route of the gateway. See docs/rest-api.md."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from im.search import MAX_QUERY_CHARS
from services.gateway.deps import Auth, GatewayDep
from services.gateway.inputs import PageCursor
from services.gateway.models import MessageOut, message_out
from services.gateway.problems import problem_responses
from services.gateway.search import SearchHit

router = APIRouter()


class SnippetOut(BaseModel):
    text: str = Field(description="Part of the body around the first match (plain text).")
    highlights: list[tuple[int, int]] = Field(
        description="[start, end) character offsets in `text` of each matching word."
    )


class SearchHitOut(BaseModel):
    message: MessageOut = Field(description="The message, as history returns it.")
    snippet: SnippetOut


class SearchPage(BaseModel):
    results: list[SearchHitOut] = Field(description="Hits, newest first.")
    next_cursor: str | None = Field(
        description="`cursor` of the next (older) page; null on the last page."
    )


def _hit_out(hit: SearchHit) -> SearchHitOut:
    return SearchHitOut(
        message=message_out(hit.message),
        snippet=SnippetOut(text=hit.snippet.text, highlights=hit.snippet.highlights),
    )


@router.get(
    "/v1/search",
    response_model=SearchPage,
    tags=["conversations"],
    responses=problem_responses(401, 403, 404, 422, 429, 503),
)
async def search(
    gateway: GatewayDep,
    claims: Auth,
    q: Annotated[
        str,
        Query(
            min_length=1,
            max_length=MAX_QUERY_CHARS,
            description="Words to find (all of them, whole words, case- and "
            "accent-insensitive). Punctuation only separates words: there is no "
            "query syntax.",
        ),
    ],
    conversation_id: Annotated[
        str | None,
        Query(max_length=64, description="Search only this conversation (members only)."),
    ] = None,
    cursor: PageCursor = "",
    limit: Annotated[int, Query(ge=1, le=100, description="Page size.")] = 20,
) -> SearchPage:
    """Text messages of the caller's conversations holding every word of `q`, newest
    first: only what the caller may read (from its join point on), never recalled
    messages. 403/404 for a `conversation_id` the caller is not in; 429 past
    `IM_SEARCHES_PER_MINUTE`; 503 (with Retry-After) while the gateway runs as many
    searches as it may (`IM_SEARCH_CONCURRENCY`) or the store fails or times out."""
    hits, next_cursor = await gateway.search_ops.search(
        claims.user_id, q, conversation_id, int(cursor or 0), limit
    )
    return SearchPage(results=[_hit_out(h) for h in hits], next_cursor=next_cursor)
