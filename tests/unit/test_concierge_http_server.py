"""The front door with real sockets, in-process: header and idle timeouts, the TLS handshake,
the bound on open connections and the bound on requests in flight.

A small ASGI app stands in for the concierge's (its own limits are tested with
it in test_concierge_app.py and, against the real process, in
tests/integration/test_concierge_front_door.py).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.types import Message, Receive, Scope, Send

from localenv import pki
from localenv.sockets import closed_by_server, held
from pinniped_concierge import http_server
from pinniped_concierge.connection_limits import Connection, ConnectionLimits, OpenConnections
from pinniped_concierge.inflight import InFlightLimit
from pinniped_concierge.metrics import ConciergeMetrics

TIMEOUT = 0.5
#: Leeway for timers and loopback round trips on a loaded machine.
SLACK = 2.0
HALF_HEADERS = b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Typ"
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"


async def tiny_app(scope: Scope, receive: Receive, send: Send) -> None:
    """`/hold?S` answers after S seconds; everything else at once, with 'ok'."""
    assert scope["type"] == "http"
    if scope["path"] == "/hold":
        await asyncio.sleep(float(scope["query_string"] or b"1"))
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False) and message["type"] == "http.request"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


class Running:
    """A bounded uvicorn server on 127.0.0.1 in a thread of its own."""

    def __init__(self, tls: ssl.SSLContext | None, max_in_flight: int) -> None:
        self.metrics = ConciergeMetrics()
        self.tls = tls
        self.server = uvicorn.Server(http_server.bounded_config(
            tiny_app, host="127.0.0.1", port=0, log_level="warning",
            header_timeout_seconds=TIMEOUT, max_in_flight=max_in_flight, tls=tls,
            metrics=self.metrics, lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline
            assert self.thread.is_alive()
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        assert not self.thread.is_alive()

    def tcp(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=5)

    def connect(self) -> socket.socket:
        sock = self.tcp()
        if self.tls is None:
            return sock
        client = ssl.create_default_context()
        client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
        return client.wrap_socket(sock)

    def closes(self, reason: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "pinniped_concierge_connections_closed_total", {"reason": reason})
        return value or 0.0


@pytest.fixture(scope="module")
def server_tls(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    directory: Path = tmp_path_factory.mktemp("tls")
    pair = pki.CA.create(directory, "front-door").issue(directory, "server")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pair.cert_path, pair.key_path)
    return context


@pytest.fixture
def running(server_tls: ssl.SSLContext) -> Iterator[Running]:
    server = Running(server_tls, max_in_flight=2)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def plain() -> Iterator[Running]:
    server = Running(None, max_in_flight=2)
    try:
        yield server
    finally:
        server.stop()


def ask(sock: socket.socket, request: bytes = HEALTHZ, answers: int = 1) -> bytes:
    sock.sendall(request)
    received = b""
    sock.settimeout(5)
    while received.count(b"\r\n\r\nok") < answers:
        chunk = sock.recv(4096)
        assert chunk, received
        received += chunk
    return received


def test_half_sent_requests_never_block_a_new_client_and_are_closed(running: Running) -> None:
    with held([]) as half_sent:
        for _ in range(40):  # more than the 16 open connections allowed for 2 requests
            sock = running.connect()
            sock.sendall(HALF_HEADERS)
            half_sent.append(sock)
        with held([running.connect()]) as (fresh,):
            assert ask(fresh).startswith(b"HTTP/1.1 200 OK")
        started = time.monotonic()
        answers = [closed_by_server(sock, within=TIMEOUT + SLACK) for sock in half_sent]
        assert all(answer is not None for answer in answers)
        assert time.monotonic() - started < TIMEOUT + SLACK
    timed_out = [a for a in answers if a and a.startswith(b"HTTP/1.1 408 Request Timeout")]
    assert timed_out  # the ones not evicted to make room
    assert running.closes("evicted") + running.closes("header_timeout") >= 40
    assert running.closes("evicted") >= 40 - 16


def test_the_deadline_runs_from_the_connect_and_bytes_do_not_extend_it(
        running: Running) -> None:
    started = time.monotonic()  # before the connect: the server's deadline starts at accept
    with held([running.connect()]) as (sock,):
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        answer = None
        while answer is None:
            assert time.monotonic() - started < TIMEOUT + SLACK
            sock.sendall(b"X")
            answer = closed_by_server(sock, within=0.1)
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout")
        assert b"connection: close" in answer
    assert TIMEOUT - 0.1 < time.monotonic() - started < TIMEOUT + SLACK
    assert running.closes("header_timeout") == 1


def test_an_idle_connection_is_closed_after_the_timeout_without_an_answer(
        running: Running) -> None:
    with held([running.connect()]) as (sock,):
        assert ask(sock).startswith(b"HTTP/1.1 200 OK")
        answered = time.monotonic()
        assert closed_by_server(sock, within=TIMEOUT + SLACK) == b""  # no 408 for idle ones
        assert time.monotonic() - answered > TIMEOUT - 0.1


def test_a_stalled_tls_handshake_is_closed(running: Running) -> None:
    with held([running.tcp() for _ in range(5)]) as stalled:
        stalled[0].sendall(b"\x16\x03\x01\x02\x00\x01")  # the start of a ClientHello
        started = time.monotonic()
        assert all(closed_by_server(sock, within=TIMEOUT + SLACK) is not None
                   for sock in stalled)
        assert TIMEOUT - 0.1 < time.monotonic() - started < TIMEOUT + SLACK
    assert running.closes("header_timeout") == 5


def test_keep_alive_and_pipelining_still_work(running: Running) -> None:
    with held([running.connect()]) as (sock,):
        assert ask(sock, HEALTHZ * 3, answers=3).count(b"HTTP/1.1 200 OK") == 3
        for _ in range(3):  # each request within the timeout of the previous answer
            time.sleep(TIMEOUT / 2)
            assert ask(sock).startswith(b"HTTP/1.1 200 OK")


def test_a_request_in_flight_is_not_cut_by_the_header_timeout(running: Running) -> None:
    with held([running.connect()]) as (sock,):
        started = time.monotonic()
        answer = ask(sock, b"GET /hold?1.2 HTTP/1.1\r\nHost: t\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200 OK")
        assert time.monotonic() - started > 1.2
        assert ask(sock).startswith(b"HTTP/1.1 200 OK")  # and the connection stays usable


def test_requests_beyond_the_limit_in_flight_get_503_at_once(running: Running) -> None:
    hold = b"GET /hold?2 HTTP/1.1\r\nHost: t\r\n\r\n"
    with held([running.connect() for _ in range(3)]) as (first, second, third):
        first.sendall(hold)
        second.sendall(hold)
        time.sleep(0.3)
        started = time.monotonic()
        third.sendall(HEALTHZ)
        third.settimeout(5)
        answer = third.recv(4096)
        assert answer.startswith(b"HTTP/1.1 503 Service Unavailable")
        assert b"retry-after: 1" in answer.lower()
        assert time.monotonic() - started < 1
        assert ask(first, b"").startswith(b"HTTP/1.1 200 OK")
    assert running.metrics.registry.get_sample_value(
        "pinniped_concierge_requests_over_capacity_total") == 1


def test_plain_http_is_bounded_the_same_way(plain: Running) -> None:
    with held([plain.connect() for _ in range(3)]) as socks:
        assert ask(socks[0]).startswith(b"HTTP/1.1 200 OK")
        socks[1].sendall(HALF_HEADERS)
        started = time.monotonic()
        assert closed_by_server(socks[1], within=TIMEOUT + SLACK) is not None
        assert closed_by_server(socks[2], within=TIMEOUT + SLACK) is not None
        assert time.monotonic() - started < TIMEOUT + SLACK


# --- the table of open connections, alone --------------------------------------------------


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.aborted


def connections(table: OpenConnections, count: int,
                loop: asyncio.AbstractEventLoop) -> list[tuple[Connection, FakeTransport]]:
    made = []
    for _ in range(count):
        transport = FakeTransport()
        connection = Connection(transport, table, ConnectionLimits(
            header_timeout_seconds=60, max_open=table.max_open), loop)
        made.append((connection, transport))
    return made


def test_the_longest_waiting_connection_makes_room_and_busy_ones_never_do() -> None:
    loop = asyncio.new_event_loop()
    try:
        table = OpenConnections(3)
        (a, ta), (b, tb), (c, tc), (d, _), (e, _), (f, tf) = connections(table, 6, loop)
        assert [a.open(), b.open(), c.open()] == [True, True, True]
        a.request_started()  # a has a request in flight
        assert d.open()  # b waited longest without one
        assert (ta.aborted, tb.aborted, tc.aborted) == (False, True, False)
        a.request_finished()  # a now waits again, newest of all
        assert e.open()
        assert (ta.aborted, tc.aborted) == (False, True)
        for connection in (a, d, e):
            connection.request_started()
        assert not f.open()  # every open one is busy: the new one is refused
        assert tf.aborted
        assert (len(table), table.busy) == (3, 3)
        d.lost()
        assert len(table) == 2
    finally:
        loop.close()


# --- requests in flight, alone -------------------------------------------------------------


def test_the_in_flight_limit_counts_requests_not_lifespan() -> None:
    release = asyncio.Event()
    entered: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        entered.append(scope["type"])
        if scope["type"] == "http":
            await release.wait()
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    refusals: list[int] = []
    limit = InFlightLimit(app, 1, on_refused=lambda: refusals.append(1))

    async def go() -> list[int]:
        sent: list[dict[str, Any]] = []

        async def send(message: Message) -> None:
            sent.append(dict(message))

        async def receive() -> Message:
            return {"type": "http.request", "body": b""}

        first = asyncio.create_task(limit({"type": "http"}, receive, send))
        await asyncio.sleep(0)
        await limit({"type": "lifespan"}, receive, send)
        await limit({"type": "http"}, receive, send)  # refused at once
        release.set()
        await first
        await limit({"type": "http"}, receive, send)  # room again
        return [m["status"] for m in sent if m["type"] == "http.response.start"]

    assert asyncio.run(go()) == [503, 204, 204]
    assert refusals == [1]
    assert entered == ["http", "lifespan", "http"]
    assert limit.in_flight == 0


def test_idle_connections_outlive_the_clients_keep_alive() -> None:
    """A server closing an idle connection first races the client's next POST on it, which
    the client cannot safely retry (1 login in ~2,500 failed that way under load)."""
    import httpx

    client_keeps = httpx.Limits().keepalive_expiry or 0.0
    settings = http_server.bounded_config(
        tiny_app, host="127.0.0.1", port=0, log_level="error",
        header_timeout_seconds=10, max_in_flight=4, tls=None,
        metrics=ConciergeMetrics(max_authenticators=1), lifespan="off")
    assert settings.timeout_keep_alive > client_keeps
