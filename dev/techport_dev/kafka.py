"""A real Apache Kafka for development, tests and benchmarks.

`kafka_endpoint()` uses `KAFKA_BOOTSTRAP_SERVERS` when set, else testcontainers' Kafka when a Docker
engine answers, else starts a local KRaft cluster (combined broker+controller nodes) from Apache
Kafka's Maven Central jars with the machine's Java. Jars are cached outside the repository
(`$TECHPORT_CACHE`, default ~/.cache/techport), so only the first start downloads.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

KAFKA_VERSION = "4.1.1"
LOG4J_VERSION = "2.24.3"
SLF4J_VERSION = "1.7.36"
READY_LINE = "Kafka Server started"

_POM = f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>nl.techport.dev</groupId><artifactId>kafka-runtime</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{KAFKA_VERSION}</version></dependency>
    <!-- The release tarball ships these logging jars; the POM does not depend on them. -->
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-api</artifactId>
      <version>{LOG4J_VERSION}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId>
      <version>{LOG4J_VERSION}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{LOG4J_VERSION}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId>
      <version>{SLF4J_VERSION}</version></dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache.kafka
logger.apache.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
"""


def cache_dir() -> Path:
    return Path(os.environ.get("TECHPORT_CACHE", Path.home() / ".cache" / "techport"))


def ensure_jars() -> Path:
    """The broker's classpath folder, fetched with Maven on first use."""
    jars = cache_dir() / "kafka" / KAFKA_VERSION / "libs"
    marker = jars / ".complete"
    if marker.exists():
        return jars
    if shutil.which("mvn") is None:
        raise RuntimeError("Maven (mvn) is needed once to fetch the Kafka broker jars from Maven Central")
    jars.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        (Path(work) / "pom.xml").write_text(_POM)
        subprocess.run(
            [
                "mvn",
                "-q",
                "-B",
                "-f",
                str(Path(work) / "pom.xml"),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={jars}",
                "-DincludeScope=runtime",
            ],
            check=True,
        )
    marker.write_text(KAFKA_VERSION)
    return jars


_handed_out: set[int] = set()


def free_port() -> int:
    """A port nobody listens on. The kernel may hand the same ephemeral port out again as soon as the probing
    socket is closed (a broker's listener and controller once got one port), so none is given twice here."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def _cluster_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


@dataclass
class KafkaNode:
    node_id: int
    port: int
    controller_port: int
    data_dir: Path
    sasl_port: int = 0  # a SASL_PLAINTEXT listener (SCRAM-SHA-512) when the cluster has SCRAM users
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.data_dir / "server.log"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class LocalKafkaCluster:
    """N combined broker+controller nodes on loopback, data kept on disk across stop/start of nodes."""

    def __init__(
        self,
        brokers: int = 1,
        data_dir: Path | None = None,
        heap_mb: int = 512,
        scram_users: dict[str, str] | None = None,
        acls: bool = False,
    ) -> None:
        """`scram_users` (name -> password) adds a SCRAM-SHA-512 listener to every node, as Strimzi's
        KafkaUsers do in the cluster: `sasl_bootstrap_servers` reaches it. `acls` turns on KRaft's standard
        authorizer: a SCRAM user may then do only what it was granted (`grant`). The plaintext listener on
        loopback stays the operator's: its anonymous principal is a super user (it also carries the
        brokers' and controllers' own traffic)."""
        if brokers < 1:
            raise ValueError("at least one broker")
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="techport-kafka-"))
        self.heap_mb = heap_mb
        self.cluster_id = _cluster_id()
        self.nodes = [
            KafkaNode(
                i + 1,
                free_port(),
                free_port(),
                self.data_dir / f"node-{i + 1}",
                free_port() if scram_users or acls else 0,
            )
            for i in range(brokers)
        ]
        self.scram_users = dict(scram_users or {})
        self.acls = acls
        self.jars: Path | None = None

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(node.address for node in self.nodes)

    @property
    def sasl_bootstrap_servers(self) -> str:
        return ",".join(f"127.0.0.1:{node.sasl_port}" for node in self.nodes if node.sasl_port)

    def _properties(self, node: KafkaNode) -> str:
        n = len(self.nodes)
        voters = ",".join(f"{x.node_id}@127.0.0.1:{x.controller_port}" for x in self.nodes)
        replication = min(3, n)
        listeners = f"PLAINTEXT://127.0.0.1:{node.port}"
        if node.sasl_port:
            listeners += f",SASL_PLAINTEXT://127.0.0.1:{node.sasl_port}"
        scram = (
            [
                "sasl.enabled.mechanisms=SCRAM-SHA-512",
                "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config="
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            ]
            if node.sasl_port
            else []
        )
        authorizer = (
            [
                "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                "super.users=User:ANONYMOUS",
                "allow.everyone.if.no.acl.found=false",
            ]
            if self.acls
            else []
        )
        return "\n".join(
            [
                "process.roles=broker,controller",
                f"node.id={node.node_id}",
                f"controller.quorum.voters={voters}",
                f"listeners={listeners},CONTROLLER://127.0.0.1:{node.controller_port}",
                f"advertised.listeners={listeners}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
                *scram,
                *authorizer,
                f"log.dirs={node.data_dir / 'logs'}",
                "num.partitions=1",
                # Topics are created by the project's tooling with their partition counts, never implicitly.
                "auto.create.topics.enable=false",
                f"offsets.topic.replication.factor={replication}",
                f"transaction.state.log.replication.factor={replication}",
                f"transaction.state.log.min.isr={min(2, replication)}",
                f"share.coordinator.state.topic.replication.factor={replication}",
                f"share.coordinator.state.topic.min.isr={min(2, replication)}",
                "offsets.topic.num.partitions=10",
                "group.initial.rebalance.delay.ms=0",
                "log.cleaner.dedupe.buffer.size=4194304",
                # Two cores and three JVMs: give registration and elections time.
                "initial.broker.registration.timeout.ms=180000",
                "",
            ]
        )

    def _java_command(self, jars: Path, main: str, *args: str) -> list[str]:
        java = shutil.which("java", path=os.path.join(os.environ.get("JAVA_HOME", ""), "bin")) or "java"
        return [
            java,
            f"-Xms{self.heap_mb // 2}m",
            f"-Xmx{self.heap_mb}m",
            "-XX:+UseG1GC",
            "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            "-cp",
            f"{jars}/*",
            main,
            *args,
        ]

    def start(self, timeout_s: float = 180.0) -> str:
        self.jars = ensure_jars()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "log4j2.properties").write_text(_LOG4J2)
        for node in self.nodes:
            self._format(node)
        for node in self.nodes:
            self._launch(node)
        self.wait_ready(self.nodes, timeout_s)
        return self.bootstrap_servers

    def grant(self, users: dict[str, str], grants: list[dict[str, object]]) -> None:
        """Add SCRAM users and ACLs on this cluster (see `grant_access`)."""
        grant_access(self.bootstrap_servers, users, grants)

    def _format(self, node: KafkaNode) -> None:
        assert self.jars is not None
        node.data_dir.mkdir(parents=True, exist_ok=True)
        config = node.data_dir / "server.properties"
        config.write_text(self._properties(node))
        if (node.data_dir / "logs" / "meta.properties").exists():
            return
        result = subprocess.run(
            self._java_command(
                self.jars,
                "kafka.tools.StorageTool",
                "format",
                f"--cluster-id={self.cluster_id}",
                "-c",
                str(config),
                # SCRAM credentials live in the cluster metadata; KRaft takes the first ones at format time.
                *(
                    arg
                    for name, password in self.scram_users.items()
                    for arg in ("--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]")
                ),
            ),
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"formatting Kafka storage failed: {result.stdout}{result.stderr}")

    def _launch(self, node: KafkaNode) -> None:
        assert self.jars is not None
        log = node.log_path.open("ab")
        node.process = subprocess.Popen(
            self._java_command(self.jars, "kafka.Kafka", str(node.data_dir / "server.properties")),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        node.log_offset = node.log_path.stat().st_size if node.log_path.exists() else 0  # type: ignore[attr-defined]

    def wait_ready(self, nodes: list[KafkaNode], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        offsets = {node.node_id: getattr(node, "log_offset", 0) for node in nodes}
        pending = list(nodes)
        while pending:
            for node in list(pending):
                if not node.running():
                    raise RuntimeError(f"Kafka node {node.node_id} exited; see {node.log_path}")
                with node.log_path.open("rb") as handle:
                    handle.seek(offsets[node.node_id])
                    if READY_LINE.encode() in handle.read():
                        pending.remove(node)
            if pending and time.monotonic() > deadline:
                raise TimeoutError(f"Kafka did not start in {timeout_s}s; see {pending[0].log_path}")
            if pending:
                time.sleep(0.2)

    def stop_node(self, index: int, kill: bool = False, timeout_s: float = 60.0) -> None:
        """Stop one node: SIGTERM (clean shutdown) or SIGKILL. Its data stays on disk."""
        node = self.nodes[index]
        if not node.running():
            return
        assert node.process is not None
        os.killpg(node.process.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            node.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(node.process.pid, signal.SIGKILL)
            node.process.wait()

    def start_node(self, index: int, timeout_s: float = 180.0) -> None:
        node = self.nodes[index]
        if node.running():
            return
        self._launch(node)
        self.wait_ready([node], timeout_s)

    def stop(self, graceful: bool = True) -> None:
        """Stop every node; `graceful=False` kills them (a throwaway cluster need not shut down cleanly)."""
        for index in range(len(self.nodes)):
            self.stop_node(index, kill=not graceful)
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> LocalKafkaCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def grant_access(bootstrap: str, users: dict[str, str], grants: list[dict[str, object]]) -> None:
    """Add SCRAM users (name -> password) and ACLs ({principal, resource, name, pattern, operations}) through
    a super user's listener, with Kafka's Admin client in one JVM (KafkaAccess.java, run as a single-file
    source program on the broker's jars)."""
    jars = ensure_jars()
    source = Path(__file__).parent / "java" / "KafkaAccess.java"
    spec = json.dumps({"users": [{"name": n, "password": p} for n, p in users.items()], "acls": grants})
    java = shutil.which("java", path=os.path.join(os.environ.get("JAVA_HOME", ""), "bin")) or "java"
    result = subprocess.run(
        [java, "-Xmx256m", "-XX:TieredStopAtLevel=1", "-cp", f"{jars}/*", str(source), bootstrap],
        input=spec,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"granting Kafka access failed: {result.stdout[-2000:]}{result.stderr[-2000:]}")


def docker_available() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
        return True
    except Exception:
        return False


@contextlib.contextmanager
def kafka_endpoint(brokers: int = 1) -> Iterator[tuple[str, LocalKafkaCluster | None]]:
    """The bootstrap servers of a real Kafka, and the local cluster when we started one (for fault tests)."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured, None
        return
    if brokers == 1 and docker_available():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield container.get_bootstrap_server(), None
        return
    with LocalKafkaCluster(brokers=brokers) as cluster:
        yield cluster.bootstrap_servers, cluster
