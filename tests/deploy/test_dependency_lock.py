"""The locks in requirements/ agree with pyproject.toml: every pin there is locked at the
same version, every locked package carries hashes, and the runtime lock is the dev lock's
subset (one resolution, so the image runs what the tests ran)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_ENTRY = re.compile(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _lock(name: str) -> dict[str, tuple[str, int]]:
    """package -> (version, number of hashes) of one lock file."""
    entries: dict[str, tuple[str, int]] = {}
    current = ""
    for line in (ROOT / "requirements" / name).read_text().splitlines():
        match = _ENTRY.match(line)
        if match:
            current = _normal(match.group(1))
            entries[current] = (match.group(2), 0)
        elif line.strip().startswith("--hash=sha256:") and current:
            version, hashes = entries[current]
            entries[current] = (version, hashes + 1)
    return entries


def _pins(extras: list[str]) -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in extras:
        specs += project["optional-dependencies"][extra]
    pins = {}
    for spec in specs:
        match = _ENTRY.match(spec.replace(" ", ""))
        assert match, f"not pinned with ==: {spec}"
        pins[_normal(match.group(1))] = match.group(2)
    return pins


@pytest.mark.parametrize(
    ("lock", "extras"),
    [("runtime.lock", []), ("dev.lock", ["dev", "test-servers"])],
)
def test_every_pin_is_locked_at_its_version(lock: str, extras: list[str]) -> None:
    locked = _lock(lock)
    stale = {
        name: (version, locked.get(name, ("missing", 0))[0])
        for name, version in _pins(extras).items()
        if locked.get(name, ("", 0))[0] != version
    }
    assert not stale, f"run `make lock`: pyproject.toml pin vs {lock}: {stale}"


@pytest.mark.parametrize("lock", ["runtime.lock", "dev.lock"])
def test_every_locked_package_has_hashes(lock: str) -> None:
    locked = _lock(lock)
    assert len(locked) > 20  # transitive packages are there, not only the direct pins
    assert [name for name, (_v, hashes) in locked.items() if hashes == 0] == []


def test_runtime_lock_is_the_dev_locks_subset() -> None:
    dev = {name: version for name, (version, _h) in _lock("dev.lock").items()}
    runtime = {name: version for name, (version, _h) in _lock("runtime.lock").items()}
    assert {n: (v, dev.get(n)) for n, v in runtime.items() if dev.get(n) != v} == {}


def test_install_and_image_use_the_locks() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "--require-hashes -r requirements/dev.lock" in makefile
    assert "--no-deps -e ." in makefile
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "--require-hashes -r requirements/runtime.lock" in dockerfile
