"""The evaluation's outputs: ``report.json`` (every number), ``report.md`` (the tables) and the
README's ``## Quality`` section (the latest tables, replaced in place between two markers, so the
prose around them stays).

JSON has no NaN, so undefined numbers (a recall without anomalies, say) are written as null and
shown as "–" in the tables.

>>> _fmt(0.12345), _fmt(float("nan")), _fmt(1234.5, 0)
('0.123', '–', '1234')
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from seqstream.evaluation.metrics import ABNORMAL

__all__ = ["BEGIN", "END", "markdown", "replace_section", "to_json", "write_report"]

SECTION = "## Quality"
BEGIN = "<!-- seqstream evaluate: generated from here -->"
END = "<!-- seqstream evaluate: generated up to here -->"


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def to_json(value: Any) -> Any:
    """Plain JSON types; NaN and infinities as null."""
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.ndarray):
        return to_json(value.tolist())
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_json(dataclasses.asdict(value))
    if isinstance(value, Path):
        return str(value)
    return value


def _names(names: list[str], most: int = 8) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def _detector_rows(results: dict[str, Any]) -> list[str]:
    beats = results["data"]["kind"] == "beats"
    head = ["detector", "threshold (rule)", "precision", "recall", "F1"]
    if beats:
        head += [f"F1 {c}" for c in ABNORMAL]
    head += ["false flags / h", "median delay (s)", "ROC-AUC", "PR-AUC"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, det in results["detectors"].items():
        for rule, label in (("calibrated", "calibrated"), ("best_f1", "best val. F1")):
            m = det[rule]
            if m is None:  # no labelled anomaly in validation: no F1 to tune on
                continue
            a = m["all"]
            cells = [f"{det['label']} (`{name}`)", f"{_fmt(m['threshold'], 3)} ({label})",
                     _fmt(a["precision"]), _fmt(a["recall"]), f"**{_fmt(a['f1'])}**"]
            if beats:
                cells += [_fmt(m["per_class"][c]["f1"]) for c in ABNORMAL]
            cells += [_fmt(a["false_per_hour"], 1), _fmt(a["delay_median_s"], 3),
                      _fmt(m["roc_auc"]), _fmt(m["pr_auc"])]
            rows.append("| " + " | ".join(cells) + " |")
    return rows


def _forecast_rows(f: dict[str, Any]) -> list[str]:
    """One column per feature for MAE and RMSE (user units); MASE is their mean ratio."""
    feats = f["features"]
    head = ["1-step forecast", *(f"MAE {n}" for n in feats), *(f"RMSE {n}" for n in feats),
            "MASE (vs persistence, same samples)"]
    ours = ["seqstream", *(_fmt(v, 4) for v in f["mae"]), *(_fmt(v, 4) for v in f["rmse"]),
            f"**{_fmt(f['mase'])}**"]
    naive = ["persistence", *(_fmt(v, 4) for v in f["mae_persistence"]),
             *(_fmt(v, 4) for v in f["rmse_persistence"]), "1.000"]
    return ["| " + " | ".join(r) + " |" for r in (head, ["---"] * len(head), ours, naive)]


def _beat_lines(beats: dict[str, Any]) -> list[str]:
    """The beat-level tables (ECG with a beat model): the classifier per class, every
    detector's flags on the same detected beats, and the classifier per record."""
    if "missing" in beats:
        return [f"Beats: {beats['missing']}."]
    from seqstream.evaluation.beateval import BEAT_STAGE

    stage = beats["detectors"][BEAT_STAGE]
    q = stage["qrs"]
    lines = [f"**Beats** on {len(beats['per_record'])} records ({beats['from']}): the beat "
             f"stage's detected beats matched to the reference beats (EC57, "
             f"{beats['match_window_s'] * 1000:.0f} ms; Q beats ignored; gross counts). QRS "
             f"detection: Se {_fmt(q['se'], 4)}, +P {_fmt(q['ppv'], 4)} "
             f"({q['tp'] + q['fn']} reference beats, {q['fn']} missed, {q['fp']} extra "
             "detections).", "",
             "| beat classifier | Se | +P | F1 | TP | FN | FP |", "|---|---|---|---|---|---|---|"]
    names = {"V": "VEB (V)", "S": "SVEB (S)", "F": "fusion (F)"}
    for c, name in names.items():
        m = stage["classes"][c]
        lines.append(f"| {name} | {_fmt(m['se'])} | {_fmt(m['ppv'])} | **{_fmt(m['f1'])}** | "
                     f"{m['tp']} | {m['fn']} | {m['fp']} |")
    a = stage["abnormal"]
    lines += [f"| abnormal (S+V+F), by the flag | {_fmt(a['se'])} | {_fmt(a['ppv'])} | "
              f"**{_fmt(a['f1'])}** | {a['tp']} | {a['fn']} | {a['fp']} |", "",
              "| flags on the detected beats | threshold (rule) | Se | +P | F1 | Se V | Se S | "
              "Se F | false flags / h |", "|---|---|---|---|---|---|---|---|---|"]
    for det in beats["detectors"].values():
        a, se = det["abnormal"], det["flag_se"]
        lines.append(f"| {det['label']} | {det['rule']} | {_fmt(a['se'])} | {_fmt(a['ppv'])} | "
                     f"**{_fmt(a['f1'])}** | {_fmt(se['V'])} | {_fmt(se['S'])} | "
                     f"{_fmt(se['F'])} | {_fmt(det['false_flags_per_hour'], 1)} |")
    lines += ["", "| record | reference beats (N, S, V, F) | QRS Se | QRS +P | V Se | V +P | "
                  "S Se | S +P | false flags |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in beats["per_record"].items():
        k = r["counts"]
        cl = r["classes"]
        lines.append(f"| {name} | {r['reference_beats']} ({k['N']}, {k['SVEB']}, {k['VEB']}, "
                     f"{k['F']}) | {_fmt(r['qrs']['se'], 4)} | {_fmt(r['qrs']['ppv'], 4)} | "
                     f"{_fmt(cl['V']['se'])} | {_fmt(cl['V']['ppv'])} | {_fmt(cl['S']['se'])} "
                     f"| {_fmt(cl['S']['ppv'])} | {r['false_flags']} |")
    return lines


def markdown(results: dict[str, Any]) -> str:
    """The tables and the verdict, as shown in report.md and the README."""
    d, f, t = results["data"], results["forecast"], results["targets"]
    units = "abnormal beats (AAMI SVEB, VEB, F)" if d["kind"] == "beats" else "anomaly windows"
    counts = d.get("counts", {})
    per_class = ", ".join(f"{c} {counts.get(c, 0)}" for c in ABNORMAL)
    lines = [
        f"Model `{results['artifact']['model_id'][:12]}` ({results['artifact']['name']}), "
        f"evaluated {results['created_at']} on {d['test_source']}: {d['series']} series, "
        f"{_fmt(d['hours'], 2)} h, {d['events']} {units}"
        + (f" ({per_class}; N {counts.get('N', 0)})" if d["kind"] == "beats" else "")
        + f". Thresholds from the validation parts of {_names(d['validation'])}; "
          f"no flag in each series' first {results['settings']['warmup']} samples.",
        "",
        *_detector_rows(results),
        "",
        *([f"Chance level: flagging every beat gives precision {_fmt(d['prevalence'])} (the "
           f"share of abnormal beats), recall 1 and F1 {_fmt(d['chance_f1'])}.", ""]
          if d["kind"] == "beats" and "chance_f1" in d else []),
        *_forecast_rows(f),
        "",
        f"Targets: F1 ≥ best baseline + 0.15 — seqstream {_fmt(t['f1'])} vs best baseline "
        f"{_fmt(t['best_baseline_f1'])} (`{t['best_baseline']}`): "
        f"**{'met' if t['f1_met'] else 'not met'}**"
        + (f" (with per-entity scaling, offline: {_fmt(t['f1_entity_scaled'])})"
           if t.get("f1_entity_scaled") is not None else "")
        + (f" (the live per-entity scaling; without it, offline: {_fmt(t['f1_unscaled'])})"
           if t.get("f1_unscaled") is not None else "")
        + f"; MASE ≤ 0.7 — {_fmt(f['mase'])}: "
        f"**{'met' if t['mase_met'] else 'not met'}** "
        f"(units: {', '.join(f['features'])} in user units).",
    ]
    if results.get("beats"):
        lines += ["", *_beat_lines(results["beats"])]
    live = results.get("live")
    if live:
        lines += ["", f"Live: {live['summary']}"]
    lines += ["", f"Reproduce: `{results['command']}`"]
    return "\n".join(lines) + "\n"


def replace_section(text: str, body: str) -> str:
    """``text`` with the generated part of its ``## Quality`` section replaced.

    The generated tables sit between :data:`BEGIN` and :data:`END` markers, so prose written
    around them in the section stays; a section without markers gets its whole body replaced,
    and a README without the section gets it appended."""
    block = f"{BEGIN}\n{body.rstrip()}\n{END}\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, ln in enumerate(lines) if ln.rstrip() == SECTION), None)
    if start is None:
        return text.rstrip("\n") + f"\n\n{SECTION}\n\n{block}"
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
               len(lines))
    inside = "".join(lines[start + 1:end])
    if BEGIN in inside and END in inside:
        head, rest = inside.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        inside = head + block + ("\n" + tail if tail else "")
    else:
        inside = "\n" + block
    rest_of_text = "".join(lines[end:])
    return "".join(lines[:start + 1]) + inside.rstrip("\n") + "\n" + (
        "\n" + rest_of_text if rest_of_text else "")


def write_report(results: dict[str, Any], out: Path, readme: Path | None = None) -> Path:
    """Write report.json and report.md to ``out`` (and the README section); returns the .md."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(to_json(results), indent=2) + "\n")
    md = markdown(results)
    (out / "report.md").write_text("# seqstream evaluate\n\n" + md)
    if readme is not None:
        readme.write_text(replace_section(readme.read_text(), md))
    return out / "report.md"
