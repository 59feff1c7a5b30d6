"""Certificates and key files an administrator would make for an app registration."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


def self_signed_certificate(common_name: str = "entra-pipeline test", *, days: float = 365, not_before_days: float = 1,
                            key_size: int = 2048) -> tuple[bytes, bytes]:
    """A self-signed RSA certificate for an app registration: (private key PEM, certificate PEM),
    valid from ``not_before_days`` ago for ``days`` from now (negative: already expired)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=not_before_days))
            .not_valid_after(now + timedelta(days=days))
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def write_private(path: Path, data: bytes) -> Path:
    """A key file as an administrator keeps it: readable by its owner only."""
    path.write_bytes(data)
    path.chmod(0o600)
    return path
