"""TLS for the control API with the gateway's own certificate authority.

The control API carries the admin token; once a cloud gateway's control port is open to the
operator (`ssh_from`), it crosses the internet. A public CA cannot certify a bare IP address and
the system trust store is the wrong anchor anyway, so the gateway has its own CA: `ca.pem` and
`ca.key` in `--control-tls-dir`, put there by the stack (a secret in its state) or generated at
first start. Each start issues a server certificate for the gateway's names and addresses
(`--control-tls-name`), signed by that CA. Clients pin `ca.pem` (runtime/sync_client.py's
`ca`): nothing signed by anyone else, the system's CAs included, is accepted.
"""

from __future__ import annotations

import datetime as dt
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gpustack_iac.errors import GpustackError
from gpustack_iac.runtime.gateway.tls import CertPair, _san, _write_private, new_key_pem, server_context

CA_DAYS = 3650  # the pin lives in the stack's state: the CA outlives many server certificates
SERVER_DAYS = 365  # reissued at every start


@dataclass(frozen=True)
class ControlCa:
    cert_pem: bytes
    key: ec.EllipticCurvePrivateKey


def new_ca(common_name: str = "gpustack control CA") -> tuple[bytes, bytes]:
    """A fresh CA: (certificate PEM, private key PEM)."""
    key_pem = new_key_pem()
    key = serialization.load_pem_private_key(key_pem, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def ensure_ca(directory: Path) -> ControlCa:
    """The CA in `directory` (the stack's), or a new one written there at first start."""
    cert_file, key_file = directory / "ca.pem", directory / "ca.key"
    if not cert_file.exists() and not key_file.exists():
        cert_pem, key_pem = new_ca()
        _write_private(key_file, key_pem)
        _write_private(cert_file, cert_pem)
    try:
        key = serialization.load_pem_private_key(key_file.read_bytes(), None)
        cert_pem = cert_file.read_bytes()
        x509.load_pem_x509_certificate(cert_pem)
    except (OSError, ValueError) as exc:
        raise GpustackError(f"control API TLS: cannot load the CA in {directory}: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise GpustackError(f"control API TLS: {key_file} is not an EC key")
    return ControlCa(cert_pem, key)


def issue_server(ca: ControlCa, names: tuple[str, ...], directory: Path) -> CertPair:
    """A server certificate for `names` (DNS names or IP addresses), signed by the CA."""
    if not names:
        raise GpustackError("control API TLS: give the gateway's names or addresses (--control-tls-name)")
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    key_pem = new_key_pem()
    key = serialization.load_pem_private_key(key_pem, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
            .add_extension(_san(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca.key, hashes.SHA256()))
    pair = CertPair(directory / "server.crt", directory / "server.key")
    _write_private(pair.key_file, key_pem)
    _write_private(pair.cert_file, cert.public_bytes(serialization.Encoding.PEM))
    return pair


def control_context(directory: Path, names: tuple[str, ...]) -> ssl.SSLContext:
    """The control API's server context: the CA (the stack's, or new), a fresh server certificate."""
    return server_context(issue_server(ensure_ca(directory), names, directory))
