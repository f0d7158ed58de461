"""Apache Kafka's jars, fetched once through Maven into a cache folder ecseq owns, and the Java that runs them.

The version is the one in ``kafka_io/kafka/pom.xml`` (the project's single Kafka version). The
jars land in ``<cache>/<version>/libs`` and Maven's downloads in ``<cache>/m2``, so nothing is
written to the user's own Maven repository; a folder that holds a complete copy is reused as it
is (the marker file is written last). ``python -m kafka_io`` fetches them ahead of time;
``ECSEQ_KAFKA_CACHE`` moves the cache.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from kafka_io.errors import BrokerError
from kafka_io.settings import KafkaSettings

log = logging.getLogger("kafka_io")

KAFKA_DIR = Path(__file__).resolve().parent / "kafka"
POM = KAFKA_DIR / "pom.xml"
LOG4J_CONFIG = KAFKA_DIR / "log4j2.properties"
MIN_JAVA = 17  # Kafka 4.x brokers need Java 17 or newer
_COMPLETE = ".complete"
_NS = {"m": "http://maven.apache.org/POM/4.0.0"}


class KafkaSetupError(BrokerError):
    """Java, Maven or Kafka's jars are missing or unusable; the message says what to install."""


def kafka_version() -> str:
    """The Kafka version the project runs (the pom's ``kafka.version``)."""
    node = ET.parse(POM).getroot().find("m:properties/m:kafka.version", _NS)
    if node is None or not node.text:
        raise KafkaSetupError(f"{POM} has no <kafka.version> property")
    return node.text.strip()


def cache_dir() -> Path:
    return Path(KafkaSettings.from_env().kafka_cache).expanduser()


def java_binary() -> str:
    """``$JAVA_HOME/bin/java`` or ``java`` on PATH, checked to be Java 17 or newer."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise KafkaSetupError(
            "no Java found (Kafka needs Java 17+): install it (`make system-tools`, or "
            "apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
        )
    try:
        shown = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KafkaSetupError(f"cannot run {java}: {exc}") from exc
    match = re.search(r'version "(\d+)(?:\.(\d+))?', shown)
    major = int(match.group(1)) if match else 0
    if major == 1 and match and match.group(2):  # "1.8.0" style
        major = int(match.group(2))
    if major < MIN_JAVA:
        raise KafkaSetupError(f"{java} is Java {major or '?'}; Kafka {kafka_version()} needs Java {MIN_JAVA}+")
    return java


def kafka_libs() -> Path:
    """The folder holding every jar of the broker, fetched with Maven on first use."""
    version = kafka_version()
    root = cache_dir()
    libs = root / version / "libs"
    if (libs / _COMPLETE).exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaSetupError(
            f"Apache Kafka {version} is not in {libs} and Maven is not installed to fetch it: "
            "`make system-tools` (or apt-get install maven)"
        )
    partial = libs.with_name("libs.partial")
    shutil.rmtree(partial, ignore_errors=True)
    log.info("fetching Apache Kafka %s jars with Maven into %s (once)", version, libs)
    started = time.monotonic()
    cmd = [mvn, "--batch-mode", "--quiet", "-f", str(POM), f"-Dmaven.repo.local={root / 'm2'}",
           "dependency:copy-dependencies", "-DincludeScope=runtime", f"-DoutputDirectory={partial}"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KafkaSetupError(f"fetching Kafka {version} with Maven failed: {exc}") from exc
    if done.returncode != 0 or not any(partial.glob(f"kafka_2.13-{version}.jar")):
        tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-5:])
        raise KafkaSetupError(f"fetching Kafka {version} with Maven failed (exit {done.returncode}): {tail}")
    shutil.rmtree(libs, ignore_errors=True)
    partial.rename(libs)
    (libs / _COMPLETE).write_text(version + "\n")
    log.info("Apache Kafka %s fetched in %.1fs", version, time.monotonic() - started)
    return libs


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        java_binary()
        print(kafka_libs())
    except KafkaSetupError as exc:
        print(f"kafka: error: {exc}", file=sys.stderr)
        return 1
    return 0

