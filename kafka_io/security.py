"""TLS and SASL material for a loopback SASL_SSL listener: a fresh CA, a broker certificate, one user.

Written into a folder the caller names (``ecseq broker --sasl-ssl DIR``): ``ca.pem`` (what a
client trusts), ``broker.p12`` + ``broker.p12.password`` (the broker's keystore), ``password``
(the SASL user's password, mode 0600) and ``client.env`` (the ``ECSEQ_*`` settings a client
needs, the password by file). Keys never leave the folder.
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from ecseq.settings import variable

USERNAME = "ecseq"
MECHANISM = "SCRAM-SHA-512"
VALID_DAYS = 30


@dataclass(frozen=True)
class SaslSslMaterial:
    folder: Path
    username: str
    password: str

    @property
    def ca_file(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def keystore(self) -> Path:
        return self.folder / "broker.p12"

    @property
    def keystore_password(self) -> str:
        return (self.folder / "broker.p12.password").read_text().strip()

    @property
    def password_file(self) -> Path:
        return self.folder / "password"

    def client_settings(self, bootstrap: str) -> dict[str, str]:
        """The ECSEQ_* settings of a client of the SASL_SSL listener at ``bootstrap``."""
        values = {"broker": bootstrap, "kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": MECHANISM,
                  "kafka_username": self.username, "kafka_password_file": str(self.password_file),
                  "kafka_ca_file": str(self.ca_file)}
        return {variable(name): value for name, value in values.items()}


def write_sasl_ssl_material(folder: Path) -> SaslSslMaterial:
    """Make a new CA, a broker certificate for 127.0.0.1 / localhost, and a user, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ecseq loopback CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    broker_key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    broker = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
              .issuer_name(ca_name).public_key(broker_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(minutes=5))
              .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
              .add_extension(x509.SubjectAlternativeName(names), critical=False)
              .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
              .sign(ca_key, hashes.SHA256()))
    store_password = secrets.token_urlsafe(18)
    keystore = pkcs12.serialize_key_and_certificates(
        b"broker", broker_key, broker, [ca], serialization.BestAvailableEncryption(store_password.encode()))
    password = secrets.token_urlsafe(18)
    _write(folder / "ca.pem", ca.public_bytes(serialization.Encoding.PEM))
    _write(folder / "broker.p12", keystore, private=True)
    _write(folder / "broker.p12.password", store_password.encode() + b"\n", private=True)
    _write(folder / "password", password.encode() + b"\n", private=True)
    return SaslSslMaterial(folder, USERNAME, password)


def write_client_env(material: SaslSslMaterial, bootstrap: str) -> Path:
    path = material.folder / "client.env"
    lines = [f"{name}={value}" for name, value in material.client_settings(bootstrap).items()]
    _write(path, ("\n".join(lines) + "\n").encode())
    return path


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.unlink(missing_ok=True)
    path.touch(mode=0o600 if private else 0o644)
    path.write_bytes(data)
