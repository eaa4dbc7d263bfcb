"""The README's promises that code can check: the Quickstart commands and the settings table."""

from __future__ import annotations

import re
from pathlib import Path

from stream.settings import describe

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def test_every_setting_is_in_the_configuration_table_and_nothing_else():
    documented = set(re.findall(r"^\| `(SEQSTREAM_[A-Z_]+)` \|", README, flags=re.M))
    assert documented == {var for var, _, _ in describe()}


def test_ci_runs_exactly_the_quickstart_test_command():
    quickstart = README.split("## Quickstart", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in quickstart.strip().splitlines()]
    assert commands == ["./run demo", "./run test"]
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert "./run test" in [line.strip() for line in ci]
