"""Builds the adapters named by the settings' URLs.

| setting | standalone | distributed |
| --- | --- | --- |
| bus_url | memory:// | kafka://host:9092[,host:9092] |
| registry_url | memory:// | zk://host:2181[,host:2181]/root |
| kv_url | memory:// (*) | redis://host:6379/db |
| message_store_url | (the SQL database) | mongodb://host:27017/db or a SQLAlchemy URL |
| attachment_store_url | file:// folder in data_dir | GridFS in the message store's MongoDB |

(*) memory:// keeps presence and rate-limit windows in the process (live state a
restart may lose), but revoked sessions and idempotency keys in ``state.db`` in the
data dir: a restart must neither revive a logged-out token nor store a retried
message twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import unquote, urlparse

from im.adapters.memory import MemoryBus, MemoryKV, MemoryRegistry
from im.adapters.sqlite_state import STATE_FILE, SqliteStateStore
from im.config import Settings
from im.ports import (
    AttachmentStore,
    Backends,
    IdempotencyStore,
    MessageStore,
    PushNotifier,
    SessionStore,
)

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


# One state store per file and process: it answers idempotency claims from memory, so
# every service (and every connector) of the process must share it. Closed with its
# last user.
_state: dict[Path, tuple[SqliteStateStore, int]] = {}


def _shared_state(path: Path) -> tuple[SqliteStateStore, Callable[[], Awaitable[None]]]:
    path = path.resolve()
    store, users = _state.get(path) or (SqliteStateStore(path), 0)
    _state[path] = (store, users + 1)
    closed = False

    async def close() -> None:
        nonlocal closed
        if closed:
            return
        closed = True
        entry = _state.get(path)
        if entry is None or entry[0] is not store:
            return
        if entry[1] > 1:
            _state[path] = (store, entry[1] - 1)
            return
        del _state[path]
        await store.close()

    return store, close


def _scheme(url: str) -> str:
    return urlparse(url).scheme


def build_backends(settings: Settings, client_id: str = "im") -> Backends:
    """The adapters for these settings; ``await backends.start()`` before use."""
    closers, starters = [], []

    scheme = _scheme(settings.bus_url)
    if scheme == "memory":
        bus = _memory_set(settings.bus_url, settings)[0]
    elif scheme == "kafka":
        from im.adapters import kafka_bus

        bus = kafka_bus.from_url(settings.bus_url, settings, client_id=client_id)
        starters.append(bus.start)
        closers.append(bus.close)
    else:
        raise ValueError(f"unsupported bus URL {settings.bus_url!r}")

    scheme = _scheme(settings.registry_url)
    if scheme == "memory":
        registry = _memory_set(settings.registry_url, settings)[1]
    elif scheme == "zk":
        from im.adapters import zk_registry

        registry = zk_registry.from_url(settings.registry_url, settings)
        starters.append(registry.start)
        closers.append(registry.close)
    else:
        raise ValueError(f"unsupported registry URL {settings.registry_url!r}")

    scheme = _scheme(settings.kv_url)
    if scheme == "memory":
        kv = _memory_set(settings.kv_url, settings)[2]
        state, close_state = _shared_state(settings.data_dir / STATE_FILE)
        closers.append(close_state)
        sessions: SessionStore = state
        idempotency: IdempotencyStore = state
    elif scheme in ("redis", "rediss", "unix"):
        from im.adapters.redis_kv import RedisKV

        kv = RedisKV(settings.kv_url, prefix=settings.kv_prefix)
        closers.append(kv.close)
        sessions = idempotency = kv
    else:
        raise ValueError(f"unsupported kv URL {settings.kv_url!r}")

    return Backends(
        bus=bus,
        registry=registry,
        presence=kv,
        sessions=sessions,
        idempotency=idempotency,
        rate_limits=kv,
        closers=closers,
        starters=starters,
    )


def build_push_notifier(settings: Settings) -> PushNotifier | None:
    """The offline-push webhook, or None when IM_PUSH_WEBHOOK_URL is unset (push off)."""
    if not settings.push_webhook_url:
        return None
    from im.adapters.push_webhook import WebhookOptions, WebhookPushNotifier

    return WebhookPushNotifier(
        WebhookOptions(
            url=settings.push_webhook_url,
            secret=settings.push_webhook_secret,
            timeout=settings.push_webhook_timeout,
            batch_size=settings.push_batch_size,
            queue_size=settings.push_queue_size,
            max_attempts=settings.push_max_attempts,
            retry_base=settings.push_retry_base_seconds,
            retry_max=settings.push_retry_max_seconds,
        )
    )


def build_message_store(settings: Settings) -> MessageStore:
    url = settings.resolved_message_store_url()
    if _scheme(url) in ("mongodb", "mongodb+srv"):
        from im.adapters.mongo_store import MongoMessageStore

        return MongoMessageStore(url)
    from im.adapters.sqlstore import SqlMessageStore

    return SqlMessageStore(
        url, auto_migrate=settings.auto_migrate, search_timeout=settings.search_timeout
    )


def build_attachment_store(settings: Settings) -> AttachmentStore:
    url = settings.resolved_attachment_store_url()
    scheme = _scheme(url)
    if scheme in ("mongodb", "mongodb+srv"):
        from im.adapters.gridfs_attachments import GridFsAttachmentStore

        return GridFsAttachmentStore(url)
    if scheme == "file":
        from im.adapters.file_attachments import FileAttachmentStore

        return FileAttachmentStore(Path(unquote(urlparse(url).path)))
    raise ValueError(f"unsupported attachment store URL {url!r}")
