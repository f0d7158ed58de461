"""The names an event's fields and its refusals go by, in files and on the wire alike.

Shared by the file reader (``ecseq.data``) and the stream decoder (``ecseq.decoding``), so a
report, a dead letter and a metric label use the same word for the same problem.
"""

USER, TS, LABEL, EVENT_ID = "user_id", "ts", "label", "event_id"

# Why a row or an event was refused.
MISSING_FIELD = "missing_field"
BAD_TIMESTAMP = "bad_timestamp"
BAD_LABEL = "bad_label"
BAD_TYPE = "bad_type"
NON_FINITE = "non_finite"
DUPLICATE_EVENT = "duplicate_event"
