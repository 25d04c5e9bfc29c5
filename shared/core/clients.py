"""Clients built on first use and kept for the life of the instance (STYLE: lazy globals).

A `Lazy` is called like the function it replaces (`db()`, `publisher()`): the first call builds
the client, later calls return it. Its key is what the client is built from (a project id; an
API key, a base URL and a timeout), and `build` is given it: a call that finds the key changed
builds a new client, so a test or a settings reload never gets a client made for other
settings. Concurrent first calls build once: the build runs under a lock, the common path takes
none.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


def _no_key() -> None:
    return None


class Lazy(Generic[K, T]):
    """A client made by `build(key)`, made again whenever `key()` answers something new."""

    def __init__(self, build: Callable[[K], T], key: Callable[[], K] = _no_key):  # type: ignore[assignment]
        self._build = build
        self._key = key
        self._lock = threading.Lock()
        self._built: tuple[K, T] | None = None

    def __call__(self) -> T:
        key = self._key()
        built = self._built
        if built is not None and built[0] == key:
            return built[1]
        with self._lock:
            built = self._built
            if built is None or built[0] != key:
                built = self._built = (key, self._build(key))
            return built[1]
