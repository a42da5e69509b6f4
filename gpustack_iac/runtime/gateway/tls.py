"""TLS for the gateway's data plane: where the certificate comes from and the server SSL context.

Kept apart from the HTTP code on purpose: the gateway serves the same application on a second,
TLS-wrapped listening socket, so nothing here knows about requests. Certificates come from files,
are generated self-signed (local use), or are issued by an ACME server (acme_issuer.py); every
backend's gateway (local, SSH, cloud) runs this same code.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gpustack_iac.errors import GpustackError

RENEW_BEFORE = dt.timedelta(days=30)  # Let's Encrypt's advice: renew a 90-day certificate with 30 days left


@dataclass(frozen=True)
class CertPair:
    cert_file: Path
    key_file: Path


@dataclass(frozen=True)
class TLSOptions:
    mode: str  # "files", "self-signed", "lets-encrypt"
    names: tuple[str, ...]  # DNS names the certificate covers: the domain and its wildcard's services
    cert_dir: Path
    cert_file: Path | None = None
    key_file: Path | None = None
    acme_directory: str | None = None
    acme_email: str | None = None
    acme_ca_bundle: str | None = None
    acme_http_port: int = 80


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def new_key_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _san(names: tuple[str, ...]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for n in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            entries.append(x509.DNSName(n))
    return x509.SubjectAlternativeName(entries)


def self_signed(names: tuple[str, ...], cert_dir: Path) -> CertPair:
    """A self-signed certificate for `names` (kept and reused while valid)."""
    pair = CertPair(cert_dir / "self-signed.crt", cert_dir / "self-signed.key")
    if pair.cert_file.exists() and not needs_renewal(pair.cert_file, names):
        return pair
    key_pem = new_key_pem()
    key = serialization.load_pem_private_key(key_pem, None)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365)).add_extension(_san(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))  # type: ignore[arg-type]
    _write_private(pair.key_file, key_pem)
    _write_private(pair.cert_file, cert.public_bytes(serialization.Encoding.PEM))
    return pair


def needs_renewal(cert_file: Path, names: tuple[str, ...]) -> bool:
    """True when the certificate is missing, expires within RENEW_BEFORE or does not cover `names`."""
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    except (OSError, ValueError):
        return True
    if cert.not_valid_after_utc - dt.datetime.now(dt.timezone.utc) < RENEW_BEFORE:
        return True
    try:
        covered = set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        return True
    return not set(n for n in names if not _is_ip(n)) <= covered


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def server_context(pair: CertPair) -> ssl.SSLContext:
    """A server context with the certificate chain: TLS 1.2+, HTTP/1.1 over ALPN."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(pair.cert_file), str(pair.key_file))
    except (OSError, ssl.SSLError) as exc:
        raise GpustackError(f"cannot load the certificate {pair.cert_file} with key {pair.key_file}: {exc}") from None
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx
