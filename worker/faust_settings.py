"""Faust's configuration, derived from the ecseq Settings (one source of truth: ECSEQ_* variables).

The broker timeouts are short because groups form after about half the session timeout on
the dev broker, and a replica that died should lose its partitions within seconds, not
minutes. Web views are ours (/health, /ready, /metrics); Faust's own stats pages are off.
"""

from __future__ import annotations

from ecseq.settings import Settings, parse_duration


def faust_settings(settings: Settings) -> dict:
    session = parse_duration(settings.session_timeout)
    return {
        "broker": [f"kafka://{host.strip()}" for host in settings.broker.split(",")],
        "store": settings.state_store,
        "datadir": settings.data_dir,
        "topic_partitions": settings.partitions,
        "topic_allow_declare": True,
        "consumer_auto_offset_reset": "earliest",
        "broker_session_timeout": session,
        "broker_heartbeat_interval": session / 6,
        "broker_rebalance_timeout": session,
        "broker_commit_interval": 1.0,
        "stream_buffer_maxsize": 4096,
        "producer_linger": 0.0,  # outputs go out as whole record batches (worker/batches.py): nothing to wait for
        "producer_acks": -1,
        "web_enabled": True,
        "web_bind": settings.web_host,
        "web_host": settings.web_host,
        "web_port": settings.web_port,
        "web_metrics_enabled": False,
        "web_stats_enabled": False,
        "worker_redirect_stdouts": False,
        # an agent that raised stops the worker (its unacked batch is redelivered after the
        # restart) instead of being restarted alone with its batch already acknowledged
        "agent_supervisor": "mode.CrashingSupervisor",
    }


def fetch_wait_ms(settings: Settings) -> int:
    """The consumer's fetch wait (faust_compat.shorten_fetch_wait) in whole milliseconds, at least 1."""
    return max(1, round(parse_duration(settings.fetch_wait) * 1000))
