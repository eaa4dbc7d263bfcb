"""``seqstream bench``: one run on the local stack, same events, every pipeline; a markdown table
and a JSON file under ``--out`` (default ``results/bench``).

What one run does, in order:

1. loads real MIT-BIH ECG (lead MLII) and exports the benchmark's artifact
(:mod:`seqstream.bench.model`);
2. for each shape (single-sample, chunks of 36 samples) and entity count: catch-up throughput of
   each pipeline (:mod:`seqstream.bench.pipelines`) with one process, and of (c) and (d) with two
   processes in one group (:func:`seqstream.bench.measure.catch_up`); every run must drain;
3. a profile of (c) on the first shape (cProfile, main thread; :mod:`seqstream.bench.profile`);
4. steady-load latency of each pipeline at fractions of (c)'s catch-up rate
   (:func:`seqstream.bench.measure.steady`), skipping a pipeline where the offered rate exceeds 90
   % of its own catch-up rate (the queue would only grow); for (c), its time per batch stage
   over each of these runs, from its /metrics (:mod:`seqstream.bench.stages`);
5. Redis bytes per entity (:mod:`seqstream.bench.state_cost`) and model step time vs batch size.

With ``--beats N``, after the catch-up runs, (c) runs on chunks N times each without and with a
beat stage, alternated: what the beat path costs (:mod:`seqstream.bench.beatpath`).

``--size tiny`` is the CI smoke run (tens of entities, hundreds of events; every pipeline and
shape, one latency run); ``full`` is the measurement. Event counts scale with how fast each
pipeline is, so each catch-up run lasts a few seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stream.errors import ConfigError
from stream.settings import Settings, add_flags

__all__ = ["SIZES", "configure", "run"]

LETTER = {"a": "bare", "b": "naive", "c": "worker", "d": "plain"}
SHAPES = {"single": 1, "chunk": 36}
# events per catch-up run, by size → shape → pipeline (each run lasts a few seconds)
SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"entities": [50], "workers": [1], "loads": [0.5], "state": [1000], "parallel": True,
             "store": {"rounds": 20, "repeats": 1},
             "latency_pipelines": ["worker"], "latency_s": 1.0, "step": [(1, 1), (100, 1)],
             "events": {"single": {"bare": 400, "naive": 200, "worker": 400, "plain": 400},
                        "chunk": {"bare": 100, "naive": 60, "worker": 100, "plain": 100}}},
    "full": {"entities": [1000, 100_000], "workers": [1, 2], "loads": [0.1, 0.25, 0.5, 0.75],
             "parallel": False,
             "state": [1000, 100_000, 1_000_000], "store": {"rounds": 200, "repeats": 3},
             "latency_pipelines": ["bare", "naive", "worker", "plain"], "latency_s": 6.0,
             "step": [(1, 1), (10, 1), (100, 1), (1000, 1), (10_000, 1), (100, 36),
                      (1000, 36)],
             "events": {"single": {"bare": 400_000, "naive": 8000, "worker": 150_000,
                                   "plain": 150_000},
                        "chunk": {"bare": 100_000, "naive": 2000, "worker": 20_000,
                                  "plain": 20_000}}},
}
TWO_WORKERS = ("worker", "plain")
BIG_ENTITIES = ("naive", "worker", "plain")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", choices=sorted(SIZES), default="full",
                        help="tiny: CI smoke run; full: the measurement (default)")
    parser.add_argument("--pipelines", default="a,b,c,d",
                        help="which pipelines: a bare, b naive, c worker, d plain (default all)")
    parser.add_argument("--shapes", default="single,chunk", help="single and/or chunk")
    parser.add_argument("--entities", default=None,
                        help="comma-separated entity counts (default by size)")
    parser.add_argument("--workers", default=None, help="worker process counts, e.g. 1,2")
    parser.add_argument("--loads", default=None,
                        help="steady-load fractions of (c)'s rate, e.g. 0.1,0.25,0.5,0.75")
    parser.add_argument("--max-rate", default=None, metavar="SHAPE:EVENTS_PER_S,...",
                        help="the worker's max rate that loads are fractions of, per shape, e.g."
                             " single:30000,chunk:4000 (default: (c)'s catch-up rate in this "
                             "run), so that runs of two versions offer the same rates")
    parser.add_argument("--state-entities", default=None,
                        help="entity counts for the Redis state size (default by size)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every event count (default 1)")
    parser.add_argument("--model", default=None, metavar="ARTIFACT",
                        help="a trained artifact to use (default: export a seeded 2x64 GRU)")
    parser.add_argument("--out", default="results/bench", help="results folder")
    parser.add_argument("--no-profile", action="store_true",
                        help="skip the profile of (c)")
    parser.add_argument("--beats", type=int, default=0, metavar="N",
                        help="also run (c) on chunks N times each without and with a beat stage, "
                             "alternated, for the beat path's cost (default 0: skip)")
    add_flags(parser, ["kafka_bootstrap", "redis_url", "partitions", "batch_max"])


def _numbers(text: str | None, default: list, cast: type, kind: str) -> list:
    if text is None:
        return default
    try:
        return [cast(x) for x in text.split(",") if x.strip()]
    except ValueError as ex:
        raise ConfigError(f"expected comma-separated {kind}, got {text!r}") from ex


def _ints(text: str | None, default: list[int]) -> list[int]:
    return _numbers(text, default, int, "integers")


def _floats(text: str | None, default: list[float]) -> list[float]:
    return _numbers(text, default, float, "numbers")


def _pipelines(text: str) -> list[str]:
    names = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name = LETTER.get(part, part)
        if name not in LETTER.values():
            raise ConfigError(f"--pipelines: expected letters among {', '.join(LETTER)}, got "
                              f"{part!r}")
        names.append(name)
    return names


def _max_rates(text: str | None) -> dict[str, float]:
    """``single:30000,chunk:4000`` → ``{"single": 30000.0, "chunk": 4000.0}``.

    >>> _max_rates("single:30000, chunk:4e3"), _max_rates(None)
    ({'single': 30000.0, 'chunk': 4000.0}, {})
    """
    rates: dict[str, float] = {}
    for part in (p.strip() for p in (text or "").split(",") if p.strip()):
        shape, _, rate = part.partition(":")
        try:
            if shape not in SHAPES or float(rate) <= 0:
                raise ValueError(part)
            rates[shape] = float(rate)
        except ValueError as ex:
            raise ConfigError(f"--max-rate: expected SHAPE:EVENTS_PER_S with a shape among "
                              f"{', '.join(SHAPES)} and a positive rate, got {part!r}") from ex
    return rates


def _host(settings: Settings) -> dict[str, Any]:
    import faust
    import torch

    return {"cpus": os.cpu_count(), "load_before": list(os.getloadavg()),
            "python": platform.python_version(), "torch": torch.__version__,
            "faust": faust.__version__, "kafka": settings.kafka_bootstrap,
            "machine": platform.machine()}


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env(overrides=vars(args))
    size = SIZES[args.size]
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    for s in shapes:
        if s not in SHAPES:
            raise ConfigError(f"--shapes: expected single and/or chunk, got {s!r}")
    plan = {
        "pipelines": _pipelines(args.pipelines), "shapes": shapes,
        "entities": _ints(args.entities, size["entities"]),
        "workers": _ints(args.workers, size["workers"]),
        "loads": _floats(args.loads, size["loads"]),
        "state": _ints(args.state_entities, size["state"]),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "worker.prof").unlink(missing_ok=True)
    command = ("seqstream bench " + " ".join(shlex.quote(a) for a in sys.argv[2:])).strip() \
        if len(sys.argv) > 1 and sys.argv[1] == "bench" else "seqstream bench"
    doc = asyncio.run(_run(settings, args, size, plan, out, command))
    stamp = doc["started_at"].replace(":", "").replace("-", "")
    text = json.dumps(doc, indent=1)
    report = _render(doc)
    for name in (f"bench-{stamp}", "latest"):
        (out / f"{name}.json").write_text(text + "\n")
        (out / f"{name}.md").write_text(report + "\n")
    print(report)
    print(f"\nwrote {out / 'latest.md'} and {out / 'latest.json'}")
    undrained = [r for r in doc["catch_up"] + doc["latency"]
                 if r.get("drained") is False]
    return 1 if undrained else 0


_T0 = time.monotonic()


def _say(text: str) -> None:
    print(f"bench [{time.monotonic() - _T0:6.1f} s] {text}", file=sys.stderr, flush=True)


def _render(doc: dict[str, Any]) -> str:
    from seqstream.bench.report import markdown

    return markdown(doc)


async def _run(settings: Settings, args: argparse.Namespace, size: dict[str, Any],
               plan: dict[str, Any], out: Path, command: str) -> dict[str, Any]:
    from seqstream.bench.events import load_series
    from seqstream.bench.model import make_artifact, step_times
    from seqstream.bench.report import ratios, targets
    from stream.artifact import load_artifact

    started = datetime.now(UTC).isoformat(timespec="seconds")
    host = _host(settings)
    series = load_series(records=8)
    tmp = Path(tempfile.mkdtemp(prefix="seqstream-bench-"))
    if args.model:
        model_dir, note = Path(args.model), "trained artifact"
    else:
        model_dir, note = tmp / "model", "untrained seeded weights: speed only"
        make_artifact(model_dir, series)
    artifact = load_artifact(model_dir)
    net = artifact.model
    logs = out / "logs"
    partitions, batch_max = settings.partitions, settings.batch_max
    base = min(plan["entities"])
    doc: dict[str, Any] = {
        "started_at": started, "command": command, "host": host, "size": args.size,
        "partitions": partitions, "batch_max": batch_max, "base_entities": base,
        "model": {"cell": net.cell, "hidden": net.hidden_size, "layers": net.num_layers,
                  "state_size": net.state_size, "model_id": artifact.model_id, "note": note},
        "pipelines": {p: letter for letter, p in LETTER.items() if p in plan["pipelines"]},
        "catch_up": [], "latency": [], "state": [], "state_store": [], "step": [],
        "profile": None,
    }
    kw = {"model": model_dir, "partitions": partitions, "batch_max": batch_max, "logs": logs}
    parallel = bool(size["parallel"])  # tiny: a smoke run, timings meaningless
    doc["parallel"] = parallel
    await _catch_ups(settings, args, size, plan, series, out, kw, doc)
    if args.beats > 0:
        doc["beat_path"] = await _beat_path(settings, series, model_dir, tmp, base,
                                            _count(size, args, "chunk", "worker"),
                                            args.beats, kw)
    await _latencies(settings, args, size, plan, series, kw, doc)
    _say("state size and step time")
    if plan["state"]:
        from seqstream.bench.state_cost import state_cost

        doc["state"] = await asyncio.to_thread(state_cost, net.state_size, net.n_features,
                                               plan["state"], artifact.model_id,
                                               settings.state_ttl_s)
        from seqstream.bench.state_throughput import store_throughput

        doc["state_store"] = await asyncio.to_thread(store_throughput, net.state_size,
                                                     net.n_features, **size["store"])
    _say("done")
    doc["step"] = step_times(net, [tuple(s) for s in size["step"]])
    doc["ratios"] = ratios(doc["catch_up"], base)
    host["load_after"] = list(os.getloadavg())
    doc["targets"] = targets(doc)
    return doc


def _count(size: dict[str, Any], args: argparse.Namespace, shape: str, pipeline: str) -> int:
    """Events of one catch-up run: the size's count, scaled, at least 10."""
    return max(10, int(size["events"][shape][pipeline] * args.scale))


def _catch_up_runs(plan: dict[str, Any], base: int) -> Iterator[tuple[str, int, str, int]]:
    """(shape, entities, pipeline, workers) of each catch-up run: more entities than ``base``
    only for the pipelines in :data:`BIG_ENTITIES`, two workers only for those in
    :data:`TWO_WORKERS` at ``base`` entities."""
    for shape in plan["shapes"]:
        for entities in plan["entities"]:
            for pipeline in plan["pipelines"]:
                if entities != base and pipeline not in BIG_ENTITIES:
                    continue
                for workers in plan["workers"]:
                    if workers <= 1 or (pipeline in TWO_WORKERS and entities == base):
                        yield shape, entities, pipeline, workers


async def _catch_ups(settings: Settings, args: argparse.Namespace, size: dict[str, Any],
                     plan: dict[str, Any], series: Any, out: Path, kw: dict[str, Any],
                     doc: dict[str, Any]) -> None:
    """Every catch-up run of the plan into ``doc["catch_up"]`` (one at a time, or all at once
    in a smoke run), and (c)'s profile into ``doc["profile"]``."""
    from seqstream.bench.events import make_events
    from seqstream.bench.measure import catch_up
    from seqstream.bench.profile import summarize

    base, parallel = doc["base_entities"], doc["parallel"]
    jobs = []
    for shape, entities, pipeline, workers in _catch_up_runs(plan, base):
        events = make_events(series, entities, SHAPES[shape],
                             _count(size, args, shape, pipeline))
        _say(f"catch-up {pipeline} {shape} {entities:,} entities "
             f"{workers} worker(s), {len(events):,} events")
        # a smoke run profiles (c)'s own run; a measurement profiles a run apart
        prof = (out / "worker.prof" if parallel and pipeline == "worker"
                and shape == plan["shapes"][0] and not args.no_profile else None)
        jobs.append(catch_up(settings, pipeline, events, shape=shape, entities=entities,
                             workers=workers, profile=prof, **kw))
        if not parallel:
            doc["catch_up"].append((await jobs.pop()).as_dict())
    profile = out / "worker.prof"
    if not args.no_profile and not parallel and "worker" in plan["pipelines"]:
        shape = plan["shapes"][0]  # a measurement profiles (c) in a run apart
        events = make_events(series, base, SHAPES[shape], _count(size, args, shape, "worker"))
        _say(f"profile of worker, {shape}")
        await catch_up(settings, "worker", events, shape=shape, entities=base, workers=1,
                       profile=profile, **kw)
    if parallel:
        _say(f"running {len(jobs)} catch-up runs at once")
        doc["catch_up"] = [r.as_dict() for r in await asyncio.gather(*jobs)]
    if profile.exists() and not args.no_profile:
        shape = plan["shapes"][0]
        doc["profile"] = {"run": f"catch-up, {shape}, {base:,} entities, "
                                 f"{_count(size, args, shape, 'worker'):,} events",
                          **summarize(profile)}
    _say("catch-up done")


async def _latencies(settings: Settings, args: argparse.Namespace, size: dict[str, Any],
                     plan: dict[str, Any], series: Any, kw: dict[str, Any],
                     doc: dict[str, Any]) -> None:
    """The steady-load runs into ``doc["latency"]``, each at a fraction of (c)'s catch-up rate
    (or of ``--max-rate``); a load over a pipeline's own catch-up rate is noted, not run."""
    from seqstream.bench.events import make_events
    from seqstream.bench.measure import steady

    base, parallel = doc["base_entities"], doc["parallel"]
    rate_of = {(r["pipeline"], r["shape"]): r["events_per_s"] for r in doc["catch_up"]
               if r["entities"] == base and r["workers"] == 1}
    given = _max_rates(args.max_rate)
    doc["max_rate_given"] = given
    rate_of.update({("worker", shape): rate for shape, rate in given.items()})
    lat_jobs = []
    for shape in plan["shapes"][:1] if parallel else plan["shapes"]:
        for pipeline in plan["pipelines"]:
            if pipeline not in size["latency_pipelines"]:
                continue
            ref = "worker"  # loads are fractions of (c)'s catch-up rate
            for load in plan["loads"]:
                ref_rate, own = rate_of.get((ref, shape)), rate_of.get((pipeline, shape))
                if not ref_rate:
                    continue
                rate = ref_rate * load
                entry = {"pipeline": pipeline, "shape": shape, "entities": base,
                         "workers": 1, "load": load, "reference": ref,
                         "offered_per_s": round(rate), "latency_ms": {}}
                if own and rate > 0.9 * own and not parallel:
                    entry["note"] = f"over capacity (own max {own:,.0f}/s)"
                    doc["latency"].append(entry)
                    continue
                n = max(20, int(rate * size["latency_s"]))
                events = _live(make_events(series, base, SHAPES[shape], n))
                _say(f"latency {pipeline} {shape} at {load:.0%} of {ref} "
                     f"({rate:,.0f}/s)")
                job = steady(settings, pipeline, events, rate, shape=shape, entities=base,
                             workers=1, load=load, **kw)
                lat_jobs.append((job, ref))
                if not parallel:
                    r = await job
                    doc["latency"].append({**r.as_dict(), "reference": ref})
    if parallel and lat_jobs:
        _say(f"running {len(lat_jobs)} latency runs at once")
        done = await asyncio.gather(*(j for j, _ in lat_jobs))
        doc["latency"] += [{**r.as_dict(), "reference": ref}
                           for r, (_, ref) in zip(done, lat_jobs, strict=True)]


async def _beat_path(settings: Settings, series: list, model_dir: Path, tmp: Path,
                     entities: int, n_events: int, repeats: int,
                     kw: dict[str, Any]) -> dict[str, Any]:
    """(c) on chunks with and without a beat stage (:mod:`seqstream.bench.beatpath`)."""
    from seqstream.bench.beatpath import compare, make_beat_artifact, summary
    from seqstream.bench.events import make_events
    from seqstream.bench.measure import catch_up

    with_beats = tmp / "model-beats"
    make_beat_artifact(model_dir, with_beats, series)
    events = make_events(series, entities, SHAPES["chunk"], n_events)

    async def one(model: Path) -> dict[str, Any]:
        _say(f"beat path: catch-up worker chunk {entities:,} entities, "
             f"{'with' if model == with_beats else 'without'} beats, {len(events):,} events")
        run = await catch_up(settings, "worker", events, shape="chunk", entities=entities,
                             workers=1, **{**kw, "model": model})
        return run.as_dict()

    runs = await compare(one, model_dir, with_beats, repeats)
    return {"entities": entities, "events": len(events), "runs": runs, **summary(runs)}


def _live(events: list[Any]) -> list[Any]:
    """The same events with each entity's timestamps moved to now, so the worker sees a live
    stream (its latency metric reads event ts → acknowledgement)."""
    import orjson

    from seqstream.bench.events import EPOCH, Encoded

    shift = time.time() - EPOCH
    out = []
    for e in events:
        body = orjson.loads(e.value)
        body["ts"] = body["ts"] + shift
        out.append(Encoded(e.key, orjson.dumps(body), e.samples))
    return out
