"""Where the gateway's certificate comes from: files, self-signed, or ACME issuance when the kept
one is missing, near expiry or for other names."""

from __future__ import annotations

from gpustack_iac.errors import GpustackError
from gpustack_iac.runtime.gateway.acme_issuer import issue
from gpustack_iac.runtime.gateway.tls import CertPair, TLSOptions, needs_renewal, self_signed


def obtain(options: TLSOptions) -> CertPair:
    """The certificate to serve, issuing or generating it when needed (blocking: run it in a thread)."""
    if options.mode == "files":
        if options.cert_file is None or options.key_file is None:
            raise GpustackError("a files certificate needs --cert-file and --key-file")
        return CertPair(options.cert_file, options.key_file)
    if options.mode == "self-signed":
        return self_signed(options.names, options.cert_dir)
    if options.mode == "lets-encrypt":
        pair = CertPair(options.cert_dir / "acme.crt", options.cert_dir / "acme.key")
        if pair.cert_file.exists() and not needs_renewal(pair.cert_file, options.names):
            return pair
        return issue(options, pair)
    raise GpustackError(f"unknown certificate mode {options.mode!r}: expected files, self-signed or lets-encrypt")
