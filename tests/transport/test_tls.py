"""amqps:// to RabbitMQ, exercised through a local TLS terminator (the broker here has no
TLS listener): the client verifies the terminator's certificate against ``ca_certs``."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

import transport
from tests.brokers import delete_queues, no_service
from tests.transport.conftest import RABBIT_URL
from transport import RPCClient, RPCServer, Target
from transport.drivers.amqp import _kombu_url


def test_amqps_url_options_become_kombu_tls_settings() -> None:
    url, tls = _kombu_url(
        "amqps://u:secret@broker//?ca_certs=/ca.pem&certfile=/c.pem&keyfile=/k.pem"
    )
    assert url == "amqp://u:secret@broker:5671//"
    assert tls == {
        "ca_certs": "/ca.pem",
        "certfile": "/c.pem",
        "keyfile": "/k.pem",
        "cert_reqs": ssl.CERT_REQUIRED,
    }
    with pytest.raises(ValueError, match="verify"):
        _kombu_url("amqps://u:p@broker//?verify=no")


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@pytest.fixture
def tls_terminator(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A TLS listener on 127.0.0.1 forwarding to the broker's plain port."""
    if not RABBIT_URL:
        no_service("CONDUCTOR_TEST_TRANSPORT_URL")
    openssl = shutil.which("openssl")
    assert openssl, "openssl is needed to make the test certificate"
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    broker = urlsplit(RABBIT_URL)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except OSError:
                return
            try:
                client = context.wrap_socket(raw, server_side=True)
            except (OSError, ssl.SSLError):
                raw.close()
                continue
            upstream = socket.create_connection(
                (broker.hostname or "127.0.0.1", broker.port or 5672)
            )
            threading.Thread(target=_pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield port, cert
    stop.set()
    listener.close()


class Echo:
    def echo(self, ctxt: dict[str, Any], value: str) -> str:
        return value


@pytest.mark.rabbit
def test_calls_travel_over_amqps_with_a_verified_certificate(
    tls_terminator: tuple[int, Path],
) -> None:
    port, cert = tls_terminator
    broker = urlsplit(RABBIT_URL or "")
    url = f"amqps://{broker.username}:{broker.password}@127.0.0.1:{port}/?ca_certs={cert}"
    topic = f"tls_{uuid.uuid4().hex[:10]}"
    tp = transport.get_transport(url)
    server = RPCServer(tp, Target(topic=topic), [Echo()])
    try:
        server.start()
        client = RPCClient(tp, Target(topic=topic), timeout=20)
        assert client.call({}, "echo", value="over tls") == "over tls"
    finally:
        server.stop()
        tp.cleanup()
        delete_queues(RABBIT_URL or "", [topic])
