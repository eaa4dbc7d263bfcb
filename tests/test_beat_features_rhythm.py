"""The beat features' rhythm references on synthetic rhythms a cardiologist would name.

Two failure modes the references must avoid (README, Quality): in bigeminy the ectopic beats
must not become the references that the ectopic beats are judged against, and in an irregularly
irregular rhythm (atrial fibrillation) a short RR of a normal beat must not look as premature as
a true premature beat in a regular rhythm. The rhythm rule (Dash et al. 2009) must mark atrial
fibrillation irregular and neither sinus rhythm nor bigeminy, the same in any chunks, and where
it holds the S part leaves ``p_abnormal``. The detector is a stand-in that reports the samples
above 0.5 (``stream.beats._Demo``), so the beats are exactly where the test puts them.
"""

from __future__ import annotations

import numpy as np
import pytest

from stream.beats import AF_WINDOW, FEATURES, BeatFeatures, DecidedBeat, _Demo, without_sveb

FS = 360.0
PRE_Z = FEATURES.index("pre_rr_z")


def _narrow(n: int) -> np.ndarray:
    """A normal beat: a sharp peak (the one sample above 0.5) with a small T-like bump."""
    x = np.zeros(n)
    x[0] = 1.0
    x[1:4] = [0.4, 0.2, 0.1]
    x[90:126] = 0.15 * np.sin(np.linspace(0, np.pi, 36))
    return x


def _wide(n: int) -> np.ndarray:
    """A ventricular beat: the same detected peak on a wide, deep biphasic complex."""
    x = np.zeros(n)
    x[0] = 1.0
    x[1:60] = -0.45 * np.sin(np.linspace(0, np.pi, 59))
    return x


def _record(rr_s: list[float], wide: set[int]) -> np.ndarray:
    """Beats at the given RR intervals (seconds), beat ``k`` wide when ``k in wide``."""
    peaks = np.round(np.cumsum([1.0, *rr_s]) * FS).astype(int)
    sig = np.zeros(peaks[-1] + 4 * int(FS))
    for k, p in enumerate(peaks):
        shape = _wide if k in wide else _narrow
        sig[p:p + 200] += shape(200)
    return sig


def _decided(sig: np.ndarray) -> list[DecidedBeat]:
    feats = BeatFeatures(FS, detector=_Demo())
    return feats.extract(feats.initial(1), [sig])[0]


def _features(sig: np.ndarray) -> np.ndarray:
    return np.stack([b.features for b in _decided(sig)])


def test_in_bigeminy_the_ventricular_beats_stay_premature() -> None:
    # 20 normal beats at 0.8 s, then 60 beats of bigeminy: each wide beat 0.5 s after a normal
    # one, followed by a 1.1 s compensatory pause
    rr = [0.8] * 20 + [0.5, 1.1] * 30
    wide = {21 + 2 * k for k in range(30)}
    x = _features(_record(rr, wide))
    late = [k for k in sorted(wide) if k > 40]
    normal_late = [k + 1 for k in late if k + 1 < len(x)]
    # the references are the normal beats' rhythm, so every late ectopic beat is far below it
    # and the normal beats after the pause are not
    assert np.all(x[late, PRE_Z] < -2.0)
    assert np.all(np.abs(x[normal_late, PRE_Z]) < 2.0)
    dist = x[:, FEATURES.index("dist")]
    assert dist[normal_late].max() < 0.5 * dist[late].min()  # the template stayed normal


def test_a_short_rr_in_an_irregular_rhythm_is_less_premature_than_a_true_premature_beat() -> None:
    rng = np.random.default_rng(3)
    irregular = _features(_record(list(rng.uniform(0.55, 1.15, 120)), set()))
    regular = _features(_record([0.8] * 30 + [0.6, 1.0] + [0.8] * 10, set()))
    premature = regular[31, PRE_Z]  # the beat 0.6 s after its predecessor
    af = irregular[20:, PRE_Z]
    assert premature < np.quantile(af, 0.02)


def test_atrial_fibrillation_is_irregular_and_sinus_rhythm_and_bigeminy_are_not() -> None:
    rng = np.random.default_rng(5)
    af = _decided(_record(list(rng.uniform(0.45, 1.15, 300)), set()))
    sinus = _decided(_record(list(0.8 + rng.normal(0.0, 0.02, 300)), set()))
    rr = [0.8] * 20 + [0.5, 1.1] * 140
    bigeminy = _decided(_record(rr, {21 + 2 * k for k in range(140)}))
    assert len(af) > AF_WINDOW + 100
    assert not any(b.irregular for b in af[:AF_WINDOW])  # the rule needs 128 RRs
    assert np.mean([b.irregular for b in af[AF_WINDOW + 1:]]) > 0.95
    assert not any(b.irregular for b in sinus + bigeminy)


def test_the_rhythm_rule_is_the_same_in_any_chunks() -> None:
    rng = np.random.default_rng(8)
    sig = _record([0.8] * 60 + list(rng.uniform(0.45, 1.15, 200)) + [0.7] * 200, set())
    feats = BeatFeatures(FS, detector=_Demo())
    offline = feats.extract(feats.initial(1), [sig])[0]
    assert {b.irregular for b in offline} == {True, False}
    state, got, pos = feats.initial(1), [], 0
    while pos < len(sig):
        k = int(rng.choice([1, 50, 360, 2000]))
        got.extend(feats.extract(state, [sig[pos:pos + k]])[0])
        pos += k
    assert [(b.sample, b.decided, b.irregular) for b in got] == \
        [(b.sample, b.decided, b.irregular) for b in offline]
    assert all(np.array_equal(a.features, b.features) for a, b in zip(got, offline, strict=True))


def test_where_the_rhythm_is_irregular_the_s_part_leaves_p_abnormal() -> None:
    p = np.array([0.9, 0.9, 0.8])
    logits = np.array([[0.0, 2.0, 0.0, -1.0], [0.0, 2.0, 0.0, -1.0], [0.0, -1.0, 3.0, 0.0]],
                      dtype=np.float32)
    q, g = without_sveb(p, logits, np.array([False, True, True]))
    assert q[0] == p[0] and np.array_equal(g[0], logits[0])
    for k in (1, 2):
        e = np.exp(logits[k, 1:].astype(np.float64))
        assert q[k] == pytest.approx(p[k] * (e[1] + e[2]) / e.sum(), rel=1e-6)
        assert int(np.argmax(g[k, 1:])) == 1  # V, never S
    assert q[2] > 0.95 * p[2]  # a confident V keeps almost all of its probability
    assert q[1] < 0.5 * p[1]  # a confident S loses most of it
