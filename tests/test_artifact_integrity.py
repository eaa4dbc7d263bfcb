"""An exported artifact loads back to the same network, and any edit to it is refused.

The worker trusts the artifact to rebuild the exact network training produced; the card and the
weights travel as two files, so a load must catch one of them edited or swapped.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stream.artifact import CARD, WEIGHTS, load_artifact, save_artifact
from stream.errors import ArtifactError
from stream.model import Forecaster


def _card() -> dict:
    return {
        "features": [{"name": "MLII", "unit": "mV"}, {"name": "V1", "unit": "mV"}],
        "scaler": {"mean": [-0.3, 0.1], "std": [0.2, 0.4]},
        "period_s": 1 / 360,
        "score": {"kind": "rms_z", "residual_scale": [0.05, 0.07]},
        "threshold": {"value": 4.2, "method": "quantile", "quantile": 0.999},
        "data": {"source": "test"},
        "metrics": {},
        "version": "test",
    }


@pytest.fixture
def exported(tmp_path: Path) -> tuple[Forecaster, Path, str]:
    torch.manual_seed(3)
    net = Forecaster("lstm", n_features=2, hidden_size=6, num_layers=2, horizon=2).eval()
    model_id = save_artifact(net, _card(), tmp_path / "art")
    return net, tmp_path / "art", model_id


def test_round_trip_gives_the_same_forecasts(exported) -> None:
    net, path, model_id = exported
    art = load_artifact(path)
    assert art.model_id == model_id and len(model_id) == 64
    assert art.card["architecture"] == net.config()
    seq = torch.randn(2, 30, 2)
    with torch.no_grad():
        assert torch.equal(art.model(seq)[0], net(seq)[0])
    assert art.threshold == _card()["threshold"]["value"]
    x = art.scale(art.unscale(seq.numpy()))
    assert abs(x - seq.numpy()).max() < 1e-6


def test_the_weights_file_holds_no_pickle(exported) -> None:
    _, path, _ = exported
    raw = (path / WEIGHTS).read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + header_len])  # safetensors: a JSON header, then raw tensors
    assert "rnn.weight_ih_l0" in header
    assert b"\x80\x04" not in raw[:2] and not raw.startswith(b"PK")  # no pickle, no zip


def test_an_edited_card_is_refused_with_one_clear_message(exported) -> None:
    _, path, _ = exported
    card = json.loads((path / CARD).read_text())
    card["threshold"]["value"] = 99.0
    (path / CARD).write_text(json.dumps(card))
    with pytest.raises(ArtifactError) as info:
        load_artifact(path)
    msg = str(info.value)
    assert "does not match" in msg and "\n" not in msg


def test_edited_weights_are_refused(exported) -> None:
    _, path, _ = exported
    raw = bytearray((path / WEIGHTS).read_bytes())
    raw[-1] ^= 0x01  # one bit of the last tensor
    (path / WEIGHTS).write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="does not match"):
        load_artifact(path)


def test_weights_of_another_export_are_refused(exported, tmp_path: Path) -> None:
    _, path, _ = exported
    other = Forecaster("lstm", n_features=2, hidden_size=6, num_layers=2, horizon=2)
    save_artifact(other, _card(), tmp_path / "other")
    (path / WEIGHTS).write_bytes((tmp_path / "other" / WEIGHTS).read_bytes())
    with pytest.raises(ArtifactError, match="different exports"):
        load_artifact(path)


def test_a_missing_or_unreadable_artifact_says_what_it_expected(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no such directory"):
        load_artifact(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / CARD).write_text("{not json")
    (tmp_path / "half" / WEIGHTS).write_bytes(b"")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_artifact(tmp_path / "half")


def test_a_card_without_required_fields_is_not_exported(tmp_path: Path) -> None:
    card = _card()
    del card["threshold"]
    with pytest.raises(ArtifactError, match="missing threshold"):
        save_artifact(Forecaster("gru", 2, 4), card, tmp_path / "x")


def test_loads_in_a_process_without_lightning(exported) -> None:
    _, path, model_id = exported
    code = (
        "import sys\n"
        "from stream.artifact import load_artifact\n"
        f"art = load_artifact({str(path)!r})\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('lightning', 'pytorch_lightning', 'training'))\n"
        "print(art.model_id, bad)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.split() == [model_id, "[]"]
