"""SIGTERM ends every process of ours within its grace period even when every
backend is gone (killed, or frozen so that calls hang instead of failing)."""

from __future__ import annotations

import time

import pytest

from tests.faults.environment import FaultEnv

pytestmark = pytest.mark.faults

GRACE = 30.0  # Kubernetes' default terminationGracePeriodSeconds


@pytest.mark.parametrize("how", ["killed", "frozen"])
async def test_sigterm_ends_every_process_with_the_backends_gone(
    fault_env: FaultEnv, how: str
) -> None:
    for server in fault_env.backends.servers:
        if how == "killed":
            server.kill()
        else:
            server.pause()
    try:
        started = time.monotonic()
        codes = fault_env.stop_services(timeout=GRACE)
        took = time.monotonic() - started
    finally:
        for server in fault_env.backends.servers:
            if how == "frozen":
                server.resume()
    print(f"\nSIGTERM with every backend {how}: all processes gone after {took:.1f} s: {codes}")
    assert took < GRACE, f"stopping took {took:.1f} s"
    assert all(code == 0 for code in codes.values()), (
        f"exit codes: {codes}; logs in {fault_env.root}"
    )
