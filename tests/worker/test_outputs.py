"""Dead letters: the input as it arrived, or cut to fit with the original's size and digest."""

from __future__ import annotations

import hashlib

from worker.outputs import HEADROOM, KEPT_BYTES, Source, dead_letter

SOURCE = Source("events", 2, 41, 1_700_000_000.5)
LIMIT = 1_000_000  # Faust's producer_max_request_size


def test_a_dead_letter_keeps_the_bytes_as_they_arrived():
    letter = dead_letter(b"u1", b"{not json", "bad_json", SOURCE, LIMIT)
    assert (letter.key, letter.value) == (b"u1", b"{not json")
    assert dict(letter.headers) == {"ecseq.reason": b"bad_json", "ecseq.source.topic": b"events",
                                    "ecseq.source.partition": b"2", "ecseq.source.offset": b"41",
                                    "ecseq.source.timestamp": b"1700000000.5"}


def test_a_tombstone_stays_a_tombstone():
    letter = dead_letter(None, None, "tombstone", SOURCE, LIMIT)
    assert (letter.key, letter.value) == (None, None)


def test_a_record_too_large_to_resend_is_cut_with_its_size_and_digest():
    value = bytes(range(256)) * 4000  # 1,024,000 bytes: the broker took it, a dead letter would not fit
    letter = dead_letter(b"u1", value, "oversize", SOURCE, LIMIT)
    headers = dict(letter.headers)
    assert letter.key == b"u1" and letter.value == value[:KEPT_BYTES["value"]]
    assert headers["ecseq.reason"] == b"oversize" and headers["ecseq.truncated"] == b"value"
    assert headers["ecseq.original.value.bytes"] == b"1024000"
    assert headers["ecseq.original.value.sha256"] == hashlib.sha256(value).hexdigest().encode()
    assert "ecseq.original.key.bytes" not in headers


def test_a_huge_key_is_cut_too_and_the_limit_is_exact():
    key, value = b"k" * 600_000, b"v" * 400_000
    letter = dead_letter(key, value, "bad_json", SOURCE, LIMIT)
    assert (letter.key, letter.value) == (key[:KEPT_BYTES["key"]], value[:KEPT_BYTES["value"]])
    assert dict(letter.headers)["ecseq.truncated"] == b"key,value"
    fits = b"v" * (LIMIT - HEADROOM - 2)
    assert dead_letter(b"u1", fits, "oversize", SOURCE, LIMIT).value == fits
    assert dead_letter(b"u1", fits + b"v", "oversize", SOURCE, LIMIT).value == fits[:KEPT_BYTES["value"]]
