"""One fault environment: the suite's own backends and a cluster of ours on them
(1 gateway, 1 user, 1 group, 2 connectors, 2 routers, each its own process)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from im.cluster import Cluster
from tests.faults.backends import SPAWNED, Backends, kill_process

# Short timings so that failures are noticed and healed within a test's minute.
CLUSTER_ENV = {
    "IM_ARGON2_TIME_COST": "1",
    "IM_ARGON2_MEMORY_KIB": "8192",
    "IM_HEARTBEAT_INTERVAL": "2",
    "IM_RETRANSMIT_TIMEOUT": "1",
    "IM_PUBLISH_TIMEOUT": "5",
    # Clients log in again after every lost or refused connection; the login guard
    # against password guessing would only blur what is measured here: the backends'
    # recovery.
    "IM_LOGIN_FAILURES_PER_USER_ADDRESS": "0",
    "IM_LOGIN_FAILURES_PER_ADDRESS": "0",
    "IM_REGISTRATIONS_PER_ADDRESS_PER_HOUR": "0",
    "IM_LOG_LEVEL": "INFO",
}

LOG_NOTEWORTHY = re.compile(r" (ERROR|CRITICAL) |Traceback|\bWARNING\b")
OUR_LOGGER = re.compile(r" (WARNING|ERROR|CRITICAL) im\.")


@dataclass
class FaultEnv:
    root: Path
    backends: Backends
    cluster: Cluster
    registry_root: str
    initial_pids: dict[str, int] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)  # process name -> times restarted

    @classmethod
    def create(cls, root: Path) -> FaultEnv:
        backends = Backends.create(root / "backends")
        cluster, registry_root = _new_cluster(root / "cluster", backends)
        return cls(root=root, backends=backends, cluster=cluster, registry_root=registry_root)

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Backends, schema (``imctl db upgrade`` in Cluster.start), then the services."""
        self.backends.start()
        for attempt in range(3):
            try:
                self.cluster.start(timeout=90)
                break
            except RuntimeError as exc:
                # A free port chosen for a service can be taken (an outgoing
                # connection's ephemeral port) before the service binds it: start
                # again on new ports, as the e2e harness does.
                if "address already in use" not in str(exc) or attempt == 2:
                    raise
                self.stop_services(timeout=10.0)
                # New names too: a member that left mid-join can wedge its consumer
                # group on the Kafka-protocol test broker for longer than a start.
                folder = self.root / f"cluster-{attempt + 2}"
                self.cluster, self.registry_root = _new_cluster(folder, self.backends)
            finally:
                self._remember_processes()
        self.initial_pids = {name: p.process.pid for name, p in self.cluster.procs.items()}

    def _remember_processes(self) -> None:
        for proc in self.cluster.procs.values():
            if proc.process is not None and proc.process not in SPAWNED:
                SPAWNED.append(proc.process)

    def stop(self) -> dict[str, int | None]:
        """Stop everything started here, whatever state it is in; exit codes of ours."""
        codes = self.stop_services(timeout=15.0)
        self.backends.cleanup()
        return codes

    def stop_services(self, timeout: float) -> dict[str, int | None]:
        procs = [p for p in self.cluster.procs.values() if p.process is not None]
        for proc in procs:
            if proc.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.process.send_signal(signal.SIGCONT)  # a paused one cannot stop
                    proc.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            kill_process(proc.process)
        return {p.name: p.process.returncode for p in procs}

    # ------------------------------------------------------------ our processes

    def pid(self, name: str) -> int:
        return self.cluster.procs[name].process.pid

    def kill(self, name: str) -> None:
        """kill -9 one of our processes (blocks until it is reaped)."""
        self.cluster.kill(name, signal.SIGKILL)

    def restart(self, name: str) -> None:
        """Start a killed process again with its settings and ports, as Kubernetes
        restarts a crashed container."""
        assert not self.cluster.procs[name].alive(), f"{name} is still running"
        self.cluster.spawn(self.cluster.procs[name])
        self.restarts[name] = self.restarts.get(name, 0) + 1
        self._remember_processes()

    def pause(self, name: str) -> None:
        os.kill(self.pid(name), signal.SIGSTOP)

    def resume(self, name: str) -> None:
        os.kill(self.pid(name), signal.SIGCONT)

    def process_problems(self, replaced: str | None = None) -> list[str]:
        """Every process of ours still the one started at the beginning and alive,
        except ``replaced`` (killed by the test and restarted once, and alive)."""
        problems = []
        for name, proc in self.cluster.procs.items():
            code = proc.process.poll()
            if code is not None:
                problems.append(f"{name} exited with {code} (log {proc.log_path})")
            elif name == replaced:
                if self.restarts.get(name) != 1:
                    problems.append(f"{name} restarted {self.restarts.get(name, 0)} times")
            elif proc.process.pid != self.initial_pids.get(name):
                problems.append(
                    f"{name} was restarted (pid {self.initial_pids.get(name)} -> "
                    f"{proc.process.pid})"
                )
        dead = self.backends.dead()
        if dead:
            problems.append(f"backend servers died: {dead}")
        return problems

    def registry_census(self) -> Counter[str]:
        """The ephemeral nodes our services hold in ZooKeeper, counted per folder
        (connectors, routers, node-id leases). Blocking: call it in a thread."""
        from kazoo.client import KazooClient

        zk = KazooClient(hosts=f"127.0.0.1:{self.backends.zookeeper.port}", timeout=4.0)
        zk.start(timeout=5.0)
        census: Counter[str] = Counter()

        def walk(path: str) -> None:
            for child in zk.get_children(path):
                node = f"{path}/{child}"
                if zk.exists(node).ephemeralOwner:
                    census[path.removeprefix(self.registry_root) or "/"] += 1
                walk(node)

        try:
            if zk.exists(self.registry_root):
                walk(self.registry_root)
        finally:
            zk.stop()
            zk.close()
        return census

    # ------------------------------------------------------------------ reports

    def where(self) -> str:
        return f"cluster logs: {self.cluster.log_dir}\nbackend logs: {self.backends.root}/*/*.log"

    def log_digest(self, per_log: int = 3) -> list[str]:
        """Per service log: how many warnings/errors, and the last few of them (those
        of our own loggers first: the client libraries' are many and repetitive)."""
        lines = []
        for proc in self.cluster.procs.values():
            try:
                text = proc.log_path.read_text(errors="replace").splitlines()
            except OSError:
                continue
            notes = [line for line in text if LOG_NOTEWORTHY.search(line)]
            errors = sum(1 for line in notes if "WARNING" not in line)
            ours = [line for line in notes if OUR_LOGGER.search(line)] or notes
            lines.append(f"{proc.name}: {len(notes) - errors} warnings, {errors} errors")
            lines.extend(f"    {line[:220]}" for line in ours[-per_log:])
        return lines


def _new_cluster(log_dir: Path, backends: Backends) -> tuple[Cluster, str]:
    """A cluster of ours on ``backends``, its names (topics, group, registry root, key
    prefix) its own."""
    run = uuid.uuid4().hex[:8]
    registry_root = f"/im-faults-{run}"
    cluster = Cluster(
        log_dir=log_dir,
        backends=backends.urls(run, registry_root),
        connectors=2,
        routers=2,
        extra_env={
            **CLUSTER_ENV,
            # Names isolated as the e2e cluster does, though these servers are ours.
            "IM_KV_PREFIX": f"im-faults-{run}:",
            "IM_TOPIC_MESSAGES": f"faults-{run}.messages",
            "IM_TOPIC_CURSORS": f"faults-{run}.cursors",
            "IM_TOPIC_MEMBERSHIP": f"faults-{run}.membership",
            "IM_ROUTER_GROUP": f"faults-{run}-routers",
        },
    )
    return cluster, registry_root
