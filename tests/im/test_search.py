"""im.search: what a word is, how a query becomes words, and snippets."""

from __future__ import annotations

import pytest

from im.search import (
    MAX_INDEXED_WORDS,
    InvalidQuery,
    index_words,
    matches,
    parse_query,
    searchable,
    snippet,
    words,
)


def test_words_are_folded_distinct_and_split_on_anything_else() -> None:
    assert words("Café, CAFE café_au-lait! 42x") == ["cafe", "au", "lait", "42x"]
    assert words("日本語 テキスト") == ["日本語", "テキスト"]
    assert words("x" * 65 + " ok") == ["ok"]  # too long to be a word


def test_only_text_is_indexed_and_bounded() -> None:
    assert searchable("text/plain") and searchable("text/markdown")
    assert not searchable("application/vnd.im.recall") and not searchable("image/png")
    assert index_words("application/vnd.im.edit", b"hello") == []
    many = " ".join(f"w{i}" for i in range(MAX_INDEXED_WORDS + 50)).encode()
    assert len(index_words("text/plain", many)) == MAX_INDEXED_WORDS
    assert index_words("text/plain", b"\xff ok \xfe") == ["ok"]


@pytest.mark.parametrize(
    ("query", "terms"),
    [
        ('"alpha" OR beta*', ["alpha", "or", "beta"]),
        ("NEAR(a b) -c +d", ["near", "a", "b", "c", "d"]),
        (".* [x] \\ %_", ["x"]),
        ("Same same SAME", ["same"]),
    ],
)
def test_query_syntax_becomes_plain_words(query: str, terms: list[str]) -> None:
    assert parse_query(query) == terms


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("", "at least one word"),
        ("*** ---", "at least one word"),
        ("x" * 257, "longer than 256"),
        ("y" * 65, "longer than 64"),
        (" ".join(f"w{i}" for i in range(9)), "more than 8"),
    ],
)
def test_unsearchable_queries_say_why(query: str, reason: str) -> None:
    with pytest.raises(InvalidQuery, match=reason):
        parse_query(query)


def test_matches_checks_the_body_as_it_is() -> None:
    assert matches(["lunch", "cafe"], "text/plain", "Lunch at the Café".encode())
    assert not matches(["lunch"], "text/plain", b"")
    assert not matches(["lunch"], "application/vnd.im.recall", b"lunch")


def test_snippet_marks_the_words_around_the_first_match() -> None:
    short = snippet("Meet at the Harbour, harbour side", ["harbour"])
    assert short.text == "Meet at the Harbour, harbour side"
    assert [short.text[a:b] for a, b in short.highlights] == ["Harbour", "harbour"]
    body = "a " * 200 + "needle " + "b " * 200
    long = snippet(body, ["needle"], width=40)
    assert long.text.startswith("…") and long.text.endswith("…")
    assert [long.text[a:b] for a, b in long.highlights] == ["needle"]
    none = snippet("nothing here", ["absent"])
    assert (none.text, none.highlights) == ("nothing here", [])
