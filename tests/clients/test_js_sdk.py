"""The JavaScript SDK's own tests (clients/js/test/, Node's test runner) against a real
standalone suite on free ports. Without Node the test is skipped, but fails under CI."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.harness import start_suite, stop_suite

pytestmark = pytest.mark.e2e

SDK = Path(__file__).resolve().parents[2] / "clients" / "js"


def node_command() -> list[str]:
    """`node`, with the flag that gives Node 20 its WebSocket (22+ has it anyway)."""
    node = shutil.which("node")
    if node is None:
        message = "node not found: the JavaScript SDK's tests need Node.js 20.10+"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI must not skip them)")
        pytest.skip(message)
    probe = [node, "-e", "process.exit(typeof WebSocket === 'function' ? 0 : 1)"]
    if subprocess.run(probe, check=False).returncode == 0:
        return [node]
    return [node, "--experimental-websocket"]


def sdk_test_files() -> list[str]:
    # Named, not the folder: Node 20 would run test/helpers.js as a test file too.
    return sorted(str(p.relative_to(SDK)) for p in (SDK / "test").glob("*.test.js"))


def test_js_sdk_against_a_standalone_suite(tmp_path):
    node = node_command()
    suite = start_suite(tmp_path / "suite", heartbeat_interval="1.0", retransmit_timeout="0.5")
    try:
        result = subprocess.run(
            [*node, "--test", "--test-reporter=spec", *sdk_test_files()],
            cwd=SDK,
            env={**os.environ, "IM_GATEWAY_URL": suite.gateway, "NO_COLOR": "1"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        code = stop_suite(suite)
    print(result.stdout)  # the per-test report, in pytest's output with -s or on failure
    assert result.returncode == 0, f"node --test failed:\n{result.stdout}\n{result.stderr}"
    # Every test ran: none skipped for want of the suite's URL.
    assert re.search(r"\bskipped 0\b", result.stdout), result.stdout
    assert re.search(r"\bfail 0\b", result.stdout), result.stdout
    assert code == 0, f"suite exited with {code}:\n{suite.log()}"
