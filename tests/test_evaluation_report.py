"""The report: JSON without NaN, the tables from real assessed numbers, and the README's
``## Quality`` section replaced in place without touching the rest (fast tier)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from seqstream.evaluation.assess import detector_metrics
from seqstream.evaluation.entity_scale import entity_scaled, typical_log_peak
from seqstream.evaluation.labels import Labels
from seqstream.evaluation.report import BEGIN, END, markdown, replace_section, to_json, write_report

README = "# proj\n\nintro\n\n## Quality\n\nold table\n\n## Tests\n\nrun them\n"


def test_quality_section_is_replaced_and_the_rest_kept() -> None:
    out = replace_section(README, "| new | table |\n")
    assert out == ("# proj\n\nintro\n\n## Quality\n\n" + BEGIN + "\n| new | table |\n" + END
                   + "\n\n## Tests\n\nrun them\n")
    assert replace_section(out, "| new | table |\n") == out  # idempotent


def test_prose_around_the_generated_tables_stays() -> None:
    text = (f"# p\n\n## Quality\n\nWhy it falls short.\n\n{BEGIN}\nold\n{END}\n\n"
            "What would close it.\n\n## Next\n\nx\n")
    out = replace_section(text, "new\n")
    assert out == (f"# p\n\n## Quality\n\nWhy it falls short.\n\n{BEGIN}\nnew\n{END}\n\n"
                   "What would close it.\n\n## Next\n\nx\n")


def test_quality_section_is_appended_when_missing() -> None:
    out = replace_section("# proj\n\ntext\n", "body\n")
    assert out == f"# proj\n\ntext\n\n## Quality\n\n{BEGIN}\nbody\n{END}\n"


def test_quality_section_at_the_end_is_replaced() -> None:
    out = replace_section("# p\n\n## Quality\n\nold\n", "new\n")
    assert out == f"# p\n\n## Quality\n\n{BEGIN}\nnew\n{END}\n"


def test_json_has_null_for_nan_and_plain_numbers() -> None:
    got = to_json({"a": float("nan"), "b": np.float32(0.5), "c": np.arange(2), "d": (1, None)})
    assert got == {"a": None, "b": 0.5, "c": [0, 1], "d": [1, None]}
    json.dumps(got, allow_nan=False)


def _results() -> dict:
    lab = Labels.from_beats([400, 800, 1200, 1600], ["N", "VEB", "SVEB", "N"])
    s = np.zeros(2000)
    s[790:800] = 9.0
    s[1590] = 7.0
    metrics = {rule: detector_metrics("beats", [s], [lab], thr, 1 / 360, 360, ["r1"])
               for rule, thr in (("calibrated", 8.0), ("best_f1", 5.0))}
    det = {"label": "net", **metrics}
    return {
        "created_at": "now", "command": "seqstream evaluate --model m",
        "artifact": {"model_id": "abcdef0123456789", "name": "ecg"},
        "settings": {"warmup": 360},
        "data": {"kind": "beats", "test_source": "hand-made", "series": 1, "hours": 0.0015,
                 "events": 2, "counts": {"N": 2, "SVEB": 1, "VEB": 1, "F": 0, "Q": 0},
                 "validation": ["100"]},
        "detectors": {"seqstream": det},
        "forecast": {"mae": [0.1], "rmse": [0.2], "mae_persistence": [0.2],
                     "rmse_persistence": [0.3], "mase": 0.5, "features": ["MLII"]},
        "targets": {"f1": metrics["calibrated"]["all"]["f1"], "best_baseline": "x",
                    "best_baseline_f1": 0.1, "f1_met": True, "mase_met": True},
        "live": None,
    }


def test_markdown_rows_show_the_assessed_numbers(tmp_path) -> None:
    results = _results()
    # threshold 8: the VEB is flagged (precision 1, recall 1/2); SVEB missed -> F1 2/3
    calibrated = results["detectors"]["seqstream"]["calibrated"]
    assert calibrated["all"]["f1"] == 2 / 3
    assert calibrated["per_class"]["SVEB"]["f1"] == 0.0
    md = markdown(results)
    row = next(ln for ln in md.splitlines() if "(calibrated)" in ln)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2:5] == ["1.000", "0.500", "**0.667**"]
    assert "MASE" in md and "**0.500**" in md
    readme = tmp_path / "README.md"
    readme.write_text(README)
    write_report(results, tmp_path / "out", readme)
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["detectors"]["seqstream"]["calibrated"]["all"]["f1"] == 2 / 3
    text = readme.read_text()
    assert text.startswith(f"# proj\n\nintro\n\n## Quality\n\n{BEGIN}\nModel `abcdef012345`")
    assert text.endswith("## Tests\n\nrun them\n") and "old table" not in text


def test_entity_scale_of_a_hand_made_series() -> None:
    # h = 1 s (g = 1/2), tau = 2 s (alpha = 1/2), mu_0 = ln 2 (typical peak 2):
    # t1: 4 / 2 = 2; p = 4; mu = ln2 + (ln4 - ln2)/2 = 1.5 ln2 -> 2^1.5
    # t2: 1 / 2^1.5; p = max(1, 2) = 2; mu = 1.5 ln2 + (ln2 - 1.5 ln2)/2 = 1.25 ln2
    # t3: 8 / 2^1.25
    s = np.array([np.nan, 4.0, 1.0, 8.0])
    out = entity_scaled(s, period_s=1.0, log_peak0=np.log(2.0), peak_hold_s=1.0,
                        average_s=2.0)
    assert np.isnan(out[0])
    np.testing.assert_allclose(out[1:], [2.0, 2 ** -1.5, 8 * 2 ** -1.25])


def test_typical_log_peak_averages_the_peak_hold_over_normal_samples() -> None:
    # peak hold with g = 1/2: 4, 2, 3 -> ln of them; only samples 1 and 2 are normal
    mu = typical_log_peak([np.array([4.0, 1.0, 3.0])], [np.array([False, True, True])],
                          period_s=1.0, peak_hold_s=1.0)
    # float64 rounding only: the peak hold runs in log space (stream.entity_scale)
    assert mu == pytest.approx(np.mean(np.log([2.0, 3.0])), rel=1e-12)
