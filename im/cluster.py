"""A local distributed cluster: every service its own process, on the real servers
that `scripts/dev-services.sh up` starts. Used by `imctl cluster` / `make cluster`
and by the distributed end-to-end tests."""

from __future__ import annotations

import itertools
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from im import datadir
from im.auth import generate_key_pair
from im.config import Settings
from im.free_ports import free_port, lost_a_port_race
from im.tls import ensure_internal

DEFAULT_BACKENDS = {
    "IM_DATABASE_URL": "mysql+pymysql://im:im@127.0.0.1:3306/im?charset=utf8mb4",
    "IM_MESSAGE_STORE_URL": "mongodb://127.0.0.1:27017/im?retryWrites=false",
    # Tansu locally: it does not wake a waiting fetch, so consumers ask every 10 ms.
    "IM_BUS_URL": "kafka://127.0.0.1:9092?fetch_max_wait_ms=10",
    "IM_REGISTRY_URL": "zk://127.0.0.1:2181/im",
    "IM_KV_URL": "redis://127.0.0.1:6379/0",
}


_INTERNAL_TLS_SETTINGS = ("IM_INTERNAL_CA_FILE", "IM_INTERNAL_CERT_FILE", "IM_INTERNAL_KEY_FILE")


@dataclass
class Proc:
    name: str
    service: str
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen | None = None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class Cluster:
    log_dir: Path
    backends: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_BACKENDS))
    connectors: int = 2
    routers: int = 2
    fixed_ports: bool = False  # True: the documented ports (8080, 5005x, 707x)
    extra_env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, Proc] = field(default_factory=dict)
    gateway_url: str = ""
    gateway_grpc: str = ""  # host:port of the gateway's MessageService (mutual TLS)

    def _port(self, default: int) -> int:
        return default if self.fixed_ports else free_port()

    def _base_env(self) -> dict[str, str]:
        # Holds the JWT private key, the logs and the data dir: private, like standalone's.
        datadir.prepare(self.log_dir)
        private, public = self.log_dir / "jwt-private.pem", self.log_dir / "jwt-public.pem"
        if not private.exists():
            priv, pub = generate_key_pair()
            private.write_bytes(priv)
            private.chmod(0o600)
            public.write_bytes(pub)
        # One dev CA and certificate for every process: internal gRPC is mutual TLS.
        internal = ensure_internal(
            self.log_dir / "tls" / "internal", Settings().internal_server_name
        )
        env = dict(os.environ)
        env.update(self.backends)
        env.update(
            {
                "IM_DATA_DIR": str(self.log_dir / "data"),
                "IM_JWT_PRIVATE_KEY_FILE": str(private),
                "IM_JWT_PUBLIC_KEY_FILE": str(public),
                "IM_AUTO_MIGRATE": "false",
                "IM_INTERNAL_CA_FILE": str(internal.ca),
                "IM_INTERNAL_CERT_FILE": str(internal.cert),
                "IM_INTERNAL_KEY_FILE": str(internal.key),
            }
        )
        env.update(self.extra_env)
        return env

    def plan(self) -> list[Proc]:
        base = self._base_env()
        user_port, group_port = self._port(50051), self._port(50052)
        gateway_port, gateway_grpc_port = self._port(8080), self._port(50070)
        self.gateway_url = f"http://127.0.0.1:{gateway_port}"
        self.gateway_grpc = f"127.0.0.1:{gateway_grpc_port}"
        shared = {
            "IM_USER_SERVICE_ADDR": f"127.0.0.1:{user_port}",
            "IM_GROUP_SERVICE_ADDR": f"127.0.0.1:{group_port}",
        }
        # Every process serves /metrics on a port of its own (the gateway's is 9464).
        next_metrics = itertools.count(9465)

        def metrics() -> dict[str, str]:
            return {"IM_METRICS_PORT": str(self._port(next(next_metrics)))}

        procs = [
            Proc(
                "user",
                "user",
                {**base, **shared, **metrics(), "IM_USER_GRPC_PORT": str(user_port)},
                self.log_dir / "user.log",
            ),
            Proc(
                "group",
                "group",
                {**base, **shared, **metrics(), "IM_GROUP_GRPC_PORT": str(group_port)},
                self.log_dir / "group.log",
            ),
        ]
        for i in range(self.connectors):
            procs.append(
                Proc(
                    f"connector-{i + 1}",
                    "connector",
                    {
                        **base,
                        **shared,
                        **metrics(),
                        "IM_CONNECTOR_ID": f"connector-{i + 1}",
                        "IM_CONNECTOR_TCP_PORT": str(self._port(7070 + 2 * i)),
                        "IM_CONNECTOR_WS_PORT": str(self._port(7071 + 2 * i)),
                        "IM_CONNECTOR_GRPC_PORT": str(self._port(50053 + i)),
                    },
                    self.log_dir / f"connector-{i + 1}.log",
                )
            )
        for i in range(self.routers):
            procs.append(
                Proc(
                    f"router-{i + 1}",
                    "router",
                    {
                        **base,
                        **shared,
                        **metrics(),
                        "IM_ROUTER_GRPC_PORT": str(self._port(50060 + i)),
                    },
                    self.log_dir / f"router-{i + 1}.log",
                )
            )
        procs.append(
            Proc(
                "gateway",
                "gateway",
                {
                    **base,
                    **shared,
                    "IM_GATEWAY_PORT": str(gateway_port),
                    "IM_GATEWAY_GRPC_PORT": str(gateway_grpc_port),
                    "IM_GATEWAY_METRICS_PORT": str(self._port(9464)),
                    "IM_ADMIN_GRPC_PORT": str(self._port(50050)),  # with an admin token
                },
                self.log_dir / "gateway.log",
            )
        )
        return procs

    def migrate(self) -> None:
        env = self._base_env()
        subprocess.run([sys.executable, "-m", "im.cli", "db", "upgrade"], env=env, check=True)

    def spawn(self, proc: Proc) -> None:
        log = proc.log_path.open("ab")
        proc.process = subprocess.Popen(
            [sys.executable, "-m", f"services.{proc.service}"],
            env=proc.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs[proc.name] = proc

    def start(self, timeout: float = 60.0) -> None:
        """Migrate, then start every process; on free ports, a port taken between
        choosing and binding it gets up to two more tries on new ports."""
        self.migrate()
        attempts = 1 if self.fixed_ports else 3
        for attempt in range(attempts):
            for proc in self.plan():
                self.spawn(proc)
            try:
                self.wait_ready(timeout)
                return
            except RuntimeError as exc:
                if attempt == attempts - 1 or not lost_a_port_race(str(exc)):
                    raise
                self.stop()
                self.procs.clear()

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for proc in self.procs.values():
                if not proc.alive():
                    raise RuntimeError(f"{proc.name} exited:\n{proc.log_path.read_text()[-4000:]}")
            try:
                reply = httpx.get(f"{self.gateway_url}/readyz", timeout=2)
                if reply.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("cluster not ready in time; logs in " + str(self.log_dir))
            time.sleep(0.2)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name]
        assert proc.process is not None
        proc.process.send_signal(sig)
        proc.process.wait(timeout=30)

    def stop(self, timeout: float = 20.0) -> dict[str, int]:
        """SIGTERM in reverse start order; returns each process's exit code."""
        codes: dict[str, int] = {}
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            if proc.process is None:
                continue
            if proc.process.poll() is None:
                proc.process.send_signal(signal.SIGTERM)
                try:
                    proc.process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    proc.process.kill()
                    proc.process.wait()
            codes[name] = proc.process.returncode
        return codes

    def describe(self) -> str:
        lines = [f"im cluster is up (logs in {self.log_dir}):"]
        for name, proc in self.procs.items():
            pid = proc.process.pid if proc.process else "-"
            # This process's own ports: the IM_*_PORT settings it was given.
            where = " ".join(
                f"{k[3:-5].lower()}={v}"
                for k, v in sorted(proc.env.items())
                if k.startswith("IM_") and k.endswith("_PORT") and os.environ.get(k) != v
            )
            lines.append(f"  {name:<12} pid {pid:<7} {where}")
        lines.append(f"Gateway: {self.gateway_url} (gRPC MessageService: {self.gateway_grpc})")
        # Internal gRPC is mutual TLS: its clients (imctl service-send) need the dev set.
        env = next(iter(self.procs.values())).env if self.procs else {}
        tls = [f"{k}={shlex.quote(env[k])}" for k in _INTERNAL_TLS_SETTINGS if k in env]
        if tls:
            lines.append("Internal gRPC clients (imctl service-send) need: export " + " ".join(tls))
        return "\n".join(lines)


def run_cluster(log_dir: Path, connectors: int = 2, routers: int = 2) -> int:
    cluster = Cluster(log_dir=log_dir, connectors=connectors, routers=routers, fixed_ports=True)
    stop = False

    def on_signal(signum, frame):  # type: ignore[no-untyped-def]
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        cluster.start()
        print(cluster.describe(), flush=True)
        while not stop:
            time.sleep(0.5)
            for proc in cluster.procs.values():
                if not proc.alive():
                    print(
                        f"{proc.name} exited with {proc.process.returncode}; stopping",
                        file=sys.stderr,
                    )
                    stop = True
    finally:
        codes = cluster.stop()
        print("stopped: " + ", ".join(f"{k}={v}" for k, v in codes.items()), flush=True)
    return 0
