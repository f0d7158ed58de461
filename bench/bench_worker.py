"""Stream-worker throughput and latency against the framework's own ceiling, in one run.

Starts Apache Kafka (one node) on loopback, then for each app under test, once per round (a
round starts the app afresh, on its own topics, so that every round sees the same rows on the
same empty state): creates its topics (4 partitions), starts the app as a separate process,
warms it up, and drives it with bench/worker_load.py (another process) replaying rows of the
synthetic data set (``--users`` of its users with all their events, in time order, missing
values as null, event ids replaced by ``<phase>-<seq>``). Every app gets the same rows in the
same order:
  (a) max throughput: N events as fast as the generator can send them; events/s from the
      first input sent to the last output read back. ``--rounds`` runs of it per app, round-robin
      over the apps (this machine's speed drifts 10-20% within minutes): an app's figure is its
      median, a ratio the median of the per-round ratios;
  (b) latency at half that rate (the app's *own* median max), in the last round, right after
      its max phase (the users' histories go on from there): per event, the output's receive time
      (a plain reader in this process) minus the send time the generator recorded (e2e), and
      the output record's own timestamp (set when the app hands it to its producer) minus the
      send time. For the worker the score record's timestamps split e2e into broker + fetch +
      batching wait, processing, hand-off and delivery + read-back, and its own histogram
      ecseq_worker_event_to_score_seconds (input record timestamp -> score delivery
      confirmed) is read from /metrics.
The apps:
  ``bare``          bench/faust_bare.py: forward each event, keyed by user (the framework's
                    ceiling): the worker's own pipeline (settings, micro-batches, record
                    batches, confirmation, runner) without decoding, state and scoring; every
                    bare app gets the worker's ``--worker-env`` settings (batch size, window);
  ``bare-table``    the same plus a per-user table write per event (memory store);
  ``worker``        the real ECSeq worker, ``python -m ecseq_cli worker`` configured through
                    ECSEQ_* variables (``worker_app``), state in RocksDB (the product default);
  ``worker-memory`` the same with ECSEQ_STATE_STORE=memory://;
  ``bare-faust-io`` the bare forwarder with its outputs in Faust's own idiom (``--faust-io``:
                    Topic.send, 16 KiB producer batches, deliveries awaited before the next
                    batch), for reference.
The worker serves an artifact trained here first (``train-encoder --dataset synthetic
--epochs 1``, ~20 s) unless ``--artifacts`` names a store. Its /metrics (per-stage
histograms, batch sizes, outcomes) are scraped after each phase. ``--profile`` samples every
app with py-spy during its first max run and sorts the samples into stages by module
(bench/stage_profile.py; results then go to worker-profile.json: sampling slows the app down).
Targets: worker >= 60% of bare's max throughput; event-to-score p99 <= 50 ms at
half the worker's own max rate. Results: bench/results/worker.json.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench import faust_bare
from bench.common import report_checks
from bench.stage_profile import Profiler
from kafka_io import KafkaClientConfig, KafkaCluster, ensure_topics, free_port
from kafka_io.jars import kafka_version
from worker.settings import WorkerSettings

ROOT = Path(__file__).resolve().parent.parent
PARTITIONS = 4
FIELDS = ("event_id", "user_id", "ts", "amount", "hour", "hours_since_prev", "mcc", "device", "country", "channel")
RATIO_TARGET = 0.6
P99_TARGET_MS = 50.0


@dataclass
class AppSpec:
    """How to start one app under test and where it writes."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    input: str = ""
    output: str = ""
    extra_topics: dict[str, int] = field(default_factory=dict)
    compacted: tuple[str, ...] = ()
    metrics_url: str | None = None  # the worker's /metrics


def bare_app(name: str, run: str, bootstrap: str, options: list[str], extra_env: dict[str, str],
             tmp: Path) -> AppSpec:  # fmt: skip
    """bench/faust_bare.py on its own topics, reading the worker's ECSEQ_* settings as the worker does
    (``extra_env``: the same ones the worker gets), so that both batch alike."""
    topic_in, topic_out = f"bench.{name}.{run}.in", f"bench.{name}.{run}.out"
    argv = [sys.executable, "-m", faust_bare.__name__, "--bootstrap", bootstrap,
            "--input", topic_in, "--output", topic_out, "--group", f"bench-{name}-{run}",
            "--partitions", str(PARTITIONS), "--datadir", str(tmp / f"{name}-{run}-data")]  # fmt: skip
    return AppSpec(name, argv + options, dict(extra_env), input=topic_in, output=topic_out)


# ------------------------------------------------------------------------------------------
# The real worker: `ecseq worker` configured only through ECSEQ_* variables (ecseq/settings.py),
# on its own topics, consumer group / table prefix (app id), data directory and loopback port.
# ------------------------------------------------------------------------------------------
def worker_app(name: str, run: str, bootstrap: str, store: Path, state_store: str, tmp: Path,
               extra_env: dict[str, str]) -> AppSpec:  # fmt: skip
    topics = {t: f"bench.{name}.{run}.{t}" for t in ("in", "out", "dlq", "artifacts", "labels")}
    port = free_port()
    env = {
        "ECSEQ_BROKER": bootstrap,
        "ECSEQ_STORE": str(store),
        "ECSEQ_EVENTS_TOPIC": topics["in"],
        "ECSEQ_SCORES_TOPIC": topics["out"],
        "ECSEQ_DEAD_LETTER_TOPIC": topics["dlq"],
        "ECSEQ_ARTIFACTS_TOPIC": topics["artifacts"],
        "ECSEQ_LABELS_TOPIC": topics["labels"],
        "ECSEQ_APP_ID": f"bench-{name}-{run}",
        "ECSEQ_STATE_STORE": state_store,
        "ECSEQ_DATA_DIR": str(tmp / f"{name}-{run}-data"),
        "ECSEQ_WEB_HOST": "127.0.0.1",
        "ECSEQ_WEB_PORT": str(port),
        "ECSEQ_PARTITIONS": str(PARTITIONS),
        "PYTHONUNBUFFERED": "1",
        **extra_env,
    }
    return AppSpec(name, [sys.executable, "-m", "ecseq_cli", "worker", "--loglevel", "info"], env,
                   input=topics["in"], output=topics["out"],
                   extra_topics={topics["dlq"]: PARTITIONS, topics["artifacts"]: 1},
                   metrics_url=f"http://127.0.0.1:{port}/metrics")  # fmt: skip


# ------------------------------------------------------------------------------------------
# Inputs: the data set's rows, and the artifact the worker serves.
# ------------------------------------------------------------------------------------------
@dataclass
class Replay:
    """The rows the generator replays (a JSON-lines file) and each row's place in its user's history."""

    path: Path
    rows: int
    users: int
    rank: np.ndarray  # each row's index among its user's rows (0 = the user's first event)
    per_user: np.ndarray  # each row's user's number of rows

    def history_fill(self, offset: int, n: int, window: int) -> float:
        """Mean events in the window an event is scored on, over rows offset..offset+n-1 of the replay."""
        idx = offset + np.arange(n)
        wrap, at = np.divmod(idx, self.rows)
        before = wrap * self.per_user[at] + self.rank[at]
        return float(np.minimum(before + 1, window).mean())


def write_events(path: Path, users: int, seed: int = 0) -> Replay:
    """The synthetic data set's events of `users` of its users, in time order, as JSON lines."""
    from ecseq.data.synthetic import generate_synthetic

    frame = generate_synthetic(seed=0)
    everyone = np.sort(frame["user_id"].unique())
    if users and users < len(everyone):
        keep = np.random.default_rng(seed).choice(everyone, users, replace=False)
        frame = frame[frame["user_id"].isin(keep)]
    frame = frame.sort_values("ts", kind="stable").reset_index(drop=True)[list(FIELDS)]
    with path.open("w") as out:
        for row in frame.to_dict("records"):
            for name, value in row.items():
                if isinstance(value, float) and math.isnan(value):
                    row[name] = None
            out.write(json.dumps(row, separators=(",", ":")) + "\n")
    groups = frame.groupby("user_id", sort=False)
    return Replay(path, len(frame), frame["user_id"].nunique(), groups.cumcount().to_numpy(),
                  groups["user_id"].transform("size").to_numpy())


def make_store(path: Path) -> float:
    """A fresh artifact store with one artifact (the product's train-encoder, 1 epoch); seconds taken."""
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "ecseq_cli", "train-encoder", "--dataset", "synthetic",
                           "--store", str(path), "--epochs", "1", "--quiet", "--force"],
                          check=False, cwd=ROOT, capture_output=True, text=True, timeout=600)  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"train-encoder failed: {proc.stderr[-2000:]}")
    return time.time() - started


def artifact_info(store: Path) -> dict:
    version = (store / "CURRENT").read_text().strip()
    manifest = json.loads((store / "versions" / version / "manifest.json").read_text())
    model = manifest.get("model", {})
    return {"store": str(store), "version": version, "window": int(model.get("window", 50)),
            "model": model}


# ------------------------------------------------------------------------------------------
# Reading the outputs, scraping /metrics, profiling.
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Seen:
    recv: float  # when this process read the output
    record_ts: float  # the output record's own timestamp (set by the app's producer at send)
    received: float | None = None  # worker: batch taken (score record "timestamps")
    scored: float | None = None  # worker: batch scored


class OutputReader:
    """Reads an output topic from the start in a thread; remembers when each event came out."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.lock = threading.Lock()
        self.seen: dict[tuple[str, int], Seen] = {}  # (phase, seq) -> first delivery
        self.records = 0
        self.unmatched = 0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="output-reader", daemon=True)

    def start(self) -> OutputReader:
        self._thread.start()
        if not self._ready.wait(30) or self._error:
            raise RuntimeError(f"output reader did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        try:
            asyncio.run(self._read())
        except BaseException as exc:  # reported through start() / count()
            self._error = exc
            self._ready.set()

    async def _read(self) -> None:
        # Kafka answers a fetch as soon as records are there: the default fetch wait adds no latency
        consumer = AIOKafkaConsumer(**KafkaClientConfig.of(self.bootstrap).aiokafka(), group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest")  # fmt: skip
        await consumer.start()
        try:
            tps = [TopicPartition(self.topic, p) for p in range(PARTITIONS)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            self._ready.set()
            while not self._stop.is_set():
                batches = await consumer.getmany(timeout_ms=50)
                now = time.time()
                for messages in batches.values():
                    for m in messages:
                        self._note(m.value, now, m.timestamp / 1000.0)
        finally:
            await consumer.stop()

    def _note(self, value: bytes | None, now: float, record_ts: float) -> None:
        try:
            record = json.loads(value)
            phase, seq = record["event_id"].rsplit("-", 1)
            key = (phase, int(seq))
            stamps = record.get("timestamps") or {}
            seen = Seen(now, record_ts, stamps.get("received"), stamps.get("scored"))
        except (ValueError, KeyError, TypeError, AttributeError):
            with self.lock:
                self.unmatched += 1
            return
        with self.lock:
            self.records += 1
            self.seen.setdefault(key, seen)  # first delivery counts

    def count(self, phase: str) -> int:
        if self._error:
            raise RuntimeError(f"output reader failed: {self._error!r}")
        with self.lock:
            return sum(1 for p, _ in self.seen if p == phase)

    def phase(self, phase: str) -> dict[int, Seen]:
        with self.lock:
            return {s: v for (p, s), v in self.seen.items() if p == phase}


def scrape(url: str | None) -> dict | None:
    """The worker's /metrics as {(name, labels): value}; None if there is no endpoint or it fails."""
    if url is None:
        return None
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return None
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def metrics_delta(before: dict | None, after: dict | None) -> dict | None:
    """Per-batch stage means (ms), batches, mean batch size and outcomes between two scrapes."""
    if before is None or after is None:
        return None

    def d(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    stages = sorted({dict(k[1])["stage"] for k in after if k[0] == "ecseq_worker_stage_duration_seconds_count"})
    per_stage = {}
    for stage in stages:
        count = d("ecseq_worker_stage_duration_seconds_count", stage=stage)
        if count:
            per_stage[stage] = round(1e3 * d("ecseq_worker_stage_duration_seconds_sum", stage=stage) / count, 3)
    def quantile_bound(name: str, q: float) -> float | None:
        """Upper bound (s) of the histogram bucket holding quantile q of the observations between the scrapes."""
        labels = sorted((dict(k[1])["le"] for k in after if k[0] == name + "_bucket"), key=float)
        total = d(name + "_count")
        for le in labels:
            if total and d(name + "_bucket", le=le) >= q * total:
                return float(le)
        return None

    batches = d("ecseq_worker_batch_size_count")
    events = d("ecseq_worker_batch_size_sum")
    e2s = d("ecseq_worker_event_to_score_seconds_count")
    outcomes = {dict(k[1])["outcome"]: d("ecseq_worker_events_total", **dict(k[1]))
                for k in after if k[0] == "ecseq_worker_events_total"}
    return {"stage_mean_ms_per_batch": per_stage, "batches": int(batches),
            "mean_batch_size": round(events / batches, 1) if batches else None,
            "stage_us_per_event": {s: round(1e3 * ms * batches / events, 1) for s, ms in per_stage.items()}
            if events else {},
            "event_to_score_mean_ms": (round(1e3 * d("ecseq_worker_event_to_score_seconds_sum") / e2s, 2)
                                       if e2s else None),
            # the worker's own event-to-score: input record timestamp -> its score's delivery confirmed
            "event_to_score_le_50ms_share": round(d("ecseq_worker_event_to_score_seconds_bucket", le="0.05") / e2s, 4)
            if e2s else None,
            "event_to_score_p50_bucket_ms": _ms(quantile_bound("ecseq_worker_event_to_score_seconds", 0.5)),
            "event_to_score_p99_bucket_ms": _ms(quantile_bound("ecseq_worker_event_to_score_seconds", 0.99)),
            "outcomes": {k: int(v) for k, v in outcomes.items()},
            "duplicates": int(d("ecseq_worker_duplicate_events_total"))}  # fmt: skip


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e3, 3)


# ------------------------------------------------------------------------------------------
# The run.
# ------------------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc); children not included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def generate(bootstrap: str, topic: str, phase: str, n: int, rate: float, events: Path,
             offset: int) -> tuple[dict, list[float]]:  # fmt: skip
    with tempfile.NamedTemporaryFile(prefix="bench-times-", suffix=".json") as times:
        proc = subprocess.run(
            [sys.executable, "-m", "bench.worker_load", "--bootstrap", bootstrap, "--topic", topic,
             "--n", str(n), "--rate", str(rate), "--phase", phase, "--events", str(events),
             "--offset", str(offset), "--times", times.name],
            check=False, cwd=ROOT, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"load generator failed: {proc.stderr[-2000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1]), json.loads(Path(times.name).read_text())


def wait_for(reader: OutputReader, phase: str, n: int, timeout: float, app: subprocess.Popen) -> int:
    deadline = time.time() + timeout
    got = reader.count(phase)
    while got < n and time.time() < deadline:
        if app.poll() is not None:
            raise RuntimeError(f"app under test exited with status {app.returncode}")
        time.sleep(0.05)
        got = reader.count(phase)
    return got


def _pcts(values: np.ndarray) -> dict:
    return {"p50": round(float(np.percentile(values, 50)), 2), "p99": round(float(np.percentile(values, 99)), 2),
            "max": round(float(values.max()), 2)}


def latency_breakdown(seen: dict[int, Seen], sent: list[float]) -> dict:
    """Per event, ms: e2e (sent -> read back), to the output record's timestamp, and, for the worker,
    the segments between: sent -> batch taken (broker, fetch, batching), processing, send, delivery + read."""
    seqs = sorted(seen)
    s = np.array([sent[i] for i in seqs])
    recv = np.array([seen[i].recv for i in seqs])
    rts = np.array([seen[i].record_ts for i in seqs])
    out = {"e2e_ms": _pcts((recv - s) * 1e3), "to_output_timestamp_ms": _pcts((rts - s) * 1e3)}
    if seqs and all(seen[i].received is not None and seen[i].scored is not None for i in seqs):
        received = np.array([seen[i].received for i in seqs])
        scored = np.array([seen[i].scored for i in seqs])
        out["segments_ms"] = {
            "sent_to_batch_taken": _pcts((received - s) * 1e3),
            "processing": _pcts((scored - received) * 1e3),
            "scored_to_send": _pcts((rts - scored) * 1e3),
            "delivery_and_read": _pcts((recv - rts) * 1e3),
        }
    return out


def run_app(spec: AppSpec, run: str, bootstrap: str, args: argparse.Namespace, log_dir: Path, replay: Replay,
            window: int, broker_pid: int | None, latency_rate: Callable[[float], float] | None = None,
            profile: bool = False) -> dict:  # fmt: skip
    """One app on its own topics: warm-up, the max-throughput phase and, when ``latency_rate`` is
    given, the latency phase at the rate it gives for this run's max events/s."""
    ensure_topics(bootstrap, {spec.input: PARTITIONS, spec.output: PARTITIONS, **spec.extra_topics},
                  compacted=spec.compacted)
    reader = OutputReader(bootstrap, spec.output).start()
    log_path = log_dir / f"{spec.name}-{run}.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed below
    started = time.time()
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("ECSEQ_")}  # spec.env configures the app
    app = subprocess.Popen(spec.argv, cwd=ROOT, env={**inherited, **spec.env}, stdout=log,
                           stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    out: dict = {"app": spec.name, "run": run, "argv": spec.argv[1:], "log": str(log_path),
                 "env": {k: v for k, v in spec.env.items() if k.startswith("ECSEQ_")}}
    offset = 0
    try:
        # Warm-up: the group forms, partitions are assigned, the first outputs come back.
        generate(bootstrap, spec.input, "warm", args.warmup, 0, replay.path, offset)
        got = wait_for(reader, "warm", args.warmup, 90, app)
        offset += args.warmup
        out["ready_seconds"] = round(time.time() - started, 2)
        if got < args.warmup:
            raise RuntimeError(f"warm-up: {got}/{args.warmup} events came out within 90 s")
        time.sleep(0.5)
        m0 = scrape(spec.metrics_url)

        # (a) Max throughput.
        profiler = None
        if profile:
            profiler = Profiler(app.pid, log_dir / f"{spec.name}.pyspy.txt")
        cpu0 = cpu_seconds(app.pid)
        bcpu0 = cpu_seconds(broker_pid) if broker_pid else 0.0
        gen, sent = generate(bootstrap, spec.input, "max", args.n, 0, replay.path, offset)
        got = wait_for(reader, "max", args.n, max(90.0, args.n / 300), app)
        cpu1 = cpu_seconds(app.pid)
        bcpu1 = cpu_seconds(broker_pid) if broker_pid else 0.0
        if profiler is not None:
            out["profile"] = profiler.stop()
            out["profile"]["raw"] = str(profiler.out)
        m1 = scrape(spec.metrics_url)
        seen = reader.phase("max")
        last = max(v.recv for v in seen.values())
        seconds = last - sent[0]
        eps = args.n / seconds if got == args.n else got / seconds
        out["max"] = {"events": args.n, "delivered": got, "seconds": round(seconds, 3),
                      "events_per_s": round(eps, 1), "generator_events_per_s": gen["rate"],
                      "event_bytes": gen["mean_bytes"],
                      "mean_history_in_window": round(replay.history_fill(offset, args.n, window), 1),
                      "app_cpu_s": round(cpu1 - cpu0, 2),
                      "app_cpu_us_per_event": round(1e6 * (cpu1 - cpu0) / max(got, 1), 1),
                      "broker_cpu_s": round(bcpu1 - bcpu0, 2),
                      "worker_metrics": metrics_delta(m0, m1)}  # fmt: skip
        print(f"[{spec.name}] max: {got}/{args.n} in {seconds:.2f}s = {eps:,.0f} ev/s "
              f"(generator {gen['rate']:,.0f} ev/s; app CPU {cpu1 - cpu0:.1f}s, broker CPU {bcpu1 - bcpu0:.1f}s)",
              flush=True)  # fmt: skip
        offset += args.n
        if latency_rate is not None:
            _latency_phase(spec, bootstrap, args, reader, replay, window, app, out, latency_rate(eps), offset, m1,
                           broker_pid)  # fmt: skip
    finally:
        stop_started = time.time()
        if app.poll() is None:
            os.killpg(app.pid, signal.SIGTERM)
            try:
                app.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(app.pid, signal.SIGKILL)
                app.wait()
        out["exit_status"] = app.returncode
        out["stop_seconds"] = round(time.time() - stop_started, 2)
        out["duplicates"] = reader.records - len(reader.seen)
        out["unmatched_outputs"] = reader.unmatched
        reader.stop()
        log.close()
    return out


def _latency_phase(spec: AppSpec, bootstrap: str, args: argparse.Namespace, reader: OutputReader, replay: Replay,
                   window: int, app: subprocess.Popen, out: dict, rate: float, offset: int,
                   m1: dict | None, broker_pid: int | None) -> None:  # fmt: skip
    """(b) Latency at a fixed rate (half the app's own max)."""
    n = int(rate * args.latency_seconds)
    bcpu0, started = (cpu_seconds(broker_pid) if broker_pid else 0.0), time.time()
    gen, sent = generate(bootstrap, spec.input, "lat", n, rate, replay.path, offset)
    got = wait_for(reader, "lat", n, 60, app)
    broker_share = ((cpu_seconds(broker_pid) - bcpu0) / (time.time() - started)) if broker_pid else None
    time.sleep(0.3)
    m2 = scrape(spec.metrics_url)
    out["latency"] = {"rate_target": round(rate, 1), "rate_sent": gen["rate"], "events": n, "delivered": got,
                      "mean_history_in_window": round(replay.history_fill(offset, n, window), 1),
                      "broker_cpu_share": None if broker_share is None else round(broker_share, 3),
                      **latency_breakdown(reader.phase("lat"), sent),
                      "worker_metrics": metrics_delta(m1, m2)}  # fmt: skip
    lat = out["latency"]
    print(f"[{spec.name}] latency at {gen['rate']:,.0f} ev/s: e2e p50 {lat['e2e_ms']['p50']} ms, "
          f"p99 {lat['e2e_ms']['p99']} ms; to score record p50 {lat['to_output_timestamp_ms']['p50']} ms, "
          f"p99 {lat['to_output_timestamp_ms']['p99']} ms ({got}/{n} delivered)", flush=True)


def _failed(name: str, exc: Exception, log_dir: Path) -> dict:
    print(f"[{name}] FAILED: {exc}", flush=True)
    out = {"app": name, "error": str(exc)}
    logs = sorted(log_dir.glob(f"{name}-*.log"), key=lambda path: path.stat().st_mtime)
    if logs:  # the run that failed wrote last
        out["log_tail"] = logs[-1].read_text()[-3000:]
    return out


def _median_run(runs: list[dict]) -> dict:
    """The run with the median max throughput (the lower middle one of an even count), with every
    round's figures beside it."""
    ordered = sorted(runs, key=lambda run: run["max"]["events_per_s"])
    median = dict(ordered[(len(ordered) - 1) // 2])
    median["rounds"] = {
        "events_per_s": [run["max"]["events_per_s"] for run in runs],
        "app_cpu_us_per_event": [run["max"]["app_cpu_us_per_event"] for run in runs],
        "delivered": [run["max"]["delivered"] for run in runs],
        "exit_status": [run["exit_status"] for run in runs],
    }
    if any("profile" in run for run in runs):
        median["profile"] = next(run["profile"] for run in runs if "profile" in run)
    return median


def _lower_median(values: list[float]) -> float:
    """The median, or the lower middle value of an even count (the run `_median_run` picks)."""
    return sorted(values)[(len(values) - 1) // 2]


def latency_rate_for(load: float, runs: list[dict]) -> Callable[[float], float]:
    """The latency phase's rate after a max run of ``eps`` events/s: ``load`` times the app's median
    max over its earlier ``runs`` and this one (at least 50 events/s)."""
    return lambda eps: max(50.0, load * _lower_median([run["max"]["events_per_s"] for run in runs] + [eps]))


def _round_ratios(app: dict, base: dict | None) -> list[float]:
    """Per round, the app's max events/s over the base app's (rounds either app lacks are left out)."""
    if not base or "rounds" not in app or "rounds" not in base:
        return []
    return [mine / theirs for mine, theirs in zip(app["rounds"]["events_per_s"], base["rounds"]["events_per_s"])
            if mine and theirs]


def _env_pairs(items: list[str]) -> dict[str, str]:
    pairs = dict(item.split("=", 1) for item in items)
    bad = [k for k in pairs if not k.startswith("ECSEQ_")]
    if bad:
        raise SystemExit(f"--worker-env takes ECSEQ_*=value, not {bad}")
    WorkerSettings.from_env(pairs)  # a bad value stops the bench here, not every app it starts
    return pairs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=30_000, help="events in the max-throughput phase")
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--latency-load", type=float, default=0.5, help="fraction of max rate")
    parser.add_argument("--users", type=int, default=1000,
                        help="users of the synthetic data set replayed (each with all its events, in time order)")
    parser.add_argument("--only-bare", action="store_true", help="skip the real worker")
    parser.add_argument("--apps", default=None,
                        help="comma list of: bare,bare-table,worker,worker-memory,bare-faust-io")
    parser.add_argument("--bare-args", default="",
                        help="extra bench/faust_bare.py options (every bare app)")
    parser.add_argument("--artifacts", default=None,
                        help="artifact store the worker serves (default: train one here, ~20 s)")
    parser.add_argument("--worker-env", action="append", default=[], metavar="ECSEQ_X=V",
                        help="extra worker setting, e.g. ECSEQ_BATCH_SIZE=500 (repeatable); the bare apps "
                             "read it too")
    parser.add_argument("--min-ratio", type=float, default=RATIO_TARGET,
                        help="check: worker max throughput >= this fraction of bare's")
    parser.add_argument("--max-p99-ms", type=float, default=P99_TARGET_MS,
                        help="check: worker event-to-score p99 at half its max rate <= this")
    parser.add_argument("--rounds", type=int, default=3,
                        help="max-throughput runs of each app, interleaved; figures are medians (the last "
                             "round goes on to the latency phase)")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy every app during its first max run (results: worker-profile.json)")
    parser.add_argument("--name", default=None, help="results file name (default worker / worker-profile)")
    args = parser.parse_args()
    names = args.apps.split(",") if args.apps else (
        ["bare", "bare-table"] + ([] if args.only_bare else ["worker", "worker-memory"]) + ["bare-faust-io"])
    extra_env = _env_pairs(args.worker_env)
    results: dict[str, dict] = {}
    setup: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-worker-") as tmp_name:
        tmp = Path(tmp_name)
        started = time.time()
        replay = write_events(tmp / "events.jsonl", args.users)
        setup["events"] = {"source": "synthetic data set (seed 0)", "users": replay.users, "rows": replay.rows,
                           "seconds": round(time.time() - started, 1)}
        store = Path(args.artifacts) if args.artifacts else tmp / "store"
        if any(n.startswith("worker") for n in names) and not args.artifacts:
            setup["train_encoder_seconds"] = round(make_store(store), 1)
            print(f"artifact store: trained in {setup['train_encoder_seconds']} s", flush=True)
        artifact = artifact_info(store) if (store / "CURRENT").exists() else {"window": 50}
        setup["artifact"] = artifact
        with KafkaCluster(nodes=1) as broker:
            broker_pid = broker.nodes[0].pid
            bare = args.bare_args.split()
            specs = {
                "bare": lambda run: bare_app("bare", run, broker.bootstrap, bare, extra_env, tmp),
                "bare-table": lambda run: bare_app("bare-table", run, broker.bootstrap, [*bare, "--table"], extra_env,
                                                   tmp),
                "bare-faust-io": lambda run: bare_app("bare-faust-io", run, broker.bootstrap, [*bare, "--faust-io"],
                                                      extra_env, tmp),
                "worker": lambda run: worker_app("worker", run, broker.bootstrap, store, "rocksdb://", tmp,
                                                 extra_env),
                "worker-memory": lambda run: worker_app("worker-memory", run, broker.bootstrap, store, "memory://",
                                                        tmp, extra_env),
            }  # fmt: skip
            # Max throughput, round-robin over the apps `--rounds` times: this machine's speed drifts
            # by 10-20% within minutes, so each ratio compares runs made side by side, and the
            # figures are medians over rounds. The last round goes on to the latency phase.
            rounds: dict[str, list[dict]] = {name: [] for name in names}
            for round_no in range(1, args.rounds + 1):
                for name in [n for n in names if n not in results]:  # an app that failed stays out
                    run = f"round{round_no}"
                    rate = latency_rate_for(args.latency_load, rounds[name]) if round_no == args.rounds else None
                    try:
                        rounds[name].append(run_app(specs[name](run), run, broker.bootstrap, args, tmp, replay,
                                                    artifact["window"], broker_pid, latency_rate=rate,
                                                    profile=args.profile and round_no == 1))  # fmt: skip
                    except Exception as exc:  # one app failing must not hide the others' numbers
                        results[name] = _failed(name, exc, tmp)
            for name in [n for n in names if n not in results]:
                last = rounds[name][-1]
                results[name] = _median_run(rounds[name]) | {"latency": last["latency"], "latency_run": last["run"]}
            for name in names:
                if args.profile and (tmp / f"{name}.pyspy.txt").exists() and "profile" in results[name]:
                    keep = ROOT / "bench" / "results" / f"worker-profile-{name}.pyspy.txt"
                    keep.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(tmp / f"{name}.pyspy.txt", keep)
                    results[name]["profile"]["raw"] = str(keep.relative_to(ROOT))
    checks: dict[str, bool] = {}
    for name, res in results.items():
        checks[f"{name}: every event came out (max phase, every round)"] = bool(res.get("rounds")) and all(
            delivered == args.n for delivered in res["rounds"]["delivered"])
        checks[f"{name}: every event came out (latency phase)"] = (
            "latency" in res and res["latency"]["delivered"] == res["latency"]["events"])
        checks[f"{name}: stopped cleanly on SIGTERM (every round)"] = bool(res.get("rounds")) and all(
            status == 0 for status in res["rounds"]["exit_status"])
    summary = {}
    for name, res in results.items():
        if "max" not in res:
            continue
        row = {"max_events_per_s": res["max"]["events_per_s"],
               "app_cpu_us_per_event": res["max"]["app_cpu_us_per_event"]}
        if "latency" in res:
            row |= {"latency_rate": res["latency"]["rate_sent"],
                    "e2e_p50_ms": res["latency"]["e2e_ms"]["p50"], "e2e_p99_ms": res["latency"]["e2e_ms"]["p99"],
                    "to_score_record_p50_ms": res["latency"]["to_output_timestamp_ms"]["p50"],
                    "to_score_record_p99_ms": res["latency"]["to_output_timestamp_ms"]["p99"]}  # fmt: skip
        wm = (res.get("latency") or {}).get("worker_metrics")
        if wm:
            row |= {"event_to_score_le_50ms_share": wm["event_to_score_le_50ms_share"],
                    "event_to_score_p99_bucket_ms": wm["event_to_score_p99_bucket_ms"]}
        for key, base in (("over_bare", "bare"), ("over_bare_table", "bare-table"),
                          ("over_bare_faust_io", "bare-faust-io")):
            ratios = _round_ratios(res, results.get(base))
            if ratios:  # per round, this app's max over the base app's in the same round; then the median
                row[key] = round(float(np.median(ratios)), 3)
                row[f"{key}_rounds"] = [round(r, 3) for r in ratios]
        summary[name] = row
    for name in (n for n in results if n.startswith("worker")):
        row = summary.get(name, {})
        checks[f"{name}: max throughput >= {args.min_ratio:.0%} of bare's (same output handling as the worker; "
               "median over rounds)"] = row.get("over_bare", 0.0) >= args.min_ratio
        if "over_bare_faust_io" in row:
            checks[f"{name}: max throughput >= {args.min_ratio:.0%} of bare-faust-io's (Faust's own idiom)"] = (
                row.get("over_bare_faust_io", 0.0) >= args.min_ratio)
        share = row.get("event_to_score_le_50ms_share")
        checks[f"{name}: event-to-score p99 <= {P99_TARGET_MS:g} ms at half its max rate "
               "(worker's histogram, a bucket bound: input record timestamp -> score delivery confirmed)"] = bool(
            share is not None and share >= 0.99)
        checks[f"{name}: end-to-end p99 <= {args.max_p99_ms:g} ms at half its max rate "
               "(generator send -> score read back by a consumer)"] = row.get("e2e_p99_ms", math.inf) <= args.max_p99_ms
    for name, row in summary.items():
        print(f"  {name:14s} {row['max_events_per_s']:8,.0f} ev/s  "
              f"p50 {row.get('e2e_p50_ms', float('nan')):6.1f} ms  p99 {row.get('e2e_p99_ms', float('nan')):6.1f} ms"
              f"  (score record p99 {row.get('to_score_record_p99_ms', float('nan')):6.1f} ms)"
              f"  x bare {row.get('over_bare', float('nan')):.2f}"
              f"  x bare-faust-io {row.get('over_bare_faust_io', float('nan')):.2f}")  # fmt: skip
    result = {"config": {k: v for k, v in vars(args).items()}, "cpus": os.cpu_count(),
              "broker": f"apache kafka {kafka_version()}, 1 node on loopback", "setup": setup,
              "summary": summary, "apps": results}
    return report_checks(args.name or ("worker-profile" if args.profile else "worker"), result, checks)


if __name__ == "__main__":
    sys.exit(main())
