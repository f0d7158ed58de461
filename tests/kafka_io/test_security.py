"""Kafka clients over TLS and SASL: the session broker's SASL_SSL listener (PLAIN, SCRAM-SHA-256,
SCRAM-SHA-512 for one user), connection failures named in one line without the password, and the
client configuration's own checks (settings, password file, CA bundle, client certificate)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import ipaddress
import logging
import re
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ecseq_cli.settings import Settings
from kafka_io import (
    BrokerError,
    KafkaClientConfig,
    KafkaCluster,
    ensure_topics,
    free_port,
    produce_json,
    read_topic,
    topic_partitions,
)
from kafka_io.client import KafkaConfigError, KafkaConnectError
from kafka_io.security import write_sasl_ssl_material
from tests.conftest import TopicNames

MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
WRONG_PASSWORD = "not-the-password-0123456789"
SECRET = "hunter2-secret"


@pytest.fixture(scope="module")
def sasl(broker: KafkaCluster) -> KafkaClientConfig:
    """A client of the session broker's SASL_SSL listener, built the way every ecseq process builds one."""
    return KafkaClientConfig.from_settings(Settings.from_env(broker.client_settings()))


@pytest.fixture(scope="module")
def password(broker: KafkaCluster) -> str:
    assert broker.material is not None
    return broker.material.password


def check(config: KafkaClientConfig, timeout: float = 5.0) -> None:
    asyncio.run(config.check(timeout=timeout))


# --- the listener and its material -----------------------------------------------------------------


def test_client_settings_describe_the_sasl_ssl_listener(broker: KafkaCluster, password: str) -> None:
    settings = broker.client_settings()
    material = broker.material
    assert material is not None
    assert settings == {
        "ECSEQ_BROKER": broker.sasl_ssl_bootstrap,
        "ECSEQ_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "ECSEQ_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "ECSEQ_KAFKA_USERNAME": "ecseq",
        "ECSEQ_KAFKA_PASSWORD_FILE": str(material.folder / "password"),
        "ECSEQ_KAFKA_CA_FILE": str(material.folder / "ca.pem"),
    }
    assert broker.sasl_ssl_bootstrap != broker.bootstrap
    assert material.password_file.read_text().strip() == password and len(password) >= 16
    for private in (material.password_file, material.keystore, material.folder / "broker.p12.password"):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600, private
    ca = x509.load_pem_x509_certificate(material.ca_file.read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    env = (material.folder / "client.env").read_text()
    assert env.splitlines() == [f"{name}={value}" for name, value in settings.items()]
    assert password not in env and "PASSWORD=" not in env  # the password goes by file only


@pytest.mark.parametrize("by_file", [True, False], ids=["password-file", "password"])
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_produce_and_read_over_sasl_ssl(broker: KafkaCluster, sasl: KafkaClientConfig, password: str,
                                        topic_names: TopicNames, mechanism: str, by_file: bool) -> None:
    if by_file:
        config = dataclasses.replace(sasl, sasl_mechanism=mechanism)
        assert config.password == "" and config.password_file
    else:
        config = dataclasses.replace(sasl, sasl_mechanism=mechanism, password=password, password_file="")
    name = topic_names(mechanism.lower())
    check(config)
    assert ensure_topics(config, {name: 2}) == (1, 1)
    sent = [(f"user-{i}", {"seq": i, "mechanism": mechanism}) for i in range(12)]
    produce_json(config, name, sent)
    got = read_topic(config, name)
    assert sorted((r.key.decode(), r.json()["seq"]) for r in got if r.key) == [(k, v["seq"]) for k, v in sorted(sent)]
    assert {r.json()["mechanism"] for r in got} == {mechanism}
    assert len(read_topic(broker.bootstrap, name)) == 12  # the same cluster behind both listeners


def test_a_client_certificate_does_not_disturb_a_broker_that_asks_for_none(sasl: KafkaClientConfig,
                                                                          tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    check(dataclasses.replace(sasl, cert_file=str(pki["client.pem"]), key_file=str(pki["client.key"])))


# --- failures: one BrokerError naming the cause, never the password ---------------------------------


def failure_cases(broker: KafkaCluster, sasl: KafkaClientConfig,
                  other_ca: Path) -> dict[str, tuple[KafkaClientConfig, str]]:
    wrong = {m: dataclasses.replace(sasl, sasl_mechanism=m, password=WRONG_PASSWORD, password_file="")
             for m in MECHANISMS}
    return {
        **{f"wrong password {m}": (config, rf"authentication failed for user 'ecseq' \({m}\)")
           for m, config in wrong.items()},
        "unknown user": (dataclasses.replace(sasl, username="mallory"), "authentication failed for user 'mallory'"),
        "no CA file": (dataclasses.replace(sasl, ca_file=""),
                       r"TLS certificate is not trusted by the system CA store .*check ECSEQ_KAFKA_CA_FILE"),
        "another CA": (dataclasses.replace(sasl, ca_file=str(other_ca)),
                       rf"TLS certificate is not trusted by {re.escape(str(other_ca))} "),
        "plaintext client on the TLS port": (
            KafkaClientConfig(bootstrap=broker.sasl_ssl_bootstrap),
            r"the broker closed the connection: is this a PLAINTEXT listener\? "
            r"\(here ECSEQ_KAFKA_SECURITY_PROTOCOL=PLAINTEXT; "),
        "SASL without TLS on the TLS port": (dataclasses.replace(sasl, security_protocol="SASL_PLAINTEXT"),
                                             "the broker closed the connection"),
        "TLS client on the plaintext port": (dataclasses.replace(sasl, bootstrap=broker.bootstrap),
                                             "is this a SASL_SSL listener"),
        "nothing listening": (dataclasses.replace(sasl, bootstrap=f"127.0.0.1:{free_port()}"),
                              "connection refused"),
    }


CASES = ("wrong password PLAIN", "wrong password SCRAM-SHA-256", "wrong password SCRAM-SHA-512", "unknown user",
         "no CA file", "another CA", "plaintext client on the TLS port", "SASL without TLS on the TLS port",
         "TLS client on the plaintext port", "nothing listening")


@pytest.mark.parametrize("case", CASES)
def test_a_failed_connection_is_one_clear_error(broker: KafkaCluster, sasl: KafkaClientConfig, password: str,
                                                tmp_path: Path, case: str,
                                                caplog: pytest.LogCaptureFixture) -> None:
    other_ca = write_sasl_ssl_material(tmp_path / "other").ca_file
    cases = failure_cases(broker, sasl, other_ca)
    assert set(cases) == set(CASES)
    config, expected = cases[case]
    # even at DEBUG: aiokafka's connection logger would dump a PLAIN password (kafka_io/client.py quiets it)
    with caplog.at_level(logging.DEBUG), pytest.raises(KafkaConnectError, match=expected) as caught:
        check(config)
    message = str(caught.value)
    assert isinstance(caught.value, BrokerError)
    assert message.startswith(f"cannot connect to Kafka at {config.bootstrap} over {config.security_protocol}")
    assert "\n" not in message
    assert password not in message and WRONG_PASSWORD not in message
    assert password not in caplog.text and WRONG_PASSWORD not in caplog.text


@pytest.mark.parametrize("helper", ["ensure_topics", "produce_json", "read_topic", "topic_partitions"])
def test_helpers_raise_the_named_error_not_a_bootstrap_failure(sasl: KafkaClientConfig, password: str,
                                                               topic_names: TopicNames, helper: str,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    config = dataclasses.replace(sasl, password=WRONG_PASSWORD, password_file="")
    name = topic_names("never")
    calls = {"ensure_topics": lambda: ensure_topics(config, {name: 1}, timeout=10),
             "produce_json": lambda: produce_json(config, name, [("k", 1)], timeout=10),
             "read_topic": lambda: read_topic(config, name, timeout=10),
             "topic_partitions": lambda: topic_partitions(config, timeout=10)}
    with caplog.at_level(logging.INFO), pytest.raises(BrokerError, match="authentication failed") as caught:
        calls[helper]()
    assert WRONG_PASSWORD not in str(caught.value) and password not in str(caught.value)
    assert WRONG_PASSWORD not in caplog.text
    assert name not in topic_partitions(sasl)


# --- the configuration itself -----------------------------------------------------------------------


def test_repr_and_describe_hide_the_password(sasl: KafkaClientConfig, password: str) -> None:
    direct = dataclasses.replace(sasl, password=password, password_file="")
    for config in (sasl, direct):
        assert password not in repr(config) and password not in str(config)
        assert password not in config.describe()
    assert "password_file=" in repr(sasl) and sasl.password_file in repr(sasl)
    assert direct.describe() == f"{sasl.bootstrap} over SASL_SSL, user ecseq (SCRAM-SHA-512)"
    assert password not in repr(Settings(kafka_password=password))
    assert direct.aiokafka()["sasl_plain_password"] == password  # it does reach the client library


def test_from_settings_defaults_to_plaintext() -> None:
    config = KafkaClientConfig.from_settings(Settings(), bootstrap="127.0.0.1:9092")
    assert config.security_protocol == "PLAINTEXT" and not config.tls and not config.sasl
    assert config.ssl_context() is None
    assert config.aiokafka() == {"bootstrap_servers": "127.0.0.1:9092", "security_protocol": "PLAINTEXT"}
    lower = KafkaClientConfig.from_settings(Settings(kafka_security_protocol="sasl_ssl", kafka_sasl_mechanism="plain",
                                                     kafka_username="u", kafka_password="p"), bootstrap="h:1")
    assert (lower.security_protocol, lower.sasl_mechanism) == ("SASL_SSL", "PLAIN")


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"bootstrap": " "}, r"^ECSEQ_BROKER is empty"),
        ({"security_protocol": "TLS"}, r"^ECSEQ_KAFKA_SECURITY_PROTOCOL='TLS' is not one of PLAINTEXT, SSL, "),
        ({"security_protocol": "SASL_SSL", "sasl_mechanism": "GSSAPI", "username": "u", "password": SECRET},
         r"^ECSEQ_KAFKA_SASL_MECHANISM='GSSAPI' is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"),
        ({"security_protocol": "SASL_SSL", "password": SECRET}, r"^SASL_SSL needs ECSEQ_KAFKA_USERNAME$"),
        ({"security_protocol": "SASL_PLAINTEXT", "username": "u"},
         r"^SASL_PLAINTEXT needs ECSEQ_KAFKA_PASSWORD or ECSEQ_KAFKA_PASSWORD_FILE$"),
        ({"security_protocol": "SSL", "cert_file": "client.pem"},
         r"^ECSEQ_KAFKA_CERT_FILE and ECSEQ_KAFKA_KEY_FILE go together \(mTLS\)$"),
        ({"security_protocol": "SSL", "key_file": "client.key"}, r"ECSEQ_KAFKA_CERT_FILE and ECSEQ_KAFKA_KEY_FILE"),
    ],
    ids=["empty-bootstrap", "bad-protocol", "bad-mechanism", "sasl-without-user", "sasl-without-password",
         "cert-without-key", "key-without-cert"],
)
def test_invalid_settings_name_the_variable(kwargs: dict[str, str], expected: str) -> None:
    with pytest.raises(KafkaConfigError, match=expected) as caught:
        KafkaClientConfig(**{"bootstrap": "127.0.0.1:9092", **kwargs})
    assert isinstance(caught.value, BrokerError)
    assert SECRET not in str(caught.value)


def test_a_bad_bootstrap_entry_names_the_variable() -> None:
    with pytest.raises(KafkaConfigError, match=r"^ECSEQ_BROKER: 'no-port' is not host:port$"):
        check(KafkaClientConfig(bootstrap="no-port"))


def test_password_file_problems_name_the_variable(tmp_path: Path) -> None:
    base = KafkaClientConfig(bootstrap="127.0.0.1:9", security_protocol="SASL_PLAINTEXT", username="u",
                             password_file=str(tmp_path / "missing"))
    missing = re.escape(str(tmp_path / "missing"))
    with pytest.raises(KafkaConfigError, match=rf"^ECSEQ_KAFKA_PASSWORD_FILE={missing}: cannot read it "
                                               r"\(No such file or directory\)$"):
        base.aiokafka()
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(KafkaConfigError, match=rf"^ECSEQ_KAFKA_PASSWORD_FILE={re.escape(str(empty))} is empty$"):
        dataclasses.replace(base, password_file=str(empty)).read_password()
    good = tmp_path / "good"
    good.write_text("  s3cret-from-file \n")
    assert dataclasses.replace(base, password_file=str(good)).read_password() == "s3cret-from-file"
    assert dataclasses.replace(base, password="direct", password_file=str(good)).read_password() == "direct"


def test_an_unusable_ca_file_names_the_variable(tmp_path: Path) -> None:
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate\n")
    for path in (tmp_path / "missing.pem", garbage):
        config = KafkaClientConfig(bootstrap="127.0.0.1:9", security_protocol="SSL", ca_file=str(path))
        with pytest.raises(KafkaConfigError,
                           match=rf"^ECSEQ_KAFKA_CA_FILE={re.escape(str(path))}: not a readable PEM CA bundle"):
            config.ssl_context()


# --- client certificates (mTLS) --------------------------------------------------------------------


def make_pki(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate (CN ecseq-client), as PEM files."""
    now = datetime.datetime.now(datetime.UTC)
    folder.mkdir(parents=True, exist_ok=True)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer_key: ec.EllipticCurvePrivateKey,
             issuer: str, *, ca: bool = False, usage: x509.ObjectIdentifier | None = None,
             san: list[x509.GeneralName] | None = None) -> x509.Certificate:
        builder = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if usage is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key, server_key, client_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    files = {
        "ca.pem": cert("test CA", ca_key, ca_key, "test CA", ca=True),
        "server.pem": cert("localhost", server_key, ca_key, "test CA", usage=ExtendedKeyUsageOID.SERVER_AUTH,
                           san=[x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
        "client.pem": cert("ecseq-client", client_key, ca_key, "test CA", usage=ExtendedKeyUsageOID.CLIENT_AUTH),
    }
    out = {}
    for filename, certificate in files.items():
        out[filename] = folder / filename
        out[filename].write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    for filename, key in (("server.key", server_key), ("client.key", client_key), ("ca.key", ca_key)):
        out[filename] = folder / filename
        out[filename].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
    return out


def test_ssl_context_presents_the_client_certificate(tmp_path: Path) -> None:
    """A loopback TLS server that requires a client certificate sees the one the settings name."""
    pki = make_pki(tmp_path)
    config = KafkaClientConfig(bootstrap="127.0.0.1:9093", security_protocol="SSL", ca_file=str(pki["ca.pem"]),
                               cert_file=str(pki["client.pem"]), key_file=str(pki["client.key"]))
    client_context = config.ssl_context()
    assert client_context is not None and client_context.verify_mode == ssl.CERT_REQUIRED
    assert client_context.check_hostname

    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(pki["server.pem"], pki["server.key"])
    server_context.load_verify_locations(pki["ca.pem"])
    server_context.verify_mode = ssl.CERT_REQUIRED
    seen: dict[str, object] = {}
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)
        port = listener.getsockname()[1]

        def serve() -> None:
            try:
                conn, _ = listener.accept()
                with server_context.wrap_socket(conn, server_side=True) as tls:
                    seen["peer"] = tls.getpeercert()
                    tls.sendall(b"ok")
            except Exception as exc:  # reported by the assertion below
                seen["error"] = exc

        server = threading.Thread(target=serve)
        server.start()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                client_context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.recv(2) == b"ok"
        server.join(10)
    assert "error" not in seen, seen
    subject = dict(item for rdn in seen["peer"]["subject"] for item in rdn)  # type: ignore[index]
    assert subject["commonName"] == "ecseq-client"

    # without the certificate the same server refuses the client: the setting is what made it work
    bare = dataclasses.replace(config, cert_file="", key_file="").ssl_context()
    assert bare is not None
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)
        port = listener.getsockname()[1]
        refused: dict[str, object] = {}

        def serve_refusing() -> None:
            conn, _ = listener.accept()
            try:
                with server_context.wrap_socket(conn, server_side=True):
                    pass
            except ssl.SSLError as exc:
                refused["error"] = exc
            finally:
                conn.close()

        server = threading.Thread(target=serve_refusing)
        server.start()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            try:
                with bare.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                    tls.recv(1)  # TLS 1.3 reports the server's refusal on the first read
            except (ssl.SSLError, ConnectionError):
                pass
        server.join(10)
    assert "error" in refused and "certificate" in str(refused["error"]).lower()


@pytest.mark.parametrize("problem", ["missing-cert", "missing-key", "key-of-another-cert", "not-pem"])
def test_an_unusable_client_certificate_names_both_variables(tmp_path: Path, problem: str) -> None:
    pki = make_pki(tmp_path)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    cert, key = {
        "missing-cert": (tmp_path / "nope.pem", pki["client.key"]),
        "missing-key": (pki["client.pem"], tmp_path / "nope.key"),
        "key-of-another-cert": (pki["client.pem"], pki["server.key"]),
        "not-pem": (garbage, pki["client.key"]),
    }[problem]
    config = KafkaClientConfig(bootstrap="127.0.0.1:9093", security_protocol="SSL", ca_file=str(pki["ca.pem"]),
                               cert_file=str(cert), key_file=str(key))
    expected = (rf"^ECSEQ_KAFKA_CERT_FILE={re.escape(str(cert))} / ECSEQ_KAFKA_KEY_FILE={re.escape(str(key))}: "
                r"not a usable certificate and key \(")
    with pytest.raises(KafkaConfigError, match=expected) as caught:
        config.ssl_context()
    assert "\n" not in str(caught.value)
