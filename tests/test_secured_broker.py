"""The worker against a real secured Kafka: a private broker (other ports) whose only client
listener is SASL_SSL with SCRAM-SHA-512, certificates made here with openssl, and KRaft's
``StandardAuthorizer``.

With exactly the ACLs docs/deployment.md lists, the worker predicts events that ``seqstream
publish`` sent over the same kind of settings; a missing ACL, a wrong password and an untrusted
certificate each stop it (and publish) with one line naming the setting, never the secret.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest
from streamkit import REPO, WorkerProcess, ecg, free_port, make_artifact

from stream.kafka_access import OPERATIONS, WORKER_ACLS
from stream.security import kafka_kwargs
from stream.settings import Settings, env_name

DOCS = (REPO / "docs" / "deployment.md").read_text()
ACL_ROW = re.compile(r"^\| (topic|group) \| `(SEQSTREAM_[A-Z_]+)` \| ([A-Za-z, ]+) \|$", re.M)
TOPICS = {"events": "sec.events", "predictions": "sec.predictions",
          "anomalies": "sec.anomalies", "beats": "sec.beats", "deadletter": "sec.deadletter"}
GROUP = "sec-worker"
SECURITY_VARS = ("SEQSTREAM_KAFKA_SECURITY_PROTOCOL", "SEQSTREAM_KAFKA_SASL_MECHANISM",
                 "SEQSTREAM_KAFKA_SASL_USERNAME", "SEQSTREAM_KAFKA_SASL_PASSWORD",
                 "SEQSTREAM_KAFKA_SSL_CAFILE")


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(d: Path) -> None:
    """A CA, the broker's key + certificate for 127.0.0.1 signed by it, and an unrelated CA."""
    for name in ("ca", "other-ca"):
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
                "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN=seqstream test {name}",
                cwd=d)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key", "-out",
            "broker.csr", "-subj", "/CN=localhost", cwd=d)
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "broker.pem", "-days", "2", "-extfile", "san.cnf", cwd=d)
    (d / "broker-keystore.pem").write_text((d / "broker.key").read_text()
                                           + (d / "broker.pem").read_text())


def documented_acls() -> list[tuple[str, str, tuple[str, ...]]]:
    """(resource kind, settings variable, operations) rows of docs/deployment.md."""
    return [(kind, var, tuple(op.strip().upper() for op in ops.split(",")))
            for kind, var, ops in ACL_ROW.findall(DOCS)]


async def admin_setup(settings: Settings, grants: list[tuple[str, str, tuple[str, ...]]],
                      user: str) -> None:
    """As the super user: create the topics, then allow ``user`` exactly ``grants``."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.protocol.admin import CreateAclsRequest

    kind_code, literal, allow = {"topic": 2, "group": 3}, 3, 3
    admin = AIOKafkaAdminClient(**kafka_kwargs(settings), request_timeout_ms=30_000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, 2, 1) for t in TOPICS.values()])
        for kind, name, ops in grants:
            for op in ops:
                resp = await admin._send_request(CreateAclsRequest(
                    kind_code[kind], name, literal, f"User:{user}", "*", OPERATIONS[op], allow))
                assert resp.creation_responses[0][0] == 0, resp
    finally:
        await admin.close()


async def read_predictions(settings: Settings, want: int, timeout: float) -> list[dict]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(TOPICS["predictions"], **kafka_kwargs(settings), group_id=None,
                                auto_offset_reset="earliest")
    await consumer.start()
    got: list[dict] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(got) < want and asyncio.get_running_loop().time() < deadline:
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                got.extend(orjson.loads(m.value) for m in messages)
    finally:
        await consumer.stop()
    return got


@pytest.fixture(scope="module")
def broker(tmp_path_factory, settings):
    from seqstream.stack import KafkaServer, SecureKafkaServer

    d = tmp_path_factory.mktemp("secure-kafka")
    make_certificates(d)
    users = {"admin": secrets.token_urlsafe(16), "seqstream": secrets.token_urlsafe(16)}
    server = SecureKafkaServer(d / "kafka", free_port(), free_port(), "384m",
                               settings.home / KafkaServer.jars_name(), d / "broker-keystore.pem",
                               d / "ca.pem", users)
    server.start(timeout=240)
    try:
        by_var = {env_name(field): field for field, _, _ in WORKER_ACLS}
        names = {"topic_events": TOPICS["events"], "topic_predictions": TOPICS["predictions"],
                 "topic_anomalies": TOPICS["anomalies"], "topic_beats": TOPICS["beats"],
                 "topic_deadletter": TOPICS["deadletter"], "app_id": GROUP}
        grants = [(kind, names[by_var[var]], ops) for kind, var, ops in documented_acls()]
        asyncio.run(admin_setup(server.client_settings("admin"), grants, "seqstream"))
        yield server, d
    finally:
        server.stop()


def worker_env(server, d: Path, user: str = "seqstream", **changes: str) -> dict[str, str]:
    env = {
        "SEQSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "SEQSTREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "SEQSTREAM_KAFKA_SASL_USERNAME": user,
        "SEQSTREAM_KAFKA_SASL_PASSWORD": server.users[user],
        "SEQSTREAM_KAFKA_SSL_CAFILE": str(d / "ca.pem"),
        "SEQSTREAM_TOPIC_EVENTS": TOPICS["events"],
        "SEQSTREAM_TOPIC_PREDICTIONS": TOPICS["predictions"],
        "SEQSTREAM_TOPIC_ANOMALIES": TOPICS["anomalies"],
        "SEQSTREAM_TOPIC_BEATS": TOPICS["beats"],
        "SEQSTREAM_TOPIC_DEADLETTER": TOPICS["deadletter"],
        "SEQSTREAM_APP_ID": GROUP,
    }
    env.update(changes)
    return env


def test_the_documented_acls_are_the_ones_the_worker_checks():
    assert [(kind, var, ops) for kind, var, ops in documented_acls()] == [
        (kind, env_name(field), ops) for field, kind, ops in WORKER_ACLS]


@pytest.mark.integration
@pytest.mark.slow
def test_the_worker_runs_with_exactly_the_documented_acls(broker, tmp_path, settings,
                                                          shared_data):
    server, d = broker
    values = ecg(shared_data, "100", 0, 40)
    art = make_artifact(tmp_path / "art", sample=values)
    csv = tmp_path / "pump.csv"
    rows = ["entity,ts,lead0,lead1"] + [f"pump-9,{1_700_000_000 + i},{a},{b}"
                                        for i, (a, b) in enumerate(values.tolist())]
    csv.write_text("\n".join(rows) + "\n")
    env = worker_env(server, d)
    worker = WorkerProcess(art, GROUP, tmp_path, bootstrap=server.address,
                           redis_url=settings.redis_url, partitions=2, max_gap_s=0,
                           app_id=GROUP, extra_env=env)
    try:
        worker.start().wait_ready(timeout=120)
        # the admin publishes (the worker's user may not write events), with the same settings
        published = cli("publish", "--path", str(csv), "--entity-column", "entity",
                        "--time-column", "ts", "--samples-per-event", "1", "--ts", "source",
                        env=worker_env(server, d, user="admin",
                                       SEQSTREAM_KAFKA_BOOTSTRAP=server.address))
        assert published.returncode == 0, published.stderr[-2000:]
        got = asyncio.run(read_predictions(server.client_settings("admin"), len(values), 90))
    finally:
        code = worker.stop()
    assert code == 0, worker.log()[-3000:]
    assert sorted(p["ts"] for p in got) == sorted({p["ts"] for p in got})
    assert len(got) == len(values) and {p["entity_id"] for p in got} == {"pump-9"}
    assert np.isfinite([p["forecast"] for p in got]).all()


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SEQSTREAM_")}
    return subprocess.run([sys.executable, "-m", "seqstream", *args], cwd=REPO,
                          env={**base, "SEQSTREAM_METRICS_PORT": "0", **env},
                          capture_output=True, text=True, timeout=240, check=False)


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize(("case", "named"), [
    ("missing group ACL", "SEQSTREAM_APP_ID=other-group"),
    ("missing topic ACL", "SEQSTREAM_TOPIC_DEADLETTER=sec.events"),
    ("wrong password", "SEQSTREAM_KAFKA_SASL_USERNAME/SEQSTREAM_KAFKA_SASL_PASSWORD"),
    ("untrusted certificate", "SEQSTREAM_KAFKA_SSL_CAFILE"),
])
def test_a_refusal_stops_the_worker_with_one_line_naming_the_setting(broker, tmp_path, settings,
                                                                      case, named):
    server, d = broker
    art = make_artifact(tmp_path / "art")
    changes = {
        "missing group ACL": {"SEQSTREAM_APP_ID": "other-group"},
        "missing topic ACL": {"SEQSTREAM_TOPIC_DEADLETTER": TOPICS["events"]},
        "wrong password": {"SEQSTREAM_KAFKA_SASL_PASSWORD": secrets.token_urlsafe(16)},
        "untrusted certificate": {"SEQSTREAM_KAFKA_SSL_CAFILE": str(d / "other-ca.pem")},
    }[case]
    env = worker_env(server, d, SEQSTREAM_KAFKA_BOOTSTRAP=server.address,
                     SEQSTREAM_REDIS_URL=settings.redis_url,
                     SEQSTREAM_HOME=str(tmp_path / "home"), **changes)
    done = cli("worker", "--model", str(art), env=env)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stderr[-3000:]
    assert lines[-1].startswith(f"seqstream worker: {named}"), lines[-5:]
    for secret in (env["SEQSTREAM_KAFKA_SASL_PASSWORD"], server.users["seqstream"]):
        assert secret not in done.stderr and secret not in done.stdout
    if case in ("wrong password", "untrusted certificate"):  # publish reads the same settings
        published = cli("publish", "--entities", "1", "--duration", "1", env=env)
        assert published.returncode == 1, published.stderr[-3000:]
        assert published.stderr.strip().splitlines()[-1].startswith(
            f"seqstream publish: {named}"), published.stderr[-2000:]
        assert env["SEQSTREAM_KAFKA_SASL_PASSWORD"] not in published.stderr
