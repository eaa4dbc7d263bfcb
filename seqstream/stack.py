"""``seqstream stack up | down | status``: the local stack without Docker.

Three real servers on loopback, each a child process recorded in a pid file under
``$SEQSTREAM_HOME/stack/<name>/``:

- **Kafka**: the Apache Kafka broker assembled from Maven Central jars
  (``seqstream/deploy/local/kafka/pom.xml`` pins the version; Maven copies the runtime tree into
  ``$SEQSTREAM_HOME/kafka-<version>-<pom hash>/`` once, so later starts need no network),
  one combined broker+controller in KRaft mode, heap capped.
- **Redis**: Debian's ``redis-server`` with AOF on (``appendfsync`` from settings).
- **Prometheus**: Debian's ``prometheus`` with ``seqstream/deploy/prometheus/prometheus.yml``.

``up`` is idempotent (a healthy part is left alone) and returns only when every part answers a real
request (a Kafka metadata request, a Redis PING, Prometheus ``/-/ready``); ``down`` stops exactly
the processes that ``up`` started. The same classes start private instances for tests that must
kill a server (:class:`KafkaServer` with other ports and another directory), and
:class:`SecureKafkaServer` starts a private broker that requires SASL_SSL (SCRAM-SHA-512) and
authorizes every request with KRaft's ``StandardAuthorizer``, for tests of a secured deployment.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from abc import ABC, abstractmethod
from pathlib import Path

from stream.errors import StackError
from stream.settings import Settings, add_flags

__all__ = ["KafkaServer", "PrometheusServer", "RedisServer", "SecureKafkaServer", "Server",
           "components", "configure", "configure_ports", "port_open", "run"]

# package data (pyproject.toml): an installed seqstream finds it; deploy/ in a checkout links here
DEPLOY = Path(__file__).resolve().parent / "deploy"
KAFKA_POM = DEPLOY / "local" / "kafka" / "pom.xml"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies"


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still "exists": treat it as dead.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return True


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _require(binary: str, apt_package: str) -> str:
    """The path of ``binary``, installing its Debian package first if it is missing and we can."""
    found = shutil.which(binary)
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"installing {apt_package} (apt-get) ...", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False,
                       stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", apt_package],
                       env=env, check=False, stdout=subprocess.DEVNULL)
        found = shutil.which(binary)
    if not found:
        raise StackError(f"{binary}: expected on PATH, not found; install the Debian package "
                         f"{apt_package!r} (apt-get install {apt_package})")
    return found


class Server(ABC):
    """One server process of the stack: started detached, tracked by a pid file."""

    name: str
    marker: str  # a substring of the server's command line

    def __init__(self, home: Path, port: int) -> None:
        self.dir = home
        self.port = port
        self.pidfile = home / "pid"
        self.logfile = home / f"{self.name}.log"
        self._child: subprocess.Popen | None = None  # set when this process started it

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def pid(self) -> int | None:
        """The pid of the process ``up`` started, if it is still running."""
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        if not _pid_alive(pid):
            return None
        # After a reboot the pid may belong to someone else: check it is still our server.
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return pid
        return pid if self.marker.encode() in cmdline else None

    @abstractmethod
    def healthy(self) -> bool:
        """Whether the server answers a real request."""

    @abstractmethod
    def command(self) -> list[str]:
        """The command line, after any preparation (config files, downloads)."""

    def start(self, timeout: float = 90.0) -> bool:
        """Start unless already running; wait until healthy. Returns whether it started it."""
        pid = self.pid()
        if pid is not None:
            if not self._wait_healthy(pid, timeout):
                raise StackError(f"{self.name}: pid {pid} runs but does not answer on "
                                 f"{self.address} within {timeout:.0f}s; last log lines:\n"
                                 f"{_tail(self.logfile)}")
            return False
        for port in self.ports():
            if port_open(port):
                raise StackError(f"{self.name}: port {port} on 127.0.0.1 is already in use by "
                                 "a process this stack did not start; stop it or choose another "
                                 f"port ({self.port_variable()})")
        self.dir.mkdir(parents=True, exist_ok=True)
        argv = self.command()
        with open(self.logfile, "ab") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=self.dir,
                                    start_new_session=True)
        self.pidfile.write_text(f"{proc.pid}\n")
        self._child = proc
        if not self._wait_healthy(proc.pid, timeout):
            self.stop()
            raise StackError(f"{self.name}: did not become healthy on {self.address} within "
                             f"{timeout:.0f}s; last lines of {self.logfile}:\n"
                             f"{_tail(self.logfile)}")
        return True

    def _wait_healthy(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _pid_alive(pid):
                return False
            if self.healthy():
                return True
            time.sleep(0.3)
        return False

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM the recorded process (SIGKILL after ``timeout``). Returns whether one ran."""
        pid = self.pid()
        self.pidfile.unlink(missing_ok=True)
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
            while _pid_alive(pid):
                time.sleep(0.05)
        self._reap()
        return True

    def _reap(self) -> None:
        """Collect the exit status of a server this process started (no zombie left behind)."""
        if self._child is not None:
            self._child.wait()
            self._child = None

    def kill(self) -> None:
        """SIGKILL, for tests of crashes: no clean shutdown."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            while _pid_alive(pid):
                time.sleep(0.05)
            self._reap()

    def ports(self) -> list[int]:
        return [self.port]

    def port_variable(self) -> str:
        return f"SEQSTREAM_{self.name.upper()}_PORT"


class KafkaServer(Server):
    """Apache Kafka from Maven Central jars, one KRaft node (broker + controller)."""

    name = "kafka"
    marker = "kafka.Kafka"

    def __init__(self, home: Path, port: int, controller_port: int, heap: str,
                 jars: Path) -> None:
        super().__init__(home, port)
        self.controller_port = controller_port
        self.heap = heap
        self.jars = jars

    @classmethod
    def version(cls) -> str:
        text = KAFKA_POM.read_text()
        return text.split("<kafka.version>")[1].split("</kafka.version>")[0].strip()

    @classmethod
    def jars_name(cls) -> str:
        """Cache folder of the jars: a changed pom gets a fresh folder, never a stale one."""
        return f"kafka-{cls.version()}-{hashlib.sha256(KAFKA_POM.read_bytes()).hexdigest()[:8]}"

    def ports(self) -> list[int]:
        return [self.port, self.controller_port]

    def ensure_jars(self) -> Path:
        """The broker's jars, fetched once with Maven into the cache dir."""
        if (self.jars / ".complete").exists():
            return self.jars
        mvn = _require("mvn", "maven")
        partial = self.jars.with_name(self.jars.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        print(f"fetching Apache Kafka {self.version()} jars from Maven Central into {self.jars} "
              "(once) ...", flush=True)
        done = subprocess.run([mvn, "-B", "-q", "-f", str(KAFKA_POM), DEPENDENCY_PLUGIN,
                               "-DincludeScope=runtime", f"-DoutputDirectory={partial}"],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise StackError("kafka: Maven could not fetch the broker jars (exit "
                             f"{done.returncode}):\n{(done.stdout + done.stderr)[-2000:]}")
        (partial / ".complete").write_text(self.version() + "\n")
        shutil.rmtree(self.jars, ignore_errors=True)
        partial.rename(self.jars)
        return self.jars

    def properties(self) -> str:
        """The broker's server.properties."""
        props = (DEPLOY / "local" / "kafka" / "server.properties").read_text()
        for key, value in (("@PORT@", self.port), ("@CONTROLLER_PORT@", self.controller_port),
                           ("@DATA_DIR@", self.dir / "data")):
            props = props.replace(key, str(value))
        return props

    def format_args(self) -> list[str]:
        """Extra arguments of the one-time KRaft storage format."""
        return []

    def command(self) -> list[str]:
        java = _require("java", "default-jre-headless")
        jars = self.ensure_jars()
        data = self.dir / "data"
        config = self.dir / "server.properties"
        config.touch(mode=0o600)
        config.write_text(self.properties())
        jvm = [java, f"-Xms{min(256, _megabytes(self.heap))}m", f"-Xmx{self.heap}",
               "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true",
               f"-Dkafka.logs.dir={self.dir}",
               f"-Dlog4j2.configurationFile={DEPLOY / 'local' / 'kafka' / 'log4j2.yaml'}",
               "-cp", f"{jars}/*"]
        if not (data / "meta.properties").exists():
            cluster_id = "-"
            while cluster_id.startswith("-"):  # as Kafka's Uuid.randomUuid: "-x" reads as a flag
                cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
            fmt = subprocess.run([*jvm, "kafka.tools.StorageTool", "format", "-t", cluster_id,
                                  "-c", str(config), *self.format_args()],
                                 capture_output=True, text=True, check=False)
            if fmt.returncode != 0:
                raise StackError(f"kafka: formatting {data} for KRaft failed:\n"
                                 f"{(fmt.stdout + fmt.stderr)[-2000:]}")
        return [*jvm, "kafka.Kafka", str(config)]

    def healthy(self) -> bool:
        if not port_open(self.port):
            return False
        return asyncio.run(_kafka_metadata(self.address))


class SecureKafkaServer(KafkaServer):
    """A private KRaft broker whose only client listener is SASL_SSL with SCRAM-SHA-512, and
    whose ``StandardAuthorizer`` refuses whatever no ACL allows (``admin`` is the super user).

    ``keystore`` is one PEM file with the broker's private key and certificate (for 127.0.0.1);
    ``truststore`` the PEM CA that signed it. ``users`` get SCRAM credentials when the storage is
    formatted (the first start), ``admin`` among them. A private test broker: the passwords are
    in its server.properties (mode 600) and on the format command line.
    """

    name = "kafka-sasl-ssl"

    def __init__(self, home: Path, port: int, controller_port: int, heap: str, jars: Path,
                 keystore: Path, truststore: Path, users: dict[str, str]) -> None:
        super().__init__(home, port, controller_port, heap, jars)
        if "admin" not in users:
            raise StackError("SecureKafkaServer: expected an 'admin' user among users, got "
                             f"{sorted(users)}")
        self.keystore, self.truststore, self.users = keystore, truststore, users

    def properties(self) -> str:
        replaced = ("listeners=", "advertised.listeners=", "inter.broker.listener.name=",
                    "listener.security.protocol.map=", "auto.create.topics.enable=")
        base = [line for line in super().properties().splitlines()
                if not line.startswith(replaced)]
        secure = (DEPLOY / "local" / "kafka" / "sasl_ssl.properties").read_text()
        for key, value in (("@PORT@", self.port), ("@CONTROLLER_PORT@", self.controller_port),
                           ("@KEYSTORE@", self.keystore), ("@TRUSTSTORE@", self.truststore),
                           ("@ADMIN_PASSWORD@", self.users["admin"]), ("@ADMIN@", "admin")):
            secure = secure.replace(key, str(value))
        return "\n".join(base) + "\n" + secure

    def format_args(self) -> list[str]:
        args = []
        for user, password in self.users.items():
            args += ["--add-scram", f"SCRAM-SHA-512=[name={user},password={password}]"]
        return args

    def client_settings(self, user: str = "admin") -> Settings:
        """Settings of a client of this broker logged in as ``user``."""
        return Settings.from_env({
            "SEQSTREAM_KAFKA_BOOTSTRAP": self.address,
            "SEQSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "SEQSTREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "SEQSTREAM_KAFKA_SASL_USERNAME": user,
            "SEQSTREAM_KAFKA_SASL_PASSWORD": self.users[user],
            "SEQSTREAM_KAFKA_SSL_CAFILE": str(self.truststore)})

    def healthy(self) -> bool:
        if not port_open(self.port):
            return False
        return asyncio.run(_kafka_metadata(self.address, self.client_settings()))

    def port_variable(self) -> str:
        return "the port given to SecureKafkaServer"


def _megabytes(heap: str) -> int:
    """Megabytes of a JVM size already checked by the settings (``512m``, ``1g``)."""
    return int(heap[:-1]) * (1024 if heap[-1].lower() == "g" else 1)


async def _kafka_metadata(bootstrap: str, settings: Settings | None = None) -> bool:
    """A real metadata request: the broker is up only when it lists its brokers."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    from stream.security import kafka_kwargs

    kwargs = kafka_kwargs(settings) if settings else {"bootstrap_servers": bootstrap}
    admin = AIOKafkaAdminClient(**kwargs, request_timeout_ms=3000)
    try:
        await asyncio.wait_for(admin.start(), 5)
        return len((await asyncio.wait_for(admin.describe_cluster(), 5))["brokers"]) > 0
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        await admin.close()


class RedisServer(Server):
    """Debian's redis-server, AOF on, loopback only."""

    name = "redis"
    marker = "redis-server"

    def __init__(self, home: Path, port: int, appendfsync: str = "everysec") -> None:
        super().__init__(home, port)
        self.appendfsync = appendfsync

    def command(self) -> list[str]:
        binary = _require("redis-server", "redis-server")
        config = self.dir / "redis.conf"
        config.write_text("\n".join([
            f"port {self.port}", "bind 127.0.0.1", "protected-mode yes", "daemonize no",
            f"dir {self.dir}", "appendonly yes", f"appendfsync {self.appendfsync}",
            'save ""', f"logfile {self.logfile}", "maxclients 1000", ""]))
        return [binary, str(config)]

    def healthy(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_timeout=1).ping())
        except redis.RedisError:
            return False


class RedisClusterNode(RedisServer):
    """One master of the local 3-master Redis Cluster (``stack up --redis-cluster``): AOF on,
    loopback only, its cluster bus on ``bus_port``."""

    marker = "redis-server"

    def __init__(self, home: Path, port: int, bus_port: int,
                 appendfsync: str = "everysec") -> None:
        super().__init__(home, port, appendfsync)
        self.name = f"redis-cluster-{port}"
        self.logfile = home / f"{self.name}.log"
        self.bus_port = bus_port

    def ports(self) -> list[int]:
        return [self.port, self.bus_port]

    def command(self) -> list[str]:
        argv = super().command()
        config = Path(argv[1])
        config.write_text(config.read_text() + "\n".join([
            "cluster-enabled yes", f"cluster-port {self.bus_port}",
            f"cluster-config-file {self.dir / 'nodes.conf'}", ""]))
        return argv


CLUSTER_MASTERS = 3


def cluster_nodes(settings: Settings) -> list[RedisClusterNode]:
    """The local cluster's masters: ports SEQSTREAM_REDIS_PORT + 1000 + i, buses + 2000 + i."""
    stack = settings.home / "stack" / "redis-cluster"
    base = settings.redis_port
    return [RedisClusterNode(stack / str(i), base + 1000 + i, base + 2000 + i,
                             settings.redis_appendfsync) for i in range(CLUSTER_MASTERS)]


def form_cluster(nodes: list[RedisClusterNode], timeout: float = 30.0) -> str:
    """Join the started ``nodes`` into one cluster unless they already are one; return the
    ``SEQSTREAM_REDIS_URL`` that names it."""
    import redis

    def state(port: int) -> str:
        return str(redis.Redis(port=port, socket_timeout=2).cluster("INFO").get("cluster_state"))

    if not all(state(n.port) == "ok" for n in nodes):
        done = subprocess.run([_require("redis-cli", "redis-tools"), "--cluster", "create",
                               *[n.address for n in nodes], "--cluster-replicas", "0",
                               "--cluster-yes"], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise StackError(f"redis-cli --cluster create: expected a cluster of "
                             f"{len(nodes)} masters, got exit {done.returncode}: "
                             f"{(done.stdout + done.stderr)[-500:]}")
        deadline = time.monotonic() + timeout
        while not all(state(n.port) == "ok" for n in nodes):
            if time.monotonic() > deadline:
                raise StackError(f"Redis Cluster on {[n.port for n in nodes]}: expected "
                                 f"cluster_state ok within {timeout:.0f}s")
            time.sleep(0.2)
    return f"redis+cluster://{nodes[0].address}/0"


class PrometheusServer(Server):
    """Debian's prometheus, scraping itself and the worker's /metrics."""

    name = "prometheus"
    marker = "prometheus"

    def __init__(self, home: Path, port: int, metrics_port: int) -> None:
        super().__init__(home, port)
        self.metrics_port = metrics_port

    def command(self) -> list[str]:
        binary = _require("prometheus", "prometheus")
        source = DEPLOY / "prometheus"
        config = (source / "prometheus.yml").read_text()
        config = config.replace("127.0.0.1:9090", self.address)
        config = config.replace("127.0.0.1:8000", f"127.0.0.1:{self.metrics_port}")
        rules = self.dir / "rules"
        shutil.rmtree(rules, ignore_errors=True)
        if (source / "rules").is_dir():
            shutil.copytree(source / "rules", rules)
        else:
            rules.mkdir()
        (self.dir / "prometheus.yml").write_text(config)
        return [binary, f"--config.file={self.dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.dir / 'data'}", "--storage.tsdb.retention.time=2d",
                f"--web.listen-address={self.address}", "--web.enable-lifecycle",
                "--log.level=warn"]

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.address}/-/ready", timeout=1) as reply:
                return reply.status == 200
        except OSError:
            return False


def components(settings: Settings) -> list[Server]:
    """The stack's servers, in start order."""
    stack = settings.home / "stack"
    return [
        KafkaServer(stack / "kafka", settings.kafka_port, settings.kafka_controller_port,
                    settings.kafka_heap, settings.home / KafkaServer.jars_name()),
        RedisServer(stack / "redis", settings.redis_port, settings.redis_appendfsync),
        PrometheusServer(stack / "prometheus", settings.prometheus_port, settings.metrics_port),
    ]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["up", "down", "status", "classpath"],
                        help="up: start what is not running and wait until healthy; down: stop "
                             "what up started; status: health and address of each part (exit 1 "
                             "if any is down); classpath: the Kafka jars' Java classpath, for "
                             "Kafka's own tools")
    parser.add_argument("--redis-cluster", action="store_true",
                        help="up: also start a 3-master Redis Cluster on loopback (ports "
                             "SEQSTREAM_REDIS_PORT + 1000..1002) and print its "
                             "SEQSTREAM_REDIS_URL; down and status include it when it exists")
    configure_ports(parser)


def configure_ports(parser: argparse.ArgumentParser) -> None:
    """The stack's flags, shared with commands that bring the stack up themselves."""
    add_flags(parser, ["kafka_port", "kafka_controller_port", "kafka_heap", "redis_port",
                       "redis_appendfsync", "prometheus_port", "metrics_port", "home"])


def run(args: argparse.Namespace) -> int:
    cluster = bool(getattr(args, "redis_cluster", False))
    settings = Settings.from_env(overrides={k: v for k, v in vars(args).items()
                                            if k != "redis_cluster"})
    servers = components(settings)
    nodes = cluster_nodes(settings)
    if cluster or any(n.dir.exists() for n in nodes):
        servers += nodes
    if args.action == "up":
        for server in servers:
            t0 = time.monotonic()
            started = server.start()
            verb = f"started in {time.monotonic() - t0:.1f}s" if started else "already running"
            print(f"{server.name:<10} {server.address:<16} {verb} (pid {server.pid()})",
                  flush=True)
        if cluster:
            print(f"redis cluster: SEQSTREAM_REDIS_URL={form_cluster(nodes)}", flush=True)
        return 0
    if args.action == "classpath":
        kafka = next(s for s in servers if isinstance(s, KafkaServer))
        print(f"{kafka.ensure_jars()}/*")
        return 0
    if args.action == "down":
        for server in reversed(servers):
            print(f"{server.name:<10} {'stopped' if server.stop() else 'was not running'}",
                  flush=True)
        return 0
    down = 0
    for server in servers:
        pid = server.pid()
        ok = server.healthy()
        down += not ok
        origin = f"pid {pid}" if pid else ("not started by seqstream" if ok else "not running")
        print(f"{server.name:<10} {server.address:<16} {'healthy' if ok else 'DOWN':<8} {origin}")
    sys.stdout.flush()
    return 1 if down else 0
