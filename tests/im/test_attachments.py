"""Shape rules of attachments: ids, file names, content types, the upload digest."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import pytest

from im import attachments as a


def test_ids_are_22_url_safe_characters_and_differ() -> None:
    ids = {a.new_attachment_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(a.is_valid_attachment_id(i) for i in ids)
    assert not a.is_valid_attachment_id("short")
    assert not a.is_valid_attachment_id("../../../../etc/passwd00")
    assert not a.is_valid_attachment_id("a" * 21 + "/")


def test_check_ids() -> None:
    good = [a.new_attachment_id() for _ in range(3)]
    assert a.check_ids(good, 3) is None
    assert "at most 2" in (a.check_ids(good, 2) or "")
    assert "malformed" in (a.check_ids(["nope"], 3) or "")
    assert "repeat" in (a.check_ids([good[0], good[0]], 3) or "")


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("cat.png", "cat.png"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\report.pdf", "report.pdf"),
        ('a"b\r\nc.txt', "ab c.txt"),
        ("evil\u202egnp.exe", "evilgnp.exe"),
        ("  ..  ", "file"),
        ("", "file"),
        ("tab\there.txt", "tab here.txt"),
        ("cafe\u0301.txt", "caf\u00e9.txt"),
    ],
)
def test_sanitize_filename(given: str, kept: str) -> None:
    assert a.sanitize_filename(given) == kept


def test_a_long_name_keeps_its_extension() -> None:
    name = a.sanitize_filename("x" * 500 + ".jpeg")
    assert len(name) == a.MAX_FILENAME_CHARS and name.endswith(".jpeg")


def test_content_disposition_is_ascii_with_the_exact_name_encoded() -> None:
    header = a.content_disposition("résumé 1.pdf")
    assert header.isascii()
    assert header.startswith('attachment; filename="r_sum_ 1.pdf"')
    assert "filename*=UTF-8''r%C3%A9sum%C3%A9%201.pdf" in header


def test_content_types() -> None:
    assert a.normalize_content_type("Image/PNG; charset=x") == "image/png"
    assert a.normalize_content_type(None) == "application/octet-stream"
    assert a.normalize_content_type("not a type") is None
    allow = a.parse_allowlist("image/*, application/pdf")
    assert a.is_allowed("image/webp", allow)
    assert a.is_allowed("application/pdf", allow)
    assert not a.is_allowed("text/html", allow)
    assert a.is_allowed("text/html", ["*/*"])


async def source(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_digest_counts_hashes_and_stops_past_the_limit() -> None:
    digest = a.Digest(source(b"ab", b"", b"cd"), 4)
    assert [c async for c in digest] == [b"ab", b"cd"]
    assert digest.size == 4 and digest.sha256 == hashlib.sha256(b"abcd").hexdigest()
    with pytest.raises(a.AttachmentTooLarge):
        [c async for c in a.Digest(source(b"abc", b"de"), 4)]


async def test_rechunk() -> None:
    out = [c async for c in a.rechunk(source(b"abc", b"defgh", b"i"), 4)]
    assert out == [b"abcd", b"efgh", b"i"]
