"""The training window store: labelled samples, each an event's window as the worker saw it, on local disk.

Layout under its directory::

    state.sqlite                       the follower's state, changed in one transaction per flush:
                                       users' recent events, labels that came before their event,
                                       the sample index, the segments, the consumed offsets, counts
    segments/day=YYYY-MM-DD/N.parquet  samples, partitioned by the day of the event's time

Invariants:

- A sample is live iff the index names its (event id, segment); rows elsewhere are garbage that
  compaction removes. So an event is never counted twice, whatever is replayed.
- A segment file is written and fsynced before the transaction that registers it; a file no
  transaction registered (a crash between the two) is deleted when the store opens.
- The offsets in the same transaction say which records the state includes: the follower resumes
  from them, so after a crash every record is applied to the state exactly once.
- Per class, the store keeps the `cap` samples with the smallest hash of their event id: a uniform
  sample of the class (a bottom-k reservoir) that does not depend on arrival order or restarts, as
  long as no label moves a sample out of a full class (the next sample of that class then fills
  the freed place whatever its hash, and which one comes next can depend on the order).
- Samples whose event time is more than `since` before the newest event seen leave with their day.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import math
import os
import sqlite3
import threading
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

log = logging.getLogger("ecseq.builder")

STATE_FILE = "state.sqlite"
LOCK_FILE = "LOCK"
SEGMENTS = "segments"
DAY_SECONDS = 86400
WAL_BYTES = 64 << 20  # the write-ahead log is cut back to this after each checkpoint
MAX_SEGMENTS_PER_DAY = 8  # more, or more dead rows than live ones, and the day is compacted into one
CLASSES = (0, 1)
SAMPLE_SCHEMA = pa.schema([("event_id", pa.string()), ("user_id", pa.string()), ("ts", pa.float64()),
                           ("label", pa.int8()), ("published_ms", pa.int64()), ("labelled_ms", pa.int64()),
                           ("window", pa.binary())])

_TABLES = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS users (user_id TEXT PRIMARY KEY, state BLOB NOT NULL,
                                  pending INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS early_labels (event_id TEXT NOT NULL, user_id TEXT NOT NULL, label INTEGER NOT NULL,
                                         labelled_ms INTEGER NOT NULL, PRIMARY KEY (event_id, user_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS early_by_time ON early_labels (labelled_ms);
CREATE TABLE IF NOT EXISTS samples (event_id TEXT PRIMARY KEY, label INTEGER NOT NULL, hash INTEGER NOT NULL,
                                    crc INTEGER NOT NULL, ts REAL NOT NULL, day INTEGER NOT NULL,
                                    segment TEXT NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS samples_by_class ON samples (label, hash);
CREATE INDEX IF NOT EXISTS samples_by_day ON samples (day);
CREATE INDEX IF NOT EXISTS samples_by_segment ON samples (segment);
CREATE TABLE IF NOT EXISTS segments (name TEXT PRIMARY KEY, day INTEGER NOT NULL, rows INTEGER NOT NULL,
                                     bytes INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS offsets (topic TEXT NOT NULL, partition INTEGER NOT NULL, next INTEGER NOT NULL,
                                    PRIMARY KEY (topic, partition)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counts (kind TEXT NOT NULL, reason TEXT NOT NULL, n INTEGER NOT NULL,
                                   PRIMARY KEY (kind, reason)) WITHOUT ROWID;
"""


class WindowStoreError(RuntimeError):
    """The store's directory cannot be used (unreadable, not a store, made for other data)."""


@dataclass(frozen=True)
class Sample:
    """One labelled event and its window (the worker's history format: oldest first, the event last)."""

    event_id: str
    user_id: str
    ts: float
    label: int
    published_ms: int  # the event's Kafka timestamp
    labelled_ms: int  # its label's Kafka timestamp
    window: bytes


@dataclass(frozen=True)
class Caps:
    """Samples kept per class; above a cap, the ones with the smallest event id hashes stay."""

    negatives: int
    positives: int

    def of(self, label: int) -> int:
        return self.positives if label else self.negatives


@dataclass
class Flush:
    """Everything one flush changes, applied in one transaction (see the module docstring)."""

    samples: dict[str, Sample] = field(default_factory=dict)  # the latest per event id
    users: dict[str, tuple[bytes, int]] = field(default_factory=dict)  # user -> (state, pending events)
    pending: dict[str, int] = field(default_factory=dict)  # user -> pending events, for users whose state is as held
    pending_change: int = 0  # in the store's total of pending events (the users' counts above minus the held)
    # labels waiting for their event: (event id, user id) -> (label, labelled_ms)
    early: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    early_done: set[tuple[str, str]] = field(default_factory=set)  # early labels now applied
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # (topic, partition) -> next offset
    counts: Counter = field(default_factory=Counter)  # (kind, reason) -> records
    dropped: Counter = field(default_factory=Counter)  # (cause, label) -> samples left out before staging
    meta: dict[str, str] = field(default_factory=dict)
    early_expire_before_ms: int | None = None  # early labels stamped before this never met their event
    retain_from: float | None = None  # event time: samples before it are out of the window


@dataclass(frozen=True)
class StoreStats:
    samples: dict[int, int]  # label -> live samples
    bytes: int  # on disk: segments and state
    oldest_ts: float | None
    newest_ts: float | None
    pending: int  # events held that may still be labelled


def event_hash(event_id: str) -> int:
    """A stable 63-bit hash of an event id (the caps' order; the same on every machine and run)."""
    return int.from_bytes(hashlib.blake2b(event_id.encode("utf-8"), digest_size=8).digest(), "little") >> 1


def _window_crc(window: bytes) -> int:
    """What tells two windows apart: the crc32 of a history's bytes but the last 4, its own crc32 of the
    rest (the crc32 of any data followed by that data's crc32 is one constant: it would tell nothing)."""
    return zlib.crc32(memoryview(window)[:-4])


def day_of(ts: float) -> int:
    return math.floor(ts / DAY_SECONDS)


def _day_dir(day: int) -> str:
    try:
        return "day=" + time.strftime("%Y-%m-%d", time.gmtime(day * DAY_SECONDS))
    except (OverflowError, OSError, ValueError):  # an event time far outside the calendar
        return f"day={day}"


class WindowStore:
    """The store in one directory. Thread-safe: the follower commits while a rebuild reads."""

    def __init__(self, root: str | os.PathLike, caps: Caps) -> None:
        self.root = Path(root)
        self.caps = caps
        self._lock = threading.RLock()
        self._owner = None
        try:
            (self.root / SEGMENTS).mkdir(parents=True, exist_ok=True)
            self._owner = _own(self.root / LOCK_FILE)
            self._db = sqlite3.connect(self.root / STATE_FILE, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL: a killed process loses no committed flush
            self._db.execute(f"PRAGMA journal_size_limit={WAL_BYTES}")  # else the WAL keeps its largest size
            self._db.executescript(_TABLES)
        except (OSError, sqlite3.Error) as exc:
            if self._owner is not None:
                os.close(self._owner)  # a store that cannot be used is not held: a later open may succeed
            raise WindowStoreError(f"cannot use window store {self.root}: {getattr(exc, 'strerror', None) or exc}") \
                from None
        self._early = {(e, u) for e, u in self._db.execute("SELECT event_id, user_id FROM early_labels")}
        self._pending = int(self._db.execute("SELECT COALESCE(SUM(pending), 0) FROM users").fetchone()[0])
        self._thresholds = {label: self._threshold(label) for label in CLASSES}
        self._remove_orphans()

    def close(self) -> None:
        with self._lock:
            self._db.close()
            os.close(self._owner)  # releases the lock

    # -- reads for the follower --------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def offsets(self) -> dict[tuple[str, int], int]:
        return {(t, p): n for t, p, n in self._db.execute("SELECT topic, partition, next FROM offsets")}

    def users(self, user_ids: Iterable[str]) -> dict[str, tuple[bytes, int]]:
        """(state, pending events) of the users the store holds among these."""
        return self._many("SELECT user_id, state, pending FROM users WHERE user_id IN ({})", user_ids, rest=True)

    def has_early(self, key: tuple[str, str]) -> bool:
        """Whether a label waits for this (event id, user id)."""
        return key in self._early

    def early(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], tuple[int, int]]:
        """(label, labelled_ms) of the labels waiting for these (event id, user id)."""
        out = {}
        for key in keys:
            row = self._db.execute("SELECT label, labelled_ms FROM early_labels WHERE event_id = ? AND user_id = ?",
                                   key).fetchone()
            if row is not None:
                out[key] = (int(row[0]), int(row[1]))
        return out

    def counts(self) -> Counter:
        return Counter({(k, r): n for k, r, n in self._db.execute("SELECT kind, reason, n FROM counts")})

    def _many(self, sql: str, keys: Iterable[str], rest: bool = False) -> dict:
        keys, out = list(keys), {}
        for start in range(0, len(keys), 500):  # under SQLite's bound-variable limit
            part = keys[start:start + 500]
            for row in self._db.execute(sql.format(",".join("?" * len(part))), part):
                out[row[0]] = row[1:] if rest else row[1]
        return out

    # -- the flush ---------------------------------------------------------------------------------

    def admits(self, event_id: str, label: int) -> bool:
        """Whether a sample could be kept: its class is under its cap, its hash is below the largest
        kept, or the store holds the event (a new label replaces the old). Saves materialising windows
        the cap would drop; `commit` decides exactly."""
        limit = self._thresholds[label]
        if limit is None or event_hash(event_id) <= limit:
            return True
        return self._db.execute("SELECT 1 FROM samples WHERE event_id = ?", (event_id,)).fetchone() is not None

    def commit(self, flush: Flush) -> Counter:
        """Apply one flush; returns the samples dropped, by (cause, label) with cause cap or retention."""
        with self._lock:
            dropped: Counter = Counter(flush.dropped)
            rows, replaced = self._admit(flush, dropped)
            written = self._write_segments(rows)
            obsolete: set[str] = set()
            with self._transaction() as db:
                for event_id in replaced:  # relabelled, and the new label is not kept: the old one goes
                    (segment,) = db.execute("SELECT segment FROM samples WHERE event_id = ?", (event_id,)).fetchone()
                    obsolete.add(segment)
                    db.execute("DELETE FROM samples WHERE event_id = ?", (event_id,))
                self._index(db, written, obsolete)
                self._enforce_caps(db, dropped, obsolete)
                if flush.retain_from is not None:
                    self._retain(db, day_of(flush.retain_from), dropped, obsolete)
                expired = self._apply_state(db, flush)
                gone = self._empty_segments(db, obsolete)
            self._pending += flush.pending_change  # once committed: a failed flush changes nothing here
            self._early.difference_update(flush.early_done)
            self._early.update(flush.early)
            self._early.difference_update(expired)
            self._unlink(gone)
            days = {day for _, day, _ in written}  # and those whose rows died without a write (caps, relabels)
            days.update(self._many("SELECT name, day FROM segments WHERE name IN ({})", obsolete).values())
            for day in sorted(days):
                self._compact_if_needed(day)
            self._thresholds = {label: self._threshold(label) for label in CLASSES}
            return dropped

    def _admit(self, flush: Flush, dropped: Counter) -> tuple[list[Sample], list[str]]:
        """The samples that change the store (not already held as they are, not before the window, not
        above a full class's largest kept hash: the cap would evict them at once), and the held events
        whose new label is not kept."""
        held = self._many("SELECT event_id, label, crc FROM samples WHERE event_id IN ({})", flush.samples, rest=True)
        rows, replaced = [], []
        for sample in flush.samples.values():
            old = held.get(sample.event_id)
            if old == (sample.label, _window_crc(sample.window)):
                continue  # a replay after a restart, or the same label again
            limit = self._thresholds[sample.label]
            if flush.retain_from is not None and day_of(sample.ts) < day_of(flush.retain_from):  # as _retain
                dropped["retention", sample.label] += 1
            elif limit is not None and event_hash(sample.event_id) > limit and (old is None or old[0] != sample.label):
                dropped["cap", sample.label] += 1
            else:
                rows.append(sample)
                continue
            if old is not None:
                replaced.append(sample.event_id)
        return rows, replaced

    def _threshold(self, label: int) -> int | None:
        """The largest hash a full class keeps (None while the class is under its cap)."""
        cap = self.caps.of(label)
        row = self._db.execute("SELECT hash FROM samples WHERE label = ? ORDER BY hash LIMIT 1 OFFSET ?",
                               (label, cap - 1)).fetchone()
        return None if row is None else int(row[0])

    def _write_segments(self, rows: list[Sample]) -> list[tuple[str, int, list[Sample]]]:
        """One new segment per day the samples fall on: (name, day, samples)."""
        by_day: dict[int, list[Sample]] = defaultdict(list)
        for sample in rows:
            by_day[day_of(sample.ts)].append(sample)
        written = []
        for day, samples in sorted(by_day.items()):
            name = self._new_segment_name(day)
            self._write_parquet(name, _table(samples))
            written.append((name, day, samples))
        return written

    def _new_segment_name(self, day: int) -> str:
        number = int(self.meta("segment_seq") or 0) + 1
        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('segment_seq', ?)", (str(number),))
        return f"{SEGMENTS}/{_day_dir(day)}/{number:012d}.parquet"

    def _write_parquet(self, name: str, table: pa.Table) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def _index(self, db: sqlite3.Connection, written: list[tuple[str, int, list[Sample]]],
               obsolete: set[str]) -> None:
        for name, day, samples in written:
            obsolete.update(self._many("SELECT event_id, segment FROM samples WHERE event_id IN ({})",
                                       (s.event_id for s in samples)).values())
            db.executemany("INSERT OR REPLACE INTO samples VALUES (?, ?, ?, ?, ?, ?, ?)",
                           [(s.event_id, s.label, event_hash(s.event_id), _window_crc(s.window), s.ts, day, name)
                            for s in samples])
            db.execute("INSERT INTO segments VALUES (?, ?, ?, ?)",
                       (name, day, len(samples), (self.root / name).stat().st_size))

    def _enforce_caps(self, db: sqlite3.Connection, dropped: Counter, obsolete: set[str]) -> None:
        for label in CLASSES:
            over = db.execute("SELECT COUNT(*) FROM samples WHERE label = ?", (label,)).fetchone()[0] \
                - self.caps.of(label)
            if over > 0:
                evicted = db.execute("SELECT event_id, segment FROM samples WHERE label = ? ORDER BY hash DESC "
                                     "LIMIT ?", (label, over)).fetchall()
                db.executemany("DELETE FROM samples WHERE event_id = ?", [(e,) for e, _ in evicted])
                obsolete.update(s for _, s in evicted)
                dropped["cap", label] += len(evicted)

    def _retain(self, db: sqlite3.Connection, first_day: int, dropped: Counter, obsolete: set[str]) -> None:
        for label, count in db.execute("SELECT label, COUNT(*) FROM samples WHERE day < ? GROUP BY label",
                                       (first_day,)).fetchall():
            dropped["retention", label] += count
        db.execute("DELETE FROM samples WHERE day < ?", (first_day,))
        obsolete.update(name for (name,) in db.execute("SELECT name FROM segments WHERE day < ?", (first_day,)))

    def _apply_state(self, db: sqlite3.Connection, flush: Flush) -> list[tuple[str, str]]:
        """Returns the early labels expired."""
        expired: list[tuple[str, str]] = []
        db.executemany("INSERT OR REPLACE INTO users VALUES (?, ?, ?)",
                       [(u, s, p) for u, (s, p) in flush.users.items()])
        db.executemany("UPDATE users SET pending = ? WHERE user_id = ?", [(p, u) for u, p in flush.pending.items()])
        db.executemany("DELETE FROM early_labels WHERE event_id = ? AND user_id = ?", list(flush.early_done))
        db.executemany("INSERT OR REPLACE INTO early_labels VALUES (?, ?, ?, ?)",
                       [(*key, *label) for key, label in flush.early.items()])
        if flush.early_expire_before_ms is not None:
            expired = db.execute("SELECT event_id, user_id FROM early_labels WHERE labelled_ms < ?",
                                 (flush.early_expire_before_ms,)).fetchall()
            db.executemany("DELETE FROM early_labels WHERE event_id = ? AND user_id = ?", expired)
            flush.counts["labels", "unknown_event"] += len(expired)
        db.executemany("INSERT OR REPLACE INTO offsets VALUES (?, ?, ?)",
                       [(t, p, n) for (t, p), n in flush.offsets.items()])
        db.executemany("INSERT INTO counts VALUES (?, ?, ?) "
                       "ON CONFLICT (kind, reason) DO UPDATE SET n = n + excluded.n",
                       [(k, r, n) for (k, r), n in flush.counts.items() if n])
        db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", list(flush.meta.items()))
        return expired

    def _empty_segments(self, db: sqlite3.Connection, candidates: set[str]) -> list[str]:
        gone = [name for name in candidates
                if db.execute("SELECT 1 FROM samples WHERE segment = ? LIMIT 1", (name,)).fetchone() is None]
        db.executemany("DELETE FROM segments WHERE name = ?", [(name,) for name in gone])
        return gone

    def _compact_if_needed(self, day: int) -> None:
        segments = [name for (name,) in self._db.execute("SELECT name FROM segments WHERE day = ?", (day,))]
        rows = self._db.execute("SELECT COALESCE(SUM(rows), 0) FROM segments WHERE day = ?", (day,)).fetchone()[0]
        live = self._db.execute("SELECT COUNT(*) FROM samples WHERE day = ?", (day,)).fetchone()[0]
        if len(segments) <= MAX_SEGMENTS_PER_DAY and 2 * live >= rows:
            return
        table = pa.concat_tables(self._live_rows(name) for name in segments)
        name = self._new_segment_name(day)
        self._write_parquet(name, table)
        with self._transaction() as db:
            db.execute("UPDATE samples SET segment = ? WHERE day = ?", (name, day))
            db.executemany("DELETE FROM segments WHERE name = ?", [(s,) for s in segments])
            db.execute("INSERT INTO segments VALUES (?, ?, ?, ?)",
                       (name, day, table.num_rows, (self.root / name).stat().st_size))
        self._unlink(segments)

    def _live_rows(self, segment: str, since: float | None = None) -> pa.Table:
        sql, args = "SELECT event_id FROM samples WHERE segment = ?", [segment]
        if since is not None:
            sql, args = sql + " AND ts >= ?", [segment, since]
        live = pa.array([e for (e,) in self._db.execute(sql, args)], pa.string())
        table = pq.read_table(self.root / segment, schema=SAMPLE_SCHEMA)
        return table.filter(pc.is_in(table["event_id"], value_set=live))

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _unlink(self, names: Iterable[str]) -> None:
        for name in names:
            (self.root / name).unlink(missing_ok=True)

    def _remove_orphans(self) -> None:
        """Files no committed transaction registers: a flush or compaction killed half-way."""
        known = {name for (name,) in self._db.execute("SELECT name FROM segments")}
        for path in (self.root / SEGMENTS).rglob("*"):
            name = path.relative_to(self.root).as_posix()
            if path.is_file() and name not in known:
                path.unlink()

    # -- reads for a rebuild, metrics and tests ----------------------------------------------------

    def samples(self, since: float | None = None) -> list[Sample]:
        """The live samples, with event time at or after `since` if given, in no particular order."""
        with self._lock:
            names = [name for (name,) in self._db.execute("SELECT name FROM segments ORDER BY name")]
            tables = [self._live_rows(name, since) for name in names]
        if not tables:
            return []
        columns = pa.concat_tables(tables).to_pydict()
        return [Sample(*values) for values in zip(*(columns[f.name] for f in SAMPLE_SCHEMA), strict=True)]

    def newest_ts(self) -> float | None:
        value = self.meta("newest_ts")
        return None if value is None else float(value)

    def stats(self) -> StoreStats:
        with self._lock:
            per_class = dict.fromkeys(CLASSES, 0)
            per_class.update(self._db.execute("SELECT label, COUNT(*) FROM samples GROUP BY label").fetchall())
            oldest, newest = self._db.execute("SELECT MIN(ts), MAX(ts) FROM samples").fetchone()
            segment_bytes = self._db.execute("SELECT COALESCE(SUM(bytes), 0) FROM segments").fetchone()[0]
            state_bytes = sum(p.stat().st_size for p in self.root.glob(STATE_FILE + "*"))
            return StoreStats(per_class, int(segment_bytes + state_bytes), oldest, newest, self._pending)


def _own(path: Path) -> int:
    """An exclusive lock on the store, held while this process uses it (two writers would corrupt it)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip() or "unknown"
        os.close(fd)
        raise WindowStoreError(f"another builder (pid {holder}) uses window store {path.parent}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _table(samples: list[Sample]) -> pa.Table:
    return pa.Table.from_pydict({f.name: [getattr(s, f.name) for s in samples] for f in SAMPLE_SCHEMA},
                                schema=SAMPLE_SCHEMA)
