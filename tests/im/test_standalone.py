"""One service of a distributed suite (`imctl serve`) is safe by default: without
internal credentials it refuses to start, unless told it may run open."""

from __future__ import annotations

from pathlib import Path

import pytest

from im.config import Settings
from im.standalone import serve_one


async def test_a_service_without_internal_credentials_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as caught:
        await serve_one("user", Settings(data_dir=tmp_path, user_grpc_port=0))
    assert "user: internal gRPC has no credentials" in str(caught.value.code)
    assert "IM_INTERNAL_INSECURE" in str(caught.value.code)
    assert not (tmp_path / "im.db").exists()  # refused before opening anything
