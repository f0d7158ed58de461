"""Faust's configuration, derived from the ecseq WorkerSettings (one source of truth: ECSEQ_* variables).

The session timeout is short because a replica that died should lose its partitions within
seconds, not minutes. Web views are ours (/health, /ready, /metrics); Faust's own stats pages
are off, and so are its table and router views (/table/<name>/<key>/ would serve any user's
history to whoever reaches the port). Connections use the one Kafka client configuration (kafka_io/client.py).
"""

from __future__ import annotations

import faust

from ecseq.settings import parse_duration
from kafka_io.client import KafkaClientConfig
from worker.settings import WorkerSettings


def broker_credentials(kafka: KafkaClientConfig) -> faust.types.auth.CredentialsT | None:
    """Faust's form of the TLS / SASL settings (it hands them to every aiokafka client it makes)."""
    if kafka.sasl:
        return faust.SASLCredentials(username=kafka.username, password=kafka.read_password(),
                                     ssl_context=kafka.ssl_context(), mechanism=kafka.sasl_mechanism)
    if kafka.tls:
        return faust.SSLCredentials(kafka.ssl_context())
    return None


def faust_settings(settings: WorkerSettings, kafka: KafkaClientConfig, replication_factor: int = 1) -> dict:
    session = parse_duration(settings.session_timeout)
    return {
        "broker": [f"kafka://{host}" for host in kafka.hosts],
        "broker_credentials": broker_credentials(kafka),
        "topic_replication_factor": replication_factor,
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
        "producer_linger": 0.0,  # outputs go out as whole record batches (worker/record_batches.py)
        "producer_acks": -1,
        "web_enabled": True,
        "web_bind": settings.web_host,
        "web_host": settings.web_host,
        "web_port": settings.web_port,
        "web_metrics_enabled": False,
        "web_stats_enabled": False,
        "web_tables_enabled": False,
        "web_router_enabled": False,
        "worker_redirect_stdouts": False,
        # an agent that raised stops the worker (its unacked batch is redelivered after the
        # restart) instead of being restarted alone with its batch already acknowledged
        "agent_supervisor": "mode.CrashingSupervisor",
    }

