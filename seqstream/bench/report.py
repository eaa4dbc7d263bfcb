"""The benchmark's results as one JSON document and a markdown report, with the ratios and the
issue's targets checked against what was measured (never asserted: timings are reported).

``(c)/(a)`` is the seqstream worker's catch-up rate over the bare pipe's, for the same shape at
1,000 entities (or the smallest count measured) with one worker process; likewise ``(c)/(b)`` and
``(c)/(d)``.

>>> _ratio(10.0, 4.0), _ratio(1.0, 0.0)
(2.5, None)
"""

from __future__ import annotations

from typing import Any

__all__ = ["markdown", "ratios", "targets"]

NAMES = {"bare": "(a) bare aiokafka pipe", "naive": "(b) naive per-event faust agent",
         "worker": "(c) seqstream worker", "plain": "(d) plain aiokafka loop + Pipeline"}


def _ratio(x: float | None, y: float | None) -> float | None:
    return round(x / y, 3) if x and y else None


def _best(runs: list[dict], pipeline: str, shape: str, entities: int,
          workers: int = 1) -> dict | None:
    for r in runs:
        if (r["pipeline"], r["shape"], r["entities"], r["workers"]) == (pipeline, shape,
                                                                         entities, workers):
            return r
    return None


def ratios(runs: list[dict], base_entities: int) -> dict[str, dict[str, float | None]]:
    """(c)/(a), (c)/(b), (c)/(d) per shape."""
    out: dict[str, dict[str, float | None]] = {}
    for shape in sorted({r["shape"] for r in runs}):
        rate = {p: (_best(runs, p, shape, base_entities) or {}).get("events_per_s")
                for p in NAMES}
        row: dict[str, float | None] = {}
        c, tag = "worker", "c"
        for other, o in (("bare", "a"), ("naive", "b"), ("plain", "d")):
            row[f"({tag})/({o})"] = _ratio(rate[c], rate[other])
        out[shape] = row
    return out


def _p99_over_bare(latency: list[dict], shape: str, load: float) -> float | None:
    """(c)'s p99 over (a)'s at the same offered load (both a fraction of (c)'s max).

    >>> lat = [{"pipeline": p, "shape": "single", "load": 0.5, "latency_ms": {"p99": v}}
    ...        for p, v in (("worker", 30.0), ("bare", 20.0))]
    >>> _p99_over_bare(lat, "single", 0.5), _p99_over_bare(lat, "chunk", 0.5)
    (1.5, None)
    """
    p99 = {x["pipeline"]: (x.get("latency_ms") or {}).get("p99") for x in latency
           if x["shape"] == shape and x.get("load") == load}
    return _ratio(p99.get("worker"), p99.get("bare"))


def targets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets for (c), against the measured figures."""
    runs, base = doc["catch_up"], doc["base_entities"]
    rows: list[dict[str, Any]] = []

    def add(what: str, goal: str, value: float | None, ok: bool | None) -> None:
        rows.append({"target": what, "goal": goal, "measured": value, "met": ok})

    c, tag = "worker", "c"
    r = doc["ratios"].get("single", {})
    for key, goal in ((f"({tag})/(b)", 15.0), (f"({tag})/(d)", 1.0), (f"({tag})/(a)", 0.6)):
        v = r.get(key)
        add(f"single-sample {key}", f">= {goal}", v, None if v is None else v >= goal)
    chunk = _best(runs, c, "chunk", base)
    v = chunk["samples_per_s"] if chunk else None
    add(f"({tag}) chunked samples/s per worker process", ">= 300000",
        round(v) if v else None, None if v is None else v >= 300_000)
    for shape in ("single", "chunk"):
        one, two = _best(runs, c, shape, base), _best(runs, c, shape, base, workers=2)
        v = _ratio(two["events_per_s"], one["events_per_s"]) if one and two else None
        add(f"({tag}) {shape}: two processes / one", ">= 1.5", v,
            None if v is None else v >= 1.5)
    for shape in ("single", "chunk"):
        for load in (0.25, 0.5):
            v = _p99_over_bare(doc["latency"], shape, load)
            add(f"({tag}) {shape} p99 / (a)'s p99 at {load:.0%} of ({tag})'s max", "<= 1.5", v,
                None if v is None else v <= 1.5)
    big = max((x["entities"] for x in runs if x["pipeline"] == c), default=base)
    for shape in ("single", "chunk"):
        lo, hi = _best(runs, c, shape, base), _best(runs, c, shape, big)
        v = _ratio(hi["events_per_s"], lo["events_per_s"]) if lo and hi and big != base \
            else None
        add(f"({tag}) {shape} throughput at {big:,} / at {base:,} entities", ">= 0.8", v,
            None if v is None else v >= 0.8)
    beat = doc.get("beat_path")
    if beat:
        v = beat["ratio"]
        add("(c) chunk samples/s with the beat path / without (median of alternated runs)",
            ">= 0.85", v, None if v is None else v >= 0.85)
        v = beat.get("cpu_ratio")
        add("(c) chunk worker CPU per sample without the beat path / with it", ">= 0.85", v,
            None if v is None else v >= 0.85)
    for s in doc.get("state", []):
        v = s["ratio_to_raw"]
        add(f"Redis bytes per entity / raw state bytes at {s['entities']:,} entities",
            "<= 1.3", v, v <= 1.3)
    return rows


def _fmt(v: Any, digits: int = 0) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "**no**"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def _stage_table(latency: list[dict]) -> list[str]:
    """Where (c)'s batches spent their time in each steady-load run (its /metrics)."""
    rows = [[NAMES.get(r["pipeline"], r["pipeline"]), r["shape"], f"{r['load']:.0%}", stage,
             _fmt(v["batches"]), *(_fmt(v[k], 2) for k in ("mean_ms", "p50_ms", "p99_ms"))]
            for r in latency for stage, v in (r.get("stages") or {}).items()]
    if not rows:
        return []
    return ["**Time per batch stage under the same steady load** (the worker's "
            "`seqstream_stage_seconds`, scraped before the first event and after the last "
            "prediction; ms; p50 and p99 interpolated inside 1-2.5-5 buckets, as Grafana's "
            "panel does):", "", *_table(["pipeline", "shape", "load", "stage", "batches",
                                         "mean", "p50", "p99"], rows)]


def markdown(doc: dict[str, Any]) -> str:
    """The human-readable report of one run."""
    host = doc["host"]
    out = [f"Run {doc['started_at']} on {host['cpus']} CPUs "
           f"(load average {host['load_before'][0]:.2f} before, {host['load_after'][0]:.2f} "
           f"after), Kafka at {host['kafka']}, Python {host['python']}, torch {host['torch']}, "
           f"faust-streaming {host['faust']}; model {doc['model']['cell']} "
           f"{doc['model']['layers']}×{doc['model']['hidden']} ({doc['model']['note']}); "
           f"{doc['partitions']} partitions, batches of at most {doc['batch_max']}.", "",
           f"Command: `{doc['command']}`", ""]
    if doc.get("parallel"):
        out += ["*Smoke run: the pipelines ran at the same time on a tiny input, so the figures "
                "below check the harness, they are not measurements.*", ""]
    out += ["**Catch-up throughput** (M events preloaded; time until every prediction is "
            "acknowledged):", ""]
    rows = [[NAMES.get(r["pipeline"], r["pipeline"]), r["shape"], _fmt(r["entities"]),
             r["workers"], _fmt(r["events"]), _fmt(r["events_per_s"]),
             _fmt(r["samples_per_s"]), _fmt(r["drained"]), _fmt(r.get("rebalances"))]
            for r in doc["catch_up"]]
    out += _table(["pipeline", "shape", "entities", "workers", "events", "events/s",
                   "samples/s", "drained", "rebalances seen"], rows)
    out += [f"**Ratios** (catch-up, {doc['base_entities']:,} entities, one worker process):", ""]
    keys = sorted({k for v in doc["ratios"].values() for k in v})
    out += _table(["shape", *keys], [[shape, *(_fmt(r.get(k), 2) for k in keys)]
                                     for shape, r in doc["ratios"].items()])
    beat = doc.get("beat_path")
    if beat:
        out += [f"**Beat path** (catch-up of (c), chunk, {beat['entities']:,} entities, one "
                f"worker process, {beat['events']:,} events; A without, B with a seeded beat "
                f"stage, alternated):", ""]
        out += _table(["run", "artifact", "load before", "events/s", "samples/s",
                       "worker CPU µs/sample", "drained"],
                      [[i + 1, r["artifact"], _fmt(r["load_before"], 2),
                        _fmt(r["events_per_s"]), _fmt(r["samples_per_s"]),
                        _fmt(r.get("cpu_us_per_sample"), 3), _fmt(r["drained"])]
                       for i, r in enumerate(beat["runs"])])
        out += [f"B/A = {_fmt(beat['ratio'], 3)} (median samples/s {_fmt(beat['B'])} / "
                f"{_fmt(beat['A'])}; adjacent pairs "
                f"{', '.join(f'{x:.3f}' for x in beat['pairs']) or '–'}); by the worker's CPU "
                f"per sample, A/B = {_fmt(beat.get('cpu_ratio'), 3)} "
                f"({_fmt(beat.get('cpu_A'), 3)} / {_fmt(beat.get('cpu_B'), 3)} µs).", ""]
    if doc["latency"]:
        out += ["**Latency under steady load** (event sent → prediction appended, ms; load as a "
                "fraction of the reference pipeline's catch-up rate" + (
                    ", or of the max rate given: " + ", ".join(
                        f"{k} {v:,.0f}/s" for k, v in doc["max_rate_given"].items())
                    if doc.get("max_rate_given") else "") + "):", ""]
        rows = [[NAMES.get(r["pipeline"], r["pipeline"]), r["shape"],
                 f"{r['load']:.0%} of {r['reference']}", _fmt(r.get("offered_per_s")),
                 *((_fmt(r["latency_ms"].get(q), 1) for q in ("p50", "p95", "p99"))
                   if r["latency_ms"] else (r.get("note", "–"), "", ""))]
                for r in doc["latency"]]
        out += _table(["pipeline", "shape", "load", "events/s", "p50", "p95", "p99"], rows)
        out += _stage_table(doc["latency"])
    if doc.get("state"):
        out += ["**State in Redis** (worker's values and TTL, private redis-server):", ""]
        out += _table(["entities", "value bytes", "raw state bytes", "used_memory / entity",
                       "MEMORY USAGE", "÷ raw"],
                      [[_fmt(s["entities"]), s["value_bytes"], s["raw_state_bytes"],
                        _fmt(s["used_memory_per_entity"], 1), _fmt(s["memory_usage_mean"], 1),
                        _fmt(s["ratio_to_raw"], 2)] for s in doc["state"]])
    if doc.get("state_store"):
        out += ["**State store throughput** (a batch's checked load + compare-and-set save, "
                "private servers, `bench.state_throughput`):", ""]
        out += _table(["Redis", "batch", "partitions", "states/s (median)", "÷ single"],
                      [[r["redis"], _fmt(r["batch"]), r["partitions"], _fmt(r["states_per_s"]),
                        _fmt(r.get("vs_single"), 2)] for r in doc["state_store"]])
    if doc.get("step"):
        out += ["**Model step time** (one no-grad call, one thread):", ""]
        out += _table(["entities", "samples each", "ms", "µs per sample"],
                      [[_fmt(s["batch"]), s["steps"], _fmt(s["seconds"] * 1e3, 2),
                        _fmt(s["per_sample_us"], 2)] for s in doc["step"]])
    for key, tag in (("profile", "(c)"),):
        prof = doc.get(key)
        if not prof:
            continue
        out += [f"**Where {tag} spends its time** (cProfile of the main thread, {prof['run']}; "
                f"busy {prof['busy_s']:.2f} s):", ""]
        out += _table(["what", "self seconds", "share of busy"],
                      [[c["what"], _fmt(c["seconds"], 2),
                        "–" if c["busy_share"] is None else f"{c['busy_share']:.0%}"]
                       for c in prof["categories"][:12]])
    out += ["**Targets** (measured, never asserted in tests):", ""]
    out += _table(["target", "goal", "measured", "met"],
                  [[t["target"], t["goal"], _fmt(t["measured"], 2), _fmt(t["met"])]
                   for t in doc["targets"]])
    return "\n".join(out)
