"""Free ports for local suites: below the ephemeral range, never handed out twice, and a
cluster whose port was taken before its child bound it starts again on new ports."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from im import free_ports
from im.cluster import Cluster, Proc
from im.free_ports import free_port, lost_a_port_race


def test_ports_come_from_below_the_ephemeral_range_and_are_distinct() -> None:
    start = free_ports._ephemeral_start()
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    assert all(free_ports._LOWEST <= port < start for port in ports)
    for port in ports[:5]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # nothing listens there


def test_a_port_in_use_is_not_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        picks = iter([busy, busy + 1 if busy < 60000 else busy - 1])
        monkeypatch.setattr(free_ports.random, "randint", lambda low, high: next(picks))
        monkeypatch.setattr(free_ports, "_ephemeral_start", lambda: 65000)
        monkeypatch.setattr(free_ports, "_LOWEST", 1024)
        monkeypatch.setattr(free_ports, "_handed_out", set())
        assert free_port() != busy


def test_without_room_below_the_ephemeral_range_the_kernel_picks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(free_ports, "_ephemeral_start", lambda: 1024)
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_what_counts_as_a_lost_port_race() -> None:
    assert lost_a_port_race(
        "connector-1 exited:\ncannot listen on 127.0.0.1:52997 for the connector gRPC: "
        "the port is already in use"
    )
    assert lost_a_port_race("Failed to bind to address 127.0.0.1:4000")
    assert not lost_a_port_race("router-0 exited:\nBackendUnavailable: kafka is unavailable")


class _ScriptedCluster(Cluster):
    """A cluster whose processes are not started: wait_ready fails as scripted."""

    def __init__(self, log_dir: Path, failures: list[str]) -> None:
        super().__init__(log_dir=log_dir)
        self.failures = failures
        self.plans: list[list[str]] = []

    def migrate(self) -> None:
        pass

    def plan(self) -> list[Proc]:
        self.gateway_url = f"http://127.0.0.1:{free_port()}"
        self.plans.append([self.gateway_url])
        return [Proc("gateway", "gateway", {}, self.log_dir / "gateway.log")]

    def spawn(self, proc: Proc) -> None:
        self.procs[proc.name] = proc  # never started: stop() skips it

    def wait_ready(self, timeout: float = 60.0) -> None:
        if self.failures:
            raise RuntimeError(self.failures.pop(0))


def test_a_cluster_that_lost_a_port_race_starts_again_on_new_ports(tmp_path: Path) -> None:
    scripted = _ScriptedCluster(tmp_path, ["connector-1 exited:\nport is already in use"])
    scripted.start()
    assert len(scripted.plans) == 2 and scripted.plans[0] != scripted.plans[1]


def test_a_cluster_that_fails_otherwise_is_not_started_again(tmp_path: Path) -> None:
    scripted = _ScriptedCluster(tmp_path, ["router-0 exited:\nno such topic"])
    with pytest.raises(RuntimeError, match="no such topic"):
        scripted.start()
    assert len(scripted.plans) == 1


def test_a_cluster_gives_up_after_three_lost_races(tmp_path: Path) -> None:
    scripted = _ScriptedCluster(tmp_path, ["already in use"] * 3)
    with pytest.raises(RuntimeError, match="already in use"):
        scripted.start()
    assert len(scripted.plans) == 3


def test_documented_ports_are_not_tried_again(tmp_path: Path) -> None:
    scripted = _ScriptedCluster(tmp_path, ["already in use"])
    scripted.fixed_ports = True
    with pytest.raises(RuntimeError):
        scripted.start()
    assert len(scripted.plans) == 1
