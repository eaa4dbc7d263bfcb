"""The beat features' rhythm references on synthetic rhythms a cardiologist would name.

Two failure modes the references must avoid (README, Quality): in bigeminy the ectopic beats
must not become the references that the ectopic beats are judged against, and in an irregularly
irregular rhythm (atrial fibrillation) a short RR of a normal beat must not look as premature as
a true premature beat in a regular rhythm. The detector is a stand-in that reports the samples
above 0.5 (``stream.beats._Demo``), so the beats are exactly where the test puts them.
"""

from __future__ import annotations

import numpy as np

from stream.beats import FEATURES, BeatFeatures, _Demo

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


def _features(sig: np.ndarray) -> np.ndarray:
    feats = BeatFeatures(FS, detector=_Demo())
    return np.stack([b.features for b in feats.extract(feats.initial(1), [sig])[0]])


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
