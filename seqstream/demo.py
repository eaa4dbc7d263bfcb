"""``seqstream demo``: the README's main job, end to end on real ECG.

1. brings the local stack up (the parts that were not running);
2. loads the shipped ECG artifact (``stream/models/ecg``: the sample-level forecaster and the
   beat classifier, trained on MIT-BIH DS1); ``--train`` trains the ``ecg`` config instead;
3. starts a worker (``seqstream worker``) and waits until it serves ``/metrics``, and
   ``seqstream view`` (the live page of every patient, URL printed) until the replay ends;
4. replays the bundled MIT-BIH **DS2** records (100, 200, 232: patients the model never saw)
   from their start in real time, fanned out to several patients, as 100 ms chunks (36 samples
   at 360 Hz); a record the artifact's card says it trained on is left out;
5. prints a live line every few seconds: events/s in and out, p50/p99 end-to-end latency read from
   Prometheus, anomalies flagged, beats classified;
6. scores the flags against the cardiologists' beat labels (AAMI classes: a labelled abnormal beat
   counts as caught when a flag falls inside its beat window) and, for an artifact with a beat
   model, the beat records of the beats topic (matched to the labels by EC57, 150 ms: per
   patient the beats, the classes called and the flags); writes a PNG of one patient's signal,
   forecast and flags;
7. stops the worker, and the stack parts it started (the stack is left as it was found).

Real time matters: latency is measured from each event's timestamp, so replaying faster than the
signal was recorded would stamp events in the future and make latency read low.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from seqstream import stack
from seqstream.workerproc import WorkerProcess, settings_env, worker_argv
from stream.errors import SeqstreamError, StackError
from stream.settings import Settings

__all__ = ["configure", "run"]

CHUNK = 36  # samples per event: 100 ms at 360 Hz
# package data of `stream` (stream.artifact.DEFAULT_ECG, without importing torch for --help)
SHIPPED = Path(str(resources.files("stream").joinpath("models", "ecg")))


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=SHIPPED, type=Path,
                        help="artifact to stream with (default: the shipped one, "
                             "stream/models/ecg)")
    parser.add_argument("--train", action="store_true",
                        help="train the `ecg` config into --model first (default "
                             "artifacts/ecg with --train; minutes on 2 cores)")
    parser.add_argument("--patients", type=int, default=12,
                        help="entities to stream: the bundled DS2 records fanned out "
                             "(default 12)")
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="how long to stream, real time (default 60)")
    parser.add_argument("--out", type=Path, default=Path("results/demo"),
                        help="where the summary JSON and the plot go (default results/demo)")
    parser.add_argument("--keep-stack", action="store_true",
                        help="leave the stack parts the demo started running")
    stack.configure_ports(parser)


@dataclass
class Collected:
    """Per-entity predictions read back from the predictions topic, in arrival order."""

    scores: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    flags: dict[str, list[bool]] = field(default_factory=lambda: defaultdict(list))
    forecasts: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    beats: dict[str, list[dict]] = field(default_factory=lambda: defaultdict(list))
    records: int = 0

    @property
    def samples(self) -> int:
        return sum(map(len, self.flags.values()))

    @property
    def anomalies(self) -> int:
        return sum(sum(f) for f in self.flags.values())


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env(overrides=vars(args))
    for name in ("aiokafka", "kafka"):  # their INFO lines would bury the demo's own
        logging.getLogger(name).setLevel(logging.WARNING)
    servers = stack.components(settings)
    started: list[stack.Server] = []
    print("== 1/5 local stack", flush=True)
    try:
        for server in servers:
            if server.start():
                started.append(server)
            print(f"   {server.name:<10} {server.address}  healthy", flush=True)
        return _demo(args, settings)
    finally:
        if not args.keep_stack:
            for server in reversed(started):
                server.stop()
            if started:
                print("   stopped the stack parts the demo started: "
                      + ", ".join(s.name for s in started))


def _train_config() -> str:
    """``ecg`` (forecaster + beat classifier) where its MIT-BIH DS1 records are, as that config
    reads them (``../shared/data/mitdb``, relative to here); else ``ecg-bundled``."""
    from training.config import load_config
    from training.sources import resolve_path

    return "ecg" if resolve_path(load_config("ecg").data.path).is_dir() else "ecg-bundled"


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from stream.artifact import CARD, load_artifact

    print("== 2/5 model", flush=True)
    if args.train and args.model == SHIPPED:
        args.model = Path("artifacts/ecg")  # the shipped artifact is never overwritten
    if args.train:
        config = _train_config()
        print(f"   training the `{config}` config into {args.model} (minutes on 2 cores)",
              flush=True)
        t0 = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "seqstream", "train", "--config", config,
                               "--output", str(args.model), "--train-progress-bar", "false"],
                              check=False)
        if done.returncode != 0:
            raise SeqstreamError(f"training failed (exit {done.returncode}); see above")
        print(f"   trained in {time.monotonic() - t0:.0f} s", flush=True)
    elif not (args.model / CARD).is_file():
        raise SeqstreamError(f"--model: expected an artifact directory (with {CARD}), got "
                             f"{args.model}; `seqstream demo --train` trains one")
    artifact = load_artifact(args.model)
    card = artifact.card
    print(f"   {args.model}: {card['architecture']['cell']} "
          f"{card['architecture']['num_layers']}x{card['architecture']['hidden_size']}, "
          f"model_id {artifact.model_id[:12]}, threshold {artifact.threshold:.3g} "
          f"({card['threshold'].get('method', '?')})", flush=True)
    stage = artifact.beats
    print("   beat classifier: " + ("none in this artifact (sample-level flags only)"
                                    if stage is None else
                                    f"{', '.join(card['beats'].get('classes', []))} at "
                                    f"p_abnormal ≥ {stage.threshold:.3g}"), flush=True)

    run_id = uuid.uuid4().hex[:6]
    lanes, origin = _lanes(args.patients, f"demo-{run_id}-",
                           card.get("data", {}).get("entities") or ())
    args.out.mkdir(parents=True, exist_ok=True)
    worker = WorkerProcess(worker_argv(), {**os.environ, **settings_env(model=args.model)},
                           args.out)
    print(f"== 3/5 worker (log: {worker.log_path})", flush=True)
    worker.start()
    view = _start_view(settings, args.out)
    try:
        _wait_for_metrics(settings, worker)
        print(f"   serving /metrics on {settings.metrics_host}:{settings.metrics_port}",
              flush=True)
        print(f"== 4/5 streaming {len(lanes)} patients for {args.seconds:.0f} s in real time "
              f"({CHUNK}-sample events to {settings.topic_events}); follow along with "
              "`seqstream tail` in another terminal", flush=True)
        collected, report = asyncio.run(_stream(settings, lanes, args.seconds, worker,
                                                stage is not None))
    finally:
        _stop_view(view)
        worker.stop(timeout=30)
    print("== 5/5 results", flush=True)
    summary = _score(lanes, origin, collected, card, report)
    if stage is not None:
        summary["beat_records"] = _score_beats(lanes, origin, collected, card, stage.fs)
    summary["latency_s"] = _latency(settings, report.seconds)
    plot = _plot(lanes, origin, collected, args.out)
    summary["plot"] = str(plot)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    _print_summary(summary)
    print(f"   plot: {plot}\n   summary: {args.out / 'summary.json'}")
    return 0


def _lanes(patients: int, prefix: str, trained: Sequence[str]):
    """The bundled DS2 records the artifact never trained on, whole, fanned out to
    ``patients`` entities."""
    from seqstream.evaluation.labels import DS2
    from seqstream.replay import fan_out
    from training.sources import load_source, resolve_path

    bundled = resolve_path("bundled:mitdb")
    records = [r for r in DS2 if r not in set(trained) and (bundled / f"{r}.hea").is_file()]
    if not records:
        raise SeqstreamError(f"demo: expected a bundled DS2 record the artifact did not train "
                             f"on; it trained on {sorted(trained)}")
    series = load_source("mitdb", "bundled:mitdb", records, features=["MLII"])
    lanes = fan_out([(s.entity, s.values, s.period_s) for s in series], patients, prefix)
    # entity -> (record, sample index in the record where its replay starts)
    where = {lane.entity_id: (series[i % len(series)].entity, lane.start)
             for i, lane in enumerate(lanes)}
    return lanes, where


def _start_view(settings: Settings, out: Path) -> WorkerProcess:
    """``seqstream view`` for the replay's duration, on the demo's Kafka, topics and Prometheus."""
    flags = {"--kafka-bootstrap": settings.kafka_bootstrap,
             "--topic-events": settings.topic_events,
             "--topic-predictions": settings.topic_predictions,
             "--topic-beats": settings.topic_beats, "--prometheus-url": settings.prometheus_url}
    view = WorkerProcess([sys.executable, "-m", "seqstream", "view",
                          *(x for pair in flags.items() for x in pair)], os.environ, out,
                         name="view").start()
    print(f"   live view of every patient: open http://{settings.view_host}:"
          f"{settings.view_port}/ in a browser (`seqstream view`, log {view.log_path})",
          flush=True)
    return view


def _stop_view(view: WorkerProcess) -> None:
    if view.exited() is not None:  # e.g. its port was taken: the demo goes on without it
        print(f"   the view had exited ({view.exited()}); see {view.log_path}", flush=True)
        return
    view.stop(timeout=15)


def _wait_for_metrics(settings: Settings, worker: WorkerProcess, timeout: float = 90.0) -> None:
    url = f"http://{settings.metrics_host}:{settings.metrics_port}/metrics"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        worker.check_alive("expected the worker to serve /metrics")
        try:
            with urllib.request.urlopen(url, timeout=1) as reply:
                # the lag gauge gets its partition labels once the consumer group assigned
                # partitions: events sent before that would wait and read as latency
                if b"seqstream_consumer_lag{" in reply.read():
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise StackError(f"the worker did not serve {url} within {timeout:.0f} s; see "
                     f"{worker.log_path}")


async def _stream(settings: Settings, lanes, seconds: float, worker: WorkerProcess,
                  with_beats: bool):
    """Publish in real time while collecting predictions (and beat records) and printing a
    live line."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from seqstream.publish import Options, publish
    from stream.kafka_access import ensure_topics
    from stream.security import kafka_kwargs

    wanted = {lane.entity_id for lane in lanes}
    collected = Collected()
    topics = [settings.topic_predictions, *([settings.topic_beats] if with_beats else [])]
    parts = [TopicPartition(topic, p)
             for topic, count in (await ensure_topics(settings, topics)).items()
             for p in range(count)]
    consumer = AIOKafkaConsumer(**kafka_kwargs(settings), enable_auto_commit=False)
    await consumer.start()
    consumer.assign(parts)
    await consumer.seek_to_end(*parts)
    for tp in parts:  # resolve the end offsets now, before anything is published
        await consumer.position(tp)

    async def collect() -> None:
        import orjson

        while True:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    body = orjson.loads(record.value)
                    entity = body["entity_id"]
                    if entity not in wanted:
                        continue
                    if record.topic == settings.topic_beats:
                        collected.beats[entity].append(body)
                        continue
                    collected.records += 1
                    chunk = "period" in body
                    forecasts = body["forecast"] if chunk else [body["forecast"]]
                    collected.scores[entity].extend(
                        body["score"] if chunk else [body["score"]])
                    collected.flags[entity].extend(
                        body["anomaly"] if chunk else [body["anomaly"]])
                    collected.forecasts[entity].extend(f[0][0] for f in forecasts)

    collector = asyncio.create_task(collect())
    options = Options(rate="realtime", samples_per_event=CHUNK, duration_s=seconds,
                      progress=False)
    publisher = asyncio.create_task(publish(settings, lanes, options))
    t0 = time.monotonic()
    last = (t0, 0)
    try:
        while not publisher.done():
            await asyncio.sleep(5)
            worker.check_alive("mid-stream")
            now = time.monotonic()
            rate_out = (collected.records - last[1]) / (now - last[0])
            last = (now, collected.records)
            p50, p99 = _latency_now(settings)
            beats = sum(map(len, collected.beats.values()))
            print(f"   t={now - t0:5.0f}s  predictions {collected.records:>6,} "
                  f"({rate_out:,.0f}/s, {collected.samples:,} samples)  anomalies "
                  f"{collected.anomalies:>4}  latency p50 {p50} p99 {p99}"
                  + (f"  beats {beats:,}" if with_beats else ""), flush=True)
        report = publisher.result()
        sent_samples = report.samples
        deadline = time.monotonic() + 60
        while collected.samples < sent_samples and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        print(f"   {report.summary()}", flush=True)
        print(f"   predictions received for {collected.samples:,} of {sent_samples:,} samples",
              flush=True)
        return collected, report
    finally:
        collector.cancel()
        publisher.cancel()
        await consumer.stop()


def _prometheus(settings: Settings, query: str) -> float | None:
    url = (f"http://127.0.0.1:{settings.prometheus_port}/api/v1/query?"
           + urllib.parse.urlencode({"query": query}))
    try:
        with urllib.request.urlopen(url, timeout=3) as reply:
            result = json.loads(reply.read())["data"]["result"]
    except (OSError, KeyError, ValueError):
        return None
    if not result:
        return None
    value = float(result[0]["value"][1])
    return value if np.isfinite(value) else None


def _quantile(settings: Settings, q: float, window: str) -> float | None:
    return _prometheus(settings, f"histogram_quantile({q}, sum by (le) "
                                 f"(rate(seqstream_latency_seconds_bucket[{window}])))")


def _latency_now(settings: Settings) -> tuple[str, str]:
    def ms(v: float | None) -> str:
        return "  n/a  " if v is None else f"{v * 1000:5.1f} ms"

    return ms(_quantile(settings, 0.5, "15s")), ms(_quantile(settings, 0.99, "15s"))


def _latency(settings: Settings, seconds: float) -> dict[str, float | None]:
    """Quantiles over this run only: the window spans the stream and no earlier worker."""
    time.sleep(6)  # one more scrape after the last event
    window = f"{int(seconds) + 5}s"
    return {f"p{int(q * 100)}": _quantile(settings, q, window) for q in (0.5, 0.95, 0.99)}


def _labels(record: str):
    from seqstream.evaluation.labels import ecg_labels
    from training.sources import resolve_path

    return ecg_labels(resolve_path("bundled:mitdb"), record)


def _score(lanes, origin, collected: Collected, card: dict, report) -> dict:
    """Beat-level detection per patient, pooled (AAMI classes, warm-up left out)."""
    from seqstream.evaluation.metrics import Detection, beat_detection

    warmup = int(card["threshold"].get("warmup", 360))
    period = float(card["period_s"])
    rows, parts = [], []
    for lane in lanes:
        entity = lane.entity_id
        record, start = origin[entity]
        flags = np.asarray(collected.flags.get(entity, []), dtype=bool)
        if not len(flags):
            continue
        labels = _labels(record).part(start, start + len(flags))
        detection = beat_detection(flags, labels.r_peaks, labels.classes, period, start=warmup)
        parts.append(detection)
        rows.append({"entity": entity, "record": record, "samples": len(flags),
                     **{k: detection.summary()[k] for k in ("events", "detected", "alarms",
                                                            "false_alarms")}})
    pooled = Detection.pool(parts).summary()
    return {"events_published": report.events, "samples_published": report.samples,
            "seconds": report.seconds, "samples_predicted": collected.samples,
            "flags": collected.anomalies, "beats": pooled, "patients": rows}


def _score_beats(lanes, origin, collected: Collected, card: dict, fs: float) -> dict:
    """The beat records per patient, matched to the labels (EC57, 150 ms), warm-up left out.

    The stream stops mid-record, and a beat is decided only after the next one (or a cap)
    arrives: reference beats past the last one decided are not counted."""
    from seqstream.evaluation.beateval import record_tally
    from seqstream.evaluation.beatmetrics import BeatTally

    warmup = int(card["threshold"].get("warmup", 360))
    period = 1.0 / fs
    window = round(0.15 * fs)
    rows, parts = [], []
    for lane in lanes:
        entity = lane.entity_id
        record, start = origin[entity]
        n = len(collected.flags.get(entity, []))
        # at-least-once delivery may repeat a beat record: one per R peak
        got = {b["sample"]: b for b in collected.beats.get(entity, [])}
        det = np.array(sorted(got), dtype=np.int64)
        if not n or not len(det):
            continue
        labels = _labels(record).part(start, start + n)
        cls = np.array([got[s]["class"] for s in det], dtype="<U1")
        flags = np.array([bool(got[s]["anomaly"]) for s in det])
        stop = min(n, int(det[-1]) + window + 1)
        tally = record_tally(labels, det, cls, flags, warmup, stop, period)
        parts.append(tally)
        kept = (det >= warmup) & (det < stop)
        ref = labels.part(warmup, stop).counts()
        rows.append({"entity": entity, "record": record, "seconds": (stop - warmup) * period,
                     "reference": sum(ref[c] for c in ("N", "SVEB", "VEB", "F")),
                     "abnormal": ref["SVEB"] + ref["VEB"] + ref["F"],
                     "detected": int(kept.sum()),
                     "called": {c: int((cls[kept] == c).sum()) for c in "NSVF"},
                     "flagged": int(flags[kept].sum()), "caught": tally.abnormal.tp,
                     "false_flags": tally.abnormal.fp})
    return {"pooled": BeatTally.pool(parts).summary(), "patients": rows}


def _print_beats(beats: dict) -> None:
    print("   beat records (seqstream.beats), matched to the cardiologists' beats:")
    print("   patient                  record  ref beats  detected  called N/S/V/F        "
          "flagged  abnormal  caught  false flags")
    for r in beats["patients"]:
        called = "/".join(str(r["called"][c]) for c in "NSVF")
        print(f"   {r['entity']:<24} {r['record']:>6} {r['reference']:>10} {r['detected']:>9}  "
              f"{called:<20} {r['flagged']:>8} {r['abnormal']:>9} {r['caught']:>7} "
              f"{r['false_flags']:>12}")
    p = beats["pooled"]

    def f(v: float) -> str:
        return "n/a" if v != v else f"{v:.2f}"

    v, s, a = p["classes"]["V"], p["classes"]["S"], p["abnormal"]
    print(f"   beats: QRS Se {f(p['qrs']['se'])} +P {f(p['qrs']['ppv'])}; VEB Se {f(v['se'])} "
          f"+P {f(v['ppv'])} F1 {f(v['f1'])}; SVEB Se {f(s['se'])} +P {f(s['ppv'])} F1 "
          f"{f(s['f1'])}; abnormal flags Se {f(a['se'])} +P {f(a['ppv'])} F1 {f(a['f1'])}; "
          f"{p['false_flags_per_hour']:.1f} false flags per hour")


def _print_summary(summary: dict) -> None:
    beats = summary["beats"]
    lat = summary["latency_s"]

    def ms(v):
        return "n/a" if v is None else f"{v * 1000:.1f} ms"

    print(f"   throughput: {summary['events_published'] / summary['seconds']:,.0f} events/s, "
          f"{summary['samples_published'] / summary['seconds']:,.0f} samples/s (real-time "
          "replay: the offered load, not the limit; see `seqstream bench`)")
    print(f"   end-to-end latency (event ts -> prediction produced): p50 {ms(lat['p50'])}, "
          f"p95 {ms(lat['p95'])}, p99 {ms(lat['p99'])}")
    print("   patient                  record  samples  abnormal beats  caught  false flags")
    for row in summary["patients"]:
        print(f"   {row['entity']:<24} {row['record']:>6} {row['samples']:>8,} "
              f"{row['events']:>15} {row['detected']:>7} {row['false_alarms']:>12}")
    print(f"   abnormal beats (AAMI SVEB/VEB/F) caught: {beats['detected']} of {beats['events']}"
          f" (recall {beats['recall']:.2f}); flagged beats that were abnormal: precision "
          f"{beats['precision']:.2f}; F1 {beats['f1']:.2f}; false flags per hour of normal "
          f"rhythm {beats['false_per_hour']:.1f}")
    if "beat_records" in summary:
        _print_beats(summary["beat_records"])


def _plot(lanes, origin, collected: Collected, out: Path) -> Path:
    """Signal, 1-step forecast, flags and labelled abnormal beats of the patient with the most
    flags (ties: most labelled abnormal beats), over the 10 s around its first flag."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best, rank = None, None
    for lane in lanes:
        flags = np.asarray(collected.flags.get(lane.entity_id, []), dtype=bool)
        if not len(flags):
            continue
        record, start = origin[lane.entity_id]
        labels = _labels(record).part(start, start + len(flags))
        abnormal = labels.r_peaks[labels.classes != "N"]
        key = (int(flags.sum()), len(abnormal))
        if rank is None or key > rank:
            best, rank = (lane, len(flags), abnormal, labels), key
    if best is None:
        raise SeqstreamError("no predictions came back: nothing to plot")
    lane, n, abnormal, labels = best
    period = lane.period_s
    values = lane.values[lane.start:lane.start + n, 0]
    flags = np.asarray(collected.flags[lane.entity_id], dtype=bool)
    forecast = np.asarray(collected.forecasts[lane.entity_id])
    hits = np.flatnonzero(flags)
    centre = int(hits[0]) if len(hits) else int(abnormal[0]) if len(abnormal) else n // 2
    lo, hi = max(0, centre - int(4 / period)), min(n, centre + int(6 / period))
    t = np.arange(lo, hi) * period
    fig, ax = plt.subplots(figsize=(12, 4), dpi=110)
    ax.plot(t, values[lo:hi], lw=0.9, color="black", label="ECG (MLII, mV)")
    # forecast[i] is made after sample i for sample i + 1
    ax.plot(t[1:], forecast[lo:hi - 1], lw=0.9, color="tab:blue", alpha=0.8,
            label="1-step forecast")
    hit = np.flatnonzero(flags[lo:hi]) + lo
    ax.scatter(hit * period, values[hit], s=14, color="red", zorder=3, label="anomaly flag")
    for i, r in enumerate(r for r in abnormal if lo <= r < hi):
        ax.axvline(r * period, color="orange", lw=1.2, alpha=0.7,
                   label="labelled abnormal beat" if i == 0 else None)
    ax.set_xlabel(f"seconds into {lane.entity_id}")
    ax.set_title(f"seqstream demo: {lane.entity_id} (MIT-BIH record "
                 f"{origin[lane.entity_id][0]}, DS2: never trained on)")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    path = out / "ecg.png"
    fig.savefig(path)
    plt.close(fig)
    return path
