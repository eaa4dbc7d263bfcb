"""The model artifact: the contract between training and the stream worker.

A directory with two files, and nothing that can execute code when read:

- ``weights.safetensors``: the network's tensors (safetensors never unpickles);
- ``card.json``: how to rebuild and use them — ``architecture`` (the :class:`Forecaster` arguments),
  ``features`` (name and unit each), ``scaler`` (per-feature mean and std of the training part),
  ``period_s``, ``score`` and ``threshold`` (see :mod:`stream.scoring`), the ``data`` it was trained
  on, test ``metrics``, ``created_at``, ``version`` and ``model_id``.

``model_id`` is the sha256 over the weights file's bytes and the card's canonical JSON (sorted keys,
without ``model_id`` itself), so any edit to either changes the id and a load that recomputes it
detects tampering or a card paired with the wrong weights. The worker keys entity state by it, so
state written by one model is never fed to another.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from stream.errors import ArtifactError
from stream.model import Forecaster

__all__ = ["CARD", "FORMAT", "WEIGHTS", "Artifact", "load_artifact", "save_artifact"]

WEIGHTS = "weights.safetensors"
CARD = "card.json"
FORMAT = "seqstream-artifact/1"
REQUIRED = ("architecture", "features", "scaler", "period_s", "score", "threshold")


@dataclass(frozen=True)
class Artifact:
    """A loaded, verified artifact: the network in eval mode and its card."""

    model: Forecaster
    card: dict[str, Any]
    model_id: str
    mean: np.ndarray  # per-feature scaler, float32
    std: np.ndarray

    @property
    def n_features(self) -> int:
        return self.model.n_features

    @property
    def threshold(self) -> float:
        return float(self.card["threshold"]["value"])

    def scale(self, values: np.ndarray) -> np.ndarray:
        """User units → the network's units (per feature)."""
        return ((values - self.mean) / self.std).astype(np.float32, copy=False)

    def unscale(self, values: np.ndarray) -> np.ndarray:
        """The network's units → user units (per feature, last axis)."""
        return values * self.std + self.mean


def _model_id(weights: bytes, card: dict[str, Any]) -> str:
    body = {k: v for k, v in card.items() if k != "model_id"}
    digest = hashlib.sha256(weights)
    digest.update(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    return digest.hexdigest()


def save_artifact(model: Forecaster, card: dict[str, Any], directory: str | Path) -> str:
    """Write ``model`` and ``card`` (without architecture/model_id; both are filled in) to
    ``directory``; return the model_id."""
    missing = [k for k in REQUIRED if k not in card and k != "architecture"]
    if missing:
        raise ArtifactError(f"card: expected fields {', '.join(REQUIRED)}, missing "
                            f"{', '.join(missing)}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(directory / WEIGHTS))
    full = {"format": FORMAT, "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            **card, "architecture": model.config()}
    full["model_id"] = _model_id((directory / WEIGHTS).read_bytes(), full)
    (directory / CARD).write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")
    return full["model_id"]


def load_artifact(directory: str | Path) -> Artifact:
    """Load and verify an artifact; every failure is one :class:`ArtifactError` line."""
    directory = Path(directory)
    if not (directory / CARD).is_file() or not (directory / WEIGHTS).is_file():
        raise ArtifactError(f"artifact {directory}: expected a directory with {CARD} and "
                            f"{WEIGHTS}, found "
                            + (", ".join(sorted(p.name for p in directory.iterdir())) or "nothing"
                               if directory.is_dir() else "no such directory"))
    try:
        card = json.loads((directory / CARD).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as ex:
        raise ArtifactError(f"artifact {directory}: {CARD} is not valid JSON ({ex})") from ex
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        raise ArtifactError(f"artifact {directory}: expected {CARD} with format {FORMAT!r}, "
                            f"got {card.get('format') if isinstance(card, dict) else card!r}")
    missing = [k for k in (*REQUIRED, "model_id") if k not in card]
    if missing:
        raise ArtifactError(f"artifact {directory}: {CARD} lacks {', '.join(missing)}")
    weights = (directory / WEIGHTS).read_bytes()
    if _model_id(weights, card) != card["model_id"]:
        raise ArtifactError(f"artifact {directory}: {CARD} does not match {WEIGHTS} "
                            f"(model_id {card['model_id'][:12]}… differs from the sha256 of "
                            "their contents: one was edited or they come from different exports)")
    try:
        model = Forecaster(**card["architecture"])
        model.load_state_dict(load_file(str(directory / WEIGHTS)), strict=True)
    except (SafetensorError, RuntimeError, TypeError) as ex:
        first = str(ex).strip().splitlines()[0]
        raise ArtifactError(f"artifact {directory}: weights do not fit the card's architecture "
                            f"{card['architecture']} ({first})") from ex
    mean = np.asarray(card["scaler"]["mean"], dtype=np.float32)
    std = np.asarray(card["scaler"]["std"], dtype=np.float32)
    if mean.shape != (model.n_features,) or std.shape != (model.n_features,) or not (
            np.all(std > 0) and all(math.isfinite(v) for v in [*mean, *std])):
        raise ArtifactError(f"artifact {directory}: scaler expected {model.n_features} finite "
                            f"means and positive stds, got {card['scaler']}")
    if len(card["features"]) != model.n_features:
        raise ArtifactError(f"artifact {directory}: card lists {len(card['features'])} features,"
                            f" the network takes {model.n_features}")
    return Artifact(model.eval(), card, card["model_id"], mean, std)
