"""The two measurements of one pipeline run: catch-up throughput and steady-load latency.

**Catch-up.** With one process, M events are preloaded into a fresh topic, then the process
starts in a fresh consumer group and works through them (a lone member fetches nothing before
its one assignment). With K > 1, members joining at different moments would rebalance while the
first ones already work, so the K processes start on the fresh, empty topic, and only once the
harness sees the group Stable with all K members are the M events preloaded. The output topic
stamps each record with the broker's append time; the run ends when the output holds M records
(one per event). With K > 1 the processes start on the first events while the preload still
writes, at the preload's pace, so the rate is counted from the moment the preload ended (the
backlog is then at its largest)::

    rate = outputs appended after t_0 / (t_last_append - t_0)      [events/s]
    t_0 = first output (K = 1), end of the preload (K > 1)
    samples/s = rate * samples per event

The harness polls the group's state every quarter second while the events are worked through and
reports each time it saw the group leave Stable (``rebalances``: 0 in a fair run; a rebalance
shorter than a poll can go unseen).

**Steady load.** The pipeline runs on an empty fresh topic until its group is Stable; then the
harness sends events at a fixed rate (a fraction of a reference throughput), each stamped with
the wall clock as it leaves. The k-th output of an entity answers its k-th event (one output per
event, per-entity order kept by the partition), so::

    latency_i = output append time - input create time        [ms, one clock, the broker's ms]

and p50/p95/p99 are taken over every event after the first second (warm-up). For (c), the
harness also scrapes the worker's /metrics before the first event and after the last
prediction: its time per batch stage over the run (:mod:`seqstream.bench.stages`).

After each run the harness checks the pipeline drained: its group's committed offsets reach the
end of the input topic, and every event has an output (extra outputs are replays, counted).

>>> _percentiles(np.array([1.0, 2.0, 3.0, 4.0, 100.0]))
{'p50': 3.0, 'p95': 80.8, 'p99': 96.16}
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from seqstream.bench import kafka
from seqstream.bench.events import Encoded
from seqstream.bench.pipelines import Config
from seqstream.workerproc import WorkerProcess, stop_all
from stream.errors import StackError
from stream.settings import Settings

__all__ = ["Run", "catch_up", "steady"]

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Run:
    """One pipeline run's figures and checks."""

    pipeline: str
    shape: str
    entities: int
    workers: int
    events: int
    samples_per_event: int
    outputs: int = 0
    distinct: int = 0
    lag: int = -1
    seconds: float = 0.0
    events_per_s: float = 0.0
    samples_per_s: float = 0.0
    load: float | None = None
    offered_per_s: float | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    profile: str | None = None
    rebalances: int = 0
    cpu_us_per_sample: float | None = None  # the pipeline processes' CPU, first → last output
    stages: dict[str, dict[str, float | None]] = field(default_factory=dict)  # (c), steady load

    @property
    def drained(self) -> bool:
        return self.lag == 0 and self.distinct >= self.events

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "drained": self.drained}


def _names(tag: str) -> dict[str, str]:
    run = f"{tag}-{uuid.uuid4().hex[:8]}"
    return {"group": f"bench-{run}", "in": f"bench.{run}.events", "out": f"bench.{run}.out",
            "anomalies": f"bench.{run}.anomalies", "deadletter": f"bench.{run}.deadletter",
            "beats": f"bench.{run}.beats"}


def _config(pipeline: str, names: dict[str, str], settings: Settings, model: Path,
            partitions: int, batch_max: int) -> Config:
    env = {"SEQSTREAM_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
           "SEQSTREAM_REDIS_URL": settings.redis_url,
           "SEQSTREAM_TOPIC_EVENTS": names["in"], "SEQSTREAM_TOPIC_PREDICTIONS": names["out"],
           "SEQSTREAM_TOPIC_ANOMALIES": names["anomalies"],
           "SEQSTREAM_TOPIC_DEADLETTER": names["deadletter"], "SEQSTREAM_APP_ID": names["group"],
           "SEQSTREAM_TOPIC_BEATS": names["beats"],
           "SEQSTREAM_PARTITIONS": str(partitions), "SEQSTREAM_METRICS_PORT": "0",
           "SEQSTREAM_BATCH_MAX": str(batch_max), "SEQSTREAM_MAX_GAP_S": "0",
           "SEQSTREAM_WARMUP_STEPS": "0", "SEQSTREAM_LOG_LEVEL": "WARNING",
           "SEQSTREAM_HOME": str(settings.home), "SEQSTREAM_STATE_TTL_S": "3600"}
    return Config(pipeline=pipeline, model=str(model), env=env)


def _start(cfg: Config, workers: int, profile: Path | None, logs: Path) -> list[WorkerProcess]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    procs = []
    for i in range(workers):
        argv = [sys.executable, "-m", "seqstream.bench.proc", json.dumps(asdict(cfg))]
        if profile is not None and i == 0:
            argv.append(str(profile))
        procs.append(WorkerProcess(argv, env, logs, name=f"{cfg.group}-{i}", cwd=REPO).start())
    return procs


def _check_alive(procs: list[WorkerProcess], cfg: Config) -> None:
    for i, p in enumerate(procs):
        p.check_alive(f"pipeline {cfg.pipeline}, process {i}, before the run ended")


def _cpu_s(procs: list[WorkerProcess]) -> float | None:
    """User + system CPU seconds the processes have used (Linux ``/proc``; else None): on a
    shared machine their CPU per sample says what the pipeline costs when wall time cannot."""
    try:
        ticks = 0
        for p in procs:
            if p.proc is None:
                return None
            fields = Path(f"/proc/{p.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


async def _wait_outputs(probe: kafka.Probe, cfg: Config, procs: list[WorkerProcess],
                        expected: int, timeout_s: float, run: Run, stable: bool,
                        cpu: list[tuple[int, float | None]] | None = None) -> None:
    """Wait until the output holds ``expected`` records, counting in ``run.rebalances`` each
    time the group is seen leaving Stable (polled every quarter second); ``stable``: the group
    was seen Stable already (else its first join, which is no rebalance, is not counted).
    ``cpu`` gets (outputs, CPU seconds) at the first output seen and at the end."""
    deadline = time.monotonic() + timeout_s
    last_check, was_stable = 0.0, stable
    while time.monotonic() < deadline:
        _check_alive(procs, cfg)
        if time.monotonic() - last_check > 0.25:
            last_check = time.monotonic()
            try:
                state, _, _ = await probe.group_state(cfg.group, cfg.topic_in)
            except Exception:  # a failed poll says nothing about the group
                state = None
            if state is not None:
                stable = state == "Stable"
                run.rebalances += was_stable and not stable
                was_stable = stable
        done = await probe.end_offsets(cfg.topic_out)
        if cpu is not None and done and (not cpu or done >= expected):
            cpu.append((done, _cpu_s(procs)))
        if done >= expected:
            return
        await asyncio.sleep(0.1)
    have = await probe.end_offsets(cfg.topic_out)
    raise StackError(f"pipeline {cfg.pipeline}: expected {expected} outputs within "
                     f"{timeout_s:.0f} s, got {have}")


async def _drain_check(probe: kafka.Probe, cfg: Config, run: Run,
                       timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        _, _, lag = await probe.group_state(cfg.group, cfg.topic_in)
        run.lag = lag
        if lag == 0 or time.monotonic() > deadline:
            return
        await asyncio.sleep(0.5)


async def _forget_states(settings: Settings, group: str) -> int:
    """Remove the run's entity states from Redis (the stack is shared: a 100,000-entity run
    leaves about 80 MB behind otherwise); keys expire within the hour anyway."""
    from stream.security import connect_redis

    client = await connect_redis(settings)
    removed, batch = 0, []
    try:
        async for key in client.scan_iter(match=f"{group}:*", count=10_000):
            batch.append(key)
            if len(batch) >= 10_000:
                removed += await client.unlink(*batch)
                batch = []
        if batch:
            removed += await client.unlink(*batch)
    finally:
        await client.aclose()
    return removed


def _distinct(values: list[bytes]) -> int:
    import orjson

    seen = set()
    for v in values:
        o = orjson.loads(v)
        seen.add((o.get("entity_id"), o.get("ts")))
    return len(seen)


async def catch_up(settings: Settings, pipeline: str, events: list[Encoded], *, shape: str,
                   entities: int, workers: int, model: Path, partitions: int, batch_max: int,
                   logs: Path, profile: Path | None = None, timeout_s: float = 600.0) -> Run:
    """Preload ``events``, run ``workers`` processes of ``pipeline`` until every event has an
    output; see the module docstring."""
    names = _names(f"{pipeline}-{shape}-{entities}-{workers}")
    cfg = _config(pipeline, names, settings, model, partitions, batch_max)
    await kafka.create_topics(settings, [names["in"]],
                              [names["out"], names["anomalies"], names["deadletter"],
                               names["beats"]], partitions)
    run = Run(pipeline, shape, entities, workers, len(events), events[0].samples)
    procs: list[WorkerProcess] = []
    try:
        loaded_at = 0.0
        if workers == 1:
            await kafka.preload(settings, names["in"], events, partitions)
        procs = _start(cfg, workers, profile, logs)
        cpu: list[tuple[int, float | None]] = []
        async with kafka.Probe(settings) as probe:
            if workers > 1:
                await probe.wait_group(names["group"], names["in"], workers)
                await asyncio.sleep(1.0)  # let the members finish their first (empty) fetch
                await kafka.preload(settings, names["in"], events, partitions)
                loaded_at = time.time()
            await _wait_outputs(probe, cfg, procs, len(events), timeout_s, run, workers > 1,
                                cpu)
            stop_all(procs)
            await _drain_check(probe, cfg, run)
        back = await kafka.read_topic(settings, names["out"])
        t = np.sort(back.ts_ms) / 1000.0
        after = t[t >= loaded_at]
        run.outputs, run.distinct = _output_counts(pipeline, back)
        run.seconds = float(after[-1] - after[0]) if len(after) > 1 else 0.0
        run.events_per_s = (len(after) - 1) / run.seconds if run.seconds > 0 else 0.0
        run.samples_per_s = run.events_per_s * run.samples_per_event
        run.profile = str(profile) if profile else None
        if len(cpu) == 2 and None not in (cpu[0][1], cpu[1][1]) and cpu[1][0] > cpu[0][0]:
            spent = cpu[1][1] - cpu[0][1]  # type: ignore[operator]
            run.cpu_us_per_sample = spent / ((cpu[1][0] - cpu[0][0]) * run.samples_per_event) \
                * 1e6
        return run
    finally:
        stop_all(procs)
        await _clean_up(settings, names)


async def _clean_up(settings: Settings, names: dict[str, str]) -> None:
    """Remove a run's topics (all but the input's first name), entity states and faust data."""
    await kafka.delete_topics(settings, list(names.values())[1:])
    await _forget_states(settings, names["group"])
    shutil.rmtree(settings.home / "faust" / names["group"], ignore_errors=True)


def _output_counts(pipeline: str, back: kafka.Readback) -> tuple[int, int]:
    """(outputs, distinct outputs): the bare pipe echoes records, so its identity is key+value."""
    distinct = (_distinct(back.values) if pipeline != "bare"
                else len(set(zip(back.keys, back.values, strict=True))))
    return len(back.values), distinct


def _percentiles(ms: np.ndarray) -> dict[str, float]:
    return {f"p{q}": round(float(np.percentile(ms, q)), 2) for q in (50, 95, 99)}


async def steady(settings: Settings, pipeline: str, events: list[Encoded], rate: float, *,
                 shape: str, entities: int, workers: int, model: Path, partitions: int,
                 batch_max: int, logs: Path, load: float, warmup_s: float = 1.0) -> Run:
    """Send ``events`` at ``rate``/s to ``workers`` ready processes; latency per event, and
    (c)'s stage times (one worker's /metrics)."""
    from seqstream.bench import stages

    names = _names(f"lat-{pipeline}-{shape}-{entities}-{workers}")
    cfg = _config(pipeline, names, settings, model, partitions, batch_max)
    port = _free_port() if pipeline == "worker" and workers == 1 else None
    if port is not None:
        cfg.env["SEQSTREAM_METRICS_PORT"] = str(port)
    await kafka.create_topics(settings, [names["in"]],
                              [names["out"], names["anomalies"], names["deadletter"],
                               names["beats"]], partitions)
    run = Run(pipeline, shape, entities, workers, len(events), events[0].samples, load=load)
    procs: list[WorkerProcess] = []
    try:
        procs = _start(cfg, workers, None, logs)
        async with kafka.Probe(settings) as probe:
            await probe.wait_group(names["group"], names["in"], workers)
            await asyncio.sleep(1.0)  # let the members finish their first (empty) fetch
            before = await stages.scrape(port) if port is not None else {}
            run.offered_per_s = await kafka.paced_send(settings, names["in"], events, rate)
            await _wait_outputs(probe, cfg, procs, len(events), 120.0, run, True)
            if port is not None:
                run.stages = stages.summary(before, await stages.settled(port))
            stop_all(procs)
            await _drain_check(probe, cfg, run)
        sent = await kafka.read_topic(settings, names["in"])
        back = await kafka.read_topic(settings, names["out"])
        run.outputs, run.distinct = _output_counts(pipeline, back)
        run.latency_ms = _latencies(sent, back, warmup_s)
        run.events_per_s = run.offered_per_s
        run.samples_per_s = run.events_per_s * run.samples_per_event
        return run
    finally:
        stop_all(procs)
        await _clean_up(settings, names)


def _free_port() -> int:
    """A loopback port free now, for a worker's /metrics."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _latencies(sent: kafka.Readback, back: kafka.Readback, warmup_s: float) -> dict[str, float]:
    """Match the k-th output of each entity with its k-th input (see module docstring)."""
    by_key: dict[bytes, list[int]] = defaultdict(list)
    for i in np.argsort(sent.ts_ms, kind="stable").tolist():
        by_key[sent.keys[i]].append(int(sent.ts_ms[i]))
    seen: dict[bytes, int] = defaultdict(int)
    lat, sent_at = [], []
    for i in np.argsort(back.ts_ms, kind="stable").tolist():
        key = back.keys[i]
        k = seen[key]
        seen[key] = k + 1
        if k < len(by_key[key]):
            lat.append(int(back.ts_ms[i]) - by_key[key][k])
            sent_at.append(by_key[key][k])
    ms, at = np.asarray(lat, dtype=np.float64), np.asarray(sent_at, dtype=np.float64)
    keep = ms[at >= at.min() + warmup_s * 1000] if len(at) else ms
    return _percentiles(keep if len(keep) else ms)
