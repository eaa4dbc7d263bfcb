"""Every PromQL expression of the Grafana dashboards and the alert rules parses (promtool) and
refers only to metrics the worker exports (plus Prometheus' ``up``); the alert rules fire and
stay quiet as their unit tests say; Grafana's provisioning points at the dashboards and the
datasource they use."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
RULES = DEPLOY / "prometheus" / "rules" / "seqstream.yml"
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
PROMTOOL = shutil.which("promtool")

COUNTERS = ("seqstream_events_total", "seqstream_samples_total", "seqstream_predictions_total",
            "seqstream_anomalies_total", "seqstream_deadletters_total",
            "seqstream_skipped_total", "seqstream_resets_total", "seqstream_beats_total",
            "seqstream_abnormal_beats_total")
HISTOGRAMS = ("seqstream_latency_seconds", "seqstream_batch_seconds",
              "seqstream_redis_load_seconds", "seqstream_redis_save_seconds",
              "seqstream_model_step_seconds", "seqstream_stage_seconds", "seqstream_batch_size")
GAUGES = ("seqstream_active_entities", "seqstream_consumer_lag", "seqstream_model_info")
EXPORTED = frozenset((*COUNTERS, *GAUGES, "up",
                      *(h + s for h in HISTOGRAMS for s in ("_bucket", "_sum", "_count"))))

# Grafana replaces these before the query reaches Prometheus; any duration is valid for parsing.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}
KEYWORDS = frozenset(("and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
                      "group_right", "offset", "bool", "inf", "nan"))


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions,
    aggregations, keywords, label names or literals."""
    text = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\b\d+(\.\d+)?([eE][+-]?\d+)?([smhdwy]|ms)?\b", " ", text)  # numbers
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        following = text[match.end():].lstrip()
        if following.startswith("(") or match.group().lower() in KEYWORDS:
            continue  # a function or aggregation call, or an operator keyword
        names.add(match.group())
    return names


def _dashboard_exprs(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            else:
                yield from _dashboard_exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _dashboard_exprs(item)


def _grafana_to_promql(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def dashboard_exprs() -> list[tuple[str, str]]:
    return [(f"{path.name}: {expr}", _grafana_to_promql(expr)) for path in DASHBOARDS
            for expr in _dashboard_exprs(json.loads(path.read_text()))]


def rule_exprs() -> list[tuple[str, str]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [(rule.get("alert") or rule["record"], rule["expr"]) for g in groups
            for rule in g["rules"]]


def test_the_metric_name_extractor_is_not_blind() -> None:
    expr = ('sum by (reason) (rate(seqstream_deadletters_total{reason!="x"}[5m])) / ignoring '
            '(reason) group_left clamp_min(sum(rate(foo_total[1m] offset 10m)), 1e-9) > 0.01 '
            'and on (instance) up{job="a b"} == 0 or absent(bar)')
    assert metric_names(expr) == {"seqstream_deadletters_total", "foo_total", "up", "bar"}
    assert metric_names("histogram_quantile(0.99, sum by (le) (rate(x_bucket[$__r])))") == {
        "x_bucket"}


def test_there_are_dashboards_and_rules() -> None:
    assert DASHBOARDS, "expected Grafana dashboards under deploy/grafana/dashboards/"
    assert len(dashboard_exprs()) >= 10 and len(rule_exprs()) >= 4


@pytest.mark.parametrize(("where", "expr"), dashboard_exprs() + rule_exprs())
def test_expression_uses_only_exported_metrics(where: str, expr: str) -> None:
    names = metric_names(expr)
    assert names, f"{where}: no metric found"
    assert names <= EXPORTED, f"{where}: unknown metrics {sorted(names - EXPORTED)}"


def test_every_exported_metric_is_on_a_dashboard() -> None:
    used = set().union(*(metric_names(e) for _, e in dashboard_exprs()))
    families = {n.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count")
                for n in used}
    missing = {*COUNTERS, *GAUGES, *HISTOGRAMS} - families
    assert not missing, f"metrics on no panel: {sorted(missing)}"


def test_no_panel_or_rule_groups_by_entity() -> None:
    exprs = [e for _, e in dashboard_exprs() + rule_exprs()]
    assert not [e for e in exprs if "entity" in e], "no metric carries the entity id"


def _promtool(*args: str) -> subprocess.CompletedProcess:
    assert PROMTOOL, "promtool is needed (Debian package prometheus, /usr/bin/promtool)"
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60)


def test_alert_rules_pass_promtool_check() -> None:
    result = _promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rule_exprs())} rules found" in result.stdout


def test_dashboard_expressions_parse(tmp_path: Path) -> None:
    # promtool parses PromQL only inside rule files: wrap each panel query as a recording rule
    rules = [{"record": f"seqstream:panel_{i}", "expr": expr}
             for i, (_, expr) in enumerate(dashboard_exprs())]
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    result = _promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_alert_rules_fire_as_their_unit_tests_expect() -> None:
    result = _promtool("test", "rules", str(DEPLOY / "prometheus" / "tests" /
                                             "seqstream.test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_stage_panel_gives_each_stage_its_own_quantiles(tmp_path: Path) -> None:
    """Prometheus evaluates the stage panel's queries (promtool's unit tests) on series where
    each stage's batches all took a time inside one bucket of its own: one series per stage,
    at the quantile's linear interpolation inside that bucket, as histogram_quantile does."""
    from stream.metrics import STAGE_BUCKETS, STAGES

    exprs = [e for _, e in dashboard_exprs() if "seqstream_stage_seconds" in e]
    assert exprs, "no panel plots seqstream_stage_seconds"
    series, bucket_of = [], {}
    for i, stage in enumerate(STAGES):  # stage i: every batch in the bucket (b[i], b[i + 1]]
        lo, hi = STAGE_BUCKETS[i], STAGE_BUCKETS[i + 1]
        bucket_of[stage] = (lo, hi)
        for le in (*STAGE_BUCKETS, "+Inf"):
            n = 0 if le != "+Inf" and le < hi else 10
            series.append({"series": f'seqstream_stage_seconds_bucket{{stage="{stage}", '
                                     f'le="{le}"}}', "values": f"0+{n}x20"})
    tests = []
    for expr in exprs:
        q = float(re.match(r"histogram_quantile\(([0-9.]+),", expr).group(1))
        # promtool compares exactly: in whole nanoseconds, float rounding cannot differ
        tests.append({"expr": f"round(1e9 * {expr})", "eval_time": "15m",
                      "exp_samples": [{"labels": f'{{stage="{stage}"}}',
                                       "value": round(1e9 * (lo + (hi - lo) * q))}
                                      for stage, (lo, hi) in bucket_of.items()]})
    assert {t["expr"].split(",")[0] for t in tests} >= {"round(1e9 * histogram_quantile(0.5",
                                                         "round(1e9 * histogram_quantile(0.99"}
    (tmp_path / "none.yml").write_text("groups: []\n")
    path = tmp_path / "stages.test.yml"
    path.write_text(yaml.safe_dump({
        "rule_files": ["none.yml"], "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": tests}]}))
    result = _promtool("test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_provisioning_matches_the_dashboards() -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    [source] = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"]
    assert source["type"] == "prometheus"
    [provider] = yaml.safe_load((provisioning / "dashboards" / "seqstream.yml").read_text())[
        "providers"]
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in mounts
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] and dashboard["panels"]
        uids = {p["datasource"]["uid"] for p in dashboard["panels"]}
        uids |= {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]}
        assert uids == {source["uid"]}, f"{path.name}: panels use datasources {uids}"
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
