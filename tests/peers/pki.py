"""A throw-away certificate authority for TLS tests, made with ``cryptography``.

``make_pki(directory)`` writes PEM files and returns a :class:`Pki` with their paths:

- ``ca_cert``: the trusted test CA (give it to clients as ``ca_file``, to servers as trusted
  client CA);
- ``server_cert`` / ``server_key`` (and ``server_pem``: key then certificate in one file, as
  Orthanc's ``SslCertificate`` wants): for ``127.0.0.1`` and ``localhost`` (subjectAltName);
- ``client_cert`` / ``client_key``: a client certificate signed by the test CA;
- ``untrusted_ca_cert``, ``untrusted_client_cert`` / ``untrusted_client_key``: a second CA
  nobody trusts, and a client certificate it signed.

RSA 2048 keys, SHA-256 signatures, valid from an hour ago for a day. Nothing is shared
between calls: each call makes new keys.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_KEY_SIZE = 2048


@dataclass(frozen=True)
class Pki:
    """Paths of the PEM files written by :func:`make_pki`."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    server_pem: Path
    """The server's private key followed by its certificate (one file)."""
    client_cert: Path
    client_key: Path
    untrusted_ca_cert: Path
    untrusted_client_cert: Path
    untrusted_client_key: Path


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=_KEY_SIZE)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pacsfed tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _builder(subject: x509.Name, issuer: x509.Name, key: rsa.RSAPrivateKey) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
    )


def _ca(common_name: str) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    key = _key()
    name = _name(common_name)
    cert = (
        _builder(name, name, key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(
    common_name: str,
    ca_cert: x509.Certificate,
    ca_key: rsa.RSAPrivateKey,
    *,
    server: bool,
) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    key = _key()
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        _builder(_name(common_name), ca_cert.subject, key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(ca_key, hashes.SHA256()), key


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def make_pki(directory: Path) -> Pki:
    """Make a CA, a server and a client certificate, and an untrusted CA and client, in *directory*."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = _ca("pacsfed test CA")
    server_cert, server_key = _leaf("localhost", ca_cert, ca_key, server=True)
    client_cert, client_key = _leaf("PACSFED", ca_cert, ca_key, server=False)
    other_ca_cert, other_ca_key = _ca("untrusted test CA")
    other_client_cert, other_client_key = _leaf("INTRUDER", other_ca_cert, other_ca_key, server=False)

    def write(name: str, data: bytes, *, secret: bool = False) -> Path:
        path = directory / name
        path.write_bytes(data)
        if secret:
            path.chmod(0o600)
        return path

    return Pki(
        directory=directory,
        ca_cert=write("ca.crt", _cert_pem(ca_cert)),
        ca_key=write("ca.key", _key_pem(ca_key), secret=True),
        server_cert=write("server.crt", _cert_pem(server_cert)),
        server_key=write("server.key", _key_pem(server_key), secret=True),
        server_pem=write("server.pem", _key_pem(server_key) + _cert_pem(server_cert), secret=True),
        client_cert=write("client.crt", _cert_pem(client_cert)),
        client_key=write("client.key", _key_pem(client_key), secret=True),
        untrusted_ca_cert=write("untrusted-ca.crt", _cert_pem(other_ca_cert)),
        untrusted_client_cert=write("untrusted-client.crt", _cert_pem(other_client_cert)),
        untrusted_client_key=write("untrusted-client.key", _key_pem(other_client_key), secret=True),
    )
