"""Load generator for the worker benchmark: N JSON events at a target rate.

A separate process (so its CPU is not the measured app's): an aiokafka producer sends N
events, keyed by user id, to the input topic on a loopback broker, either as fast as it can
(``--rate 0``) or paced to ``--rate`` events/s. Event ids are ``<phase>-<seq>``, so an app
that emits scores (not the events themselves) can still be matched; the send times are
written to ``--times`` (JSON list by seq).

Two sources of events:

- ``--events FILE`` (what bench_worker uses): rows of a real data set, one JSON object per
  line in replay order (event_id, user_id, ts and the feature fields, missing values as
  null), as bench_worker.write_events writes them. Rows ``--offset`` .. ``--offset + n - 1``
  are sent, so consecutive phases continue every user's history in time order; past the end
  the file starts over with every ``ts`` moved on by the file's time span (order is kept).
  Only ``event_id`` is replaced; nothing else is added, so the bytes are the real ones.
- otherwise, made-up events with the synthetic data set's fields plus ``bench_*`` fields,
  ~300 bytes each.

    python -m bench.worker_load --bootstrap 127.0.0.1:PORT --topic IN --n 20000 --rate 0 \
        [--events events.jsonl --offset 2000]

Prints one JSON line: {"sent": n, "seconds": ..., "rate": ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path

from aiokafka import AIOKafkaProducer

from kafka_io.client import KafkaClientConfig

MCC = [f"mcc{i:02d}" for i in range(16)]
DEVICES = [f"dev{i}" for i in range(6)]
COUNTRIES = ["US", "GB", "DE", "FR", "ES", "BR", "IN", "JP"]
CHANNELS = ["app", "web", "pos"]


class EventMaker:
    """Deterministic synthetic events; ~300 bytes of JSON each."""

    def __init__(self, users: int, phase: str, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self.users = [f"u{i:05d}" for i in range(users)]
        self.phase = phase
        self.last_ts: dict[str, float] = {}
        self.ts = 1_704_067_200.0

    def make(self, seq: int, sent: float) -> tuple[bytes, bytes]:
        rng = self.rng
        user = rng.choice(self.users)
        self.ts += rng.expovariate(1 / 30.0)
        prev = self.last_ts.get(user)
        self.last_ts[user] = self.ts
        event = {
            "user_id": user,
            "event_id": f"{self.phase}-{seq}",
            "ts": round(self.ts, 3),
            "amount": round(rng.lognormvariate(3.5, 1.0), 2),
            "hour": float(int(self.ts // 3600) % 24),
            "hours_since_prev": None if prev is None else round((self.ts - prev) / 3600, 4),
            "mcc": rng.choice(MCC),
            "device": rng.choice(DEVICES),
            "country": rng.choice(COUNTRIES),
            "channel": rng.choice(CHANNELS),
            "bench_phase": self.phase,
            "bench_seq": seq,
            "bench_sent": sent,
            "bench_pad": "x" * 40,
        }
        return user.encode(), json.dumps(event, separators=(",", ":")).encode()


class FileEvents:
    """Rows of a data set (JSON lines, in replay order) as events ``<phase>-<seq>``."""

    def __init__(self, path: str, phase: str, offset: int) -> None:
        self.rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
        if not self.rows:
            raise ValueError(f"{path}: no events")
        ts = [row["ts"] for row in self.rows]
        self.span = max(ts) - min(ts) + 1.0
        self.phase, self.offset = phase, offset

    def make(self, seq: int, sent: float) -> tuple[bytes, bytes]:
        wrap, at = divmod(self.offset + seq, len(self.rows))
        event = dict(self.rows[at], event_id=f"{self.phase}-{seq}")
        if wrap:
            event["ts"] = event["ts"] + wrap * self.span
        return str(event["user_id"]).encode(), json.dumps(event, separators=(",", ":")).encode()


async def produce(args: argparse.Namespace) -> dict:
    maker = (FileEvents(args.events, args.phase, args.offset) if args.events
             else EventMaker(args.users, args.phase, args.seed))
    producer = AIOKafkaProducer(
        **KafkaClientConfig.of(args.bootstrap).aiokafka(),
        acks="all",
        linger_ms=args.linger_ms,
        max_batch_size=256 * 1024,
        request_timeout_ms=30_000,
    )
    await producer.start()
    sent_times: list[float] = [0.0] * args.n
    pending: list[asyncio.Future] = []
    sizes = 0
    try:
        started = time.time()
        tick = 0.005  # pacing step
        for seq in range(args.n):
            if args.rate > 0:
                due = started + seq / args.rate
                ahead = due - time.time()
                if ahead > tick:
                    await asyncio.sleep(ahead)
            now = time.time()
            key, value = maker.make(seq, now)
            sizes += len(value)
            sent_times[seq] = now
            pending.append(await producer.send(args.topic, value, key=key))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        seconds = time.time() - started
    finally:
        await producer.stop()
    if args.times:
        Path(args.times).write_text(json.dumps(sent_times))
    return {"sent": args.n, "seconds": round(seconds, 4), "rate": round(args.n / seconds, 1),
            "mean_bytes": round(sizes / max(args.n, 1), 1), "started": started}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=0.0, help="events/s; 0 = as fast as possible")
    parser.add_argument("--events", default=None, help="JSON lines of data-set rows to replay (else made-up events)")
    parser.add_argument("--offset", type=int, default=0, help="first row of --events to send")
    parser.add_argument("--users", type=int, default=3000, help="made-up events only")
    parser.add_argument("--phase", default="run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--linger-ms", type=int, default=5)
    parser.add_argument("--times", default=None, help="write send times (JSON list by seq) here")
    args = parser.parse_args(argv)
    result = asyncio.run(produce(args))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
