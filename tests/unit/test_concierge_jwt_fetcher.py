"""Fetching discovery and keys over https: bounded in size and time, no redirects, one CA.

The issuer is named by an administrator, but its answers come over the
network: a redirect could lead anywhere (plain http included), a body could
be endless, a server could accept and never answer. Real sockets and TLS on
loopback, bounded in time.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from localenv import pki
from localenv.hostile_http import HostileServer
from pinniped_concierge import jwt_authenticator
from pinniped_concierge.jwt_authenticator import MAX_DOCUMENT_BYTES, FetchError, HttpsFetcher

CHUNK = 64 * 1024


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/ok")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/ok":
            self.answer(b'{"ok": true}')
        elif self.path == "/exact":
            self.answer(b'{"p": "' + b"x" * (MAX_DOCUMENT_BYTES - 9) + b'"}')
        elif self.path == "/not-json":
            self.answer(b"<html>sign in first</html>")
        elif self.path == "/chunked":  # twice the limit, in pieces each far below it
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(2 * MAX_DOCUMENT_BYTES // CHUNK):
                self.wfile.write(f"{CHUNK:x}\r\n".encode() + b" " * CHUNK + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_error(404)

    def answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> pki.CA:
    return pki.CA.create(tmp_path_factory.mktemp("fetcher-ca"), "fetcher")


@pytest.fixture(scope="module")
def server_cert(ca: pki.CA, tmp_path_factory: pytest.TempPathFactory) -> pki.CertPair:
    return ca.issue(tmp_path_factory.mktemp("fetcher-server"), "server")


@pytest.fixture(scope="module")
def server(server_cert: pki.CertPair) -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(server_cert.cert_path, server_cert.key_path)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def fetch(ca: pki.CA, url: str, *, pem: bool = False, bound: float = 10) -> object:
    async def go() -> object:
        fetcher = (HttpsFetcher(None, ca.cert_path.read_text()) if pem
                   else HttpsFetcher(ca.cert_path))
        try:
            async with asyncio.timeout(bound):
                return await fetcher(url)
        finally:
            await fetcher.aclose()

    return asyncio.run(go())


def test_a_redirect_is_not_followed(ca: pki.CA, server: str) -> None:
    """Wherever it points (plain http, another host), the document is not the issuer's."""
    with pytest.raises(FetchError) as info:
        fetch(ca, f"{server}/redirect")
    assert str(info.value) == f"{server}/redirect: HTTP 302"


def test_the_size_limit_counts_the_whole_body_not_each_piece(ca: pki.CA, server: str) -> None:
    with pytest.raises(FetchError, match=f"larger than {MAX_DOCUMENT_BYTES} bytes"):
        fetch(ca, f"{server}/chunked")


def test_a_document_of_exactly_the_largest_size_is_read(ca: pki.CA, server: str) -> None:
    document = fetch(ca, f"{server}/exact")
    assert isinstance(document, dict)
    assert len(document["p"]) == MAX_DOCUMENT_BYTES - 9


def test_a_body_that_is_not_json_says_so(ca: pki.CA, server: str) -> None:
    with pytest.raises(FetchError) as info:
        fetch(ca, f"{server}/not-json")
    assert str(info.value) == f"{server}/not-json: not JSON"


def test_a_ca_given_as_pem_text_is_the_one_trusted(ca: pki.CA, server: str) -> None:
    """A JWTAuthenticator object's spec.tls carries the CA as data, not as a file."""
    assert fetch(ca, f"{server}/ok", pem=True) == {"ok": True}


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts connections, then says nothing at all (not even its TLS greeting)."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join(5)
    for connection in accepted:
        connection.close()
    listener.close()


def test_a_server_that_never_answers_is_given_up_on(ca: pki.CA, silent_server: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jwt_authenticator, "FETCH_TIMEOUT_SECONDS", 0.3)
    with pytest.raises(FetchError, match="Timeout"):
        fetch(ca, f"{silent_server}/keys", bound=3)


def test_an_answer_dripping_a_byte_at_a_time_is_given_up_on(
        ca: pki.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """httpx's timeouts apply to each read; a byte every half second never trips them (here
    one second each). The whole fetch needs its deadline, or the issuer holds the
    authenticator's refresh."""
    monkeypatch.setattr(jwt_authenticator, "FETCH_TIMEOUT_SECONDS", 1.0)
    with HostileServer(ca.issue(tmp_path, "dripping")) as hostile, \
            pytest.raises(FetchError, match="no complete answer within 1 s"):
        fetch(ca, f"{hostile.url}/drip-headers/keys", bound=4)
