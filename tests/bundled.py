"""Tier-1 test data: what ships with the repository, in ``../shared/data``'s layout.

- ``mitdb``: the MIT-BIH records bundled with the package (``training/bundled/mitdb``, ODC-By).
- ``nab``: eight real NAB series and NAB's label file (``tests/data/nab``, MIT licence).
- ``skab``: files in SKAB's exact format written here. SKAB's data are GPL-3.0; copying them
  into this Apache-2.0 repository would put copyleft files beside the code, so tier 1 checks the
  SKAB reader on generated experiments instead, and tier 2 checks both the reader on the real
  files and that these generated files have the real ones' columns and encoding.

A generated experiment mimics the water-pump testbed: eight sensors near steady levels with
noise, then a fault (a valve closing at the pump inlet: pressure and flow fall) labelled
``anomaly`` = 1 for its rows, ``changepoint`` = 1 at its first and last row. Rows are about a
second apart, some two (SKAB's own logging jitter).

>>> import tempfile
>>> tmp = tempfile.TemporaryDirectory()
>>> root = write_skab_like(Path(tmp.name))
>>> sorted(str(p.relative_to(root / "data")) for p in (root / "data").glob("*/*.csv"))
['anomaly-free/anomaly-free.csv', 'valve1/0.csv', 'valve1/1.csv', 'valve1/2.csv']
>>> first = (root / "data" / "valve1" / "0.csv").read_text().splitlines()[1].split(";")
>>> first[0], first[-2:]
('2020-03-09 10:00:00', ['0.0', '0.0'])
>>> tmp.cleanup()
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from training.sources import BUNDLED_MITDB

__all__ = ["BUNDLED_MITDB", "BUNDLED_NAB", "SKAB_SENSORS", "link_bundled", "write_skab_like"]

BUNDLED_NAB = Path(__file__).resolve().parent / "data" / "nab"

# sensor: (steady level, noise std, relative change during the valve fault)
SKAB_SENSORS = {
    "Accelerometer1RMS": (0.0266, 0.0008, 0.05),
    "Accelerometer2RMS": (0.0401, 0.0010, 0.05),
    "Current": (1.33, 0.25, -0.10),
    "Pressure": (0.055, 0.030, -0.60),
    "Temperature": (79.3, 0.10, 0.00),
    "Thermocouple": (26.0, 0.02, 0.00),
    "Voltage": (233.0, 3.0, 0.00),
    "Volume Flow RateRMS": (32.0, 0.4, -0.25),
}
SKAB_ROWS = 600  # per generated experiment


def _experiment(seed: int, labelled: bool) -> pd.DataFrame:
    """One generated experiment in SKAB's columns (labels only when ``labelled``)."""
    rng = np.random.default_rng(seed)
    steps = np.where(rng.random(SKAB_ROWS) < 0.03, 2, 1)
    start = pd.Timestamp("2020-03-09 10:00:00") + pd.Timedelta(hours=seed)
    stamps = start + pd.to_timedelta(np.concatenate([[0], np.cumsum(steps[1:])]), unit="s")
    frame = pd.DataFrame({"datetime": stamps.strftime("%Y-%m-%d %H:%M:%S")})
    lo, hi = int(0.4 * SKAB_ROWS), int(0.75 * SKAB_ROWS)
    fault = np.zeros(SKAB_ROWS, dtype=bool)
    if labelled:
        fault[lo:hi] = True
    for name, (level, noise, change) in SKAB_SENSORS.items():
        frame[name] = (level * (1 + change * fault) + rng.normal(0, noise, SKAB_ROWS)).round(6)
    if labelled:
        frame["anomaly"] = fault.astype(float)
        frame["changepoint"] = 0.0
        frame.loc[[lo, hi - 1], "changepoint"] = 1.0
    return frame


def write_skab_like(root: Path) -> Path:
    """Generated SKAB experiments under ``root/data`` (``;``-separated, as SKAB ships them):
    three valve1 runs with a labelled fault and an anomaly-free run without label columns."""
    files = {"valve1/0.csv": True, "valve1/1.csv": True, "valve1/2.csv": True,
             "anomaly-free/anomaly-free.csv": False}
    for seed, (name, labelled) in enumerate(files.items()):
        path = root / "data" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        _experiment(seed, labelled).to_csv(path, sep=";", index=False)
    return root


def link_bundled(root: Path) -> Path:
    """``root`` laid out like ``../shared/data`` with the tier-1 data: ``mitdb`` and ``nab``
    link to the shipped files, ``skab`` holds generated experiments."""
    (root / "mitdb").symlink_to(BUNDLED_MITDB, target_is_directory=True)
    (root / "nab").symlink_to(BUNDLED_NAB, target_is_directory=True)
    write_skab_like(root / "skab")
    return root
