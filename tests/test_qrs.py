"""The online QRS detector: any chunking (and state saved as bytes between chunks) gives exactly
the offline beats; entities batched together equal each one alone; it finds the beats of a real
bundled record; EC57 matching on hand-made cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import wfdb

from seqstream.evaluation import qrs as qrs_cli
from seqstream.evaluation.ec57 import exclude, match, score, total
from seqstream.evaluation.labels import BEAT_SYMBOLS
from stream.qrs import QRSDetector, detect
from training.sources import BUNDLED_MITDB


def _lead(record: str, seconds: float | None = None) -> tuple[np.ndarray, float]:
    path = str(BUNDLED_MITDB / record)
    fs = wfdb.rdheader(path).fs
    sampto = None if seconds is None else round(seconds * fs)
    rec = wfdb.rdrecord(path, sampto=sampto, channel_names=["MLII"])
    return rec.p_signal[:, 0].astype(np.float64), float(rec.fs)


@pytest.fixture(scope="module")
def rec106() -> tuple[np.ndarray, float]:
    return _lead("106", 300.0)


def _stream(det: QRSDetector, x: np.ndarray, sizes: np.ndarray, via_bytes: bool) -> np.ndarray:
    st = det.initial(1)
    found, i = [], 0
    for k in sizes.tolist():
        if i >= len(x):
            break
        found.append(det.process(st, [x[i: i + k]])[0])
        i += k
        if via_bytes:
            st = np.frombuffer(st.tobytes(), dtype=det.state_dtype).copy()
    assert i >= len(x)
    return np.concatenate(found)


@pytest.mark.parametrize("seed", [0, 1])
def test_random_chunks_with_byte_round_trips_equal_the_offline_pass(rec106, seed):
    x, fs = rec106
    offline = detect(x, fs)
    assert len(offline) > 300  # 5 min of a 70-bpm record: the comparison is not vacuous
    rng = np.random.default_rng(seed)
    sizes = rng.choice([1, 2, 3, 7, 36, 100, 361, 2000], size=len(x))
    streamed = _stream(QRSDetector(fs), x, sizes, via_bytes=True)
    np.testing.assert_array_equal(streamed, offline)


def test_one_sample_chunks_equal_the_offline_pass(rec106):
    x, fs = rec106
    x = x[: round(40 * fs)]
    offline = detect(x, fs)
    assert len(offline) > 30
    streamed = _stream(QRSDetector(fs), x, np.ones(len(x), np.int64), via_bytes=False)
    np.testing.assert_array_equal(streamed, offline)


def test_peaks_are_ascending_and_reported_between_after_s_and_delay_s(rec106):
    x, fs = rec106
    det = QRSDetector(fs)
    st, seen, step = det.initial(1), [], 36
    for i in range(0, len(x), step):
        new = det.process(st, [x[i: i + step]])[0]
        # reported by the first call whose chunk reaches R + delay: the previous one ended
        # (at sample i - 1) before that
        assert np.all(new + det.delay_s * fs > i - 1)
        # ... and only once the samples up to after_s past the R peak were passed in
        assert np.all(min(i + step, len(x)) - 1 - new >= round(det.after_s * fs))
        seen.append(new)
    allp = np.concatenate(seen)
    assert np.all(np.diff(allp) > 0)


def test_entities_with_different_chunk_lengths_in_one_call_equal_each_alone():
    signals = [_lead(r, 120.0)[0] for r in ("100", "106", "215")]
    fs = 360.0
    det = QRSDetector(fs)
    alone = [detect(x, fs) for x in signals]
    # six entities: each record twice, offset so batches mix equal and unequal chunk lengths
    xs = [signals[0], signals[1], signals[2], signals[0][7:], signals[1], signals[2][100:]]
    expect = [alone[0], alone[1], alone[2], detect(xs[3], fs), alone[1], detect(xs[5], fs)]
    lengths = [36, 36, 50, 36, 1, 7]
    st = det.initial(len(xs))
    got: list[list[np.ndarray]] = [[] for _ in xs]
    pos = [0] * len(xs)
    rng = np.random.default_rng(3)
    while any(p < len(x) for p, x in zip(pos, xs, strict=True)):
        chunks = []
        for e, x in enumerate(xs):
            k = lengths[e] if rng.random() < 0.8 else int(rng.integers(0, 80))
            chunks.append(x[pos[e]: pos[e] + k])
            pos[e] += len(chunks[-1])
        for e, new in enumerate(det.process(st, chunks)):
            got[e].append(new)
    for e in range(len(xs)):
        np.testing.assert_array_equal(np.concatenate(got[e]), expect[e])
        assert len(expect[e]) > 100


def test_state_embedded_as_a_field_of_a_larger_row_advances_in_place(rec106):
    """How a stage that owns more state (beats, features) keeps the detector's row."""
    x, fs = rec106
    det = QRSDetector(fs)
    outer = np.zeros(2, np.dtype([("tag", "<i4"), ("qrs", det.state_dtype), ("z", "<f4")]))
    outer["qrs"] = det.initial(2)
    found: list[list[np.ndarray]] = [[], []]
    for i in range(0, len(x), 500):
        for e, new in enumerate(det.process(outer["qrs"], [x[i: i + 500], x[i: i + 250]])):
            found[e].append(new)
    assert int(outer["qrs"]["n"][0]) == len(x)
    np.testing.assert_array_equal(np.concatenate(found[0]), detect(x, fs))
    np.testing.assert_array_equal(np.concatenate(found[1]), detect(
        np.concatenate([x[i: i + 250] for i in range(0, len(x), 500)]), fs))


FROZEN = Path(__file__).parent / "data" / "qrs_beats.npz"


@pytest.fixture(scope="module")
def bundled() -> dict[str, np.ndarray]:
    """The MLII lead of every bundled record, whole (30 min each)."""
    return {p.stem: _lead(p.stem)[0] for p in sorted(BUNDLED_MITDB.glob("*.hea"))}


def test_whole_records_give_the_frozen_beats(bundled):
    """``tests/data/qrs_beats.npz`` holds the R peaks ``detect`` gave on each bundled record
    before its decisions were vectorised across rows (commit 8e2037a): any change to the
    detector's output, even one sample on one beat, fails here."""
    frozen = np.load(FROZEN)
    assert sorted(frozen.files) == sorted(bundled)
    for r, x in bundled.items():
        assert len(frozen[r]) > 1500
        np.testing.assert_array_equal(detect(x, 360.0), frozen[r], err_msg=r)


@pytest.mark.parametrize(("vector_rows", "vector_depth"), [(1, 0.0), (3, 0.0), (4, 0.5),
                                                          (10**9, 1.0)])
def test_bundled_records_batched_in_random_chunks_give_the_frozen_beats(
        bundled, vector_rows, vector_depth):
    """Every bundled record twice in one batch, in random chunks (often the same length for
    all, so many rows decide together), the states round-tripped through bytes: the frozen
    beats exactly, whether the decisions run as masked rounds over the rows (1, 0), one row at
    a time (10**9), or both in one call (3 or 4 rows at least)."""
    frozen = np.load(FROZEN)
    xs = [x for x in bundled.values() for _ in range(2)]
    expect = [frozen[r] for r in bundled for _ in range(2)]
    det = QRSDetector(360.0)
    det.vector_rows, det.vector_depth = vector_rows, vector_depth
    st = det.initial(len(xs))
    got: list[list[np.ndarray]] = [[] for _ in xs]
    pos = [0] * len(xs)
    rng = np.random.default_rng(vector_rows)
    while any(p < len(x) for p, x in zip(pos, xs, strict=True)):
        same = rng.random() < 0.5
        sizes = np.full(len(xs), 36) if same else rng.choice([0, 1, 7, 36, 360, 5000], len(xs))
        chunks = [x[p: p + k] for x, p, k in zip(xs, pos, sizes.tolist(), strict=True)]
        for e, new in enumerate(det.process(st, chunks)):
            got[e].append(new)
            pos[e] += len(chunks[e])
        if rng.random() < 0.1:
            st = np.frombuffer(st.tobytes(), dtype=det.state_dtype).copy()
    for e in range(len(xs)):
        np.testing.assert_array_equal(np.concatenate(got[e]), expect[e])


def test_finds_the_beats_of_bundled_record_100():
    x, fs = _lead("100")
    ann = wfdb.rdann(str(BUNDLED_MITDB / "100"), "atr")
    ref = ann.sample[[s in BEAT_SYMBOLS for s in ann.symbol]]
    s = score(ref, detect(x, fs), fs)
    assert s.se >= 0.99 and s.ppv >= 0.99, s


@pytest.mark.parametrize("fs_new", [250, 128])
def test_other_sampling_rates_find_the_beats(fs_new):
    """Record 106 (frequent V beats) resampled: every window and delay scales with fs."""
    x, fs = _lead("106", 600.0)
    y = scipy.signal.resample_poly(x, fs_new, round(fs))
    ann = wfdb.rdann(str(BUNDLED_MITDB / "106"), "atr", sampto=len(x))
    ref = np.round(ann.sample[[s in BEAT_SYMBOLS for s in ann.symbol]] * fs_new / fs)
    s = score(ref, detect(y, fs_new), fs_new)
    assert s.tp > 600 and s.se >= 0.99 and s.ppv >= 0.99, s


def test_state_is_a_fixed_size_plain_row():
    det = QRSDetector(360.0)
    assert not det.state_dtype.hasobject
    st = det.initial(4)
    assert st.nbytes == 4 * det.state_dtype.itemsize
    with pytest.raises(ValueError, match="one chunk per state row"):
        det.process(st, [np.zeros(3)])
    with pytest.raises(ValueError, match="fs >= 50"):
        QRSDetector(0.0)
    before = st.copy()
    with pytest.raises(ValueError, match="NaN or inf in the chunk of entity 2"):
        det.process(st, [np.zeros(3), np.zeros(5), np.array([0.0, np.nan, 0.0]), np.zeros(0)])
    assert st.tobytes() == before.tobytes()


def test_evaluation_command_prints_the_table_for_the_bundled_records(capsys):
    assert qrs_cli.main(["--start", "300"]) == 0
    out = capsys.readouterr().out.splitlines()
    records = sorted(p.stem for p in BUNDLED_MITDB.glob("*.hea"))
    k = len(records) + 1
    rows = {line.split()[0]: line.split() for line in out[1:k + 1]}
    assert set(rows) == {*records, "gross"}
    tp, fn, fp = (int(v) for v in rows["gross"][2:5])
    assert tp + fn == sum(int(rows[r][1]) for r in records)
    assert tp / (tp + fn) >= 0.99 and tp / (tp + fp) >= 0.99
    assert out[k + 1].startswith("R peak detected - reference: median")


# -- EC57 matching on hand-made cases -------------------------------------------------------


def test_match_pairs_each_beat_once_closest_first():
    fs = 100.0  # window 0.15 s = 15 samples
    ref = np.array([100, 200, 300])
    test = np.array([112, 95, 215, 216, 400])
    pairs = match(ref, test, fs)
    # 100 takes 95 (5 away, closer than 112); 200 takes 215 (15, inside); 300 has none
    assert sorted(map(tuple, pairs.tolist())) == [(0, 1), (1, 2)]
    s = score(ref, test, fs)
    assert (s.tp, s.fn, s.fp) == (2, 1, 3)
    assert s.se == pytest.approx(2 / 3) and s.ppv == pytest.approx(2 / 5)


def test_match_window_edges_and_shared_detection():
    fs = 100.0
    # one detection between two beats 20 samples apart matches only one of them
    assert len(match(np.array([100, 120]), np.array([110]), fs)) == 1
    # 15 samples is inside the window, 16 is not
    assert score(np.array([100]), np.array([115]), fs).tp == 1
    assert score(np.array([100]), np.array([116]), fs).tp == 0
    empty = score(np.array([], np.int64), np.array([], np.int64), fs)
    assert (empty.tp, empty.fn, empty.fp) == (0, 0, 0) and np.isnan(empty.se)


def test_gross_totals_pool_counts_and_spans_are_excluded():
    fs = 100.0
    a = score(np.array([0, 100]), np.array([0, 100, 150]), fs)  # TP 2, FP 1
    b = score(np.array([0, 100, 200]), np.array([0]), fs)  # TP 1, FN 2
    g = total([a, b])
    assert (g.tp, g.fn, g.fp) == (3, 2, 1)
    assert g.se == pytest.approx(3 / 5) and g.ppv == pytest.approx(3 / 4)
    assert exclude(np.array([10, 20, 30, 40]), [(15, 30), (40, 40)]).tolist() == [10]
