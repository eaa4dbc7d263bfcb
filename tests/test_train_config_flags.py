"""Configs: names resolve to shipped YAML, every field has a flag, flags win, typos fail."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from stream.errors import ConfigError
from training.config import CONFIG_DIR, Config, add_flags, load_config
from training.data import split_points
from training.sources import load_source


def _parser() -> argparse.ArgumentParser:
    from training.cli import configure

    parser = argparse.ArgumentParser()
    configure(parser)
    return parser


def test_every_config_field_has_a_flag() -> None:
    parser = argparse.ArgumentParser()
    add_flags(parser)
    dests = {a.dest for a in parser._actions}
    for f in dataclasses.fields(Config):
        if f.name in ("name", "output"):
            assert f.name in dests
            continue
        for inner in dataclasses.fields(f.default_factory()):
            assert f"{f.name}_{inner.name}" in dests


@pytest.mark.parametrize("name", ["ecg", "ecg-bundled", "ecg-large", "nab", "skab",
                                  "skab-free"])
def test_shipped_configs_load_and_point_at_real_data(name: str, shared_data: Path) -> None:
    cfg = load_config(name)
    assert cfg.name == name and cfg.output == f"artifacts/{name}"
    assert (CONFIG_DIR / f"{name}.yaml").is_file()
    d = cfg.data
    if name == "ecg-bundled":
        assert d.path == "bundled:mitdb"  # works on a machine without ../shared
    else:
        path = d.path.replace("../shared/data", str(shared_data))
        series = load_source(d.source, path, d.entities[:1], d.features)
        assert series and split_points(len(series[0].values), d.split)[0] > d.window


def test_flags_override_the_yaml() -> None:
    args = _parser().parse_args(["--config", "ecg", "--model-cell", "lstm", "--train-lr",
                                 "0.01", "--data-split", "0.5,0.25,0.25", "--train-progress-bar",
                                 "false", "--output", "/tmp/x"])
    flags = {k: v for k, v in vars(args).items() if k not in ("config", "print_config")}
    cfg = load_config(args.config, flags)
    assert cfg.model.cell == "lstm" and cfg.train.lr == 0.01
    assert cfg.data.split == (0.5, 0.25, 0.25) and cfg.train.progress_bar is False
    assert cfg.output == "/tmp/x" and cfg.model.hidden_size == load_config("ecg").model.hidden_size


def test_a_config_path_works_and_typos_fail(tmp_path: Path) -> None:
    good = tmp_path / "mine.yaml"
    good.write_text("data:\n  source: skab\n  window: 30\n")
    cfg = load_config(str(good))
    assert cfg.name == "mine" and cfg.data.window == 30
    bad = tmp_path / "typo.yaml"
    bad.write_text("model:\n  hiden_size: 30\n")
    with pytest.raises(ConfigError, match="unknown keys"):
        load_config(str(bad))
    with pytest.raises(ConfigError, match="expected one of"):
        load_config("no-such-config")
    with pytest.raises(ConfigError, match="--model-cell: expected one of rnn, lstm, gru"):
        load_config("ecg", {"model_cell": "transformer"})
    bad.write_text("train:\n  max_epochs: many\n")
    with pytest.raises(ConfigError, match=r"train\.max_epochs: expected int"):
        load_config(str(bad))


def test_print_config_needs_no_torch(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    code = ("import sys, json\n"
            "from seqstream.cli import main\n"
            "rc = main(['train', '--config', 'nab', '--print-config'])\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO_TORCH', rc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    text, last = out.stdout.rsplit("\n", 2)[0], out.stdout.strip().splitlines()[-1]
    assert json.loads(text)["data"]["source"] == "nab"
    assert last.split() == ["NO_TORCH", "0"]
