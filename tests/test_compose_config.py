"""docker-compose.yml and the Dockerfile agree with the code: every SEQSTREAM_* variable is a
setting with a valid value, services reach each other on the ports the settings name, the
commands parse with the real command-line parsers, Prometheus finds the workers and the rules.

The last test validates the file with Compose itself: Docker's compose plugin where it is
installed, else Debian's ``docker-compose`` (1.29, which ``./run`` installs); neither needs a Docker
engine to run ``config``."""

from __future__ import annotations

import argparse
import base64
import dataclasses
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from seqstream import publish, view
from seqstream.cli import COMMANDS
from stream.settings import Settings, env_name

REPO = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
SEQSTREAM_IMAGE_SERVICES = ("train", "worker", "publish", "view")
SETTINGS_VARS = {env_name(f.name) for f in dataclasses.fields(Settings)}


def _env(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment", {})
    assert isinstance(env, dict), f"{service}: environment as a mapping, please"
    return {k: str(v) for k, v in env.items()}


def _seqstream_env(service: str) -> dict[str, str]:
    return {k: v for k, v in _env(service).items() if k.startswith("SEQSTREAM_")}


def test_services_are_the_deployment() -> None:
    assert set(SERVICES) == {"kafka", "redis", "train", "worker", "publish", "view",
                             "prometheus", "grafana"}
    assert SERVICES["kafka"]["image"].startswith("apache/kafka:")
    assert "container_name" not in SERVICES["worker"]  # a fixed name would forbid --scale
    assert "ports" not in SERVICES["worker"]  # host ports would collide between replicas


@pytest.mark.parametrize("service", SEQSTREAM_IMAGE_SERVICES)
def test_every_seqstream_variable_is_a_valid_setting(service: str) -> None:
    env = _seqstream_env(service)
    assert env, f"{service}: expected SEQSTREAM_* settings"
    assert set(env) <= SETTINGS_VARS, f"unknown: {sorted(set(env) - SETTINGS_VARS)}"
    Settings.from_env(env)  # every value parses (ConfigError otherwise)


def test_no_stray_seqstream_variables_anywhere() -> None:
    text = (REPO / "docker-compose.yml").read_text() + (REPO / "Dockerfile").read_text()
    used = set(re.findall(r"\bSEQSTREAM_[A-Z0-9_]+", text))
    assert used <= SETTINGS_VARS, f"not settings: {sorted(used - SETTINGS_VARS)}"


def test_clients_reach_kafka_and_redis_on_their_listeners() -> None:
    kafka = _env("kafka")
    advertised = dict(part.split("://") for part in
                      kafka["KAFKA_ADVERTISED_LISTENERS"].split(","))
    for service in SEQSTREAM_IMAGE_SERVICES:
        settings = Settings.from_env(_seqstream_env(service))
        assert settings.kafka_bootstrap == advertised["INTERNAL"]
        assert settings.redis_url.startswith("redis://redis:6379/")
    # host tools with default settings reach the EXTERNAL listener and the published ports
    defaults = Settings()
    assert advertised["EXTERNAL"].split(":")[1] == str(defaults.kafka_port)
    assert f"{defaults.kafka_port}:9092" in SERVICES["kafka"]["ports"]
    assert f"{defaults.redis_port}:6379" in SERVICES["redis"]["ports"]
    assert f"{defaults.prometheus_port}:9090" in SERVICES["prometheus"]["ports"]
    assert base64.urlsafe_b64decode(kafka["CLUSTER_ID"] + "==").__len__() == 16


def test_partitions_cover_the_documented_scale() -> None:
    partitions = Settings.from_env(_seqstream_env("worker")).partitions
    assert partitions >= 3  # `--scale worker=3` keeps every replica busy
    assert int(_env("kafka")["KAFKA_NUM_PARTITIONS"]) == partitions


def test_redis_keeps_an_append_only_file() -> None:
    command = SERVICES["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(v.endswith(":/data") for v in SERVICES["redis"]["volumes"])


def test_train_writes_the_model_the_worker_serves() -> None:
    model = Settings.from_env(_seqstream_env("worker")).model
    script = SERVICES["train"]["command"][0]
    train_args = shlex.split(re.search(r"exec seqstream train ([^;]*);", script).group(1))
    from training.cli import configure as configure_train

    parser = argparse.ArgumentParser()
    configure_train(parser)
    parsed = parser.parse_args(train_args)
    assert Path(parsed.output) == model
    assert f"-f {model}/card.json" in script
    volume = str(model).split("/")[1]
    assert f"artifacts:/{volume}" in SERVICES["train"]["volumes"]
    assert f"artifacts:/{volume}:ro" in SERVICES["worker"]["volumes"]
    assert SERVICES["worker"]["depends_on"]["train"]["condition"] == (
        "service_completed_successfully")


def test_commands_are_seqstream_commands_with_valid_flags() -> None:
    assert SERVICES["worker"]["command"][0] in COMMANDS
    command = SERVICES["publish"]["command"]
    assert command[0] == "publish"
    parser = argparse.ArgumentParser()
    publish.configure(parser)
    args = parser.parse_args(command[1:])
    assert args.rate == "realtime" and args.loop


def test_view_serves_the_host_and_asks_the_compose_prometheus() -> None:
    spec = SERVICES["view"]
    parser = argparse.ArgumentParser()
    view.configure(parser)
    parser.parse_args(spec["command"][1:])
    assert spec["command"][0] == "view"
    settings = Settings.from_env(_seqstream_env("view"))
    assert settings.view_host == "0.0.0.0"  # reachable through the published port
    assert f"{settings.view_port}:{settings.view_port}" in spec["ports"]
    prometheus = settings.prometheus_url.split("://", 1)[1]
    assert prometheus == f"prometheus:{SERVICES['prometheus']['ports'][0].split(':')[1]}"
    assert spec["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_prometheus_scrapes_every_worker_replica_and_loads_the_rules() -> None:
    mounts = SERVICES["prometheus"]["volumes"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in mounts
    flag = next(a for a in SERVICES["prometheus"]["command"] if a.startswith("--config.file="))
    config_path = REPO / "deploy" / "prometheus" / Path(flag.split("=", 1)[1]).name
    config = yaml.safe_load(config_path.read_text())
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "seqstream-worker"]
    [sd] = job["dns_sd_configs"]
    worker = Settings.from_env(_seqstream_env("worker"))
    assert sd["names"] == ["worker"] and sd["port"] == worker.metrics_port
    assert str(worker.metrics_port) in SERVICES["worker"]["expose"]
    assert worker.metrics_host == "0.0.0.0"  # reachable from the prometheus container
    rules = yaml.safe_load((REPO / "deploy/prometheus/rules/seqstream.yml").read_text())
    assert 'up{job="seqstream-worker"}' in str(rules)  # the alert watches this very job
    assert config["rule_files"] == ["rules/*.yml"]
    promtool = shutil.which("promtool")
    assert promtool, "promtool is needed (Debian package prometheus)"
    result = subprocess.run([promtool, "check", "config", str(config_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_mounts_exist_in_the_repo() -> None:
    for mount in SERVICES["grafana"]["volumes"]:
        source = mount.split(":")[0]
        if source.startswith("./"):
            assert (REPO / source).is_dir(), f"{mount}: {source} is missing"


def test_dockerfile_uses_cpu_torch_and_the_seqstream_entrypoint() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"pip install --index-url https://download\.pytorch\.org/whl/cpu "
                     r"\"torch", text)
    assert text.index("RUN pip install --index-url") < text.index("RUN pip install .")
    assert 'ENTRYPOINT ["seqstream"]' in text
    for service in SEQSTREAM_IMAGE_SERVICES:
        assert SERVICES[service]["image"] in (SERVICES["train"]["image"],
                                              SERVICES["worker"]["image"])


def test_the_worker_image_is_the_worker_only_install() -> None:
    """The worker and the view run the Dockerfile's `worker` target (the base install, no
    extra); train and publish the `tools` target, which adds the `train` extra."""
    text = (REPO / "Dockerfile").read_text()
    stages = {name: base for base, name in re.findall(r"^FROM (\S+) AS (\w+)$", text,
                                                      re.MULTILINE)}
    assert stages["tools"] == "worker"
    worker_stage, tools_stage = text.split("FROM worker AS tools")
    assert re.search(r"^RUN pip install \. ", worker_stage, re.MULTILINE)  # no extras
    assert 'pip install "/src[train]"' in tools_stage
    targets = {s: SERVICES[s]["build"]["target"] for s in ("train", "worker")}
    assert targets == {"train": "tools", "worker": "worker"}
    assert all(SERVICES[s]["build"]["context"] == "." for s in targets)
    for service in ("worker", "view"):
        assert SERVICES[service]["image"] == SERVICES["worker"]["image"]
    assert SERVICES["publish"]["image"] == SERVICES["train"]["image"]


def _compose() -> list[str]:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True,
                                 timeout=30).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy is None:
        pytest.fail("expected Docker's compose plugin or Debian's docker-compose (./run "
                    "installs it)")
    return [legacy]


def test_docker_compose_config_accepts_the_file() -> None:
    result = subprocess.run([*_compose(), "-f", str(REPO / "docker-compose.yml"), "config",
                             "--quiet"], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 0, result.stderr
