"""AMQPS: TLS with pika's SSLOptions and aio-pika, client certificates and the EXTERNAL mechanism.

Certificates are made for the test session with the ``openssl`` command line: a CA, a server
certificate for 127.0.0.1/localhost, and client certificates (CN = the user name) signed by it.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import pika
import pika.exceptions
import pytest

from leveret.testing.broker import LeveretBroker

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _key_and_csr(directory: Path, name: str, cn: str) -> None:
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(directory / f"{name}.key"))
    _openssl(
        "req", "-new", "-key", str(directory / f"{name}.key"), "-subj", f"/CN={cn}/O=leveret-test",
        "-out", str(directory / f"{name}.csr"),
    )  # fmt: skip


def _sign(directory: Path, name: str, ca: str, ext: str) -> None:
    (directory / f"{name}.ext").write_text(ext)
    _openssl(
        "x509", "-req", "-in", str(directory / f"{name}.csr"), "-CA", str(directory / f"{ca}.pem"),
        "-CAkey", str(directory / f"{ca}.key"), "-CAcreateserial", "-days", "2",
        "-extfile", str(directory / f"{name}.ext"), "-out", str(directory / f"{name}.pem"),
    )  # fmt: skip


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("certs")
    for ca in ("ca", "other-ca"):
        _openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
            "-subj", f"/CN=Leveret test {ca}", "-keyout", str(d / f"{ca}.key"), "-out", str(d / f"{ca}.pem"),
        )  # fmt: skip
    _key_and_csr(d, "server", "localhost")
    _sign(d, "server", "ca", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    for name, ca in (("tlsuser", "ca"), ("stranger", "ca"), ("forged", "other-ca")):
        _key_and_csr(d, name, "tlsuser" if name == "forged" else name)
        _sign(d, name, ca, "extendedKeyUsage=clientAuth\n")
    return d


def _client_context(certs: Path, client: str | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    if client is not None:
        context.load_cert_chain(str(certs / f"{client}.pem"), str(certs / f"{client}.key"))
    return context


@pytest.fixture(scope="module")
def tls_broker(certs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LeveretBroker, int]]:
    broker = LeveretBroker.start(
        tmp_path_factory.mktemp("tls"),
        amqps_port=0,
        tls_cert=str(certs / "server.pem"),
        tls_key=str(certs / "server.key"),
        tls_ca=str(certs / "ca.pem"),
        tls_verify_peer=True,
    )
    broker.call(lambda s: s.broker.add_user("tlsuser", None))  # no password: EXTERNAL only
    broker.call(lambda s: s.broker.set_permissions("tlsuser", "/", ".*", ".*", ".*"))
    yield broker, broker.call(lambda s: s.amqps_port)
    broker.stop()


def users(broker: LeveretBroker) -> list[str]:
    """The users of the broker's open connections."""
    return broker.call(lambda s: sorted(c.user.name for c in s.connections if c.user is not None))


def _pika(
    port: int, context: ssl.SSLContext, credentials: pika.credentials.VALID_TYPES | None = None
) -> pika.BlockingConnection:
    params = pika.ConnectionParameters(
        "127.0.0.1",
        port,
        credentials=credentials or pika.PlainCredentials("guest", "guest"),
        ssl_options=pika.SSLOptions(context, "localhost"),
    )
    return pika.BlockingConnection(params)


def test_pika_over_tls(certs: Path, tls_broker: tuple[LeveretBroker, int]) -> None:
    broker, port = tls_broker
    assert port != broker.port
    conn = _pika(port, _client_context(certs))
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", q, b"over tls")
    assert ch.basic_get(q, auto_ack=True)[2] == b"over tls"
    conn.close()


def test_the_tls_listener_speaks_tls_1_2_and_up_only(certs: Path, tls_broker: tuple[LeveretBroker, int]) -> None:
    from leveret.server.config import Config
    from leveret.server.tls import server_context

    context = server_context(Config(tls_cert=str(certs / "server.pem"), tls_key=str(certs / "server.key")))
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert all(c["aead"] and c["kea"] in ("kx-ecdhe", "kx-dhe", "kx-any") for c in context.get_ciphers())
    _, port = tls_broker
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        context = _client_context(certs)
        context.minimum_version = context.maximum_version = version
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                assert tls.version() == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
                tls.sendall(b"AMQP\x00\x00\x09\x01")
                assert tls.recv(7)[:1] == b"\x01"  # connection.start, in a method frame


async def test_aio_pika_over_tls_with_external(certs: Path, tls_broker: tuple[LeveretBroker, int]) -> None:
    _, port = tls_broker
    context = _client_context(certs, "tlsuser")
    conn = await aio_pika.connect(f"amqps://localhost:{port}/?auth=external", ssl_context=context)
    async with conn:
        assert users(tls_broker[0]) == ["tlsuser"]
        ch = await conn.channel()
        q = await ch.declare_queue("", exclusive=True)
        await ch.default_exchange.publish(aio_pika.Message(b"hi"), routing_key=q.name)
        got = await q.get(timeout=5)
        assert got.body == b"hi"
        await got.ack()


def test_external_login_takes_the_user_from_the_certificate(certs: Path, tls_broker: tuple[LeveretBroker, int]) -> None:
    _, port = tls_broker
    conn = _pika(port, _client_context(certs, "tlsuser"), pika.credentials.ExternalCredentials())
    conn.channel().queue_declare("", exclusive=True)
    assert users(tls_broker[0]) == ["tlsuser"]
    conn.close()
    # A verified certificate for a user that does not exist: refused.
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        _pika(port, _client_context(certs, "stranger"), pika.credentials.ExternalCredentials())
    # No client certificate: EXTERNAL is not even offered.
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        _pika(port, _client_context(certs), pika.credentials.ExternalCredentials())


def test_a_certificate_from_another_ca_is_refused(certs: Path, tls_broker: tuple[LeveretBroker, int]) -> None:
    _, port = tls_broker
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        _pika(port, _client_context(certs, "forged"), pika.credentials.ExternalCredentials())


def test_fail_if_no_peer_cert(certs: Path, tmp_path: Path) -> None:
    broker = LeveretBroker.start(
        tmp_path,
        amqps_port=0,
        tls_cert=str(certs / "server.pem"),
        tls_key=str(certs / "server.key"),
        tls_ca=str(certs / "ca.pem"),
        tls_fail_if_no_peer_cert=True,
    )
    try:
        port = broker.call(lambda s: s.amqps_port)
        with pytest.raises(pika.exceptions.AMQPConnectionError):
            _pika(port, _client_context(certs))
        _pika(port, _client_context(certs, "tlsuser")).close()  # guest/guest with a valid certificate
    finally:
        broker.stop()


def test_management_api_over_https(certs: Path, tmp_path: Path) -> None:
    """``--https-port``: the management door with the server certificate (RabbitMQ's 15671)."""
    import base64
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    broker = LeveretBroker.start(
        tmp_path / "https", https_port=port, tls_cert=str(certs / "server.pem"), tls_key=str(certs / "server.key")
    )
    try:
        request = urllib.request.Request(
            f"https://localhost:{port}/api/overview",
            headers={"authorization": "Basic " + base64.b64encode(b"guest:guest").decode()},
        )
        with urllib.request.urlopen(request, context=_client_context(certs), timeout=10) as response:
            assert response.status == 200
            assert json.loads(response.read())["product_name"] == "Leveret"
        with pytest.raises(OSError):  # plain HTTP on the TLS port gets no answer it could read
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/overview", timeout=5)
    finally:
        broker.stop()
