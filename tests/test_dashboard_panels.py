"""The provisioned Grafana dashboards as a user sees them, beyond their PromQL (which
``test_dashboards_promql.py`` checks): a sane schema version, panels that fit the grid without
overlapping, every panel with a unit that matches what it plots (or value mappings that name
its values) and a legend that names its series, and the dashboard Grafana opens at
``http://localhost:3000`` being one of these files.

Grafana itself cannot run here (no Docker engine), so this reads the JSON the way Grafana's
dashboard model does; docs/deployment.md has the smoke check for a running Compose deployment.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
GRID_COLUMNS = 24  # Grafana's dashboard grid is 24 columns wide
# 36: panels and queries name their datasource by reference ({type, uid}), as these do;
# 39: the newest schema of Grafana 10.3-11.x's dashboard migrator (the Compose file runs 11.2).
SCHEMA_VERSIONS = range(36, 40)
# Grafana's throughput units (packages/grafana-data/src/valueFormats/categories.ts)
PER_SECOND_UNITS = {"cps", "ops", "reqps", "rps", "wps", "iops"}
PER_MINUTE_UNITS = {"cpm", "opm", "rpm", "wpm"}


def _panels() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            out.append((f"{path.name}#{panel.get('id')} {panel.get('title')!r}", panel))
    return out


PANELS = _panels()
QUERY_PANELS = [(name, p) for name, p in PANELS if p.get("type") != "row"]


def _metrics(expr: str) -> set[str]:
    return set(re.findall(r"\b(seqstream_[a-z_]+)", expr))


def test_there_are_panels_to_check() -> None:
    assert DASHBOARDS and len(QUERY_PANELS) >= 10


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.name for p in DASHBOARDS])
def test_dashboard_schema_and_ids(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    version = dashboard.get("schemaVersion")
    assert isinstance(version, int) and version in SCHEMA_VERSIONS, (
        f"{path.name}: expected schemaVersion in {SCHEMA_VERSIONS}, got {version!r}")
    assert dashboard.get("uid") and dashboard.get("title")
    ids = [p.get("id") for p in dashboard["panels"]]
    assert all(isinstance(i, int) for i in ids), f"{path.name}: panel ids {ids}"
    assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids {ids}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.name for p in DASHBOARDS])
def test_panels_fit_the_grid_without_overlapping(path: Path) -> None:
    cells: dict[tuple[int, int], int] = {}
    for panel in json.loads(path.read_text())["panels"]:
        g = panel["gridPos"]
        assert g["w"] > 0 and g["h"] > 0 and g["x"] >= 0 and g["y"] >= 0, panel["title"]
        assert g["x"] + g["w"] <= GRID_COLUMNS, f"{panel['title']!r} sticks out: {g}"
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                other = cells.setdefault((x, y), panel["id"])
                assert other == panel["id"], f"panels {other} and {panel['id']} overlap"


@pytest.mark.parametrize(("name", "panel"), QUERY_PANELS, ids=[n for n, _ in QUERY_PANELS])
def test_panel_has_a_title_a_description_and_a_unit(name: str, panel: dict) -> None:
    """A unit that matches what the panel plots, or value mappings that name each value."""
    assert panel.get("title") and panel.get("description"), f"{name}: no title or description"
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    unit = defaults.get("unit")
    if not unit:  # a state panel names its values instead (0 -> "quiet", 1 -> "ALARM")
        assert defaults.get("mappings"), f"{name}: no unit and no value mappings"
        return
    exprs = [t["expr"] for t in panel["targets"]]
    metrics = set().union(*(_metrics(e) for e in exprs))
    if metrics and all("_seconds" in m for m in metrics):
        assert unit == "s", f"{name}: plots seconds, shows {unit!r}"
    if all("rate(" in e and "/" not in e for e in exprs) and all(
            m.endswith("_total") for m in metrics):
        if all(re.search(r"\*\s*60\s*$", e) for e in exprs):  # per minute
            assert unit in PER_MINUTE_UNITS and "per minute" in panel["title"], (
                f"{name}: plots counts per minute, shows {unit!r}")
        else:
            assert unit in PER_SECOND_UNITS and "/s" in panel["title"], (
                f"{name}: plots counter rates, shows {unit!r}")


@pytest.mark.parametrize(("name", "panel"), QUERY_PANELS, ids=[n for n, _ in QUERY_PANELS])
def test_panel_legend_names_its_series(name: str, panel: dict) -> None:
    targets = panel["targets"]
    assert targets, f"{name}: no query"
    ref_ids = [t["refId"] for t in targets]
    assert len(ref_ids) == len(set(ref_ids)), f"{name}: repeated refIds {ref_ids}"
    if panel["type"] == "table":  # columns are the label names: no legend to name
        assert all(t.get("format") == "table" and t.get("instant") for t in targets), name
        return
    legends = [t.get("legendFormat") for t in targets]
    assert all(legends), f"{name}: a query without legendFormat shows raw PromQL labels"
    assert len(set(legends)) == len(legends), f"{name}: two series share a legend {legends}"
    if panel["type"] == "timeseries":
        legend = panel.get("options", {}).get("legend", {})
        assert legend.get("showLegend") is True, f"{name}: legend hidden"
        assert legend.get("displayMode") in ("list", "table"), f"{name}: legend {legend}"


def test_grafana_opens_a_provisioned_dashboard() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    grafana = compose["services"]["grafana"]
    home = Path(grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    [provider] = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" /
                                 "seqstream.yml").read_text())["providers"]
    assert home.parent == Path(provider["options"]["path"])
    assert (GRAFANA / "dashboards" / home.name) in DASHBOARDS
    assert "3000:3000" in grafana["ports"]
