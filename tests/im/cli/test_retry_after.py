"""imctl shows how long to wait when the gateway says 429 with Retry-After."""

from __future__ import annotations

import argparse
import json

import pytest

from im.cli.common import run_client
from im.client import ApiError


def test_a_rate_limited_command_prints_when_to_retry(capsys: pytest.CaptureFixture[str]) -> None:
    async def limited(args: argparse.Namespace) -> int:
        raise ApiError(429, "rate_limited", "too many failed logins", retry_after=12)

    assert run_client(limited)(argparse.Namespace()) == 1
    problem = json.loads(capsys.readouterr().err)
    assert problem["code"] == "rate_limited"
    assert problem["retry_after"] == 12
    assert problem["hint"] == "retry after 12 s"


def test_other_problems_have_no_hint(capsys: pytest.CaptureFixture[str]) -> None:
    async def refused(args: argparse.Namespace) -> int:
        raise ApiError(401, "invalid_credentials", "wrong username or password")

    assert run_client(refused)(argparse.Namespace()) == 1
    assert "hint" not in json.loads(capsys.readouterr().err)
