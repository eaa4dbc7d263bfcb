"""Training twice with the same seed gives the same weights and the same test metrics (CPU)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from stream.artifact import WEIGHTS
from training.config import load_config
from training.fit import fit


def _tiny(out: Path, seed: int):
    cfg = load_config("ecg-bundled", {"data_entities": "106", "model_hidden_size": "8",
                              "data_max_windows": "64", "train_max_epochs": "2",
                              "train_limit_train_batches": "3", "train_limit_val_batches": "2",
                              "train_progress_bar": "false", "train_threads": "1",
                              "train_seed": str(seed), "output": str(out)})
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, split=(0.8, 0.1, 0.1)))


@pytest.mark.slow
def test_same_seed_same_metrics_other_seed_other_weights(tmp_path: Path) -> None:
    first = fit(_tiny(tmp_path / "a", 11))
    second = fit(_tiny(tmp_path / "b", 11))
    third = fit(_tiny(tmp_path / "c", 12))
    assert json.dumps(first.metrics, sort_keys=True) == json.dumps(second.metrics,
                                                                   sort_keys=True)
    assert (tmp_path / "a" / WEIGHTS).read_bytes() == (tmp_path / "b" / WEIGHTS).read_bytes()
    assert (tmp_path / "a" / WEIGHTS).read_bytes() != (tmp_path / "c" / WEIGHTS).read_bytes()
    assert first.metrics["forecast"]["mae"] != third.metrics["forecast"]["mae"]
