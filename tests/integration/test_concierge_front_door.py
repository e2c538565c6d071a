"""The concierge's front door against hostile clients, over real sockets to the real process.

Half-sent requests, stalled TLS handshakes and idle connections are closed by
the server within `requestHeaderTimeoutSeconds` and never take the slots of
`maxConcurrentRequests`; a client address over its `rateLimit` gets 429 with
Retry-After; no string a client can send gets a 5xx. Every wait is bounded.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from localenv.concierge import LocalConcierge
from localenv.idp import LocalIdP
from localenv.logins import login, tls
from localenv.sockets import closed_by_server, held
from pinniped_apis import constants, wire

pytestmark = pytest.mark.integration

HEADER_TIMEOUT = 2
#: A small `maxConcurrentRequests`, so that a handful of held connections would show.
SLOTS = 4
HALF_SENT = 250
#: Leeway for the server's timer and the loopback round trips on a loaded 2-core machine.
SLACK = 3.0
HALF_HEADERS = (f"POST {wire.TOKEN_CREDENTIAL_REQUEST_PATH} HTTP/1.1\r\nHost: concierge\r\n"
                "Content-Type: application/js").encode()


def address(concierge: LocalConcierge) -> tuple[str, int]:
    host, _, port = concierge.url.removeprefix("https://").rpartition(":")
    return host, int(port)


def tcp(concierge: LocalConcierge) -> socket.socket:
    return socket.create_connection(address(concierge), timeout=10)


def tls_connection(concierge: LocalConcierge) -> ssl.SSLSocket:
    return tls(concierge).wrap_socket(tcp(concierge), server_hostname=address(concierge)[0])


def healthz(http: httpx.Client, concierge: LocalConcierge) -> int:
    return http.get(f"{concierge.url}/healthz").status_code


def test_half_sent_headers_never_block_others_and_are_closed(
        idp: LocalIdP, id_token_for: Callable[..., str],
        concierge_factory: Callable[..., LocalConcierge]) -> None:
    concierge = concierge_factory(idp, maxConcurrentRequests=SLOTS,
                                  requestHeaderTimeoutSeconds=HEADER_TIMEOUT)
    token = id_token_for("alice")
    with held([]) as half_sent, httpx.Client(verify=tls(concierge), timeout=10) as http:
        opened = time.monotonic()
        for _ in range(HALF_SENT):
            sock = tls_connection(concierge)
            sock.sendall(HALF_HEADERS)
            half_sent.append(sock)
        last_opened = time.monotonic()
        # While they are all held, and until well past the header timeout, others are served.
        answers: list[tuple[float, int]] = []
        while time.monotonic() - last_opened < HEADER_TIMEOUT + 1:
            answers.append((time.monotonic() - opened, healthz(http, concierge)))
            time.sleep(0.1)
        blocked = [at for at, status in answers if status != 200]
        assert not blocked, f"/healthz refused at {blocked} s of {answers[-1][0]:.1f} s"
        assert len(answers) >= 10
        assert login(concierge, token).identity.username == "corp:alice@example.com"
        # Every half-sent connection was closed by the server: none is left open.
        still_open = [i for i, sock in enumerate(half_sent)
                      if closed_by_server(sock, within=SLACK) is None]
        assert not still_open, f"{len(still_open)} half-sent connections still open"
    assert time.monotonic() - opened < 60


def test_a_half_sent_request_is_answered_408_at_the_header_timeout(
        idp: LocalIdP, concierge_factory: Callable[..., LocalConcierge]) -> None:
    concierge = concierge_factory(idp, maxConcurrentRequests=SLOTS,
                                  requestHeaderTimeoutSeconds=HEADER_TIMEOUT)
    with held([tls_connection(concierge) for _ in range(3)]) as socks:
        started = time.monotonic()
        for sock in socks:
            sock.sendall(HALF_HEADERS)
        for sock in socks:  # a byte every 0.3 s does not keep a connection open
            answer = b""
            while (chunk := closed_by_server(sock, within=0.3)) is None:
                assert time.monotonic() - started < HEADER_TIMEOUT + SLACK
                sock.sendall(b"o")
            answer += chunk
            assert answer.split(b"\r\n", 1)[0] == b"HTTP/1.1 408 Request Timeout"
        elapsed = time.monotonic() - started
    assert HEADER_TIMEOUT - 0.5 < elapsed < HEADER_TIMEOUT + SLACK


def test_stalled_tls_handshakes_are_closed_and_never_take_a_slot(
        idp: LocalIdP, concierge_factory: Callable[..., LocalConcierge]) -> None:
    concierge = concierge_factory(idp, maxConcurrentRequests=SLOTS,
                                  requestHeaderTimeoutSeconds=HEADER_TIMEOUT)
    with held([tcp(concierge) for _ in range(50)]) as stalled, \
            httpx.Client(verify=tls(concierge), timeout=10) as http:
        started = time.monotonic()
        stalled[0].sendall(b"\x16\x03\x01\x00\xc8\x01")  # the start of a ClientHello, no more
        assert healthz(http, concierge) == 200
        for sock in stalled:
            assert closed_by_server(sock, within=HEADER_TIMEOUT + SLACK) is not None
        assert HEADER_TIMEOUT - 0.5 < time.monotonic() - started < HEADER_TIMEOUT + 2 * SLACK


def test_an_idle_connection_is_closed_after_its_response(
        idp: LocalIdP, concierge_factory: Callable[..., LocalConcierge]) -> None:
    concierge = concierge_factory(idp, requestHeaderTimeoutSeconds=HEADER_TIMEOUT)
    with held([tls_connection(concierge)]) as (sock,):
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: concierge\r\n\r\n")
        answer = b""
        while not answer.endswith(b"ok"):
            chunk = sock.recv(4096)
            assert chunk
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 OK")
        answered = time.monotonic()
        sock.sendall(b"GET /hea")  # part of a second request; the rest never comes
        assert closed_by_server(sock, within=HEADER_TIMEOUT + SLACK) is not None
        assert time.monotonic() - answered > HEADER_TIMEOUT - 0.5


def test_stalled_clients_do_not_hold_the_request_slots(
        idp: LocalIdP, id_token_for: Callable[..., str],
        concierge_factory: Callable[..., LocalConcierge]) -> None:
    """More stalled clients than slots, each in another phase; logins go through meanwhile."""
    concierge = concierge_factory(idp, maxConcurrentRequests=SLOTS,
                                  requestHeaderTimeoutSeconds=30, requestBodyTimeoutSeconds=30)
    token = id_token_for("alice")
    with held([]) as stalled:
        for _ in range(SLOTS * 3):
            stalled.append(tcp(concierge))  # no handshake
            stalled.append(tls_connection(concierge))  # no request
            half = tls_connection(concierge)
            half.sendall(HALF_HEADERS)
            stalled.append(half)
        for _ in range(3):
            assert login(concierge, token).identity.username == "corp:alice@example.com"


# --- the per-address rate limit ------------------------------------------------------------


def whoami(http: httpx.Client, concierge: LocalConcierge,
           headers: dict[str, str] | None = None) -> httpx.Response:
    return http.post(concierge.url + wire.WHOAMI_REQUEST_PATH, json=wire.whoami_request(),
                     headers=headers or {})


def test_a_client_address_over_its_rate_limit_gets_429_with_retry_after(
        idp: LocalIdP, id_token_for: Callable[..., str],
        concierge_factory: Callable[..., LocalConcierge]) -> None:
    concierge = concierge_factory(idp, rateLimit={"requestsPerSecond": 1, "burst": 3})
    with httpx.Client(verify=tls(concierge), timeout=10) as http:
        before = len(concierge.audit_lines())
        answers = [whoami(http, concierge) for _ in range(3)]
        assert [a.status_code for a in answers] == [401, 401, 401]  # no credential: still counted
        # Another X-Forwarded-For is not another client: the address is the TCP peer's.
        refused = whoami(http, concierge, {"X-Forwarded-For": "198.51.100.9"})
        assert refused.status_code == 429
        retry_after = int(refused.headers["retry-after"])
        assert 1 <= retry_after <= 2
        status = refused.json()
        assert wire.is_status_error(status)
        assert status["code"] == 429
        assert status["reason"] == "TooManyRequests"
        assert "Retry-After" in status["message"] or "retry" in status["message"].lower()
        # Probes are never limited (/metrics is: it costs a render).
        assert all(http.get(f"{concierge.url}{path}").status_code == 200
                   for path in ("/healthz", "/readyz") * 5)
        assert http.get(f"{concierge.url}/metrics").status_code == 429
        time.sleep(retry_after + 0.1)
        allowed = login(concierge, id_token_for("alice"))
        assert allowed.identity.username == "corp:alice@example.com"
    lines = concierge.audit_lines()[before:]
    assert [line["httpStatus"] for line in lines] == [401, 401, 401, 429, 200]
    assert lines[3]["reason"] == "rate_limited"
    assert lines[3]["request"] == "whoami"
    assert lines[3]["client"].startswith("127.0.0.1:")
    time.sleep(1.1)  # a token for the address again
    metrics = httpx.get(f"{concierge.url}/metrics", verify=tls(concierge)).text
    assert 'pinniped_concierge_requests_rate_limited_total{request="whoami"} 1.0' in metrics


def test_the_rate_limit_can_be_turned_off(idp: LocalIdP,
                                          concierge_factory: Callable[..., LocalConcierge]) -> None:
    concierge = concierge_factory(idp, rateLimit={"requestsPerSecond": 0, "burst": 1})
    with httpx.Client(verify=tls(concierge), timeout=10) as http:
        assert {whoami(http, concierge).status_code for _ in range(20)} == {401}


# --- strings a client can send -------------------------------------------------------------


def raw_login(concierge: LocalConcierge, body: str) -> httpx.Response:
    with httpx.Client(verify=tls(concierge), timeout=10) as http:
        return http.post(concierge.url + wire.TOKEN_CREDENTIAL_REQUEST_PATH,
                         content=body.encode("ascii"),
                         headers={"content-type": "application/json"})


@pytest.mark.parametrize("text", ["\\udc80", "\\ud800", "a\\udfffb", "\\u0000\\u001b[31m",
                                  "\\ud83d\\ude00"])
def test_no_string_a_client_sends_gets_a_5xx(concierge: LocalConcierge, text: str) -> None:
    request: dict[str, Any] = {"apiVersion": constants.LOGIN_API_VERSION,
                               "kind": "TokenCredentialRequest",
                               "spec": {"token": "t", "authenticator": {
                                   "apiGroup": "authentication.concierge.pinniped.dev",
                                   "kind": "JWTAuthenticator", "name": "NAME"}}}
    template = json.dumps(request)
    for where in ('"NAME"', '"JWTAuthenticator"', '"t"'):
        response = raw_login(concierge, template.replace(where, f'"{text}"'))
        assert response.status_code in (200, 400), (where, response.status_code, response.text)
        response.json()  # valid JSON
    unknown = raw_login(concierge, template.replace('"spec"', f'"{text}"', 1))
    assert unknown.status_code == 400
    assert "Internal" not in concierge.log_path.read_text(errors="replace")


# --- request limits ------------------------------------------------------------------------


def test_a_body_over_the_bound_is_413_whether_announced_or_streamed(
        concierge: LocalConcierge) -> None:
    before = len(concierge.audit_lines())
    with httpx.Client(verify=tls(concierge), timeout=30) as http:
        announced = http.post(concierge.url + wire.TOKEN_CREDENTIAL_REQUEST_PATH,
                              content=b"x" * (wire.MAX_REQUEST_BYTES + 1),
                              headers={"content-type": "application/json"})

        def chunks() -> Iterator[bytes]:  # no Content-Length: cut off while it streams
            for _ in range(4 * wire.MAX_REQUEST_BYTES // 1024):
                yield b" " * 1024

        streamed = http.post(concierge.url + wire.TOKEN_CREDENTIAL_REQUEST_PATH,
                             content=chunks(), headers={"content-type": "application/json"})
    for response in (announced, streamed):
        assert response.status_code == 413
        assert response.json()["reason"] == "RequestEntityTooLarge"
    assert [line["reason"] for line in concierge.audit_lines()[before:]] == \
        ["request_too_large"] * 2


def test_a_stalled_body_is_408_and_frees_its_slot(
        idp: LocalIdP, id_token_for: Callable[..., str],
        concierge_factory: Callable[..., LocalConcierge]) -> None:
    concierge = concierge_factory(idp, maxConcurrentRequests=1, requestBodyTimeoutSeconds=2,
                                  requestHeaderTimeoutSeconds=HEADER_TIMEOUT)
    with held([tls_connection(concierge)]) as (slow,):
        started = time.monotonic()
        slow.sendall(HALF_HEADERS + b"on\r\nContent-Length: 100\r\n\r\n{")
        answer = closed_by_server(slow, within=2 + SLACK)
        assert answer is not None
        assert answer.split(b"\r\n", 1)[0] == b"HTTP/1.1 408 Request Timeout"
        assert 1.5 < time.monotonic() - started < 2 + SLACK
    assert login(concierge, id_token_for("alice")).identity.username == "corp:alice@example.com"
