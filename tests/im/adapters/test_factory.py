"""im.adapters.factory: what standalone's services of one process share."""

from __future__ import annotations

from pathlib import Path

import pytest

from im.adapters.factory import build_backends, build_message_store
from im.config import Settings
from im.ports import BackendUnavailable


async def test_services_of_one_process_share_the_state_store(tmp_path: Path) -> None:
    """Idempotency claims are answered from the store's memory: a retry through another
    connector of the process must find the first claim."""
    settings = Settings(data_dir=tmp_path)
    first, second = build_backends(settings), build_backends(settings)
    assert first.idempotency is second.idempotency
    assert await first.idempotency.claim("1:retry", b"msg-1", 60) is None
    assert await second.idempotency.claim("1:retry", b"msg-2", 60) == b"msg-1"

    for close in first.closers:
        await close()
    # The other service still works; the store closes with its last user.
    assert await second.sessions.is_revoked("s") is False
    for close in second.closers:
        await close()
    with pytest.raises(BackendUnavailable):
        await second.sessions.is_revoked("s")

    third = build_backends(settings)  # a new store, from the file
    try:
        assert await third.idempotency.claim("1:retry", b"msg-3", 60) == b"msg-1"
    finally:
        for close in third.closers:
            await close()


async def test_the_sql_message_store_stops_searches_at_the_search_timeout(
    tmp_path: Path,
) -> None:
    store = build_message_store(Settings(data_dir=tmp_path, search_timeout=3.5))
    try:
        assert store._search._max_seconds == 3.5  # type: ignore[attr-defined]
    finally:
        await store.close()
