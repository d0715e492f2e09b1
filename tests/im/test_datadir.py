"""The data folder and its files are private to the user the suite runs as."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from im import datadir


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture(autouse=True)
def restore_umask() -> Iterator[None]:
    # prepare() sets the process umask: give the rest of the test run its own back.
    old = os.umask(0o022)
    os.umask(old)
    yield
    os.umask(old)


def test_a_new_folder_is_created_0700(tmp_path: Path) -> None:
    folder = tmp_path / "a" / "data"
    datadir.prepare(folder)
    assert folder.is_dir()
    assert mode(folder) == 0o700


def test_a_looser_folder_and_its_files_are_tightened(tmp_path: Path, caplog) -> None:
    folder = tmp_path / "data"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    names = ["im.db", "messages.db", "jwt-private.pem", "jwt-public.pem", "state.db"]
    for name in names:
        (folder / name).write_bytes(b"x")
        (folder / name).chmod(0o644)
    datadir.prepare(folder)
    assert mode(folder) == 0o700
    assert {name: mode(folder / name) for name in names} == dict.fromkeys(names, 0o600)
    assert "readable by other users" in caplog.text


def test_stricter_modes_are_kept(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir(mode=0o700)
    key = folder / "key.pem"
    key.write_bytes(b"k")
    key.chmod(0o400)
    datadir.prepare(folder)
    assert mode(key) == 0o400


def test_sqlite_wal_and_shm_files_are_tightened_and_new_ones_are_private(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir(mode=0o755)
    db = sqlite3.connect(folder / "messages.db")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (x)")
    db.execute("INSERT INTO t VALUES (1)")
    db.commit()
    # The connection stays open, so the -wal and -shm files exist; an older version
    # left them world-readable.
    files = [folder / "messages.db", folder / "messages.db-wal", folder / "messages.db-shm"]
    journal = folder / "im.db-journal"
    journal.write_bytes(b"")
    for path in [*files, journal]:
        path.chmod(0o644)
    datadir.prepare(folder)
    assert [mode(p) for p in [*files, journal]] == [0o600] * 4

    # Files SQLite creates after the start are private too (the umask).
    other = sqlite3.connect(folder / "im.db")
    other.execute("PRAGMA journal_mode=WAL")
    other.execute("CREATE TABLE t (x)")
    other.commit()
    assert mode(folder / "im.db") == 0o600
    assert mode(folder / "im.db-wal") == 0o600
    other.close()
    db.close()


def test_symlinks_are_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("not ours")
    outside.chmod(0o644)
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "link").symlink_to(outside)
    datadir.prepare(folder)
    assert mode(outside) == 0o644
