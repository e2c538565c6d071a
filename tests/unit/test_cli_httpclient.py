"""`httpclient.exchange`: every answer the CLI reads is bounded in bytes and time as it is read.

The servers are httpx MockTransport handlers whose bodies are generators, so a
test sees how much of a body was pulled, not only what came out. The real
sockets (TLS, a 400 MB document, a slow drip) are in
tests/integration/test_cli_bounded_reads.py.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from localenv.fixtures_cli import PASSWORD_ENV, CLIHarness
from pinniped_cli import httpclient
from pinniped_cli.concierge_client import ConciergeClient
from pinniped_cli.errors import CLIError, ConciergeError, LoginError
from pinniped_cli.httpclient import MAX_RESPONSE_BYTES, exchange
from pinniped_cli.oidc.provider import IdPUnavailable, Provider

URL = "https://idp.test:8443/path/with-a-secret-looking-token?code=SECRETCODE"
CHUNK = 64 * 1024


class Failed(CLIError):
    pass


class Body:
    """A body of `total` bytes served lazily in CHUNK pieces, counting what was pulled."""

    def __init__(self, total: int, delay: float = 0.0, head: bytes = b"") -> None:
        self.total = total
        self.delay = delay
        self.head = head
        self.pulled = 0
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[bytes]:
        if self.head:
            self.pulled += len(self.head)
            yield self.head
        while self.pulled < self.total and not self.closed.is_set():
            if self.delay:
                self.closed.wait(self.delay)
            piece = b"x" * min(CHUNK, self.total - self.pulled)
            self.pulled += len(piece)
            yield piece


def _client(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(handler))


def _serving(body: Any, status: int = 200, headers: dict[str, str] | None = None
             ) -> httpx.Client:
    return _client(lambda request: httpx.Response(status, headers=headers, content=body))


def _exchange(http: httpx.Client, **kwargs: Any) -> httpclient.Answer:
    return exchange(http, "POST", URL, what="the test server", ca_flag="--ca-flag", fail=Failed,
                    data={"password": "SECRETPASSWORD"}, **kwargs)


def _assert_safe(message: str) -> None:
    """Names the host, never the path, query or request (where tokens and passwords go)."""
    assert "idp.test:8443" in message
    for secret in ("SECRETCODE", "SECRETPASSWORD", "with-a-secret"):
        assert secret not in message


def test_a_huge_body_is_refused_after_reading_just_past_the_bound() -> None:
    body = Body(400 * 1000 * 1000)
    with pytest.raises(Failed) as caught:
        _exchange(_serving(body))
    message = str(caught.value)
    assert f"more than {MAX_RESPONSE_BYTES // 1024} KiB" in message
    _assert_safe(message)
    assert MAX_RESPONSE_BYTES < body.pulled <= MAX_RESPONSE_BYTES + CHUNK


@pytest.mark.parametrize(("size", "ok"), [(1000, True), (1001, False)])
def test_the_bound_is_exact(size: int, ok: bool) -> None:
    body = b'{"a": "' + b"x" * (size - 10) + b'"}'
    body = body.ljust(size)
    assert len(body) == size

    def run() -> httpclient.Answer:
        return _exchange(_serving(iter([body[:500], body[500:]])), max_bytes=1000)

    if ok:
        assert run().body == {"a": "x" * (size - 10)}
    else:
        with pytest.raises(Failed, match="more than 0 KiB"):
            run()


def test_a_declared_length_over_the_bound_is_refused_before_reading() -> None:
    body = Body(10 * MAX_RESPONSE_BYTES)
    with pytest.raises(Failed, match="KiB"):
        _exchange(_serving(body, headers={"Content-Length": str(10 * MAX_RESPONSE_BYTES)}))
    assert body.pulled == 0


def test_only_identity_encoding_is_asked_for_and_a_compressed_body_is_refused() -> None:
    seen: list[httpx.Request] = []
    bomb = gzip.compress(b"{" + b" " * (50 * MAX_RESPONSE_BYTES) + b"}")
    assert len(bomb) < MAX_RESPONSE_BYTES // 10  # small on the wire, 50 MiB inflated

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, headers={"Content-Encoding": "gzip"}, content=bomb)

    with pytest.raises(Failed) as caught:
        _exchange(_client(handler), headers={"Accept": "text/plain", "X-Extra": "1"})
    assert "Content-Encoding 'gzip'" in str(caught.value)
    _assert_safe(str(caught.value))
    assert seen[0].headers["accept-encoding"] == "identity"
    assert seen[0].headers["accept"] == "text/plain"  # the caller's headers are kept
    assert seen[0].headers["x-extra"] == "1"


def test_a_slow_drip_body_is_cut_off_at_the_deadline() -> None:
    body = Body(MAX_RESPONSE_BYTES, delay=0.05)  # well under the size bound, forever slow
    started = time.monotonic()
    try:
        with pytest.raises(Failed) as caught:
            _exchange(_serving(body), deadline=0.5)
    finally:
        body.closed.set()
    elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 1.5
    assert body.pulled > 0  # it really was dripping
    assert "did not finish answering within 0.5 s" in str(caught.value)
    _assert_safe(str(caught.value))


def test_a_server_that_never_sends_its_headers_is_cut_off_at_the_deadline() -> None:
    release = threading.Event()

    def handler(request: httpx.Request) -> httpx.Response:
        release.wait(10)  # as a server dripping its headers: no response yet
        return httpx.Response(200, json={})

    started = time.monotonic()
    try:
        with pytest.raises(Failed, match=r"did not finish answering within 0\.3 s"):
            _exchange(_client(handler), deadline=0.3)
    finally:
        release.set()
    assert time.monotonic() - started < 1.3


def test_a_transport_failure_says_what_to_check() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(Failed, match="cannot reach the test server: connection refused"):
        _exchange(_client(handler))


def test_an_error_in_the_worker_reaches_the_caller() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise KeyError("a bug")

    with pytest.raises(KeyError, match="a bug"):
        _exchange(_client(handler))


@pytest.mark.parametrize("body", [b"[" * 100_000 + b"]" * 100_000, b"not json", b"[1]",
                                  b"\xff\xfe"])
def test_bodies_that_are_not_json_objects_are_empty(body: bytes) -> None:
    answer = _exchange(_serving(body, 400))
    assert answer.status == 400
    assert answer.body == {}


def test_status_headers_and_body_come_back() -> None:
    answer = _exchange(_client(lambda r: httpx.Response(
        503, headers={"Retry-After": "7"}, json={"message": "busy"})))
    assert (answer.status, answer.headers["retry-after"], answer.body) == \
        (503, "7", {"message": "busy"})


@pytest.mark.parametrize(("url", "host"), [
    ("https://user:pw@idp.test/x?y=z", "idp.test"),
    ("https://[::1]:8443/x", "[::1]:8443"),
    ("https://idp.test:99999/x", "idp.test"),
])
def test_host_of_names_only_the_host(url: str, host: str) -> None:
    assert httpclient.host_of(url) == host


# --- every reader goes through it -----------------------------------------------------------


def _huge(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=Body(400 * 1000 * 1000))


def _provider_metadata_then(huge_path: str) -> httpx.Client:
    """An IdP whose discovery is fine and whose `huge_path` answers with a huge body."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == huge_path:
            return _huge(request)
        return httpx.Response(200, json={
            "issuer": "https://idp.test", "authorization_endpoint": "https://idp.test/auth",
            "token_endpoint": "https://idp.test/token", "jwks_uri": "https://idp.test/jwks",
            "device_authorization_endpoint": "https://idp.test/device/auth",
            "revocation_endpoint": "https://idp.test/revoke"})

    return _client(handler)


@pytest.mark.parametrize(("path", "call"), [
    ("/.well-known/openid-configuration", lambda p: p.metadata),
    ("/jwks", lambda p: p.jwks()),
    ("/token", lambda p: p.token_request({"grant_type": "password"}, "password login")),
    ("/device/auth", lambda p: p.post_form(p.metadata.device_authorization_endpoint, {},
                                           "device authorization")),
])
def test_every_idp_answer_is_bounded(path: str, call: Callable[[Provider], object]) -> None:
    provider = Provider(_provider_metadata_then(path), "https://idp.test", "pinniped-cli")
    with pytest.raises(IdPUnavailable, match="more than 1024 KiB") as caught:
        call(provider)
    assert "idp.test" in str(caught.value)
    assert isinstance(caught.value, LoginError)


def test_a_huge_revocation_answer_is_a_failed_best_effort() -> None:
    provider = Provider(_provider_metadata_then("/revoke"), "https://idp.test", "pinniped-cli")
    assert provider.revoke("a-refresh-token", "refresh_token") is False


@pytest.mark.parametrize("call", [
    lambda c: c.exchange("eyJ.a.b"),
    lambda c: c.whoami("cluster-token"),
    lambda c: c.logout("cluster-token"),
])
def test_every_concierge_answer_is_bounded(call: Callable[[ConciergeClient], object]) -> None:
    client = ConciergeClient(_client(_huge), "https://concierge.test", "corp")
    with pytest.raises(ConciergeError, match=r"concierge\.test sent an answer of more than"):
        call(client)


def test_the_concierge_rate_limiting_says_when_to_retry() -> None:
    client = ConciergeClient(_client(lambda r: httpx.Response(
        429, headers={"Retry-After": "3\x1b[2J"}, json={"message": "slow down"})),
        "https://concierge.test", "corp")
    with pytest.raises(ConciergeError) as caught:
        client.whoami("cluster-token")
    assert "temporarily unavailable (slow down); retry in 3?[2J seconds" in str(caught.value)


def test_a_login_against_a_huge_discovery_document_fails_cleanly(h: CLIHarness) -> None:
    h.router.hosts["idp.test"] = _huge
    assert h.run(h.login_args(), {**PASSWORD_ENV}) == 1
    assert "the identity provider (OIDC discovery) at idp.test sent an answer of more than " \
        "1024 KiB" in h.last_stderr
    assert "alice-pw" not in h.last_stderr
    assert h.concierge.logins == []
