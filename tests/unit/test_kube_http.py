"""The thin apiserver transport against a real local TLS server: what it sends, how it keeps
and replaces connections, what it verifies, what it bounds, and how its errors translate."""

from __future__ import annotations

import asyncio
import http.server
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from localenv import pki
from pinniped_concierge import kube_http
from pinniped_concierge.errors import Reason, ServerError, Unavailable
from pinniped_concierge.kubeapi import (
    Conflict,
    Kind,
    KubernetesClientAPI,
    NotFound,
    counting_calls,
)

TOKEN = "Bearer s3cr3t-caller-token"
REQUEST_SECRET = "request-body-s3cr3t"
ANSWER_SECRET = "answer-body-s3cr3t"


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    peer_port: int


@dataclass
class Script:
    """What the server answers, one action per request (then 200 with a small object)."""

    actions: list[tuple[Any, ...]] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    closed: threading.Event = field(default_factory=threading.Event)


def _handler(script: Script) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            script.seen.append(Seen(self.command, self.path, dict(self.headers.items()),
                                    self.rfile.read(length), self.client_address[1]))
            action = script.actions.pop(0) if script.actions else ("json", 200, {"kind": "ok"})
            if action[0] == "drop":  # read the request, close without a word
                self.close_connection = True
                return
            if action[0] == "sleep":
                time.sleep(action[1])
                action = ("json", 200, {"kind": "late"})
            if action[0] == "chunked":
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                data: bytes = action[1]
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n0\r\n\r\n")
                return
            status, payload = action[1], action[2]
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            if action[0] == "close-after":  # an idle timeout, without "Connection: close"
                self.close_connection = True

        def finish(self) -> None:
            super().finish()
            if self.close_connection:
                script.closed.set()

        do_GET = do_POST = do_PUT = _answer

    return Handler


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that refused our certificate, or hung up: what the tests provoke


@dataclass
class TLSServer:
    port: int
    script: Script
    ca: pki.CA


def _serve(tmp_path: Path, *, hosts: tuple[str, ...] = ("127.0.0.1",),
           client_ca: pki.CA | None = None) -> Iterator[TLSServer]:
    ca = pki.CA.create(tmp_path / "ca", "apiserver")
    leaf = ca.issue(tmp_path / "ca", "apiserver", hosts=hosts)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(leaf.cert_path, leaf.key_path)
    if client_ca is not None:
        context.load_verify_locations(client_ca.cert_path)
        context.verify_mode = ssl.CERT_REQUIRED
    script = Script()
    server = _QuietServer(("127.0.0.1", 0), _handler(script))
    # The handshake happens in the connection's own thread, on its first read.
    server.socket = context.wrap_socket(server.socket, server_side=True,
                                        do_handshake_on_connect=False)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield TLSServer(server.server_address[1], script, ca)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[TLSServer]:
    yield from _serve(tmp_path)


def configuration_for(server: TLSServer, *, ca: pki.CA | None = None,
                      host: str | None = None) -> Any:
    configuration = client.Configuration()
    configuration.host = host or f"https://127.0.0.1:{server.port}"
    configuration.ssl_ca_cert = str((ca or server.ca).cert_path)
    configuration.api_key = {"BearerToken": TOKEN}
    configuration.proxy = None
    return configuration


def transport(configuration: Any, timeout: float = 2.0, **kwargs: Any) -> kube_http.KubeHTTP:
    return kube_http.KubeHTTP(configuration, timeout, user_agent="pinniped-concierge", **kwargs)


@pytest.fixture
def api(server: TLSServer) -> Iterator[KubernetesClientAPI]:
    made = KubernetesClientAPI(client.ApiClient(configuration_for(server)), timeout_seconds=2)
    assert made._http is not None
    yield made
    made.close()


SECRET = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
          "stringData": {"token": REQUEST_SECRET}}


# --- what goes over the wire -------------------------------------------------------


def test_a_call_sends_json_with_our_credentials_and_returns_the_answer(
        server: TLSServer, api: KubernetesClientAPI) -> None:
    server.script.actions.append(("json", 201, {"kind": "Secret", "metadata": {"uid": "u1"}}))
    with counting_calls() as count:
        created = asyncio.run(api.create(Kind.SECRET, SECRET, "pinniped concierge"))
    assert created == {"kind": "Secret", "metadata": {"uid": "u1"}}
    assert count.value == 1
    (seen,) = server.script.seen
    assert (seen.method, seen.path) == ("POST", "/api/v1/namespaces/pinniped%20concierge/secrets")
    assert json.loads(seen.body) == SECRET
    assert seen.headers["Authorization"] == TOKEN
    assert seen.headers["User-Agent"] == "pinniped-concierge"
    assert seen.headers["Content-Type"] == "application/json"


def test_the_login_calls_go_where_the_api_says(server: TLSServer,
                                               api: KubernetesClientAPI) -> None:
    server.script.actions += [("json", 201, {"status": {"token": ANSWER_SECRET}}),
                              ("json", 201, {"status": {"authenticated": True}}),
                              ("json", 200, {"kind": "ClusterRole"}),
                              ("json", 200, {"kind": "ClusterRole"})]
    issued = asyncio.run(api.create_token("ns", "sa-1", {"kind": "TokenRequest"}))
    assert issued["status"]["token"] == ANSWER_SECRET
    assert asyncio.run(api.review_token("a-token")) == {"authenticated": True}
    asyncio.run(api.read(Kind.CLUSTER_ROLE, "role-1"))
    asyncio.run(api.replace(Kind.CLUSTER_ROLE, "role-1", {"kind": "ClusterRole"}))
    assert [(s.method, s.path) for s in server.script.seen] == [
        ("POST", "/api/v1/namespaces/ns/serviceaccounts/sa-1/token"),
        ("POST", "/apis/authentication.k8s.io/v1/tokenreviews"),
        ("GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles/role-1"),
        ("PUT", "/apis/rbac.authorization.k8s.io/v1/clusterroles/role-1"),
    ]
    assert json.loads(server.script.seen[1].body)["spec"] == {"token": "a-token"}


def test_a_path_prefix_in_the_server_url_is_kept(server: TLSServer) -> None:
    thin = transport(configuration_for(
        server, host=f"https://127.0.0.1:{server.port}/k8s/clusters/c-1/"))
    thin.request("GET", "/api/v1/namespaces/ns/secrets/x")
    thin.close()
    assert server.script.seen[0].path == "/k8s/clusters/c-1/api/v1/namespaces/ns/secrets/x"


def test_the_bearer_token_is_asked_of_the_configuration_for_every_request(
        server: TLSServer) -> None:
    """In a pod, the Configuration's hook re-reads the projected token when it is due."""
    configuration = configuration_for(server)
    rotations = iter(range(1, 100))

    def refresh(config: Any) -> None:
        config.api_key["BearerToken"] = f"Bearer rotated-{next(rotations)}"

    configuration.refresh_api_key_hook = refresh
    thin = transport(configuration)
    thin.request("GET", "/a")
    thin.request("GET", "/b")
    thin.close()
    assert [s.headers["Authorization"] for s in server.script.seen] == [
        "Bearer rotated-1", "Bearer rotated-2"]


# --- connections -------------------------------------------------------------------


def test_one_connection_per_thread_is_kept_and_reused(server: TLSServer) -> None:
    thin = transport(configuration_for(server))
    barrier = threading.Barrier(3)

    def work() -> None:
        thin.request("GET", "/first")
        barrier.wait(5)  # all three connections are open at once
        thin.request("GET", "/second")

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert thin.open_connections() == 3
    assert len({s.peer_port for s in server.script.seen}) == 3
    assert len(server.script.seen) == 6
    thin.close()
    assert thin.open_connections() == 0


def test_a_kept_connection_the_server_closed_is_replaced_before_use(server: TLSServer) -> None:
    thin = transport(configuration_for(server))
    server.script.actions.append(("close-after", 200, {"kind": "first"}))
    thin.request("GET", "/first")
    kept = thin._local.connection
    assert server.script.closed.wait(5)
    time.sleep(0.1)  # the FIN reaches us
    assert kept.dropped()
    assert thin.request("GET", "/second") == {"kind": "ok"}
    assert thin._local.connection is not kept
    assert not thin._local.connection.dropped()  # an idle, open one has nothing to read
    thin.close()
    first, second = server.script.seen  # no request was lost on the dead connection
    assert first.peer_port != second.peer_port


def test_a_reused_connection_dropped_under_a_request_is_retried_once_on_a_new_one(
        server: TLSServer) -> None:
    thin = transport(configuration_for(server))
    server.script.actions += [("json", 201, {"n": 1}), ("drop",), ("json", 201, {"n": 3})]
    thin.request("POST", "/first", SECRET)
    assert thin.request("POST", "/second", SECRET) == {"n": 3}
    thin.close()
    ports = [s.peer_port for s in server.script.seen]
    assert ports[0] == ports[1] != ports[2]
    assert [s.path for s in server.script.seen] == ["/first", "/second", "/second"]


def test_a_second_drop_is_not_retried_again(server: TLSServer) -> None:
    thin = transport(configuration_for(server))
    server.script.actions += [("json", 201, {"n": 1}), ("drop",), ("drop",)]
    thin.request("POST", "/first", SECRET)
    with pytest.raises(ConnectionError):
        thin.request("POST", "/second", SECRET)
    thin.close()
    assert len(server.script.seen) == 3


def test_a_new_connection_that_drops_is_not_retried(server: TLSServer,
                                                    api: KubernetesClientAPI) -> None:
    server.script.actions.append(("drop",))
    with pytest.raises(Unavailable):
        asyncio.run(api.create(Kind.SECRET, SECRET, "ns"))
    assert len(server.script.seen) == 1


def test_a_slow_answer_times_out_as_unavailable(server: TLSServer) -> None:
    api = KubernetesClientAPI(client.ApiClient(configuration_for(server)), timeout_seconds=0.3)
    server.script.actions.append(("sleep", 1.0))
    started = time.monotonic()
    with pytest.raises(Unavailable):
        asyncio.run(api.create(Kind.SECRET, SECRET, "ns"))
    assert time.monotonic() - started < 0.9
    api.close()


def test_an_unreachable_apiserver_is_unavailable() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    configuration = client.Configuration()
    configuration.host = f"https://127.0.0.1:{port}"
    configuration.proxy = None
    api = KubernetesClientAPI(client.ApiClient(configuration), timeout_seconds=1)
    with pytest.raises(Unavailable):
        asyncio.run(api.create_token("ns", "sa", {}))
    api.close()


# --- TLS ---------------------------------------------------------------------------


def test_a_server_signed_by_another_ca_is_refused(server: TLSServer, tmp_path: Path) -> None:
    other = pki.CA.create(tmp_path / "other", "other")
    api = KubernetesClientAPI(client.ApiClient(configuration_for(server, ca=other)), 2)
    with pytest.raises(Unavailable) as info:
        asyncio.run(api.create(Kind.SECRET, SECRET, "ns"))
    assert "SSLCertVerificationError" in info.value.message
    assert server.script.seen == []  # nothing, the token least of all, was sent
    api.close()


def test_a_certificate_for_another_name_is_refused(tmp_path: Path) -> None:
    for wrong in _serve(tmp_path, hosts=("kubernetes.example",)):
        thin = transport(configuration_for(wrong))
        with pytest.raises(ssl.SSLCertVerificationError):
            thin.request("GET", "/")
        thin.close()
        assert wrong.script.seen == []


def test_the_client_certificate_is_presented(tmp_path: Path) -> None:
    client_ca = pki.CA.create(tmp_path / "clients", "clients")
    pair = client_ca.issue(tmp_path / "clients", "concierge", client=True)
    for mutual in _serve(tmp_path, client_ca=client_ca):
        configuration = configuration_for(mutual)
        without = transport(configuration)
        with pytest.raises((ssl.SSLError, ConnectionError)):
            without.request("GET", "/")
        without.close()
        configuration.cert_file, configuration.key_file = str(pair.cert_path), str(pair.key_path)
        with_cert = transport(configuration)
        assert with_cert.request("GET", "/") == {"kind": "ok"}
        with_cert.close()


@pytest.mark.parametrize(("change", "reason"), [
    ({"proxy": "http://proxy.example:3128"}, "proxy"),
    ({"verify_ssl": False}, "TLS verification"),
    ({"tls_server_name": "kubernetes"}, "server name"),
    ({"assert_hostname": False}, "server name"),
    ({"host": "http://127.0.0.1:8080"}, "https"),
])
def test_what_it_cannot_honour_keeps_the_official_client(change: dict[str, Any],
                                                         reason: str) -> None:
    configuration = client.Configuration()
    configuration.host = "https://127.0.0.1:6443"
    configuration.proxy = None
    for key, value in change.items():
        setattr(configuration, key, value)
    assert reason in (kube_http.unsupported(configuration) or "")
    api = KubernetesClientAPI(client.ApiClient(configuration), 2)
    assert api._http is None
    api.close()


# --- errors ------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "expected"), [
    (404, NotFound), (409, Conflict), (429, Unavailable), (500, Unavailable),
    (503, Unavailable), (403, ServerError), (422, ServerError), (302, ServerError),
])
def test_statuses_translate_as_the_official_clients_do(
        server: TLSServer, api: KubernetesClientAPI, status: int,
        expected: type[Exception]) -> None:
    server.script.actions.append(("json", status, {"kind": "Status", "message": "nope here"}))
    with pytest.raises(expected) as info:
        asyncio.run(api.create(Kind.SECRET, SECRET, "ns"))
    assert REQUEST_SECRET not in str(info.value)
    if isinstance(info.value, ServerError):
        assert info.value.reason == Reason.KUBERNETES_ERROR
        assert info.value.detail == f"create Secret: HTTP {status}: nope here"
    if isinstance(info.value, Unavailable):
        assert info.value.reason == Reason.KUBERNETES_UNAVAILABLE


def test_a_403_after_the_call_was_allowed_is_unavailable(server: TLSServer,
                                                         api: KubernetesClientAPI) -> None:
    """A restarting apiserver denies everything until its RBAC caches are loaded."""
    server.script.actions += [("json", 201, {}), ("json", 403, {"message": "forbidden"})]
    asyncio.run(api.create(Kind.SECRET, SECRET, "ns"))
    with pytest.raises(Unavailable):
        asyncio.run(api.create(Kind.SECRET, SECRET, "ns"))


def test_an_answer_that_is_not_a_json_object_keeps_no_body(server: TLSServer,
                                                           api: KubernetesClientAPI) -> None:
    server.script.actions.append(("json", 201, f'token: "{ANSWER_SECRET}"'.encode()))
    with pytest.raises(ServerError) as info:
        asyncio.run(api.create_token("ns", "sa", {}))
    assert info.value.detail == "create TokenRequest: InvalidResponse"
    assert ANSWER_SECRET not in repr(info.value.__context__)


@pytest.mark.parametrize("framing", ["json", "chunked"])
def test_a_body_over_the_bound_is_refused(server: TLSServer, framing: str) -> None:
    thin = transport(configuration_for(server), max_response_bytes=1024)
    big = json.dumps({"data": "x" * 2000}).encode()
    server.script.actions.append(("json", 200, big) if framing == "json" else ("chunked", big))
    with pytest.raises(kube_http.ResponseTooLarge):
        thin.request("GET", "/big")
    assert thin.open_connections() == 0  # a half-read connection is never reused
    exact = json.dumps({"data": "x" * (1024 - 12)}).encode()
    assert len(exact) == 1024
    server.script.actions.append(("json", 200, exact) if framing == "json" else ("chunked", exact))
    assert thin.request("GET", "/exact") == {"data": "x" * 1012}
    thin.close()


def test_an_error_over_the_bound_keeps_its_status(server: TLSServer) -> None:
    thin = transport(configuration_for(server), max_response_bytes=1024)
    server.script.actions.append(("json", 503, {"message": "x" * 2000}))
    with pytest.raises(kube_http.HTTPStatusError) as info:
        thin.request("GET", "/busy")
    assert (info.value.status, info.value.message) == (503, "(no message)")
    thin.close()
