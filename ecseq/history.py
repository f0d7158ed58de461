"""UserHistory: one user's last L validated events, and its compact binary form.

The stream worker keeps one of these per user in a changelog-backed table. Events are stored
raw (not featurised), so an artifact with a new feature spec or encoder re-featurises them.

Order: events are kept sorted by ``ts``, ties in arrival order, because the offline event table
sorts each user's events by time (a stable sort) and online scores equal offline ones only if
the windows hold the same events in the same order. An event that arrives late is inserted where
its time puts it; the windows of events scored before it had arrived are not revisited.

Bound: never more than ``limit`` events (at least the artifact's window, for online windows to
equal offline ones); the oldest go first. An event older than every event of a full history is
not kept at all (its window would need events already dropped): ``append`` returns
:data:`NOT_KEPT` for it.

Numeric values are kept as float32 (NaN = missing; beyond float32's range they are clamped to
its largest finite value, which the feature spec clips anyway), in memory exactly as in the
bytes, so a history behaves the same before and after a round trip.

Binary layout (version 1, little-endian), ~1.8 KB for 50 events of the synthetic data set::

    B version | H n_numeric, H n_categorical | the column names' H lengths, their UTF-8 concatenated
    H user id length, UTF-8 | H n events
    n x H event id lengths, the ids' UTF-8 concatenated | n x f8 ts | n x n_numeric x f4 numerics
    I distinct categorical values, their H lengths, their UTF-8 concatenated
    B code width (1, 2 or 4) | n x n_categorical codes into those values, all ones = missing
    I crc32 of everything before it

In memory the categorical values are held the same way (codes into a per-history list of
distinct values), which keeps the bytes round trip and featurisation cheap.
"""

from __future__ import annotations

import functools
import math
import struct
import sys
import zlib
from array import array
from collections.abc import Sequence
from itertools import accumulate, pairwise

import numpy as np

from ecseq.decoding import Event, EventSchema

FORMAT_VERSION = 1
NOT_KEPT = -1  # append's answer for an event older than every event of a full history
MAX_LIMIT = 0xFFFF  # events a history can hold (the count is stored in two bytes)
SPARE_ROWS = 16  # rows a history's column buffers grow by (see UserHistory._append_row)
_F32_MAX = float(np.finfo(np.float32).max)


def _clamped(numeric: Sequence[float]) -> list[float]:
    """Numerics as a history stores them before float32: beyond float32's range, its largest finite
    value (in Python, NaN passes through both comparisons: a few values, cheaper than numpy calls)."""
    return [min(max(v, -_F32_MAX), _F32_MAX) for v in numeric]
_CODE_TYPES: dict[int, np.dtype] = {1: np.dtype("<u1"), 2: np.dtype("<u2"), 4: np.dtype("<u4")}


class UserHistory:
    """The last `limit` validated events of one user, oldest first, stored raw (not featurised) so a
    new feature spec / encoder can re-featurise them. See the module docstring for order and bounds."""

    __slots__ = ("_buffers", "_codes", "_id_lengths", "_ids", "_index", "_num", "_start", "_ts", "_uses", "_values",
                 "_values_bytes", "schema", "user_id")

    def __init__(self, schema: EventSchema, user_id: str | None, ids: list[str], ts: np.ndarray,
                 numeric: np.ndarray, codes: np.ndarray, values: list[str]) -> None:
        self.schema = schema
        self.user_id = user_id  # None until the first event
        self._ids = ids
        self._ts = ts  # (n,) float64, non-decreasing
        self._num = numeric  # (n, len(schema.numeric)) float32, NaN = missing
        self._codes = codes  # (n, len(schema.categorical)) int32 into _values, -1 = missing
        self._values = values  # distinct categorical values (may hold some no event uses any more)
        self._index: dict[str, int] | None = None  # value -> code, built on the first append
        # Kept up to date by append once to_bytes has built them, so writing a history back after each
        # event costs a few joins rather than re-deriving every section (the worker does it per event):
        self._uses: list[int] | None = None  # per value, the cells whose code it is
        self._id_lengths: array | None = None  # the ids' UTF-8 lengths
        self._values_bytes: bytes | None = None  # the values' section of the bytes
        # Owned by this history alone (a copy shares its columns, not its buffers): the columns are
        # views of these from row _start, so an event appended after the last is one row written
        # (append would otherwise build three new arrays per event)
        self._buffers: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._start = 0

    @classmethod
    def empty(cls, schema: EventSchema) -> UserHistory:
        return cls(schema, None, [], np.empty(0, dtype=np.float64),
                   np.empty((0, len(schema.numeric)), dtype=np.float32),
                   np.empty((0, len(schema.categorical)), dtype=np.int32), [])

    def __len__(self) -> int:
        return len(self._ids)

    def __repr__(self) -> str:
        return f"UserHistory(user_id={self.user_id!r}, events={len(self)})"

    def __contains__(self, event_id: object) -> bool:
        """Whether the history holds this event id (a redelivery), without building event_ids."""
        return event_id in self._ids

    @property
    def event_ids(self) -> tuple[str, ...]:
        return tuple(self._ids)

    def holds(self, event: Event) -> bool:
        """Whether the history holds this event as it is: its id with the same time and values
        (numerics compared as stored). False for an id it holds with other content (a reused id).
        A value the stored copy lacks is not compared: after a swap to a feature spec with new
        columns, a redelivered event's stored copy has them missing."""
        if event.event_id not in self._ids:
            return False
        position = self._ids.index(event.event_id)
        held = self.event(position)
        stored = self._num[position]
        known = ~np.isnan(stored)
        sent = np.array(_clamped(event.numeric), dtype=np.float32)
        return (held.ts == event.ts and np.array_equal(stored[known], sent[known])
                and all(value is None or value == other for value, other in zip(held.categorical, event.categorical)))

    def position(self, event_id: str) -> int | None:
        """Where the history holds this event id, or None."""
        try:
            return self._ids.index(event_id)
        except ValueError:
            return None

    def event_id(self, position: int) -> str:
        return self._ids[position]

    def ts_at(self, position: int) -> float:
        return float(self._ts[position])

    def event(self, position: int) -> Event:
        """The stored event at `position` (numerics as stored: float32 values, NaN = missing)."""
        values = [*self._values, None]
        return Event(self._ids[position], self.user_id or "", float(self._ts[position]),
                     tuple(float(v) for v in self._num[position]),
                     tuple(values[code] for code in self._codes[position]))

    def events(self) -> list[Event]:
        return [self.event(i) for i in range(len(self))]

    def columns(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Events start..stop-1 column-wise, for featurising: numeric float32 (w, n_numeric) with
        NaN = missing, categorical codes int32 (w, n_categorical) into the returned list of values,
        -1 = missing."""
        return self._num[start:stop], self._codes[start:stop], self._values

    def append(self, event: Event, limit: int) -> int:
        """Add `event` in time order; its position afterwards, or NOT_KEPT.

        A duplicate (an event id still in the history) changes nothing and gives the position
        of the copy already held, so a redelivered event is scored on the same window again.
        Positions held from earlier appends may shift (an older event dropped, a late one
        inserted before them): to score several events of one user in a batch, take a
        `copy()` after each append.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be an int in 1..{MAX_LIMIT}, got {limit!r}")
        if event.event_id in self._ids:
            return self._ids.index(event.event_id)
        if self.user_id is not None and event.user_id != self.user_id:
            raise ValueError(f"event {event.event_id!r} of user {event.user_id!r} appended to the history "
                             f"of user {self.user_id!r}")
        if len(event.numeric) != len(self.schema.numeric) or len(event.categorical) != len(self.schema.categorical):
            raise ValueError(f"event {event.event_id!r} does not match the history's schema {self.schema}")
        if not math.isfinite(event.ts):
            raise ValueError(f"event {event.event_id!r} has a non-finite ts {event.ts!r}")
        n = len(self._ids)
        position = n if n == 0 or event.ts >= self._ts[-1] else int(np.searchsorted(self._ts, event.ts, "right"))
        drop = max(0, n + 1 - limit)
        if position < drop:
            return NOT_KEPT
        numeric = _clamped(event.numeric)
        row = [self._code(value) for value in event.categorical]
        self._ids.insert(position, event.event_id)
        if self._id_lengths is not None:
            size = len(event.event_id.encode("utf-8"))
            if size > 0xFFFF:
                self._id_lengths = None  # to_bytes says why it cannot store it
            else:
                self._id_lengths.insert(position, size)
        if self._uses is not None:
            for code in row:
                if code >= 0:
                    self._uses[code] += 1
        if position == n:
            self._append_row(event.ts, numeric, row)
        else:
            self._ts = _insert(self._ts, position, np.array([event.ts]))
            self._num = _insert(self._num, position, np.array([numeric], dtype=np.float32))
            self._codes = _insert(self._codes, position, np.array([row], dtype=np.int32))
            self._buffers = None
        if drop:
            self.drop_oldest(drop)
        self.user_id = event.user_id
        return position - drop

    def drop_oldest(self, count: int) -> None:
        """Forget the `count` oldest events, in place (copies are unaffected; the bytes' cached
        sections stay current, so writing the history back stays cheap)."""
        del self._ids[:count]
        if self._id_lengths is not None:
            del self._id_lengths[:count]
        if self._uses is not None:
            for code in self._codes[:count].ravel().tolist():
                if code >= 0:
                    self._uses[code] -= 1
        self._ts, self._num, self._codes = self._ts[count:], self._num[count:], self._codes[count:]
        self._start += count
        if len(self._values) > 2 * self._codes.size + 16:  # values of dropped events pile up: forget them
            self._compact()

    def _append_row(self, ts: float, numeric: list[float], codes: list[int]) -> None:
        """Write an event after the last one: into the spare rows of this history's own buffers (the
        columns are views of them), reallocated with SPARE_ROWS more rows when full. Rows are only
        ever written past the views' end, so views handed out earlier, and copies sharing them,
        never see a change."""
        n = len(self._ts)
        if self._buffers is None or self._start + n == len(self._buffers[0]):
            self._buffers = (_with_spare_rows(self._ts), _with_spare_rows(self._num), _with_spare_rows(self._codes))
            self._start = 0
        ts_buffer, num_buffer, codes_buffer = self._buffers
        end = self._start + n
        ts_buffer[end] = ts
        num_buffer[end] = numeric
        codes_buffer[end] = codes
        self._ts, self._num, self._codes = (ts_buffer[self._start:end + 1], num_buffer[self._start:end + 1],
                                            codes_buffer[self._start:end + 1])

    def _code(self, value: str | None) -> int:
        if value is None:
            return -1
        if self._index is None:
            self._index = {v: i for i, v in enumerate(self._values)}
        code = self._index.get(value)
        if code is None:
            code = self._index[value] = len(self._values)
            self._values.append(value)
            self._values_bytes = None
            if self._uses is not None:
                self._uses.append(0)
        return code

    def _compact(self) -> None:
        """Forget the values no event uses any more (renumbering the codes; new arrays, so copies
        sharing the old ones are unaffected)."""
        self._codes, self._values = _compacted(self._codes, self._values)
        self._buffers = None  # the codes are a new array now
        self._uses = _uses(self._codes, len(self._values))
        self._index = self._values_bytes = None

    def copy(self) -> UserHistory:
        """A snapshot: later appends to either history do not change the other."""
        copy = UserHistory(self.schema, self.user_id, list(self._ids), self._ts, self._num, self._codes,
                           list(self._values))
        copy._values_bytes = self._values_bytes
        copy._uses = None if self._uses is None else list(self._uses)
        copy._id_lengths = None if self._id_lengths is None else array("H", self._id_lengths)
        return copy

    def without_oldest(self, count: int) -> UserHistory:
        """A copy without the `count` oldest events (how state is kept within a byte limit)."""
        return UserHistory(self.schema, self.user_id, self._ids[count:], self._ts[count:], self._num[count:],
                           self._codes[count:], list(self._values))

    def selected_bytes(self, positions: Sequence[int]) -> bytes:
        """The bytes of a history holding only the events at `positions` (ascending): how a window
        looked before events that arrived later, out of time order, were inserted into it. Its values
        are numbered in order of first use, so the same events give the same bytes whatever this
        history saw. Built without the copy: the builder makes one per labelled event."""
        first, last = positions[0], positions[-1]
        contiguous = last - first + 1 == len(positions)  # the usual case
        rows: slice | np.ndarray = slice(first, last + 1) if contiguous else np.asarray(positions, dtype=np.int64)
        codes = self._codes[rows]
        order = list(dict.fromkeys(codes[codes >= 0].ravel().tolist()))
        renumber = np.full(len(self._values) + 1, -1, dtype=np.int32)  # the last slot: -1 (missing) stays
        renumber[order] = np.arange(len(order), dtype=np.int32)
        ids = self._ids[first:last + 1] if contiguous else [self._ids[i] for i in positions]
        lengths = (self._id_lengths[first:last + 1] if contiguous and self._id_lengths is not None
                   else array("H", _lengths(ids, "event id")))
        values = [self._values[i] for i in order]
        return self._bytes(ids, lengths, self._ts[rows], self._num[rows],
                           struct.pack("<I", len(values)) + _strings(values, "categorical value"), len(values),
                           renumber[codes])

    def with_schema(self, schema: EventSchema) -> UserHistory:
        """The same events under another schema: columns matched by name; a column the history
        lacks (or holds as the other kind) is missing on every event. Shares nothing mutable."""
        if schema == self.schema:
            return self.copy()
        n = len(self)
        numeric = np.full((n, len(schema.numeric)), np.nan, dtype=np.float32)
        for j, name in enumerate(schema.numeric):
            if name in self.schema.numeric:
                numeric[:, j] = self._num[:, self.schema.numeric.index(name)]
        codes = np.full((n, len(schema.categorical)), -1, dtype=np.int32)
        for j, name in enumerate(schema.categorical):
            if name in self.schema.categorical:
                codes[:, j] = self._codes[:, self.schema.categorical.index(name)]
        return UserHistory(schema, self.user_id, list(self._ids), self._ts, numeric, codes, list(self._values))

    # -- bytes -------------------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        if self._uses is None:
            self._uses = _uses(self._codes, len(self._values))
        if 0 in self._uses:  # only values some event uses are stored: the bytes do not depend on the past
            self._compact()
        if self._id_lengths is None:
            self._id_lengths = array("H", _lengths(self._ids, "event id"))
        if self._values_bytes is None:
            self._values_bytes = struct.pack("<I", len(self._values)) + _strings(self._values, "categorical value")
        return self._bytes(self._ids, self._id_lengths, self._ts, self._num, self._values_bytes, len(self._values),
                           self._codes)

    def _bytes(self, ids: list[str], id_lengths: array, ts: np.ndarray, numeric: np.ndarray, values_bytes: bytes,
               n_values: int, codes: np.ndarray) -> bytes:
        """The layout of the module docstring, from the sections' parts."""
        width = 1 if n_values <= 0xFF else 2 if n_values <= 0xFFFF else 4
        body = b"".join([
            _header(self.schema),
            _strings([self.user_id or ""], "user id"),
            struct.pack("<H", len(ids)),
            _little_endian(id_lengths),
            "".join(ids).encode("utf-8"),
            ts.astype("<f8", copy=False).tobytes(),
            numeric.astype("<f4", copy=False).tobytes(),
            values_bytes,
            struct.pack("<B", width),
            codes.astype(_CODE_TYPES[width]).tobytes(),  # -1 wraps to all ones: missing
        ])
        return body + struct.pack("<I", zlib.crc32(body))

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview, schema: EventSchema) -> UserHistory:
        """Raises ValueError naming the problem if `data` is not an intact history; columns are mapped
        to `schema` by name (see with_schema)."""
        data = bytes(data)
        try:
            history = _Reader(data).history(schema)
        except (struct.error, UnicodeDecodeError) as exc:
            raise ValueError(f"corrupt user history ({len(data)} bytes): {exc}") from None
        return history if history.schema == schema else history.with_schema(schema)


def _compacted(codes: np.ndarray, values: list[str]) -> tuple[np.ndarray, list[str]]:
    """Codes and values without the values no code uses (new objects if any is dropped)."""
    used = np.zeros(len(values) + 1, dtype=bool)
    used[codes] = True  # -1 (missing) marks the extra last slot
    if used[:-1].all():
        return codes, values
    keep = np.flatnonzero(used[:-1])
    renumber = np.full(len(values) + 1, -1, dtype=np.int32)
    renumber[keep] = np.arange(len(keep))
    return renumber[codes], [values[i] for i in keep]


def _uses(codes: np.ndarray, n_values: int) -> list[int]:
    """Per value, the cells whose code it is."""
    return np.bincount(codes[codes >= 0], minlength=n_values).tolist()


def _little_endian(values: array) -> bytes:
    if sys.byteorder == "little":
        return values.tobytes()
    swapped = array(values.typecode, values)
    swapped.byteswap()
    return swapped.tobytes()


def _with_spare_rows(column: np.ndarray) -> np.ndarray:
    """A copy of `column` followed by SPARE_ROWS uninitialised rows (UserHistory._append_row)."""
    return np.concatenate((column, np.empty((SPARE_ROWS, *column.shape[1:]), column.dtype)))


def _insert(array: np.ndarray, position: int, rows: np.ndarray) -> np.ndarray:
    """A late event's rows (one arriving after the last is written by UserHistory._append_row)."""
    return np.concatenate((array[:position], rows, array[position:]))


def _lengths(items: Sequence[str], what: str) -> list[int]:
    """Each item's UTF-8 length; a ValueError if one does not fit the two bytes the format gives it."""
    text = "".join(items)
    lengths = list(map(len, items)) if text.isascii() else [len(item.encode("utf-8")) for item in items]
    if lengths and max(lengths) > 0xFFFF:
        raise ValueError(f"a {what} of more than {0xFFFF} bytes cannot be stored in a user history")
    return lengths


def _strings(items: Sequence[str], what: str) -> bytes:
    """Each item's UTF-8 length (H), then the UTF-8 concatenated."""
    lengths = _lengths(items, what)
    return struct.pack(f"<{len(lengths)}H", *lengths) + "".join(items).encode("utf-8")


@functools.lru_cache(maxsize=64)
def _header(schema: EventSchema) -> bytes:
    """The bytes every history of `schema` starts with (format version and column names)."""
    return struct.pack("<BHH", FORMAT_VERSION, len(schema.numeric), len(schema.categorical)) + \
        _strings(schema.columns, "column name")


class _Reader:
    """A cursor over history bytes; every read checks that the bytes are there."""

    def __init__(self, data: bytes) -> None:
        if len(data) < 5:
            raise ValueError(f"corrupt user history: {len(data)} bytes is too short")
        body, (crc,) = data[:-4], struct.unpack("<I", data[-4:])
        if zlib.crc32(body) != crc:
            raise ValueError("corrupt user history: checksum mismatch")
        if data[0] != FORMAT_VERSION:
            raise ValueError(f"unsupported user history format version {data[0]} (expected {FORMAT_VERSION})")
        self.data, self.at = body, 1

    def take(self, size: int) -> bytes:
        if self.at + size > len(self.data):
            raise ValueError(f"corrupt user history: truncated at byte {self.at} (needs {size} more)")
        chunk = self.data[self.at:self.at + size]
        self.at += size
        return chunk

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))

    def array(self, dtype: np.dtype, count: int) -> np.ndarray:
        return np.frombuffer(self.take(dtype.itemsize * count), dtype=dtype)

    def strings(self, count: int) -> list[str]:
        lengths = self.unpack(f"<{count}H")
        blob = self.take(sum(lengths))
        if count == 1:
            return [blob.decode("utf-8")]
        bounds = list(accumulate(lengths, initial=0))
        if blob.isascii():  # one decode, then slices: the common case
            text = blob.decode("ascii")
            return [text[a:b] for a, b in pairwise(bounds)]
        return [blob[a:b].decode("utf-8") for a, b in pairwise(bounds)]

    def history(self, expected: EventSchema | None = None) -> UserHistory:
        """The history; if its header is the one `expected` writes, its column names are not parsed
        again (readers of many histories of one schema: the builder's window store)."""
        if expected is not None and self.data.startswith(_header(expected)):
            self.at, schema = len(_header(expected)), expected
            n_numeric, n_categorical = len(schema.numeric), len(schema.categorical)
        else:
            n_numeric, n_categorical = self.unpack("<HH")
            names = self.strings(n_numeric + n_categorical)
            schema = EventSchema(tuple(names[:n_numeric]), tuple(names[n_numeric:]))
        (user_id,) = self.strings(1)
        (n,) = self.unpack("<H")
        ids = self.strings(n)
        ts = self.array(np.dtype("<f8"), n).astype(np.float64)
        numeric = self.array(np.dtype("<f4"), n * n_numeric).reshape(n, n_numeric).astype(np.float32)
        values = self.strings(*self.unpack("<I"))
        (width,) = self.unpack("<B")
        if width not in _CODE_TYPES:
            raise ValueError(f"corrupt user history: categorical code width {width}")
        codes = self.array(_CODE_TYPES[width], n * n_categorical).reshape(n, n_categorical).astype(np.int32)
        if self.at != len(self.data):
            raise ValueError(f"corrupt user history: {len(self.data) - self.at} unexpected trailing bytes")
        if width < 4:  # all ones = missing (a 4-byte all ones is already -1 as int32)
            codes[codes == (1 << 8 * width) - 1] = -1
        if codes.size and (int(codes.max()) >= len(values) or int(codes.min()) < -1):
            raise ValueError("corrupt user history: categorical code out of range")
        if n and (not user_id or not np.isfinite(ts).all() or (ts[1:] < ts[:-1]).any()):
            raise ValueError("corrupt user history: no user id, or timestamps not finite and in order")
        if len(set(ids)) != n:
            raise ValueError("corrupt user history: repeated event id")
        return UserHistory(schema, user_id or None, ids, ts, numeric, codes, values)
