"""How every Kafka client of ecseq connects: one configuration, from the ECSEQ_* settings.

The Faust app, the builder's reads, announcements, rollback, the demo and the benchmarks all
build their clients from a `KafkaClientConfig`, so a cluster that needs TLS or SASL is reached
the same way by each. The password never leaves this object in text: `repr` hides it, and
error messages name the setting, not its value.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka.conn import create_conn
from aiokafka.errors import KafkaError
from aiokafka.protocol.metadata import MetadataRequest

from ecseq.settings import variable
from kafka_io.errors import BrokerError
from kafka_io.settings import KafkaSettings

# aiokafka's connection logger dumps the SASL PLAIN handshake, password included, at DEBUG
_conn_log = logging.getLogger("aiokafka.conn")
_conn_log.setLevel(max(_conn_log.getEffectiveLevel(), logging.INFO))

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class KafkaConfigError(BrokerError):
    """A Kafka client setting is invalid or names a file that cannot be used."""


class KafkaConnectError(BrokerError):
    """The cluster could not be reached or refused us; the message names the cause for an operator."""


@dataclass(frozen=True)
class KafkaClientConfig:
    bootstrap: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "SCRAM-SHA-512"
    username: str = ""
    password: str = field(default="", repr=False)
    password_file: str = ""
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""

    def __post_init__(self) -> None:
        if not self.bootstrap.strip():
            raise KafkaConfigError(f"{variable('broker')} is empty: give host:port[,host:port...]")
        if self.security_protocol not in PROTOCOLS:
            raise KafkaConfigError(f"{variable('kafka_security_protocol')}={self.security_protocol!r} "
                                   f"is not one of {', '.join(PROTOCOLS)}")
        if self.sasl and self.sasl_mechanism not in MECHANISMS:
            raise KafkaConfigError(f"{variable('kafka_sasl_mechanism')}={self.sasl_mechanism!r} "
                                   f"is not one of {', '.join(MECHANISMS)}")
        if self.sasl and not self.username:
            raise KafkaConfigError(f"{self.security_protocol} needs {variable('kafka_username')}")
        if self.sasl and not (self.password or self.password_file):
            raise KafkaConfigError(f"{self.security_protocol} needs {variable('kafka_password')} or "
                                   f"{variable('kafka_password_file')}")
        if bool(self.cert_file) != bool(self.key_file):
            raise KafkaConfigError(f"{variable('kafka_cert_file')} and {variable('kafka_key_file')} "
                                   "go together (mTLS)")

    @classmethod
    def from_settings(cls, settings: KafkaSettings, bootstrap: str | None = None) -> KafkaClientConfig:
        return cls(bootstrap=bootstrap or settings.broker, security_protocol=settings.kafka_security_protocol.upper(),
                   sasl_mechanism=settings.kafka_sasl_mechanism.upper(), username=settings.kafka_username,
                   password=settings.kafka_password, password_file=settings.kafka_password_file,
                   ca_file=settings.kafka_ca_file, cert_file=settings.kafka_cert_file, key_file=settings.kafka_key_file)

    @classmethod
    def of(cls, client: KafkaClientConfig | str) -> KafkaClientConfig:
        """A plaintext configuration for a bare bootstrap string (tests, loopback tools)."""
        return client if isinstance(client, KafkaClientConfig) else cls(bootstrap=client)

    @property
    def sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def hosts(self) -> list[str]:
        return [host.strip() for host in self.bootstrap.split(",") if host.strip()]

    def read_password(self) -> str:
        if self.password:
            return self.password
        path = Path(self.password_file)
        try:
            text = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            raise KafkaConfigError(f"{variable('kafka_password_file')}={path}: "
                                   f"cannot read it ({reason})") from None
        if not text:
            raise KafkaConfigError(f"{variable('kafka_password_file')}={path} is empty")
        return text

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context (CA bundle, optional client certificate), or None without TLS."""
        if not self.tls:
            return None
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        if self.ca_file:
            try:
                context.load_verify_locations(cafile=self.ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise KafkaConfigError(f"{variable('kafka_ca_file')}={self.ca_file}: "
                                       f"not a readable PEM CA bundle ({_reason(exc)})") from None
        if self.cert_file:
            try:
                context.load_cert_chain(self.cert_file, self.key_file)
            except (OSError, ssl.SSLError) as exc:
                raise KafkaConfigError(f"{variable('kafka_cert_file')}={self.cert_file} / "
                                       f"{variable('kafka_key_file')}={self.key_file}: "
                                       f"not a usable certificate and key ({_reason(exc)})") from None
        return context

    def aiokafka(self) -> dict[str, Any]:
        """Keyword arguments for AIOKafkaProducer / AIOKafkaConsumer / AIOKafkaAdminClient."""
        kwargs: dict[str, Any] = {"bootstrap_servers": self.bootstrap, "security_protocol": self.security_protocol}
        if self.tls:
            kwargs["ssl_context"] = self.ssl_context()
        if self.sasl:
            kwargs.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.username,
                          sasl_plain_password=self.read_password())
        return kwargs

    def describe(self) -> str:
        """What an operator needs to tell connections apart in a log line (never the password)."""
        user = f", user {self.username} ({self.sasl_mechanism})" if self.sasl else ""
        return f"{self.bootstrap} over {self.security_protocol}{user}"

    async def check(self, timeout: float = 10.0, kwargs: dict[str, Any] | None = None) -> None:
        """Open one connection to a bootstrap server and authenticate, naming the cause if that fails.

        aiokafka's own clients log the cause and raise only "Unable to bootstrap", so every
        process checks its connection this way first and reports one clear line. ``kwargs``:
        the `aiokafka()` arguments the client was built with (else built here).
        """
        kwargs = self.aiokafka() if kwargs is None else kwargs
        causes = []
        for host in self.hosts:
            name, _, port = host.rpartition(":")
            if not name or not port.isdigit():
                raise KafkaConfigError(f"{variable('broker')}: {host!r} is not host:port")
            conn = None
            try:
                conn = await asyncio.wait_for(create_conn(
                    name, int(port), request_timeout_ms=int(timeout * 1000), ssl_context=kwargs.get("ssl_context"),
                    security_protocol=self.security_protocol, sasl_mechanism=kwargs.get("sasl_mechanism", "PLAIN"),
                    sasl_plain_username=kwargs.get("sasl_plain_username"),
                    sasl_plain_password=kwargs.get("sasl_plain_password")), timeout)
                await asyncio.wait_for(conn.send(MetadataRequest([])), timeout)  # what a client asks first
            except (OSError, KafkaError, TimeoutError) as exc:
                causes.append(f"{host}: {self._explain(exc)}")
                continue
            finally:
                if conn is not None:
                    conn.close()
            return
        raise KafkaConnectError(f"cannot connect to Kafka at {self.describe()}: {'; '.join(causes)}")

    def _explain(self, exc: BaseException) -> str:
        text = _reason(exc)
        cause = exc.__cause__ or exc.__context__
        if isinstance(exc, ssl.SSLCertVerificationError) or isinstance(cause, ssl.SSLCertVerificationError):
            ca = self.ca_file or "the system CA store"
            return (f"the broker's TLS certificate is not trusted by {ca} ({text}); "
                    f"check {variable('kafka_ca_file')}")
        if isinstance(exc, ssl.SSLError):
            return f"TLS handshake failed ({text}): is this a TLS listener?"
        lowered = text.lower()
        if "authentication failed" in lowered or ("sasl" in lowered and "failed" in lowered):
            return (f"authentication failed for user {self.username!r} ({self.sasl_mechanism}): check "
                    f"{variable('kafka_username')} and the password")
        if isinstance(exc, ConnectionRefusedError) or "connect call failed" in lowered:
            return "connection refused (no broker listens there)"
        if isinstance(exc, TimeoutError):
            return ("no answer in time" + (" (a TLS listener? set " + variable("kafka_security_protocol")
                                           + ")" if not self.tls else ""))
        if "closed" in lowered or "reset" in lowered or "eof" in lowered:
            return (f"the broker closed the connection: is this a {self.security_protocol} listener? "
                    f"(here {variable('kafka_security_protocol')}={self.security_protocol}; "
                    "a listener that expects TLS or SASL closes a client that does not speak it)")
        return text


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
