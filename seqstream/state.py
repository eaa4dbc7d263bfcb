"""``seqstream state inspect ENTITY | stats | migrate``: look into and upgrade the Redis states.

- ``inspect ENTITY``: decode the entity's stored state (steps, watermark, source partition and
  offset, flags, the namespace of the model it belongs to, value and raw sizes).
- ``stats``: per partition, the checkpoint (next offset to read), the states kept and their bytes
  (``STRLEN``), and the keys still in the layout before partitions (``<namespace>:<entity>``).
- ``migrate``: rewrite the states of the layout before partitions into
  ``{<namespace>:<partition>}:<entity>`` (the partition read from each state's own header: the
  partition of its last applied sample), keeping each key's remaining TTL and never overwriting a
  state the new worker already wrote (``SET NX``); then give every partition of the events topic
  without a checkpoint the consumer group's committed Kafka offset as its checkpoint, so the new
  worker resumes where the old one stopped instead of treating the states as lost. Run it with the
  workers stopped (old ones would keep writing the old keys). ``--partitions N`` instead moves
  every state to the partition its entity id hashes to among N (Kafka's default partitioner:
  murmur2 of the key) after the events topic grew to N partitions; run it once every event
  written before the change is consumed, since later events of an entity arrive on its new
  partition. Partitions that exist in both counts keep their checkpoints; new ones get none
  (Kafka's committed offset, or the earliest, is where they start).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING

from stream.errors import ConfigError, StackError
from stream.settings import Settings, add_flags, env_name
from stream.state import HEADER_BYTES, StateCodec, namespace, parse_key

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["configure", "run"]

FLAGS = ("kafka_bootstrap", "topic_events", "app_id", "redis_url")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("inspect", "stats", "migrate"))
    parser.add_argument("entity", nargs="?", default=None, help="entity id (inspect)")
    parser.add_argument("--model", dest="model", default=None, metavar="ARTIFACT",
                        help=f"model artifact directory (env {env_name('model')})")
    parser.add_argument("--partitions", type=int, default=None,
                        help="migrate: move states to the partition their id hashes to among N")
    add_flags(parser, FLAGS)


def run(args: argparse.Namespace) -> int:
    overrides = {k: v for k, v in vars(args).items() if k not in ("action", "entity",
                                                                   "partitions")}
    settings = Settings.from_env(overrides=overrides)
    if settings.model is None:
        raise ConfigError(f"--model: expected the artifact directory whose states to look at "
                          f"(or {env_name('model')}), got none")
    from stream.artifact import load_artifact
    from stream.engine import Engine

    artifact = load_artifact(settings.model)
    prefix = namespace(settings.app_id, artifact.model_id)
    codec = Engine(artifact).codec  # the worker's own layout, beat part included
    if args.action == "inspect" and not args.entity:
        raise ConfigError("seqstream state inspect: expected an ENTITY id, got none")
    return asyncio.run(_run(settings, args, prefix, codec))


async def _run(settings: Settings, args: argparse.Namespace, prefix: str,
               codec: StateCodec) -> int:
    from stream.security import connect_redis

    client = await connect_redis(settings)
    try:
        if args.action == "inspect":
            print(await inspect_entity(client, prefix, codec, args.entity))
        elif args.action == "stats":
            print(await stats(client, prefix))
        elif args.partitions is not None:
            print(await repartition(client, prefix, args.partitions))
        else:
            print(await migrate(client, settings, prefix))
    finally:
        await client.aclose()
    return 0


async def _partition_count(client: redis.asyncio.Redis, prefix: str) -> int | None:
    raw = await client.get(f"{prefix}:partitions")
    return int(raw) if raw is not None else None


async def inspect_entity(client: redis.asyncio.Redis, prefix: str, codec: StateCodec,
                         entity: str) -> str:
    """One line per field of the entity's stored state."""
    count = await _partition_count(client, prefix)
    if count is None:
        raise StackError(f"Redis: expected {prefix}:partitions (written by a worker of this "
                         f"model and group), got none: no states of this model here")
    keys = [f"{{{prefix}:{p}}}:{entity}" for p in range(count)]
    values = [await client.get(k) for k in keys]  # one slot each: no MGET across them (cluster)
    found = [(k, v) for k, v in zip(keys, values, strict=True) if v is not None]
    if not found:
        raise StackError(f"Redis: expected a state of {entity!r} under {prefix} on one of "
                         f"{count} partitions, got none (never seen, or idle past its TTL)")
    key, value = found[0]
    rows, ok = codec.decode([value])
    lines = [f"key          {key}", f"model        {prefix.rpartition(':')[2]} (first 16 hex)",
             f"bytes        {len(value)} stored, {codec.raw_bytes} raw hidden state + forecast"]
    ttl = await client.ttl(key)
    lines.append(f"ttl          {ttl} s" if ttl >= 0 else "ttl          none")
    if not ok[0]:
        lines.append(f"decodable    no (version byte {value[0]}, expected {codec.size} bytes)")
        return "\n".join(lines)
    row = rows[0]
    lines += [f"version      {int(row['version'])}", f"flags        {int(row['flags'])}",
              f"steps        {int(row['steps'])}",
              f"watermark    ts {float(row['wm_ts'])}, partition {int(row['partition'])}, "
              f"offset {int(row['wm_offset'])}",
              f"state        {codec.state_size} floats, |h| max {abs(row['state']).max():.4g}"]
    return "\n".join(lines)


async def stats(client: redis.asyncio.Redis, prefix: str) -> str:
    """A table of checkpoints, states and bytes per partition."""
    per: dict[int, list[int]] = {}
    checkpoints: dict[int, int] = {}
    old = 0
    async for raw in client.scan_iter(match="{" + prefix + ":*", count=1000):
        parsed = parse_key(raw.decode())
        if parsed is None or parsed[0] != prefix:
            continue
        _, p, entity = parsed
        if entity is None:
            checkpoints[p] = int(await client.get(raw) or -1)
        else:
            per.setdefault(p, []).append(int(await client.strlen(raw)))
    async for raw in client.scan_iter(match=prefix + ":*", count=1000):
        if raw.decode() != f"{prefix}:partitions":
            old += 1
    count = await _partition_count(client, prefix)
    lines = [f"namespace {prefix}, topic partitions recorded: {count}",
             f"{'partition':>9} {'checkpoint':>12} {'states':>9} {'bytes':>12} {'B/state':>8}"]
    for p in sorted(set(per) | set(checkpoints)):
        sizes = per.get(p, [])
        mean = sum(sizes) / len(sizes) if sizes else 0.0
        lines.append(f"{p:>9} {checkpoints.get(p, '-')!s:>12} {len(sizes):>9} {sum(sizes):>12} "
                     f"{mean:>8.0f}")
    lines.append(f"keys in the layout before partitions: {old}"
                 + (" (run `seqstream state migrate`)" if old else ""))
    return "\n".join(lines)


async def migrate(client: redis.asyncio.Redis, settings: Settings, prefix: str) -> str:
    """Old-layout states to the partitioned layout, then checkpoints from Kafka's commits."""
    moved = kept = skipped = 0
    meta = f"{prefix}:partitions"
    async for raw in client.scan_iter(match=prefix + ":*", count=1000):
        key = raw.decode()
        if key == meta:
            continue
        value, ttl_ms = await client.get(raw), await client.pttl(raw)
        if value is None or len(value) < HEADER_BYTES:
            skipped += 1
            continue
        partition = int.from_bytes(value[2:4], "little")
        entity = key[len(prefix) + 1:]
        target = f"{{{prefix}:{partition}}}:{entity}"
        done = await client.set(target, value, px=ttl_ms if ttl_ms > 0 else None, nx=True)
        moved, kept = moved + bool(done), kept + (not done)
        await client.delete(raw)
    committed = await _committed(settings)
    written = 0
    for p, offset in committed.items():
        if offset is not None and offset >= 0:
            written += bool(await client.set(f"{{{prefix}:{p}}}", offset, nx=True))
    if committed:
        await client.set(meta, len(committed), nx=True)
    return (f"migrated {moved} states to {{{prefix}:<partition>}}:<entity>, kept {kept} newer "
            f"ones already there, skipped {skipped} unreadable; checkpoints from the committed "
            f"offsets of group {settings.app_id} written for {written} of {len(committed)} "
            f"partitions of {settings.topic_events}")


async def repartition(client: redis.asyncio.Redis, prefix: str, count: int) -> str:
    """Every state to the partition its entity id hashes to among ``count``."""
    from aiokafka.partitioner import murmur2

    if count < 1:
        raise ConfigError(f"--partitions: expected a count >= 1, got {count}")
    moved = 0
    async for raw in client.scan_iter(match="{" + prefix + ":*", count=1000):
        parsed = parse_key(raw.decode())
        if parsed is None or parsed[0] != prefix or parsed[2] is None:
            continue
        _, p, entity = parsed
        q = (murmur2(entity.encode()) & 0x7FFFFFFF) % count
        if q == p:
            continue
        value, ttl_ms = await client.get(raw), await client.pttl(raw)
        if value is not None:
            await client.set(f"{{{prefix}:{q}}}:{entity}", value,
                             px=ttl_ms if ttl_ms > 0 else None)
            moved += 1
        await client.delete(raw)
    await client.set(f"{prefix}:partitions", count)
    return f"moved {moved} states to their partition among {count}; partition count recorded"


async def _committed(settings: Settings) -> dict[int, int | None]:
    """The consumer group's committed offset of each partition of the events topic."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    from stream.security import kafka_kwargs

    admin = AIOKafkaAdminClient(**kafka_kwargs(settings), request_timeout_ms=15_000)
    try:
        await admin.start()
        meta = await admin.describe_topics([settings.topic_events])
        offsets = await admin.list_consumer_group_offsets(settings.app_id)
    except KafkaError as ex:
        raise StackError(f"Kafka at {settings.kafka_bootstrap}: expected the committed offsets "
                         f"of group {settings.app_id}, got {type(ex).__name__}: {ex}") from ex
    finally:
        await admin.close()
    out: dict[int, int | None] = {p["partition"]: None for p in meta[0]["partitions"]}
    for tp, om in offsets.items():
        if tp.topic == settings.topic_events:
            out[tp.partition] = om.offset
    return out
