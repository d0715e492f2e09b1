"""``imctl admin ...`` against a real gateway (the gateway tests' harness) with an admin
token: import from CSV and JSON lines, then each operation by username."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from im.cli.main import main
from tests.services.gateway.conftest import Suite

TOKEN = "cli-admin-token-0123456789abcdef0123456789"


@pytest.fixture
def settings_overrides() -> dict:
    return {"admin_token": TOKEN, "admin_grpc_port": 0}


async def imctl(
    suite: Suite, capsys: pytest.CaptureFixture[str], *argv: str, token: str | None = TOKEN
) -> tuple[int, list[dict]]:
    args = ["--gateway", str(suite.client.base_url), "admin", *argv]
    if token is not None:
        args += ["--token", token]
    code = await asyncio.to_thread(main, args)
    captured = capsys.readouterr()
    stream = captured.out if code == 0 else captured.err
    return code, [json.loads(line) for line in stream.splitlines() if line.strip()]


async def test_import_then_every_operation(
    suite: Suite, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.delenv("IM_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("IM_ADMIN_TOKEN_FILE", raising=False)
    hashed = PasswordHasher(time_cost=1, memory_cost=8192).hash("secret-pass-1")
    csv_file = tmp_path / "users.csv"
    csv_file.write_text(
        "username,display_name,password_hash\n"
        f'alice,Alice A,"{hashed}"\n'
        f'bob,,"{hashed}"\n'
        f'alice,Again,"{hashed}"\n'
    )
    code, lines = await imctl(suite, capsys, "import", str(csv_file))
    assert code == 0, lines
    assert lines[0]["not_imported"]["code"] == "duplicate_in_request", lines
    assert lines[-1]["imported"] == 2 and lines[-1]["rows"] == 3
    jsonl = tmp_path / "more.jsonl"
    jsonl.write_text(json.dumps({"username": "carol", "password": "plain-pass-99"}) + "\n")
    code, lines = await imctl(suite, capsys, "import", str(jsonl))
    assert code == 0 and lines[-1]["imported"] == 1

    alice = await suite.login("alice")
    await suite.kv.connect(alice["user_id"], "phone", "conn-a", ttl=60)
    code, lines = await imctl(suite, capsys, "sessions", "alice")
    assert code == 0 and lines[0]["sessions"][0]["connector_id"] == "conn-a"
    code, lines = await imctl(suite, capsys, "disable", "alice")
    assert code == 0 and lines[0]["user"]["disabled"] and lines[0]["sessions_ended"] == 1
    code, lines = await imctl(suite, capsys, "enable", str(alice["user_id"]))
    assert code == 0 and not lines[0]["user"]["disabled"]
    code, lines = await imctl(suite, capsys, "reset-password", "bob")
    assert code == 0 and len(lines[0]["password"]) >= 20
    await suite.login("bob", password=lines[0]["password"])
    code, lines = await imctl(suite, capsys, "delete", "carol", "--erase-messages")
    assert code == 0 and lines[0]["user"]["deleted"] and lines[0]["messages_erased"] == 0
    code, lines = await imctl(suite, capsys, "show", "bob")
    assert code == 0 and lines[0]["username"] == "bob"


async def test_refusals_are_problems_on_stderr(
    suite: Suite, capsys: pytest.CaptureFixture[str], monkeypatch, tmp_path: Path
) -> None:
    unquoted = tmp_path / "bad.csv"
    unquoted.write_text("username,password_hash\nzed,$argon2id$v=19$m=8,t=1,p=1$c2FsdA$aGFzaA\n")
    code, lines = await imctl(suite, capsys, "import", str(unquoted))
    assert code == 1 and "quote" in lines[0]["detail"]
    monkeypatch.delenv("IM_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("IM_ADMIN_TOKEN_FILE", raising=False)
    code, lines = await imctl(suite, capsys, "disable", "nobody", token=None)
    assert code == 1 and lines[0]["error"] == "usage"
    code, lines = await imctl(suite, capsys, "disable", "nobody", token="w" * 40)
    assert code == 1 and lines[0]["status"] == 401
    code, lines = await imctl(suite, capsys, "disable", "nobody")
    assert code == 1 and lines[0]["status"] == 404


async def test_the_client_imports_in_concurrent_chunks_and_counts_from_the_start(
    suite: Suite,
) -> None:
    from im.client import AdminClient

    rows = [{"username": f"chunk{i}"} for i in range(25)] + [{"username": "x"}]
    async with AdminClient(str(suite.client.base_url), TOKEN) as admin:
        result = await admin.import_users(rows, chunk=10, concurrency=3)
    assert result["imported"] == 25
    assert sorted(u["index"] for u in result["users"]) == list(range(25))
    assert [(e["index"], e["code"]) for e in result["errors"]] == [(25, "invalid")]
