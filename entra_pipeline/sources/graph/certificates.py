"""Certificate credentials from PEM files: the private key, the certificate, its thumbprints and
expiry. Errors name the file and never contain key material."""

from __future__ import annotations

import stat
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from entra_pipeline.errors import PipelineError
from entra_pipeline.files import MAX_PEM_FILE_BYTES, FileProblem, read_file_limited
from entra_pipeline.sources.graph.auth import Certificate

_CERT_BEGIN = b"-----BEGIN CERTIFICATE-----"


class CertificateError(PipelineError, ValueError):
    """A certificate or private key file cannot be used; ``field`` is the config field it came from."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class CertificateInfo:
    """What an administrator compares with the app registration's Certificates & secrets page."""

    subject: str
    thumbprint: str  # SHA-1, upper-case hex: what the Entra admin center shows
    not_before: datetime
    not_after: datetime


def read_certificate(path: Path, field: str = "source.certificate_path") -> tuple[x509.Certificate, str]:
    """The first certificate in a PEM file, and its PEM text."""
    data = _read(path, field)
    start = data.find(_CERT_BEGIN)
    if start < 0:
        raise CertificateError(field, f"{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    try:
        cert = x509.load_pem_x509_certificate(data[start:])
    except ValueError:
        raise CertificateError(field, f"{path}: the PEM certificate cannot be parsed") from None
    return cert, cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def certificate_info(cert: x509.Certificate) -> CertificateInfo:
    return CertificateInfo(
        subject=cert.subject.rfc4514_string(),
        thumbprint=cert.fingerprint(hashes.SHA1()).hex().upper(),  # noqa: S303 - Entra's thumbprint is SHA-1
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )


def load_certificate_credential(*, certificate_path: Path | None, private_key_path: Path | None,
                                thumbprint: str | None, passphrase: str | None) -> tuple[Certificate, CertificateInfo | None]:
    """The credential MSAL signs client assertions with, and the certificate's details (None when
    only a thumbprint is configured). The key must be RSA (Entra's client assertions are RS256 or
    PS256) and, with a certificate, belong to it."""
    key_field = "source.private_key_path" if private_key_path else "source.certificate_path"
    key_file = private_key_path or certificate_path
    assert key_file is not None  # the config requires one of them
    key_pem = _read(key_file, key_field)
    mode = stat.S_IMODE(key_file.stat().st_mode)
    if mode & 0o077:
        # Whoever reads the key can read the whole directory: refused, as ssh refuses such a key.
        raise CertificateError(key_field, f"{key_file} holds a private key other users can read (mode {mode:04o}); "
                                          f"run 'chmod 600 {key_file}'")
    if b"PRIVATE KEY-----" not in key_pem:
        raise CertificateError(key_field, f"{key_file} holds no PEM private key")
    try:
        key = serialization.load_pem_private_key(key_pem, password=passphrase.encode() if passphrase else None)
    except TypeError:
        # Either an encrypted key without a password or a password for a plain key.
        raise CertificateError(key_field, f"{key_file}: the private key is encrypted and no password was given "
                                          "(source.private_key_password_env)" if not passphrase else
                               f"{key_file}: the private key is not encrypted; remove source.private_key_password_env") from None
    except ValueError:
        raise CertificateError(key_field, f"{key_file}: the private key cannot be read (wrong password, or not "
                                          "a PEM private key)") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CertificateError(key_field, f"{key_file}: the private key is not an RSA key; Entra ID certificate "
                                          "credentials need RSA")
    # MSAL gets the key unencrypted in memory: it would otherwise decrypt it for every assertion.
    plain_key = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()).decode("ascii")
    if certificate_path is None:
        return Certificate(private_key_pem=plain_key, thumbprint=thumbprint), None
    cert, cert_pem = read_certificate(certificate_path)
    if cert.public_key().public_numbers() != key.public_key().public_numbers():
        raise CertificateError(key_field, f"{key_file}: the private key does not belong to the certificate in "
                                          f"{certificate_path}")
    info = certificate_info(cert)
    if thumbprint and thumbprint.upper() != info.thumbprint:
        raise CertificateError("source.certificate_thumbprint",
                               f"{thumbprint} is not the thumbprint of {certificate_path} ({info.thumbprint})")
    return Certificate(private_key_pem=plain_key, certificate_pem=cert_pem), info


def _read(path: Path, field: str) -> bytes:
    # With the limits the path had when the configuration was loaded: the file may since have
    # been replaced by a FIFO (a read that never ends) or something huge.
    try:
        return read_file_limited(path, MAX_PEM_FILE_BYTES)
    except FileProblem as exc:
        raise CertificateError(field, f"{path} {exc}") from None
