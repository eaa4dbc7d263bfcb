"""The latest state of each entity this worker owns, in memory, so that a batch can be computed
from the states of the batch before it while that batch's save is still on its way to Redis.

Redis stays the durable copy and the source after any seek (restart, rebalance, refused save):
the worker clears the cache whenever it seeks (:func:`stream.worker.position`), so what the cache
holds always continues the records the consumer reads next.

An entry written by a computed batch is *pinned* until that batch's save is done (its only copy
is here) and is never evicted; an unpinned entry is also in Redis. Beyond ``capacity`` entries the
least recently used unpinned ones are evicted; if pinned entries alone exceed it, the cache stays
over (:attr:`StateCache.full`) and the caller waits for the oldest delivery before computing more,
so memory is bounded by ``capacity`` plus one batch's entities and no unsaved state is dropped.

>>> cache = StateCache(2)
>>> cache.put({(0, "a"): b"A1", (0, "b"): b"B1"}, batch=1)
0
>>> cache.put({(0, "c"): b"C1"}, batch=2)  # a and b are pinned by batch 1: nothing evicted
0
>>> len(cache), cache.full
(3, True)
>>> cache.saved(1)  # batch 1 saved: a, the least recently used, goes
1
>>> cache.get([(0, "a"), (0, "b")]), len(cache)
([None, b'B1'], 2)
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

__all__ = ["StateCache"]

Key = tuple[int, str]  # (partition, entity id)


class StateCache:
    """``(partition, entity) → state`` for at most ``capacity`` unpinned-or-pinned entries, least
    recently used first; entries written by batch ``n`` are pinned until :meth:`saved` ``(n)``."""

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"state cache: expected a capacity >= 0, got {capacity}")
        self.capacity = capacity
        self._entries: OrderedDict[Key, tuple[bytes, int]] = OrderedDict()
        self._saved = 0  # the last batch whose save is done: entries of later batches are pinned
        self.generation = 0  # bumped by every clear: a compute that straddles one is stale

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def full(self) -> bool:
        """Over capacity with nothing left to evict (every entry pinned)."""
        return len(self._entries) > self.capacity

    def get(self, keys: Sequence[Key]) -> list[bytes | None]:
        """The cached state of each key (``None``: a miss); hits become the most recently used."""
        entries, out = self._entries, []
        for key in keys:
            item = entries.get(key)
            if item is None:
                out.append(None)
            else:
                entries.move_to_end(key)
                out.append(item[0])
        return out

    def put(self, states: Mapping[Key, bytes], batch: int = 0) -> int:
        """Store ``states``, pinned until batch ``batch`` is saved (0: already in Redis, not
        pinned); returns how many entries were evicted to make room."""
        entries = self._entries
        for key, blob in states.items():
            entries[key] = (blob, batch)
            entries.move_to_end(key)
        return self._evict()

    def saved(self, batch: int) -> int:
        """Batch ``batch`` (and every one before it) is saved: unpin its states; returns how many
        entries were evicted now that they may be."""
        self._saved = max(self._saved, batch)
        return self._evict()

    def clear(self) -> None:
        """Forget everything (the consumer seeks: Redis is the source again)."""
        self._entries.clear()
        self.generation += 1

    def _evict(self) -> int:
        excess = len(self._entries) - self.capacity
        if excess <= 0:
            return 0
        saved, victims = self._saved, []
        for key, (_, pin) in self._entries.items():
            if pin <= saved:
                victims.append(key)
                if len(victims) == excess:
                    break
        for key in victims:
            del self._entries[key]
        return len(victims)
