"""The ports a process listens on, and one clear line when one cannot be had.

A port that is already taken is the likeliest first-run failure (8080 often is). Before
any service starts, ``check_ports`` tries each configured port once, so the process
stops with one line naming the port and the setting that moves it, having started
nothing that must be stopped again; the listeners themselves turn a bind error into
the same ``ListenError`` (for the port taken in between).
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass

from im.config import Settings


@dataclass(frozen=True)
class Listener:
    what: str  # e.g. "gateway HTTP"
    host_setting: str  # "host" or "internal_host"
    port_setting: str  # e.g. "gateway_port"


LISTENERS: dict[str, tuple[Listener, ...]] = {
    "user": (Listener("user gRPC", "internal_host", "user_grpc_port"),),
    "group": (Listener("group gRPC", "internal_host", "group_grpc_port"),),
    "connector": (
        Listener("connector gRPC", "internal_host", "connector_grpc_port"),
        Listener("connector TCP", "host", "connector_tcp_port"),
        Listener("connector WebSocket", "host", "connector_ws_port"),
    ),
    "router": (Listener("router gRPC", "internal_host", "router_grpc_port"),),
    "gateway": (
        Listener("gateway HTTP", "host", "gateway_port"),
        Listener("gateway gRPC", "internal_host", "gateway_grpc_port"),
    ),
}


def env_name(setting: str) -> str:
    return f"IM_{setting.upper()}"


class ListenError(OSError):
    """A port this process must listen on cannot be had; ``str()`` is one line that
    names the address, what it was for and the setting to change."""

    def __init__(
        self,
        what: str,
        host: str,
        port: int,
        setting: str,
        cause: BaseException,
        why: str | None = None,
    ) -> None:
        code = getattr(cause, "errno", None)
        in_use = code == errno.EADDRINUSE or "already in use" in str(cause).lower()
        env = env_name(setting)
        if in_use:
            why = why or "the port is already in use"
            fix = f"set {env} to a free port (e.g. {env}={_suggest(port)}) or stop what uses it"
        else:
            why = why or getattr(cause, "strerror", None) or str(cause) or type(cause).__name__
            fix = f"check {env} and the host it binds to"
        super().__init__(code or errno.EADDRINUSE, f"cannot listen on {host}:{port} ({what})")
        self.what, self.host, self.port, self.setting = what, host, port, setting
        self.in_use = in_use
        self.message = f"cannot listen on {host}:{port} for the {what}: {why}; {fix}"

    def __str__(self) -> str:
        return self.message


def _suggest(port: int) -> int:
    return port + 1 if 0 < port < 65535 else 8081


def probe(host: str, port: int) -> None:
    """Bind ``host:port`` once and let it go (as the servers bind: SO_REUSEADDR, so a
    port in TIME_WAIT passes). Raises OSError when it is taken."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)


def bind_failure(setting: str, host: str, port: int) -> ListenError:
    """The ListenError for a server that could not bind ``host:port`` without saying
    why (gRPC): a second try with a plain socket finds out."""
    try:
        probe(host, port)
    except OSError as exc:
        cause: OSError = exc
    else:
        cause = OSError(errno.EADDRNOTAVAIL, "the server could not bind it")
    return ListenError(what_of(setting), host, port, setting, cause)


def what_of(setting: str) -> str:
    """What the port of ``setting`` serves, e.g. "user gRPC"."""
    for listener in listeners_of(list(LISTENERS)):
        if listener.port_setting == setting:
            return listener.what
    return setting.removesuffix("_port").replace("_", " ")


def listeners_of(services: tuple[str, ...] | list[str]) -> list[Listener]:
    return [listener for name in services for listener in LISTENERS.get(name, ())]


def check_ports(settings: Settings, services: tuple[str, ...] | list[str]) -> None:
    """Raise ListenError for the first configured port of ``services`` that cannot be
    bound, or that two listeners of this process were both given (0 = any free port)."""
    seen: dict[int, Listener] = {}
    for listener in listeners_of(services):
        host = getattr(settings, listener.host_setting)
        port = int(getattr(settings, listener.port_setting))
        if port == 0:
            continue
        other = seen.get(port)
        if other is not None:
            raise ListenError(
                listener.what,
                host,
                port,
                listener.port_setting,
                OSError(errno.EADDRINUSE, "port given twice"),
                why=f"{env_name(other.port_setting)} ({other.what}) is {port} too",
            )
        seen[port] = listener
        try:
            probe(host, port)
        except OSError as exc:
            raise ListenError(listener.what, host, port, listener.port_setting, exc) from exc
