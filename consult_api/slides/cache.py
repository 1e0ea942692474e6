"""A small thread-safe LRU with a weight budget (bytes for encoded tiles, a count for open slides).

Tiles are served from sync code in the threadpool and from async fast paths on the event loop, so
every operation takes a lock; each one is O(1), so the lock is never held for long.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Lru(Generic[K, V]):
    def __init__(self, capacity: int, weigh: Callable[[V], int] = lambda _v: 1) -> None:
        self.capacity = capacity
        self._weigh = weigh
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._weight = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: K) -> V | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item[0]

    def put(self, key: K, value: V) -> None:
        weight = self._weigh(value)
        if weight > self.capacity:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._weight -= old[1]
            self._items[key] = (value, weight)
            self._weight += weight
            while self._weight > self.capacity:
                _, (_, evicted) = self._items.popitem(last=False)
                self._weight -= evicted

    def __len__(self) -> int:
        return len(self._items)

    @property
    def weight(self) -> int:
        return self._weight


class GrantCache(Generic[K, V]):
    """Remembers an access decision for ``ttl`` seconds, so tiles skip the database.

    Why: a viewer fetches dozens of tiles per second; checking token, user and case visibility
    in the database for each would cost more than the tile. A revoked token or a case that stops
    being visible is therefore honoured for tiles within ``ttl`` seconds, not instantly.
    """

    def __init__(self, ttl: float, capacity: int = 10_000) -> None:
        self.ttl = ttl
        self._lru: Lru[K, tuple[float, V]] = Lru(capacity)

    def get(self, key: K, now: float) -> V | None:
        item = self._lru.get(key)
        if item is None or item[0] < now:
            return None
        return item[1]

    def put(self, key: K, value: V, now: float) -> None:
        self._lru.put(key, (now + self.ttl, value))
