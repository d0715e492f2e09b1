"""imctl dead-letters: what the routers set aside, decoded for an operator."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from im.adapters.sqlstore import SqlMessageStore
from im.cli.main import main
from im.ports import DeadLetter
from im.v1 import bus_pb2


def letter(n: int, topic: str, value: bytes, reason: str) -> DeadLetter:
    return DeadLetter(f"{n:032x}", topic, 3, 100 + n, "g:1", value, reason, 1_800_000_000_000 + n)


def test_lists_newest_first_with_records_decoded(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("IM_DATA_DIR", str(tmp_path))
    report = bus_pb2.CursorReport(conversation_id="g:1", user_id=9, read_seq=1 << 63)
    store = SqlMessageStore(f"sqlite:///{tmp_path / 'messages.db'}")
    asyncio.run(
        store.put_dead_letters(
            [
                letter(1, "im.cursors", report.SerializeToString(), "seq out of range"),
                letter(2, "im.messages", b"\xff\xfe", "undecodable: truncated"),
            ]
        )
    )
    asyncio.run(store.close())

    assert main(["dead-letters", "--limit", "5"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [x["reason"] for x in lines] == ["undecodable: truncated", "seq out of range"]
    assert lines[0]["record"] is None
    assert base64.b64decode(lines[0]["value_base64"]) == b"\xff\xfe"
    assert lines[1]["record"] == {
        "conversationId": "g:1",
        "userId": "9",
        "readSeq": str(1 << 63),
    }
    assert (lines[1]["topic"], lines[1]["partition"], lines[1]["offset"]) == ("im.cursors", 3, 101)
