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

Keys carry the entity's Kafka partition in a Redis Cluster hash tag::

    {<namespace>:<partition>}:<entity_id>     one entity's state (idle TTL)
    {<namespace>:<partition>}                 the partition's checkpoint: the next offset to read

with the namespace ``<app_id>:<first 16 hex of model_id>``, so a state written by one model is
never read by another and two consumer groups keep separate states (64 bits of the content hash
make a collision between two models' namespaces negligible while keeping keys short: every byte of
a key costs memory once per entity). An entity's partition is the partition of the message that
carried its last sample: entities must be keyed (the Kafka key decides the partition), as the
publishers here do. All keys of one partition share one hash slot, so one Lua call can write a
partition's states and its checkpoint atomically, on one Redis or on a cluster.

Why the checkpoint lives with the states: Redis acknowledges a write before it is durable
(``appendfsync everysec`` loses up to a second on a power cut, a failover to an asynchronous
replica loses what it had not received). If the consumer position lived only in Kafka, the events
of a lost save would never be read again and the entity would go on from an older hidden state.
With the position stored in the same atomic write, states and checkpoint go back together, and
the worker seeks each assigned partition to its checkpoint (:mod:`stream.fastpath`), so the lost
events are read and applied again: every event's effect is applied exactly once.

A save with checkpoints is a compare-and-set: each partition's script refuses (writes nothing)
unless the stored checkpoint is the one this worker last read or wrote. A worker still running
through a Redis restart (its position is ahead of the restored checkpoint), or a zombie worker
that lost the partition in a rebalance, is refused and told the stored checkpoint
(:class:`CheckpointMoved`). Within a partition, saves stay monotonic too: a value is replaced only
if its watermark is older than the new one's (or it is not a valid state).

In Redis a batch costs one ``MGET`` to load (one per partition, pipelined, on a cluster) and one
``EVALSHA`` per partition to save, pipelined into one round trip.

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
    "UNCHECKED",
    "VERSION",
    "CheckpointMoved",
    "MemoryStateStore",
    "RedisStateStore",
    "StateCodec",
    "StateStore",
    "namespace",
    "parse_key",
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


def parse_key(key: str) -> tuple[str, int, str | None] | None:
    """``(namespace, partition, entity or None for the checkpoint)`` of a key of this layout,
    ``None`` for any other key.

    >>> parse_key("{app:0123:3}:pump-1"), parse_key("{app:0123:3}"), parse_key("app:x")
    (('app:0123', 3, 'pump-1'), ('app:0123', 3, None), None)
    """
    if not key.startswith("{"):
        return None
    end = key.find("}")
    ns, _, part = key[1:end].rpartition(":")
    if end < 0 or not ns or not part.isdigit():
        return None
    rest = key[end + 1:]
    if not rest:
        return ns, int(part), None
    if not rest.startswith(":"):
        return None
    return ns, int(part), rest[1:]


class CheckpointMoved(Exception):
    """A save refused for ``partitions``: their stored checkpoints are not the expected ones.

    ``stored`` maps each refused partition to its checkpoint in the store (``None``: absent);
    ``saved`` names the partitions of the same batch that were saved all the same.
    """

    def __init__(self, stored: Mapping[int, int | None], expected: Mapping[int, int | None],
                 saved: frozenset[int] = frozenset()) -> None:
        self.stored, self.expected, self.saved = dict(stored), dict(expected), saved
        super().__init__("state save refused: partition checkpoints moved "
                         + ", ".join(f"{p}: expected {expected[p]}, stored {stored[p]}"
                                     for p in sorted(stored)))


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


def _int_or_none(raw: bytes | str | None) -> int | None:
    return int(raw) if raw not in (None, b"", "") else None  # type: ignore[arg-type]


Checkpoints = Mapping[int, tuple[int | None, int]]
"""``{partition: (expected stored checkpoint or None if absent, checkpoint to write)}``; an
expected :data:`UNCHECKED` writes without comparing."""
UNCHECKED = -1


class StateStore(ABC):
    """Batched, per-partition-atomic state storage; values are opaque bytes from
    :class:`StateCodec`.

    ``transient_errors`` lists the exceptions that mean "the store is unreachable right now":
    the caller retries those without committing anything, and lets every other error surface.
    """

    transient_errors: tuple[type[BaseException], ...] = ()

    def __init__(self, prefix: str, ttl_s: int = 0) -> None:
        self.namespace = prefix
        self.ttl_s = ttl_s

    def key(self, entity_id: str, partition: int = 0) -> str:
        return f"{{{self.namespace}:{partition}}}:{entity_id}"

    def checkpoint_key(self, partition: int) -> str:
        return f"{{{self.namespace}:{partition}}}"

    @abstractmethod
    async def load(self, entity_ids: Sequence[str], partitions: Sequence[int] | None = None
                   ) -> list[bytes | None]:
        """The stored value of each entity on its partition (``None`` if absent or expired);
        ``partitions`` defaults to 0 for every entity."""

    @abstractmethod
    async def save(self, states: Mapping[str, bytes], partitions: Mapping[str, int] | None = None,
                   checkpoints: Checkpoints | None = None) -> int:
        """Store every entity's value with the idle TTL, keeping a stored value whose watermark
        is not older, and write ``checkpoints``; return how many states were written.

        Each partition is one atomic compare-and-set: a partition whose stored checkpoint is not
        the expected one writes nothing, and :class:`CheckpointMoved` is raised once every other
        partition is written. Without ``checkpoints`` nothing is compared."""

    @abstractmethod
    async def checkpoints(self, partitions: Sequence[int]) -> dict[int, int | None]:
        """The stored checkpoint (next offset to read) of each partition, ``None`` if absent."""

    @abstractmethod
    async def _get_many(self, keys: list[str]) -> list[bytes | None]:
        """The values of ``keys`` in one round trip."""

    async def load_checked(self, entity_ids: Sequence[str], partitions: Sequence[int],
                           expected: Mapping[int, int | None]) -> list[bytes | None]:
        """:meth:`load`, in the same round trip reading the checkpoints of ``expected``'s
        partitions: raises :class:`CheckpointMoved` (nothing saved) when one is not the expected
        one, so a batch is not computed, let alone produced, from states Redis has rolled back."""
        parts = list(expected)
        keys = [self.checkpoint_key(p) for p in parts]
        keys += [self.key(e, p) for e, p in zip(entity_ids, partitions, strict=True)]
        values = await self._get_many(keys)
        moved = {p: _int_or_none(v) for p, v in zip(parts, values, strict=False)
                 if _int_or_none(v) != expected[p]}
        if moved:
            raise CheckpointMoved(moved, {p: expected[p] for p in moved})
        return values[len(parts):]

    async def close(self) -> None:  # noqa: B027 - optional hook, a no-op where nothing to release
        """Release connections."""


def _by_partition(states: Mapping[str, bytes], partitions: Mapping[str, int] | None,
                  checkpoints: Checkpoints | None) -> dict[int, list[str]]:
    groups: dict[int, list[str]] = {p: [] for p in checkpoints or ()}
    for entity_id in states:
        groups.setdefault(partitions[entity_id] if partitions else 0, []).append(entity_id)
    return groups


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

    async def load(self, entity_ids: Sequence[str], partitions: Sequence[int] | None = None
                   ) -> list[bytes | None]:
        parts = partitions if partitions is not None else [0] * len(entity_ids)
        return await self._get_many([self.key(e, p) for e, p in zip(entity_ids, parts,
                                                                     strict=True)])

    async def save(self, states: Mapping[str, bytes], partitions: Mapping[str, int] | None = None,
                   checkpoints: Checkpoints | None = None) -> int:
        now, written = time.monotonic(), 0
        expires = now + self.ttl_s if self.ttl_s else float("inf")
        stored = await self.checkpoints(list(checkpoints or ()))
        refused = {p for p, (want, _) in (checkpoints or {}).items()
                   if want != UNCHECKED and stored[p] != want}
        for p, ids in _by_partition(states, partitions, checkpoints).items():
            if p in refused:
                continue
            for entity_id in ids:
                key, value = self.key(entity_id, p), states[entity_id]
                item = self._data.get(key)
                old = item[0] if item is not None and item[1] > now else None
                if _newer(value, old):
                    self._data[key] = (value, expires)
                    written += 1
            if checkpoints and p in checkpoints:
                self._data[self.checkpoint_key(p)] = (str(checkpoints[p][1]).encode(),
                                                      float("inf"))
        if refused:
            raise CheckpointMoved({p: stored[p] for p in refused},
                                  {p: checkpoints[p][0] for p in refused},  # type: ignore[index]
                                  frozenset(checkpoints or ()) - refused)
        return written

    async def checkpoints(self, partitions: Sequence[int]) -> dict[int, int | None]:
        values = await self._get_many([self.checkpoint_key(p) for p in partitions])
        return {p: _int_or_none(v) for p, v in zip(partitions, values, strict=True)}

    async def _get_many(self, keys: list[str]) -> list[bytes | None]:
        now, get = time.monotonic(), self._data.get
        return [item[0] if (item := get(k)) is not None and item[1] > now else None
                for k in keys]


# KEYS[1]: the partition's checkpoint key; KEYS[2..]: its state keys.
# ARGV[1]: TTL seconds (0 = none); ARGV[2]: the expected checkpoint ('' = absent, '*' = do not
# compare); ARGV[3]: the checkpoint to write ('' = none); ARGV[i + 2]: the value for KEYS[i].
# Returns {written, stored checkpoint}; written is -1 when refused (nothing written).
_SAVE_LUA = """
local ttl = tonumber(ARGV[1])
local stored = redis.call('GET', KEYS[1]) or ''
if ARGV[2] ~= '*' and stored ~= ARGV[2] then return {-1, stored} end
local written = 0
for i = 2, #KEYS do
  local key, new = KEYS[i], ARGV[i + 2]
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
if ARGV[3] ~= '' then redis.call('SET', KEYS[1], ARGV[3]); stored = ARGV[3] end
return {written, stored}
"""


def _slot_tag(key: str) -> str:
    return key[:key.find("}") + 1] if key.startswith("{") else key


class RedisStateStore(StateStore):
    """States in Redis: ``MGET`` to load, one Lua ``EVALSHA`` per partition to save, pipelined
    (see module docstring). On a Redis Cluster client (``redis.asyncio.RedisCluster``) reads are
    one ``MGET`` per partition (one hash slot each), pipelined, since a cluster refuses an
    ``MGET`` across slots."""

    def __init__(self, client: redis.asyncio.Redis | redis.asyncio.RedisCluster, prefix: str,
                 ttl_s: int = 0) -> None:
        from redis import exceptions
        from redis.asyncio import RedisCluster

        super().__init__(prefix, ttl_s)
        self.client = client
        self.cluster = isinstance(client, RedisCluster)
        self._save = client.register_script(_SAVE_LUA)
        self.transient_errors = (exceptions.ConnectionError, exceptions.TimeoutError,
                                 exceptions.BusyLoadingError, exceptions.ClusterDownError,
                                 exceptions.TryAgainError, ConnectionError, OSError)

    async def load(self, entity_ids: Sequence[str], partitions: Sequence[int] | None = None
                   ) -> list[bytes | None]:
        if not entity_ids:
            return []
        parts = partitions if partitions is not None else [0] * len(entity_ids)
        key = self.key
        return await self._get_many([key(e, p) for e, p in zip(entity_ids, parts, strict=True)])

    async def save(self, states: Mapping[str, bytes], partitions: Mapping[str, int] | None = None,
                   checkpoints: Checkpoints | None = None) -> int:
        groups = _by_partition(states, partitions, checkpoints)
        if not groups:
            return 0
        pipe = self.client.pipeline() if self.cluster else self.client.pipeline(
            transaction=False)
        for p, ids in groups.items():
            want, write = checkpoints[p] if checkpoints and p in checkpoints else (UNCHECKED, "")
            keys = [self.checkpoint_key(p), *(self.key(e, p) for e in ids)]
            args = [self.ttl_s, "*" if want == UNCHECKED else "" if want is None else want, write,
                    *(states[e] for e in ids)]
            if self.cluster:  # scripts are not cached per node through a cluster pipeline
                pipe.eval(_SAVE_LUA, len(keys), *keys, *args)
            else:
                await self._save(keys=keys, args=args, client=pipe)
        results = await pipe.execute()
        written, refused = 0, {}
        for p, (n, stored) in zip(groups, results, strict=True):
            if n < 0:
                refused[p] = _int_or_none(stored)
            else:
                written += n
        if refused:
            raise CheckpointMoved(refused, {p: checkpoints[p][0]  # type: ignore[index]
                                            for p in refused},
                                  frozenset(checkpoints or ()) - set(refused))
        return written

    async def checkpoints(self, partitions: Sequence[int]) -> dict[int, int | None]:
        if not partitions:
            return {}
        values = await self._get_many([self.checkpoint_key(p) for p in partitions])
        return {p: _int_or_none(v) for p, v in zip(partitions, values, strict=True)}

    async def _get_many(self, keys: list[str]) -> list[bytes | None]:
        if not keys:
            return []
        if not self.cluster:
            return await self.client.mget(keys)
        slots: dict[str, list[int]] = {}
        for i, k in enumerate(keys):
            slots.setdefault(_slot_tag(k), []).append(i)
        pipe = self.client.pipeline()
        for at in slots.values():
            pipe.execute_command("MGET", *[keys[i] for i in at])  # one slot: not blocked
        out: list[bytes | None] = [None] * len(keys)
        for at, values in zip(slots.values(), await pipe.execute(), strict=True):
            for i, v in zip(at, values, strict=True):
                out[i] = v
        return out

    async def close(self) -> None:
        await self.client.aclose()
