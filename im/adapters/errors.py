"""One way for adapters to turn their client library's errors into the ports'
``BackendUnavailable``."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from im.ports import BackendUnavailable

P = ParamSpec("P")
T = TypeVar("T")


def unavailable_on(
    backend: str, errors: tuple[type[BaseException], ...]
) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
    """Decorates an adapter's async method: ``errors`` (what "the backend as a whole
    did not answer" looks like through its client library) leave as
    ``BackendUnavailable(backend)``, the original as its cause."""

    def decorate(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        @functools.wraps(method)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            try:
                return await method(*args, **kwargs)
            except errors as exc:
                raise BackendUnavailable(backend, str(exc) or type(exc).__name__) from exc

        return wrapper

    return decorate
