"""Builds the adapters named by the settings' URLs."""

from __future__ import annotations

from urllib.parse import urlparse

from im.adapters.memory import MemoryBus, MemoryKV, MemoryRegistry
from im.config import Settings
from im.ports import Backends, MessageStore

# memory:// adapters are shared by every service of one process (standalone mode);
# memory://<name> gives a separate set, e.g. for two suites in one test process.
_memory: dict[str, tuple[MemoryBus, MemoryRegistry, MemoryKV]] = {}


def _memory_set(url: str, settings: Settings) -> tuple[MemoryBus, MemoryRegistry, MemoryKV]:
    name = urlparse(url).netloc or "default"
    if name not in _memory:
        _memory[name] = (MemoryBus(settings.topic_partitions), MemoryRegistry(), MemoryKV())
    return _memory[name]


def reset_memory(name: str | None = None) -> None:
    """Forget in-process state (tests)."""
    if name is None:
        _memory.clear()
    else:
        _memory.pop(name, None)


def _unsupported(kind: str, url: str) -> ValueError:
    return ValueError(f"unsupported {kind} URL {url!r}")


def build_backends(settings: Settings) -> Backends:
    closers = []
    bus_scheme = urlparse(settings.bus_url).scheme
    if bus_scheme == "memory":
        bus = _memory_set(settings.bus_url, settings)[0]
    else:
        raise _unsupported("bus", settings.bus_url)

    reg_scheme = urlparse(settings.registry_url).scheme
    if reg_scheme == "memory":
        registry = _memory_set(settings.registry_url, settings)[1]
    else:
        raise _unsupported("registry", settings.registry_url)

    kv_scheme = urlparse(settings.kv_url).scheme
    if kv_scheme == "memory":
        kv = _memory_set(settings.kv_url, settings)[2]
        presence = sessions = idempotency = kv
    else:
        raise _unsupported("kv", settings.kv_url)

    return Backends(
        bus=bus,
        registry=registry,
        presence=presence,
        sessions=sessions,
        idempotency=idempotency,
        closers=closers,
    )


def build_message_store(settings: Settings) -> MessageStore:
    url = settings.resolved_message_store_url()
    from im.adapters.sqlstore import SqlMessageStore

    return SqlMessageStore(url)
