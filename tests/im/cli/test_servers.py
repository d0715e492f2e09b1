"""imctl server commands: standalone, serve, cluster, db, config-doc."""

from __future__ import annotations

from pathlib import Path

import pytest

from im.cli.main import build_parser, main
from im.cli.servers import (
    cmd_cluster,
    cmd_config_doc,
    cmd_db_upgrade,
    cmd_serve,
    cmd_standalone,
)


def test_config_doc_prints_the_settings_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config-doc"]) == 0
    out = capsys.readouterr().out
    assert "IM_BUS_URL" in out and out.startswith("| variable |")


def test_server_commands() -> None:
    parser = build_parser()
    assert parser.parse_args(["standalone"]).func is cmd_standalone
    args = parser.parse_args(["serve", "connector"])
    assert (args.func, args.service) == (cmd_serve, "connector")
    assert parser.parse_args(["config-doc"]).func is cmd_config_doc
    assert parser.parse_args(["db", "upgrade"]).func is cmd_db_upgrade
    args = parser.parse_args(["cluster", "--connectors", "3"])
    assert (args.func, args.connectors, args.routers) == (cmd_cluster, 3, 2)
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "nonsense"])


def test_db_upgrade_creates_the_sqlite_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IM_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("IM_DATABASE_URL", raising=False)
    assert main(["db", "upgrade"]) == 0
    assert (tmp_path / "im.db").exists()
