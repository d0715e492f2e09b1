"""Admin tokens: where they come from, what is refused at start-up, and matching."""

from __future__ import annotations

from pathlib import Path

import pytest

from im.config import Settings
from services.gateway.admin_auth import (
    AdminConfigError,
    AdminTokens,
    claimed_actor,
    parse_token_lines,
)

A = "a" * 32
B = "b" * 40


def test_token_file_lines_named_or_not() -> None:
    text = f"# rotated in May\n\nops:{A}\n  {B}  \n"
    assert parse_token_lines(text) == [("ops", A), ("admin", B)]


def test_tokens_from_the_setting_and_the_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"ops:{B}\n")
    tokens = AdminTokens.from_settings(Settings(admin_token=A, admin_token_file=str(path)))
    assert tokens.enabled
    assert tokens.match(A) == "admin" and tokens.match(B) == "ops"
    assert tokens.match(A[:-1]) is None and tokens.match("") is None
    assert tokens.match(A + "a") is None


def test_no_token_is_off_and_a_missing_file_too(tmp_path: Path) -> None:
    assert not AdminTokens.from_settings(Settings()).enabled
    missing = Settings(admin_token_file=str(tmp_path / "absent"))
    assert not AdminTokens.from_settings(missing).enabled


@pytest.mark.parametrize("line", ["ops:short", f"bad name:{A}", f":{A}"])
def test_weak_tokens_and_bad_names_stop_the_gateway(tmp_path: Path, line: str) -> None:
    path = tmp_path / "tokens"
    path.write_text(line + "\n")
    with pytest.raises(AdminConfigError):
        AdminTokens.from_settings(Settings(admin_token_file=str(path)))


def test_the_token_is_kept_out_of_the_settings_repr() -> None:
    assert A not in repr(Settings(admin_token=A))


def test_a_claimed_actor_is_made_safe_for_one_log_line() -> None:
    assert claimed_actor("alice\nadmin ok") == "alice_admin_ok"
    assert claimed_actor(None) == "" and len(claimed_actor("x" * 500)) == 64
