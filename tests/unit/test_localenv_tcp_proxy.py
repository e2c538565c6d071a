"""The test proxy itself: a connection that survived `close()` let the "apiserver unreachable"
test find the concierge still ready 10 s later, because its pool kept using that connection."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from localenv.concierge import TcpProxy


@pytest.fixture
def upstream() -> Iterator[socket.socket]:
    server = socket.create_server(("127.0.0.1", 0))
    yield server
    server.close()


def _port(url: str) -> int:
    return int(url.rpartition(":")[2])


def test_a_connection_accepted_while_closing_is_cut(
        upstream: socket.socket, monkeypatch: pytest.MonkeyPatch) -> None:
    connecting, closed = threading.Event(), threading.Event()
    real_connect = socket.create_connection

    def slow_connect(address: tuple[str, int], timeout: float) -> socket.socket:
        connecting.set()
        closed.wait(5)  # the proxy's close() runs while this connection is being set up
        return real_connect(address, timeout)

    monkeypatch.setattr(socket, "create_connection", slow_connect)  # the proxy's module too
    proxy = TcpProxy(f"https://127.0.0.1:{upstream.getsockname()[1]}")
    client = real_connect(("127.0.0.1", _port(proxy.url)), 5)
    assert connecting.wait(5)
    proxy.close()
    closed.set()
    client.settimeout(5)
    assert client.recv(1) == b"", "the connection outlived close()"
    client.close()


def test_close_refuses_new_connections(upstream: socket.socket) -> None:
    proxy = TcpProxy(f"https://127.0.0.1:{upstream.getsockname()[1]}")
    proxy.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", _port(proxy.url)), 5)
