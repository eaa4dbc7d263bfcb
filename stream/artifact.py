"""The model artifact: the contract between training and the stream worker.

A directory with two files, and nothing that can execute code when read:

- ``weights.safetensors``: the network's tensors (safetensors never unpickles);
- ``card.json``: how to rebuild and use them — ``architecture`` (the :class:`Forecaster` arguments),
  ``features`` (name and unit each), ``scaler`` (per-feature mean and std of the training part),
  ``period_s``, ``score`` and ``threshold`` (see :mod:`stream.scoring`), the ``data`` it was trained
  on, test ``metrics``, ``created_at``, ``version`` and ``model_id``; for ECG models optionally
  ``beats``: the beat classifier (:class:`stream.beats.BeatStage`: fs, lead name, features and
  their normalisation, threshold, classes, training data and validation figures), whose tensors
  sit in the same weights file under ``beat.``. ``Artifact.beats`` is None without it.

``model_id`` is the sha256 over the weights file's bytes and the card's canonical JSON (sorted keys,
without ``model_id`` itself), so any edit to either changes the id and a load that recomputes it
detects tampering or a card paired with the wrong weights. The worker keys entity state by it, so
state written by one model is never fed to another.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from stream.beats import BeatStage
from stream.entity_scale import EntityScale
from stream.errors import ArtifactError
from stream.model import Forecaster
from stream.sensor_score import SensorScore

__all__ = ["CARD", "DEFAULT_ECG", "FORMAT", "WEIGHTS", "Artifact", "load_artifact",
           "save_artifact"]

WEIGHTS = "weights.safetensors"
CARD = "card.json"
FORMAT = "seqstream-artifact/1"
REQUIRED = ("architecture", "features", "scaler", "period_s", "score", "threshold")
BEAT_PREFIX = "beat."
# the ECG model shipped in the package (`seqstream train --config ecg` on MIT-BIH DS1; its
# README.md has the exact command), so a fresh clone has one without training
DEFAULT_ECG = Path(__file__).resolve().parent / "models" / "ecg"


@dataclass(frozen=True)
class Artifact:
    """A loaded, verified artifact: the network in eval mode, its card, and the card's scoring
    sections read and checked once, as typed fields (the engine and the offline replay use
    these, never the card dict, so they cannot disagree on what a card means).

    A card hand-built for a probe (training's calibration replay, a doctest) may lack
    ``threshold`` and ``period_s``: then :attr:`threshold` is None and :attr:`period_s` 0, and
    only what needs them (the engine; the per-entity scale) refuses it.
    """

    model: Forecaster
    card: dict[str, Any]
    model_id: str
    mean: np.ndarray  # per-feature scaler, float32
    std: np.ndarray
    beats: BeatStage | None = None
    score_kind: str = field(init=False)  # "rms_z", the only kind (stream.scoring)
    residual_scale: np.ndarray = field(init=False)  # [F] float64, positive
    period_s: float = field(init=False)  # seconds between samples; 0.0 when the card has none
    threshold: float | None = field(init=False)  # the card's threshold.value (finite)
    entity_scale: EntityScale | None = field(init=False)  # score.entity_scale
    sensor: SensorScore | None = field(init=False)  # score.sensor
    version: str = field(init=False)

    def __post_init__(self) -> None:
        card, f = self.card, self.model.n_features
        section = card.get("score", {})
        if section.get("kind") != "rms_z":
            raise ArtifactError(f"card score: expected kind 'rms_z', got {section.get('kind')!r}")
        scale = np.asarray(section.get("residual_scale", []), dtype=np.float64)
        if scale.shape != (f,) or not np.all(scale > 0):
            raise ArtifactError(f"card score.residual_scale: expected {f} positive numbers, got "
                                f"{section.get('residual_scale')!r}")
        period = card.get("period_s") or 0.0
        if not (isinstance(period, (int, float)) and math.isfinite(period) and period >= 0):
            raise ArtifactError(f"card period_s: expected the sampling period in seconds, got "
                                f"{period!r}")
        value = card.get("threshold", {}).get("value")
        threshold = None if value is None else float(value)
        if threshold is not None and not math.isfinite(threshold):
            raise ArtifactError(f"card threshold.value: expected a finite number, got {value!r}")
        entity_scale, sensor = EntityScale.from_card(card), SensorScore.from_card(card)
        if entity_scale is not None and sensor is not None:
            raise ArtifactError("card score: expected entity_scale or sensor, got both")
        if entity_scale is not None and not period > 0:
            raise ArtifactError(f"card period_s: expected the sampling period in seconds (the "
                                f"per-entity scale decays by it), got {card.get('period_s')!r}")
        for name, typed in (("score_kind", "rms_z"), ("residual_scale", scale),
                            ("period_s", float(period)), ("threshold", threshold),
                            ("entity_scale", entity_scale), ("sensor", sensor),
                            ("version", str(card.get("version", "unknown")))):
            object.__setattr__(self, name, typed)

    @property
    def n_features(self) -> int:
        return self.model.n_features

    @property
    def flag_threshold(self) -> float:
        """What a score is flagged against: the sensor score's margin with a ``score.sensor``
        section, else the card's threshold (required here)."""
        if self.sensor is not None:
            return self.sensor.margin
        if self.threshold is None:
            raise ArtifactError("card threshold: expected {'value': number} to flag scores "
                                "against, got none")
        return self.threshold

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


def save_artifact(model: Forecaster, card: dict[str, Any], directory: str | Path,
                  beats: BeatStage | None = None) -> str:
    """Write ``model`` and ``card`` (without architecture/model_id; both are filled in) to
    ``directory``, with the beat stage's network and card section when given (``card["beats"]``
    then adds to it, and must name the ``lead``); return the model_id."""
    missing = [k for k in REQUIRED if k not in card and k != "architecture"]
    if missing:
        raise ArtifactError(f"card: expected fields {', '.join(REQUIRED)}, missing "
                            f"{', '.join(missing)}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    card = dict(card)
    if beats is not None:
        if "lead" not in card.get("beats", {}):
            raise ArtifactError("card beats: expected the ECG lead's name (beats.lead) with a "
                                "beat stage, got none")
        tensors.update({BEAT_PREFIX + k: v.detach().cpu().contiguous()
                        for k, v in beats.net.state_dict().items()})
        card["beats"] = {**beats.card(), **card["beats"]}
        card["beats"]["threshold"] = {**card["beats"].get("threshold", {}),
                                      "value": beats.threshold}
    elif "beats" in card:
        raise ArtifactError("card beats: expected a beat stage with a beats section, got none")
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
        tensors = load_file(str(directory / WEIGHTS))
        model = Forecaster(**card["architecture"])
        model.load_state_dict({k: v for k, v in tensors.items()
                               if not k.startswith(BEAT_PREFIX)}, strict=True)
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
    beat_tensors = {k[len(BEAT_PREFIX):]: v for k, v in tensors.items()
                    if k.startswith(BEAT_PREFIX)}
    beats = None
    if "beats" in card:
        names = [f["name"] for f in card["features"]]
        lead = card["beats"].get("lead")
        if lead not in names:
            raise ArtifactError(f"artifact {directory}: beats.lead expected one of the card's "
                                f"features {names}, got {lead!r}")
        beats = BeatStage.from_card(card["beats"], beat_tensors, names.index(lead))
    elif beat_tensors:
        raise ArtifactError(f"artifact {directory}: {WEIGHTS} holds {BEAT_PREFIX}* tensors but "
                            f"{CARD} has no beats section")
    return Artifact(model.eval(), card, card["model_id"], mean, std, beats)
