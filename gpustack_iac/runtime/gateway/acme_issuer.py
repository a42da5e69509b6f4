"""Issue a certificate through ACME (RFC 8555) with the `acme` library, answering HTTP-01.

The challenge responder is the library's own standalone server, started on the configured port only
while an order is validated. The account key is kept beside the certificate (mode 0600), so a
renewal reuses the account.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import josepy as jose
from acme import challenges, client, crypto_util, errors, messages, standalone
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gpustack_iac.errors import GpustackError
from gpustack_iac.runtime.gateway.tls import CertPair, TLSOptions, _write_private, new_key_pem

log = logging.getLogger(__name__)
ORDER_DEADLINE = dt.timedelta(minutes=3)


def _account_key(path: Path) -> jose.JWKRSA:
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), None)
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write_private(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return jose.JWKRSA(key=key)


def _client(options: TLSOptions, key: jose.JWKRSA) -> client.ClientV2:
    verify: bool | str = options.acme_ca_bundle or True
    net = client.ClientNetwork(key, user_agent="gpustack-iac-gateway", verify_ssl=verify)  # type: ignore[arg-type]
    directory = client.ClientV2.get_directory(str(options.acme_directory), net)
    acme = client.ClientV2(directory, net=net)
    registration = messages.NewRegistration.from_data(email=options.acme_email, terms_of_service_agreed=True)
    try:
        net.account = acme.new_account(registration)
    except errors.ConflictError as exc:
        # The key already has an account: look it up (only_return_existing) and use it.
        net.account = acme.query_registration(messages.RegistrationResource(uri=exc.location, body=messages.Registration()))
    return acme


def issue(options: TLSOptions, pair: CertPair) -> CertPair:
    """Order a certificate for options.names, prove control over HTTP-01, write chain and key."""
    key = _account_key(options.cert_dir / "acme-account.key")
    try:
        acme = _client(options, key)
        key_pem = new_key_pem()
        order = acme.new_order(crypto_util.make_csr(key_pem, list(options.names)))
        resources = set()
        answers = []
        for authz in order.authorizations:
            chall = next((c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01)), None)
            if chall is None:
                raise GpustackError(f"the ACME server offers no http-01 challenge for {authz.body.identifier.value}")
            response, validation = chall.response_and_validation(key)
            resources.add(standalone.HTTP01RequestHandler.HTTP01Resource(chall=chall.chall, response=response,
                                                                           validation=validation))
            answers.append((chall, response))
        servers = standalone.HTTP01DualNetworkedServers(("", options.acme_http_port), resources)
        servers.serve_forever()
        try:
            for chall, response in answers:
                acme.answer_challenge(chall, response)
            done = acme.poll_and_finalize(order, dt.datetime.now() + ORDER_DEADLINE)
        finally:
            servers.shutdown_and_server_close()
    except (errors.Error, messages.Error, OSError) as exc:
        raise GpustackError(f"ACME issuance for {', '.join(options.names)} from {options.acme_directory} failed: {exc}") from None
    _write_private(pair.key_file, key_pem)
    _write_private(pair.cert_file, done.fullchain_pem.encode())
    log.info("certificate issued for %s by %s", ", ".join(options.names), options.acme_directory)
    return pair
