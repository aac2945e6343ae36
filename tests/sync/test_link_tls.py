"""The MQTT link's TLS: a failed handshake raises LinkError and leaves no socket behind."""

from __future__ import annotations

import gc
import socket
import threading
import warnings
from collections.abc import Iterator

import pytest

from edge_agent.errors import LinkError
from edge_agent.sync.link import LinkSettings, MqttLink, Will
from tests.support.certs import Certs


@pytest.fixture
def not_a_tls_server() -> Iterator[int]:
    """A TCP port that accepts and answers garbage: every TLS handshake against it fails."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        server.close()


async def test_failed_handshake_raises_and_closes_its_socket(
    not_a_tls_server: int, certs: Certs
) -> None:
    settings = LinkSettings(
        device_id="cm-tls-test",
        host="127.0.0.1",
        port=not_a_tls_server,
        tls=True,
        ca_file=certs.ca,
        connect_timeout_s=5.0,
    )
    link = MqttLink(
        settings,
        will=Will("cm/v1/d/cm-tls-test/status", b"{}"),
        on_message=lambda _t, _p: None,
        on_puback=lambda _mids: None,
        on_disconnect=lambda _r: None,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            with pytest.raises(LinkError, match="cannot reach broker"):
                await link.connect()
        gc.collect()
    leaks = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaks == []
