"""``seqstream evaluate --model ARTIFACT``: how often a flag is right, how many anomalies it
misses, and how good the forecasts are, on labelled data the network never saw, against the
simple detectors a user could run instead.

1. Validation parts of the training series (thresholds) and unseen labelled test series
   (:mod:`seqstream.evaluation.dataset`), labels by AAMI EC57 for ECG
   (:mod:`seqstream.evaluation.labels`).
2. The network replayed offline (:mod:`stream.offline`), its per-entity-scaled variant
   (:mod:`seqstream.evaluation.entity_scale`) and the baselines
   (:mod:`seqstream.evaluation.baselines`), each
   thresholded on validation by the same rules (:mod:`seqstream.evaluation.thresholds`).
3. Live (``--live spawn``, the default): the test series streamed through ``seqstream worker``
   on the real Kafka and Redis (:mod:`seqstream.evaluation.live`); the streamed predictions must
   equal the offline ones to 1e-5, and the network's reported numbers are computed from the streamed
   scores.
4. Metrics (:mod:`seqstream.evaluation.assess`), ``report.json`` + ``report.md`` + PNG plots under
   ``--out`` (:mod:`seqstream.evaluation.report`, :mod:`seqstream.evaluation.plots`); ``--readme``
   replaces the README's ``## Quality`` section with the tables.

Exit status 1 when the live check fails (streamed ≠ offline), so CI notices.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stream.errors import ConfigError
from stream.settings import Settings, add_flags, env_name

__all__ = ["configure", "run"]

log = logging.getLogger("seqstream.evaluate")
REPO = Path(__file__).resolve().parents[1]
SHARED = {"mitdb": "mitdb", "wfdb": "mitdb", "nab": "nab", "skab": "skab"}


def _names(raw: str) -> list[str]:
    return [p.strip() for p in raw.split(",") if p.strip()]


def _sensor_options(raw: str) -> dict[str, Any]:
    """``--sensor-score``: a JSON object of :class:`stream.sensor_score.SensorScore` fields."""
    try:
        options = json.loads(raw)
    except ValueError as ex:
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {raw!r} ({ex})") from ex
    if not isinstance(options, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {raw!r}")
    return options


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", dest="model", default=None, metavar="ARTIFACT",
                        help=f"model artifact directory (env {env_name('model')})")
    data = parser.add_argument_group("data")
    data.add_argument("--test-data", default="auto",
                      help="labelled data set to test on (auto: ../shared/data/<source> beside "
                           "the repository when present, else the artifact's training path); a "
                           "folder in SKAB's or NAB's own layout runs that benchmark under its "
                           "protocol (evaluation.benchmark; --model then optional)")
    data.add_argument("--entities", type=_names, default=[],
                      help="comma list of test records / series (default: all the network "
                           "never saw; paced ECG records left out)")
    data.add_argument("--minutes", type=float, default=5.0,
                      help="stream the first MINUTES of each test series (0 = whole); "
                           "default 5")
    data.add_argument("--warmup", type=int, default=None,
                      help="samples without flags at each series' start (default: "
                           "SEQSTREAM_WARMUP_STEPS, the worker's)")
    det = parser.add_argument_group("detectors")
    det.add_argument("--sensor-score", type=_sensor_options, default={}, metavar="JSON",
                     help="--test-data in SKAB's or NAB's layout without a score.sensor card: "
                          "options of the sensor score (stream.sensor_score), e.g. "
                          "'{\"mean_shift\": true, \"shrinkage\": 0.25}'")
    det.add_argument("--pseudo-experiments", action="store_true",
                     help="--test-data in SKAB's layout: instead of the benchmark, the share of "
                          "rows the sensor score flags in 1150-row pseudo-experiments cut from "
                          "its anomaly-free run (every flag there is false)")
    det.add_argument("--baselines", type=_names,
                     default=["persistence_z", "rolling_z", "hst", "pad"],
                     help="comma list of baselines (persistence_z, rolling_z, hst, pad); "
                          "default all")
    det.add_argument("--jobs", type=int, default=2,
                     help="processes for the baselines; default 2")
    live = parser.add_argument_group("live")
    live.add_argument("--live", choices=("spawn", "running", "off"), default="spawn",
                      help="spawn: start seqstream worker on private topics (default); "
                           "running: use the worker already serving the configured topics "
                           "with this artifact; off: offline only")
    live.add_argument("--samples-per-event", type=int, default=36,
                      help="samples per published event (chunk form); default 36")
    live.add_argument("--live-timeout", type=float, default=1800.0,
                      help="seconds to wait for every prediction; default 1800")
    out = parser.add_argument_group("output")
    out.add_argument("--out", default="results/evaluate",
                     help="folder for report.json, report.md and the plots; default "
                          "results/evaluate")
    out.add_argument("--plots", type=int, default=3,
                     help="records to plot (those with the most anomalies); default 3")
    out.add_argument("--plot-seconds", type=float, default=10.0,
                     help="seconds of signal per plot (ECG; other data: 200 samples at "
                          "least); default 10")
    out.add_argument("--readme", default=None, metavar="PATH",
                     help="also replace the '## Quality' section of this README")
    add_flags(parser, ["kafka_bootstrap", "redis_url", "topic_events", "topic_predictions",
                       "partitions"])


def _test_dir(raw: str, card: dict[str, Any]) -> Path | None:
    if raw != "auto":
        return Path(raw).expanduser()
    source = card.get("training", {}).get("config", {}).get("data", {}).get("source")
    shared = REPO.parent / "shared" / "data" / SHARED.get(source, "")
    if source not in SHARED or not shared.is_dir():
        return None
    try:  # shown in the report: relative where it can be, not this machine's absolute path
        return Path(os.path.relpath(shared))
    except ValueError:
        return shared


def _data_section(data, warmup: int) -> dict[str, Any]:
    from seqstream.evaluation.labels import AAMI
    from seqstream.evaluation.metrics import ABNORMAL, beat_windows

    samples = sum(len(s.values) - max(warmup, s.start) for s in data.test)
    out: dict[str, Any] = {"kind": data.kind, "test_source": data.test_source,
                           "test_dir": data.test_dir, "series": len(data.test),
                           "entities": [s.entity for s in data.test], "samples": samples,
                           "hours": samples * data.period_s / 3600, "period_s": data.period_s,
                           "validation": [s.entity for s in data.validation],
                           "validation_samples": sum(len(s.values) for s in data.validation)}
    if data.kind == "beats":
        counts = dict.fromkeys(AAMI, 0)
        for s in data.test:
            lo, _ = beat_windows(s.labels.r_peaks, len(s.values))
            for c in AAMI:
                counts[c] += int(((lo >= max(warmup, s.start)) & (s.labels.classes == c)).sum())
        out["counts"] = counts
        out["events"] = sum(counts[c] for c in ABNORMAL)
        known = out["events"] + counts["N"]
        p = out["events"] / known if known else float("nan")
        out["prevalence"] = p
        out["chance_f1"] = 2 * p / (1 + p) if known else float("nan")
    else:
        out["events"] = int(sum((s.labels.windows[:, 1] > max(warmup, s.start)).sum()
                                for s in data.test))
    return out


def run(args: argparse.Namespace) -> int:
    if args.test_data != "auto":
        from seqstream.evaluation.benchmark import layout_of

        if layout_of(Path(args.test_data).expanduser()) is not None:
            return _run_benchmark(args)
    settings = Settings.from_env(overrides=vars(args))
    if settings.model is None:
        raise ConfigError(f"--model: expected an artifact directory (or {env_name('model')}), "
                          "got none")
    if args.minutes < 0:
        raise ConfigError(f"--minutes: expected a number >= 0, got {args.minutes}")
    if args.jobs < 1 or args.samples_per_event < 1 or args.plots < 0:
        raise ConfigError("--jobs, --samples-per-event: expected >= 1; --plots >= 0")
    import numpy as np
    import torch

    from seqstream.evaluation.assess import assess_detector, forecast_section
    from seqstream.evaluation.baselines import make_baselines
    from seqstream.evaluation.beateval import BEAT_STAGE
    from seqstream.evaluation.dataset import load_eval_data
    from seqstream.evaluation.plots import plot_beats, plot_series
    from seqstream.evaluation.report import write_report
    from seqstream.evaluation.runner import (
        ENTITY_SCALED,
        OURS,
        entity_scaled_variant,
        score_baselines,
        score_network,
        unscaled_network,
    )
    from seqstream.evaluation.thresholds import flags_of
    from stream.artifact import load_artifact
    from stream.entity_scale import AVERAGE_S, PEAK_HOLD_S

    started = time.perf_counter()
    # one thread: a recurrent step on a few dozen rows is too small to split, and on a busy
    # machine two threads waiting on each other made the replay ten times slower
    torch.set_num_threads(1)
    artifact = load_artifact(settings.model)
    card = artifact.card
    warmup = settings.warmup_steps if args.warmup is None else args.warmup
    data = load_eval_data(card, _test_dir(args.test_data, card), args.entities, args.minutes)
    log.info("evaluate: %s; validation %s", data.test_source,
             ", ".join(s.entity for s in data.validation))
    ours = score_network(artifact, data)
    log.info("network replayed offline in %.1f s", ours.seconds)
    # a card with score.entity_scale: the worker (and so ``ours``) scales per entity already;
    # the same network without it is shown beside it instead of a twice-scaled variant
    scaled_card = "entity_scale" in card.get("score", {})
    baselines = score_baselines(make_baselines(args.baselines, data.period_s, warmup), data,
                                args.jobs)
    if scaled_card:
        baselines.insert(0, unscaled_network(artifact, data))

    live_section, streamed, live_run = None, None, None
    if args.live != "off":
        from seqstream.evaluation.live import compare, run_live
        from stream.offline import replay_many

        live_run = run_live(settings, Path(settings.model), [s.entity for s in data.test],
                            [s.values for s in data.test], data.period_s,
                            artifact.model.horizon, warmup, args.samples_per_event, args.live,
                            Path(args.out) / "live", args.live_timeout,
                            with_beats=data.kind == "beats" and artifact.beats is not None)
        offline = replay_many(artifact, [s.values for s in data.test])
        live_section = compare(live_run, [r.forecasts for r in offline], ours.test,
                               artifact.threshold, warmup, artifact.model_id,
                               float(min(artifact.residual_scale)))
        log.info("live: %s", live_section["summary"])
        streamed = live_run.scores
        ours.forecasts = [np.concatenate([np.full((1, fc.shape[2]), np.nan), fc[:-1, 0]])
                          for fc in live_run.forecasts]

    detectors = {OURS: assess_detector(ours, data, warmup, card["threshold"], streamed)}
    detectors[OURS]["scores_from"] = "the live stream" if streamed is not None else "offline"
    test_scores = streamed if streamed is not None else ours.test
    scored = {OURS: test_scores}  # each detector's test scores, for the beat-level table
    for sc in [ours, *baselines]:
        if sc.name != OURS:
            detectors[sc.name] = assess_detector(sc, data, warmup, card["threshold"])
            scored[sc.name] = sc.test
        if sc.name in ENTITY_SCALED and not (scaled_card and sc.name == OURS):
            variant = entity_scaled_variant(sc, data, warmup)
            detectors[variant.name] = {
                **assess_detector(variant, data, warmup, card["threshold"]),
                "scores_from": "offline", **variant.extra}
            scored[variant.name] = variant.test
    forecast = forecast_section(data, ours.forecasts, warmup)
    f1 = detectors[OURS]["calibrated"]["all"]["f1"]
    rivals = {(n, r): d[r]["all"]["f1"] for n, d in detectors.items()
              for r in ("calibrated", "best_f1") if not n.startswith(OURS) and d[r]}
    best = max(rivals, key=lambda k: np.nan_to_num(rivals[k], nan=-1.0)) if rivals else None
    best_f1 = rivals[best] if best else float("nan")
    targets = {"f1": f1, "f1_rule": "calibrated (the card's threshold, what the worker flags)",
               "best_baseline": f"{best[0]}, {best[1]}" if best else None,
               "best_baseline_f1": best_f1, "f1_margin": f1 - best_f1,
               "f1_met": bool(f1 - best_f1 >= 0.15), "mase": forecast["mase"],
               "f1_entity_scaled": detectors.get(f"{OURS}_entity", {}).get(
                   "calibrated", {}).get("all", {}).get("f1"),
               "f1_unscaled": detectors.get(f"{OURS}_unscaled", {}).get(
                   "calibrated", {}).get("all", {}).get("f1"),
               "mase_met": bool(forecast["mase"] <= 0.7)}
    command = "seqstream evaluate " + " ".join(shlex.quote(a) for a in sys.argv[2:]) \
        if len(sys.argv) > 1 and sys.argv[1] == "evaluate" else "seqstream evaluate"

    out = Path(args.out)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    beats = _beats(artifact, data, detectors, scored, warmup, out) if data.kind == "beats" \
        else None
    if live_run is not None and beats and "found" in beats:
        from seqstream.evaluation.beateval import compare_beats

        check = compare_beats(live_run.beats, beats["found"], data.period_s)
        log.info("live beats: %s", check["summary"])
        live_section["beats"] = check
        live_section["passed"] = live_section["passed"] and check["passed"]
        live_section["summary"] += "; " + check["summary"]
        beats["from"] = "the offline pass, checked against the live stream's beat records"
    plots = []
    order = sorted(range(len(data.test)),
                   key=lambda i: -_events(data.test[i].labels, max(warmup, data.test[i].start)))
    seconds = args.plot_seconds if data.kind == "beats" else max(200 * data.period_s,
                                                                 args.plot_seconds)
    for i in order[:args.plots]:
        s = data.test[i]
        flags = flags_of(test_scores[i], artifact.threshold, warmup)
        safe = s.entity.replace("/", "_").replace(".csv", "")
        if beats and "found" in beats:
            plots.append(plot_beats(
                out / "plots" / f"{safe}-beats.png", s, beats["found"][i], data.period_s,
                artifact.beats.lead, data.features[artifact.beats.lead],
                beats["threshold"], seconds, max(warmup, s.start),
                f"{s.entity}: detected beats coloured by the class seqstream gave them; rings: "
                "the cardiologists' abnormal beats"))
        plots.append(plot_series(
            out / "plots" / f"{safe}.png", s, ours.forecasts[i], test_scores[i], flags,
            artifact.threshold, data.period_s, data.features, seconds, max(warmup, s.start),
            f"{s.entity}: seqstream flags at the card's threshold "
            f"({detectors[OURS]['scores_from']} scores)"))

    results = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "artifact": {"path": str(settings.model), "model_id": artifact.model_id,
                     "name": card.get("data", {}).get("config", "?"),
                     "architecture": card["architecture"], "threshold": card["threshold"],
                     "trained_on": card.get("data", {}).get("entities")},
        "settings": {"warmup": warmup, "minutes": args.minutes, "baselines": args.baselines,
                     "samples_per_event": args.samples_per_event, "live": args.live,
                     "entity_scale": card["score"].get("entity_scale") or {
                         "half_life_s": PEAK_HOLD_S, "tau_s": AVERAGE_S}},
        "data": _data_section(data, warmup),
        "detectors": detectors,
        "forecast": forecast,
        "targets": targets,
        "live": live_section,
        "beats": {k: v for k, v in beats.items() if k != "found"} if beats else None,
        "plots": plots,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    readme = Path(args.readme) if args.readme else None
    md = write_report(results, out, readme)
    a = detectors[OURS]["calibrated"]["all"]
    print(f"seqstream: precision {a['precision']:.3f} recall {a['recall']:.3f} F1 {f1:.3f} "
          f"(best baseline {targets['best_baseline']}: F1 {best_f1:.3f}); MASE "
          f"{forecast['mase']:.3f}")
    if beats and "detectors" in beats:
        b = beats["detectors"][BEAT_STAGE]
        print(f"beats: QRS Se {b['qrs']['se']:.4f} +P {b['qrs']['ppv']:.4f}; F1 VEB "
              f"{b['classes']['V']['f1']:.3f} SVEB {b['classes']['S']['f1']:.3f} abnormal "
              f"{b['abnormal']['f1']:.3f}; {b['false_flags_per_hour']:.1f} false flags/h; "
              f"CSVs in {out / 'beats'}")
    elif beats:
        print(f"beats: {beats['missing']}")
    if live_section:
        print("live: " + live_section["summary"].replace("**", ""))
    print(f"report {md} ({results['wall_s']:.0f} s)")
    return 0 if live_section is None or live_section["passed"] else 1


def _beats(artifact, data, detectors: dict[str, Any], scored: dict[str, list],
           warmup: int, out: Path) -> dict[str, Any]:
    """The beat-level section: the beat stage and every sample-level detector, under each
    threshold rule, scored on the beat stage's detected beats
    (:mod:`seqstream.evaluation.beateval`)."""
    from seqstream.evaluation.beateval import beat_section, detect_beats
    from seqstream.evaluation.runner import OURS
    from seqstream.evaluation.thresholds import flags_of

    if artifact.beats is None:
        return {"missing": "the artifact has no beat model (no `beats` section in its card): "
                           "no beat-level figures and no beats/<record>.csv"}
    found = detect_beats(artifact, data, scored[OURS])
    sample_flags = {}
    for name, det in detectors.items():
        for rule, label in (("calibrated", "calibrated"), ("best_f1", "best val. F1")):
            if det[rule] is not None:
                threshold = det[rule]["threshold"]
                sample_flags[f"{name}:{rule}"] = (
                    f"{det['label']} (`{name}`)", f"{threshold:.3f} ({label})",
                    [flags_of(s, threshold, warmup) for s in scored[name]])
    section = beat_section(artifact, data, found, sample_flags, warmup, out)
    section["from"] = "the offline pass"
    section["found"] = found  # for the plots and the live check; not written to report.json
    return section


def _run_benchmark(args: argparse.Namespace) -> int:
    """SKAB or NAB under its own protocol (:mod:`seqstream.evaluation.benchmark`); ``--model``
    optional (the network whose residuals the sensor score also reads)."""
    import torch

    from seqstream.evaluation.benchmark import SKAB_REFERENCE_ROWS, run_benchmark
    from stream.sensor_score import SensorScore

    torch.set_num_threads(1)
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in args.sensor_score.items()}
    try:
        score = SensorScore(**{"warmup": SKAB_REFERENCE_ROWS, **options}) if options else None
    except (TypeError, ValueError) as ex:
        raise ConfigError(f"--sensor-score: expected SensorScore's fields, got "
                          f"{args.sensor_score} ({ex})") from ex
    if args.pseudo_experiments:
        from seqstream.evaluation.benchmark import pseudo_experiments

        got = pseudo_experiments(args.test_data, score)
        print(f"SKAB anomaly-free run, {got['pieces']} pseudo-experiments: "
              f"{got['flagged_pct']:.2f} % of the rows after the warm-up flagged (at most "
              f"{got['max_pct']:.1f} % in one)")
        return 0
    results = run_benchmark(args.test_data, args.out, args.entities or None, args.model, score)
    m = results["metrics"]
    if results["kind"] == "skab":
        o, cp = m["outlier"], m["changepoint_nab"]
        print(f"SKAB: outlier F1 {o['f1']:.3f} FAR {o['far_pct']:.2f} % MAR {o['mar_pct']:.2f} %;"
              f" changepoint NAB standard {cp['standard']:.2f} low FP "
              f"{cp['reward_low_FP_rate']:.2f} low FN {cp['reward_low_FN_rate']:.2f}")
    else:
        print(f"NAB: standard {m['standard']:.2f} low FP {m['reward_low_FP_rate']:.2f} low FN "
              f"{m['reward_low_FN_rate']:.2f} ({m['detected']} of {m['windows']} windows)")
    print(f"report {Path(args.out) / 'report.md'}, series CSVs {Path(args.out) / 'series'} "
          f"({results['wall_s']:.0f} s)")
    return 0


def _events(labels, start: int) -> int:
    import numpy as np

    from seqstream.evaluation.metrics import ABNORMAL

    if labels.kind == "beats":
        return int(np.isin(labels.classes[labels.r_peaks >= start], ABNORMAL).sum())
    return int((labels.windows[:, 1] > start).sum())
