"""Per-entity state: one binary value per entity, behind a small store interface.

Each entity's state is ONE value under ONE key, so writing it is atomic per entity: a reader sees
the old state or the new one, never a hidden state from one batch with the watermark of another.
The value is a fixed 32-byte little-endian header followed by float32 arrays::

    offset  type  field
    0       u8    version (3)
    1       u8    flags (bit 0: the last forecast is valid; cleared on a fresh start or reset)
    2       u16   partition of the message that carried the last applied sample
    4       u32   steps applied since the entity's first sample or last reset (saturating)
    8       f64   watermark: ts of the last applied sample, seconds
    16      i64   offset of the message that carried it
    24      f32   peak: the score's peak hold ``p`` (``stream.entity_scale``; 0 unused)
    28      f32   log_mu: the running log average ``μ`` of the peak (0 unused)
    32      f32[S]  hidden state, ``Forecaster.pack_state`` layout (S = state_size)
    32+4S   f32[F]  the 1-step forecast for the next sample, scaled units
    32+4S+4F  B bytes  the beat stage's row (``BeatStage.state_dtype``; B = 0 without a beat
                       model): QRS detector, beat features, beat network, beats awaiting a decision
    ...+B     f64[Z]   the sensor score's vector (``stream.sensor_score``; Z = 0 without a
                       ``score.sensor`` section): warm-up count, last flag, averages, level, scale

A value of another length or version is treated as absent by the engine, never fed to the
network: one of an older layout (version 1 had no ``peak``/``log_mu``, 24-byte header; version 2
had no beat part) is counted as a ``version`` reset, anything else as ``corrupt``. The beat part
comes last so that the watermark keeps its byte offset, which the Lua save reads.

Keys are ``<namespace>:<entity_id>`` with the namespace ``<app_id>:<first 16 hex of
model_id>``, so a state written by one model is never read by another and two consumer groups
keep separate states. 64 bits of the content hash make an accidental
collision between two models' namespaces negligible while keeping keys short (every byte of a key
costs memory once per entity).

Saves are monotonic: a value is replaced only if its watermark is older than the new one's (or it
is not a valid state). A worker that lost its partitions in a rebalance but still finishes a
batch therefore cannot move an entity's state backwards over the newer state of its successor.
In Redis the batched load is one ``MGET`` and the batched save one ``EVALSHA`` of a short Lua
script (one round trip, atomic, each key ``SET`` with the idle TTL).

>>> codec = StateCodec(state_size=4, n_features=2)
>>> rows = codec.empty(1)
>>> rows["steps"], rows["wm_ts"] = 7, 12.5
>>> blob = codec.encode(rows)[0]
>>> len(blob), codec.size
(56, 56)
>>> back, found = codec.decode([blob, None])
>>> int(back["steps"][0]), float(back["wm_ts"][0]), found.tolist()
(7, 12.5, [True, False])
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import redis.asyncio

__all__ = [
    "FLAG_FORECAST",
    "HEADER_BYTES",
    "OLDER_VERSIONS",
    "VERSION",
    "MemoryStateStore",
    "RedisStateStore",
    "StateCodec",
    "StateStore",
    "namespace",
]

VERSION = 3
# bytes an older version's value is shorter than this version's, for the same model, before the
# beat part (which no older version has)
OLDER_VERSIONS = {1: 8, 2: 0}
FLAG_FORECAST = 1
HEADER_FIELDS = [("version", "u1"), ("flags", "u1"), ("partition", "<u2"), ("steps", "<u4"),
                 ("wm_ts", "<f8"), ("wm_offset", "<i8"), ("peak", "<f4"), ("log_mu", "<f4")]
HEADER_BYTES = np.dtype(HEADER_FIELDS).itemsize
WM_TS_AT = 8  # byte offset of the watermark ts (the Lua script reads it at 1-based 9)


def namespace(app_id: str, model_id: str) -> str:
    """The key prefix of one consumer group's states for one model."""
    return f"{app_id}:{model_id[:16]}"


class StateCodec:
    """Packs states of many entities to bytes and back with one numpy call each way;
    ``beat_dtype`` (a beat stage's fixed-size row) adds the ``beat`` field at the end, and
    ``sensor_size`` float64s (the sensor score's vector) the ``sensor`` field after it."""

    def __init__(self, state_size: int, n_features: int,
                 beat_dtype: np.dtype | None = None, sensor_size: int = 0) -> None:
        self.state_size, self.n_features = state_size, n_features
        beat = [("beat", beat_dtype)] if beat_dtype is not None else []
        sensor = [("sensor", "<f8", (sensor_size,))] if sensor_size else []
        self.dtype = np.dtype([*HEADER_FIELDS, ("state", "<f4", (state_size,)),
                               ("forecast", "<f4", (n_features,)), *beat, *sensor])
        self.size = self.dtype.itemsize
        # parts no older version has (a model with a sensor part is a new model: new keys)
        self.extra_bytes = (beat_dtype.itemsize if beat_dtype is not None else 0) + 8 * sensor_size
        self.raw_bytes = 4 * (state_size + n_features)

    def empty(self, n: int) -> np.ndarray:
        """``n`` fresh states: zero hidden state, no forecast, no watermark."""
        rows = np.zeros(n, dtype=self.dtype)
        rows["version"] = VERSION
        rows["wm_ts"] = -np.inf
        rows["wm_offset"] = -1
        return rows

    def encode(self, rows: np.ndarray) -> list[bytes]:
        """One value per row, sliced from a single buffer."""
        buf, size = rows.astype(self.dtype, copy=False).tobytes(), self.size
        return [buf[i:i + size] for i in range(0, len(buf), size)]

    def decode(self, blobs: Sequence[bytes | None]) -> tuple[np.ndarray, np.ndarray]:
        """Rows for ``blobs`` and a mask of the valid ones; a missing, short or foreign-version
        value gives a fresh row (``found`` False). See :meth:`corrupt` to tell the two apart."""
        rows = self.empty(len(blobs))
        size, version = self.size, VERSION
        good = [i for i, b in enumerate(blobs) if b is not None and len(b) == size
                and b[0] == version]
        found = np.zeros(len(blobs), dtype=bool)
        if good:
            joined = b"".join([blobs[i] for i in good])  # type: ignore[misc]
            rows[good] = np.frombuffer(joined, dtype=self.dtype)
            found[good] = True
        return rows, found

    def corrupt(self, blobs: Sequence[bytes | None], found: np.ndarray) -> np.ndarray:
        """Mask of values present in the store but not decodable as this codec's states
        (older-version states included; :meth:`stale` tells those apart)."""
        present = np.fromiter((b is not None for b in blobs), dtype=bool, count=len(blobs))
        return present & ~found

    def stale(self, blobs: Sequence[bytes | None]) -> np.ndarray:
        """Mask of values laid out as an older version's state of the same model."""
        size = self.size - self.extra_bytes
        return np.fromiter((b is not None and len(b) > 0 and b[0] in OLDER_VERSIONS
                            and len(b) == size - OLDER_VERSIONS[b[0]] for b in blobs),
                           dtype=bool, count=len(blobs))


class StateStore(ABC):
    """Batched, per-entity-atomic state storage; values are opaque bytes from :class:`StateCodec`.

    ``transient_errors`` lists the exceptions that mean "the store is unreachable right now":
    the caller retries those without committing anything, and lets every other error surface.
    """

    transient_errors: tuple[type[BaseException], ...] = ()

    def __init__(self, prefix: str, ttl_s: int = 0) -> None:
        self.prefix = prefix + ":"
        self.ttl_s = ttl_s

    def key(self, entity_id: str) -> str:
        return self.prefix + entity_id

    @abstractmethod
    async def load(self, entity_ids: Sequence[str]) -> list[bytes | None]:
        """The stored value of each entity (``None`` if absent or expired), in one round trip."""

    @abstractmethod
    async def save(self, states: Mapping[str, bytes]) -> int:
        """Store every entity's value with the idle TTL in one round trip, keeping a stored value
        whose watermark is not older; return how many were written."""

    async def close(self) -> None:  # noqa: B027 - optional hook, a no-op where nothing to release
        """Release connections."""


def _newer(new: bytes, old: bytes | None) -> bool:
    if old is None or len(old) != len(new) or old[0] != new[0]:
        return True
    at = WM_TS_AT
    return bool(np.frombuffer(new, "<f8", 1, at)[0] > np.frombuffer(old, "<f8", 1, at)[0])


class MemoryStateStore(StateStore):
    """A dict in this process: for tests and for a single-process benchmark baseline."""

    def __init__(self, prefix: str = "mem", ttl_s: int = 0) -> None:
        super().__init__(prefix, ttl_s)
        self._data: dict[str, tuple[bytes, float]] = {}

    async def load(self, entity_ids: Sequence[str]) -> list[bytes | None]:
        now, out = time.monotonic(), []
        for entity_id in entity_ids:
            item = self._data.get(self.key(entity_id))
            out.append(item[0] if item is not None and item[1] > now else None)
        return out

    async def save(self, states: Mapping[str, bytes]) -> int:
        now, written = time.monotonic(), 0
        expires = now + self.ttl_s if self.ttl_s else float("inf")
        for entity_id, value in states.items():
            key = self.key(entity_id)
            item = self._data.get(key)
            old = item[0] if item is not None and item[1] > now else None
            if _newer(value, old):
                self._data[key] = (value, expires)
                written += 1
        return written


# KEYS: state keys; ARGV[1]: TTL seconds (0 = none); ARGV[i + 1]: the value for KEYS[i].
_SAVE_LUA = """
local ttl = tonumber(ARGV[1])
local written = 0
for i, key in ipairs(KEYS) do
  local new = ARGV[i + 1]
  local old = redis.call('GET', key)
  local keep = false
  if old and #old == #new and string.byte(old, 1) == string.byte(new, 1) then
    keep = struct.unpack('<d', old, 9) >= struct.unpack('<d', new, 9)
  end
  if not keep then
    if ttl > 0 then redis.call('SET', key, new, 'EX', ttl) else redis.call('SET', key, new) end
    written = written + 1
  end
end
return written
"""


class RedisStateStore(StateStore):
    """States in Redis: ``MGET`` to load, one Lua ``EVALSHA`` to save (see module docstring)."""

    def __init__(self, client: redis.asyncio.Redis, prefix: str, ttl_s: int = 0) -> None:
        from redis import exceptions

        super().__init__(prefix, ttl_s)
        self.client = client
        self._save = client.register_script(_SAVE_LUA)
        self.transient_errors = (exceptions.ConnectionError, exceptions.TimeoutError,
                                 exceptions.BusyLoadingError, ConnectionError, OSError)

    async def load(self, entity_ids: Sequence[str]) -> list[bytes | None]:
        if not entity_ids:
            return []
        return await self.client.mget([self.prefix + e for e in entity_ids])

    async def save(self, states: Mapping[str, bytes]) -> int:
        if not states:
            return 0
        keys = [self.prefix + e for e in states]
        return int(await self._save(keys=keys, args=[self.ttl_s, *states.values()]))

    async def close(self) -> None:
        await self.client.aclose()
