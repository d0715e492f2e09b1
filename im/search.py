"""Message search shared by the store adapters and the gateway: what a word is, how a
query becomes words, which messages are searchable, and the snippet of a hit.

Every backend answers the same question: text messages (``text/*`` content types) of
the conversations in scope whose body holds every query word as a whole word, case-
and accent-insensitively, newest first. The adapters never see the raw query, only the
words made here (letters and digits), and still quote or escape them themselves.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# A query is short text typed into a box: more would only cost the store.
MAX_QUERY_CHARS = 256
MAX_QUERY_WORDS = 8
# Longer "words" are not language (hashes, base64): not indexed, so not searchable.
MAX_WORD_CHARS = 64
# Words kept per message in a keyword index (the MongoDB adapter): bodies are at most
# a few tens of KiB, so this bounds the document's index entries, not real text.
MAX_INDEXED_WORDS = 2000

# Letters and digits; an underscore or any punctuation separates words (as SQLite
# FTS5's unicode61 tokenizer does).
_WORD = re.compile(r"[^\W_]+")
SNIPPET_CHARS = 120


class InvalidQuery(ValueError):
    """The query cannot be searched (empty, too long, too many words)."""


def searchable(content_type: str) -> bool:
    """Only text is indexed; events (``application/vnd.im.*``) and binary are not."""
    return content_type.startswith("text/")


def _fold(text: str) -> str:
    """Lower case without accents: "Café" and "cafe" are the same word."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def words(text: str) -> list[str]:
    """The distinct words of ``text``, folded, in order of first appearance."""
    found = (w for w in _WORD.findall(_fold(text)) if len(w) <= MAX_WORD_CHARS)
    return list(dict.fromkeys(found))


def index_words(content_type: str, body: bytes) -> list[str]:
    """What a keyword index keeps for a message: its words, none for a non-text one."""
    if not searchable(content_type):
        return []
    return words(body.decode("utf-8", errors="replace"))[:MAX_INDEXED_WORDS]


def parse_query(query: str) -> list[str]:
    """The words to search for; raises InvalidQuery with a reason a user can act on."""
    if len(query) > MAX_QUERY_CHARS:
        raise InvalidQuery(f"the query is longer than {MAX_QUERY_CHARS} characters")
    raw = _WORD.findall(_fold(query))
    if not raw:
        raise InvalidQuery("the query needs at least one word (letters or digits)")
    if any(len(w) > MAX_WORD_CHARS for w in raw):
        raise InvalidQuery(f"a word of the query is longer than {MAX_WORD_CHARS} characters")
    terms = list(dict.fromkeys(raw))
    if len(terms) > MAX_QUERY_WORDS:
        raise InvalidQuery(f"the query has more than {MAX_QUERY_WORDS} words")
    return terms


def matches(terms: list[str], content_type: str, body: bytes) -> bool:
    """Whether the message as it is now holds every term (to drop index entries that
    an update of the body left behind)."""
    return set(terms) <= set(index_words(content_type, body))


@dataclass(frozen=True, slots=True)
class Snippet:
    text: str
    # (start, end) character offsets in ``text`` of each word that matched.
    highlights: list[tuple[int, int]]


def snippet(body_text: str, terms: list[str], width: int = SNIPPET_CHARS) -> Snippet:
    """A window of the body around the first matching word, with the matches marked
    by offsets (never markup: the client renders it as text)."""
    spans: list[tuple[int, int]] = []
    for m in _WORD.finditer(body_text):
        if _fold(m.group()) in terms:
            spans.append(m.span())
    start = 0
    if spans and len(body_text) > width:
        start = max(0, min(spans[0][0] - width // 4, len(body_text) - width))
    end = min(len(body_text), start + width)
    text = body_text[start:end]
    prefix = "…" if start > 0 else ""
    suffix = "…" if end < len(body_text) else ""
    shift = len(prefix) - start
    inside = [(a + shift, b + shift) for a, b in spans if a >= start and b <= end]
    return Snippet(prefix + text + suffix, inside)
