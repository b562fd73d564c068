"""TLS for the AMQPS listener: one ``ssl.SSLContext`` built from the config.

Defaults: TLS 1.2 and 1.3 only; on TLS 1.2 only forward-secret AEAD suites (ECDHE/DHE with AES-GCM
or ChaCha20-Poly1305: TLS 1.3's suites are all of that kind already); no TLS compression; no
session tickets (a ticket key would outlive restarts of nothing and is one more secret). Client
certificates, as RabbitMQ's ``ssl_options``: ``tls_verify_peer`` asks for one and verifies it
against ``tls_ca`` (a client may still connect without one), ``tls_fail_if_no_peer_cert`` refuses
clients without a valid one. The subject CN of a verified certificate is the user name of the
EXTERNAL mechanism (``server.amqp_login``).
"""

from __future__ import annotations

import ssl

from .config import Config

CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!MD5:!DSS"


def enabled(config: Config) -> bool:
    return bool(config.tls_cert and config.tls_key and config.amqps_port >= 0)


def server_context(config: Config) -> ssl.SSLContext:
    """Raises ``OSError``/``ssl.SSLError`` if a file is missing or unreadable (the broker then fails
    to start, rather than run without the listener the operator asked for)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_TICKET
    context.load_cert_chain(config.tls_cert, config.tls_key)
    if config.tls_ca:
        context.load_verify_locations(config.tls_ca)
    if config.tls_fail_if_no_peer_cert:
        context.verify_mode = ssl.CERT_REQUIRED
    elif config.tls_verify_peer:
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def http_context(config: Config) -> ssl.SSLContext:
    """The management door's HTTPS: the server certificate and the same protocol and cipher floor;
    clients are not asked for certificates (HTTP basic auth identifies them)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_TICKET
    context.load_cert_chain(config.tls_cert, config.tls_key)
    return context
