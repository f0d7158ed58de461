"""Apache Kafka on loopback, in KRaft mode: one node or an N-node cluster, started as child processes.

Each node is a combined broker + controller (an N-voter quorum), with a PLAINTEXT listener (also
used between brokers), a controller listener and, when asked, a SASL_SSL listener that takes
PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 for one user (kafka_io/security.py). Internal topics are
replicated min(3, N) times, as a production cluster would, and topics are never created by a
metadata request: ecseq creates every topic it uses. Storage lives in a working folder that is
removed on stop unless the caller gave it. Tests, benchmarks, the demo and `ecseq broker` all
start brokers through this class.
"""

from __future__ import annotations

import base64
import concurrent.futures
import ctypes
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from kafka_io.errors import BrokerError
from kafka_io.jars import LOG4J_CONFIG, java_binary, kafka_libs
from kafka_io.security import USERNAME, SaslSslMaterial, write_client_env, write_sasl_ssl_material
from kafka_io.topics import cluster_brokers

log = logging.getLogger("kafka_io")

HOST = "127.0.0.1"
JVM_OPTIONS = ("-Xms256m", "-Xmx768m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true")
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
PORT_ATTEMPTS = 3  # free ports are picked before the JVMs bind them: another process may win one


def free_port(host: str = HOST) -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def die_with_parent() -> Any:
    """preexec_fn asking Linux to SIGTERM a child (a broker node, the demo's services) when we die, even by SIGKILL.

    The signal fires when the *thread* that forked exits, so it is only used from the
    main thread; elsewhere the atexit finalizer and ``stop()`` are the safety net.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # parent already gone before prctl took effect
            os._exit(1)

    return preexec


def _terminate(procs: list[subprocess.Popen[bytes]], timeout: float) -> None:
    """SIGTERM every process at once (a controlled shutdown each), SIGKILL what outlives ``timeout``."""
    alive = [proc for proc in procs if proc.poll() is None]
    for proc in alive:
        try:
            proc.terminate()
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    for proc in alive:
        try:
            proc.wait(max(deadline - time.monotonic(), 0.01))
        except subprocess.TimeoutExpired:
            log.warning("kafka node pid %d ignored SIGTERM for %.1fs; killing it", proc.pid, timeout)
            proc.kill()
            proc.wait()


class _PortTaken(BrokerError):
    """A node could not bind a port that was free when it was picked."""


def _cluster_id() -> str:
    """A random cluster id as Kafka writes one (a UUID's 16 bytes in URL-safe base64, unpadded).

    Never one starting with "-", which the storage tool's command line would read as an option
    (1 id in 64): Kafka's own Uuid.randomUuid() draws again for the same reason."""
    while True:
        cluster_id = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


@dataclass
class KafkaNode:
    """One broker + controller process of a cluster."""

    node_id: int
    port: int
    controller_port: int
    sasl_ssl_port: int | None
    folder: Path
    proc: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def log_path(self) -> Path:
        return self.folder / "broker.log"

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join([line.strip() for line in text.splitlines() if line.strip()][-lines:])


class KafkaCluster:
    """``nodes`` Apache Kafka nodes on loopback; ``sasl_ssl`` names a folder for a SASL_SSL listener's material."""

    def __init__(self, nodes: int = 1, port: int = 0, sasl_ssl: Path | None = None,
                 workdir: Path | None = None) -> None:
        if nodes < 1:
            raise BrokerError(f"a cluster needs at least one node, not {nodes}")
        self.size = nodes
        self._first_port = port
        self.sasl_ssl_dir = Path(sasl_ssl) if sasl_ssl is not None else None
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else None
        self.nodes: list[KafkaNode] = []
        self.material: SaslSslMaterial | None = None
        self.startup_seconds: float | None = None
        self._finalizer: weakref.finalize | None = None
        self._java = ""
        self._libs: Path | None = None
        self._created: list[Path] = []  # node folders this start made (a retry may remove them)

    # --- addresses ------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """The PLAINTEXT bootstrap servers, comma-separated."""
        return ",".join(f"{HOST}:{node.port}" for node in self.nodes)

    @property
    def sasl_ssl_bootstrap(self) -> str:
        return ",".join(f"{HOST}:{node.sasl_ssl_port}" for node in self.nodes if node.sasl_ssl_port)

    def client_settings(self) -> dict[str, str]:
        """The ECSEQ_* settings of a SASL_SSL client of this cluster (password by file)."""
        if self.material is None:
            raise BrokerError("this cluster has no SASL_SSL listener (start it with sasl_ssl=DIR)")
        return self.material.client_settings(self.sasl_ssl_bootstrap)

    @property
    def running(self) -> bool:
        return bool(self.nodes) and all(node.running for node in self.nodes)

    def __repr__(self) -> str:
        return f"KafkaCluster({self.bootstrap or 'not started'}, nodes={self.size}, running={self.running})"

    # --- lifecycle ------------------------------------------------------------------------

    def start(self, timeout: float = 90.0) -> Self:
        """Format and start every node; returns once each serves metadata and all have registered."""
        if self.nodes:
            return self
        started = time.monotonic()
        self._java, self._libs = java_binary(), kafka_libs()
        for attempt in range(PORT_ATTEMPTS):
            if self.workdir is None:
                self.workdir = Path(tempfile.mkdtemp(prefix="ecseq-kafka-"))
            try:
                self._start_nodes(started + timeout)
                break
            except _PortTaken as exc:  # a free port was taken before the JVM bound it: pick others
                self.stop()
                if self._first_port or attempt == PORT_ATTEMPTS - 1:
                    raise BrokerError(str(exc)) from None
                for folder in self._created:  # storage formatted by this attempt only
                    shutil.rmtree(folder, ignore_errors=True)
                log.info("kafka: %s; starting again on other ports", exc)
            except BaseException:
                self.stop()
                raise
        self.startup_seconds = time.monotonic() - started
        log.info("apache kafka up: %d node(s) at %s in %.1fs", self.size, self.bootstrap, self.startup_seconds)
        return self

    def _start_nodes(self, deadline: float) -> None:
        self._plan()
        cluster_id = _cluster_id()
        with concurrent.futures.ThreadPoolExecutor(self.size) as pool:
            list(pool.map(lambda node: self._format(node, cluster_id), self.nodes))
        for node in self.nodes:
            self._launch(node)
        self._finalizer = weakref.finalize(self, _terminate, [n.proc for n in self.nodes if n.proc], 5.0)
        self._wait_registered(range(self.size), deadline)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop every node (SIGTERM, then SIGKILL after ``timeout``); safe to call any number of times."""
        _terminate([node.proc for node in self.nodes if node.proc is not None], timeout)
        for node in self.nodes:
            if node.log_file is not None:
                node.log_file.close()
                node.log_file = None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self.nodes:
            log.info("apache kafka at %s stopped", self.bootstrap)
        self.nodes = []
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def kill(self, index: int) -> None:
        """SIGKILL one node (a crash: no controlled shutdown)."""
        node = self.nodes[index]
        if node.proc is not None and node.proc.poll() is None:
            node.proc.kill()
            node.proc.wait()
        log.info("kafka node %d (port %d) killed", node.node_id, node.port)

    def restart(self, index: int, timeout: float = 90.0) -> None:
        """Start a stopped or killed node again on its storage; returns once it has registered."""
        node = self.nodes[index]
        if node.running:
            return
        if node.log_file is not None:
            node.log_file.close()
        self._launch(node)
        self._wait_registered([index], time.monotonic() + timeout)
        log.info("kafka node %d (port %d) restarted", node.node_id, node.port)

    def wait(self) -> int:
        """Block until any node exits (foreground use); returns its exit status."""
        if not self.nodes:
            raise BrokerError("cluster not started")
        while True:
            for node in self.nodes:
                if node.proc is not None and node.proc.poll() is not None:
                    return node.proc.returncode
            time.sleep(0.1)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # --- internals ------------------------------------------------------------------------

    def _plan(self) -> None:
        assert self.workdir is not None
        self._created = []
        if self._first_port and not _port_free(self._first_port):
            raise BrokerError(f"port {self._first_port} on {HOST} is already in use (another broker running?); "
                              "pick another port or use port 0")
        if self.sasl_ssl_dir is not None:
            self.material = write_sasl_ssl_material(self.sasl_ssl_dir)
        taken: set[int] = {self._first_port} if self._first_port else set()

        def port() -> int:
            while (chosen := free_port()) in taken:
                pass
            taken.add(chosen)
            return chosen

        for index in range(self.size):
            client = self._first_port if index == 0 and self._first_port else port()
            folder = self.workdir / f"node{index + 1}"
            if not folder.exists():
                self._created.append(folder)
            folder.mkdir(parents=True, exist_ok=True)
            self.nodes.append(KafkaNode(index + 1, client, port(), port() if self.material else None, folder))
        for node in self.nodes:
            (node.folder / "server.properties").write_text(self._properties(node))
        if self.material is not None:
            write_client_env(self.material, self.sasl_ssl_bootstrap)

    def _properties(self, node: KafkaNode) -> str:
        replicas = min(3, self.size)
        voters = ",".join(f"{n.node_id}@{HOST}:{n.controller_port}" for n in self.nodes)
        listeners = [f"PLAINTEXT://{HOST}:{node.port}", f"CONTROLLER://{HOST}:{node.controller_port}"]
        advertised = [f"PLAINTEXT://{HOST}:{node.port}"]
        if node.sasl_ssl_port:
            listeners.append(f"SASL_SSL://{HOST}:{node.sasl_ssl_port}")
            advertised.append(f"SASL_SSL://{HOST}:{node.sasl_ssl_port}")
        props = {
            "process.roles": "broker,controller",
            "node.id": node.node_id,
            "controller.quorum.voters": voters,
            "listeners": ",".join(listeners),
            "advertised.listeners": ",".join(advertised),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL",
            "log.dirs": node.folder / "data",
            "num.partitions": 4,
            "default.replication.factor": replicas,
            "offsets.topic.replication.factor": replicas,
            "offsets.topic.num.partitions": 8,
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": min(2, replicas),
            "auto.create.topics.enable": "false",
            # a loopback cluster serves tests and demos: a group forms as soon as its members join
            "group.initial.rebalance.delay.ms": 0,
        }
        if self.material is not None:
            password = self.material.password
            props |= {
                "sasl.enabled.mechanisms": ",".join(("PLAIN", *SCRAM_MECHANISMS)),
                "listener.name.sasl_ssl.plain.sasl.jaas.config":
                    f'org.apache.kafka.common.security.plain.PlainLoginModule required user_{USERNAME}="{password}";',
                **{f"listener.name.sasl_ssl.{m.lower()}.sasl.jaas.config":
                   "org.apache.kafka.common.security.scram.ScramLoginModule required;" for m in SCRAM_MECHANISMS},
                "ssl.keystore.type": "PKCS12",
                "ssl.keystore.location": self.material.keystore,
                "ssl.keystore.password": self.material.keystore_password,
            }
        return "".join(f"{key}={value}\n" for key, value in props.items())

    def _java_command(self, main: str, *args: str) -> list[str]:
        return [self._java, *JVM_OPTIONS, f"-Dlog4j2.configurationFile={LOG4J_CONFIG}", "-cp",
                f"{self._libs}/*", main, *args]

    def _format(self, node: KafkaNode, cluster_id: str) -> None:
        """Kafka's storage tool: the node's log directory, with the SCRAM user in its bootstrap metadata."""
        scram: list[str] = []
        if self.material is not None:
            for mechanism in SCRAM_MECHANISMS:
                scram += ["--add-scram", f"{mechanism}=[name={USERNAME},password={self.material.password}]"]
        cmd = self._java_command("kafka.tools.StorageTool", "format",
                                 "--config", str(node.folder / "server.properties"),
                                 "--cluster-id", cluster_id, "--ignore-formatted", *scram)
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-3:])
            raise BrokerError(f"kafka storage format of node {node.node_id} failed (exit {done.returncode}): {tail}")

    def _launch(self, node: KafkaNode) -> None:
        node.log_file = open(node.log_path, "ab")  # noqa: SIM115 - lives as long as the node
        try:
            node.proc = subprocess.Popen(
                self._java_command("kafka.Kafka", str(node.folder / "server.properties")),
                stdin=subprocess.DEVNULL, stdout=node.log_file, stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent(),  # noqa: PLW1509 - only calls prctl
            )
        except OSError as exc:
            raise BrokerError(f"cannot run Kafka with {self._java}: {exc}") from exc

    def _wait_registered(self, indexes: Any, deadline: float) -> None:
        wanted = {self.nodes[i].node_id for i in indexes}
        while True:
            for node in self.nodes:
                if node.proc is not None and node.proc.poll() is not None and node.node_id in wanted:
                    failure = _PortTaken if "Address already in use" in node.log_tail(50) else BrokerError
                    raise failure(f"kafka node {node.node_id} exited during start (status {node.proc.returncode}): "
                                      f"{node.log_tail() or 'no output'}; log {node.log_path}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrokerError(f"kafka at {self.bootstrap} did not register nodes {sorted(wanted)} in time: "
                                  f"{self.nodes[0].log_tail()}")
            for index in indexes:
                node = self.nodes[index]
                if _port_free(node.port):  # not listening yet: spare aiokafka's connection-error logs
                    break
                try:
                    seen = cluster_brokers(f"{HOST}:{node.port}", timeout=min(5.0, max(left, 0.5)))
                except (BrokerError, OSError, TimeoutError) as exc:
                    log.debug("kafka node %d not ready yet: %r", node.node_id, exc)
                    break
                if not wanted <= seen:
                    break
            else:
                return
            time.sleep(0.1)
