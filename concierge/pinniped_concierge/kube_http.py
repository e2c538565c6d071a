"""A thin HTTPS transport to the kube-apiserver, for the calls a login makes.

Why not the official client for these: a returning login is two API calls (the
session Secret, then a TokenRequest bound to it), and through the official
client they cost 1.9 to 2.4 ms of CPU (model conversion both ways, urllib3,
its pool) against about 1 ms for plain JSON over `http.client`, in the same
thread pool (docs/performance.md, figure 3c). That difference decides whether
the concierge meets its CPU budget per login. Everything else (watches, lists,
leases, custom objects) stays on the official client, where speed does not
matter.

What it keeps from the official client's `Configuration`, so that it talks to
the same server in the same way: the host (a path prefix included), the CA
(`ssl_ca_cert` or `ca_cert_data`, else the system's), the client certificate
(`cert_file`/`key_file`), and the `Authorization` header, asked of the
Configuration on every request, so that its refresh hook (which re-reads the
in-cluster projected token when it is due) keeps rotating it; no token is kept
here. Like urllib3, the TLS context is built for each new connection, so a
rotated CA or client certificate file is picked up on reconnect. Hostname
verification is always on, redirects are never followed. A Configuration this
transport cannot honour exactly (a proxy, no TLS verification, a pinned or
overridden hostname, custom socket options, plain http) gets `unsupported`'s
reason, and the caller keeps the official client for it.

One keep-alive connection per worker thread (the caller's pool bounds them). A
kept connection the server has closed is noticed before reuse and replaced,
and a request that fails because the reused connection turns out closed is
sent once more on a new one. That is usually a connection the server closed
while idle, before it read the request; but if the apiserver read a POST and
then died, the second one is a duplicate (the official client would not
resend a POST). For the calls that come here a duplicate does no harm: a
session Secret's name is random, so its second create is a Conflict and the
login answers 503 (`sessions`; the sweeper deletes the first); a second
TokenRequest's token is never handed out and dies with its session; the
ClusterRole writes are conditional. A response body is read up to
`MAX_RESPONSE_BYTES`.

Errors carry what is safe to log: the HTTP status and the apiserver's Status
message, never a body (ours carry tokens, and so does a TokenRequest's answer).
"""

from __future__ import annotations

import http.client
import json
import select
import ssl
import threading
from typing import Any
from urllib.parse import urlsplit

Obj = dict[str, Any]

#: The largest response body read; a Secret or a ClusterRole is far below it, and
#: Kubernetes itself refuses objects over about 1.5 MiB.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024

#: Errors that mean the server had closed the reused connection before it read our request.
_DROPPED = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
            ConnectionAbortedError, ssl.SSLEOFError)


class HTTPStatusError(Exception):
    """A non-2xx answer: its status and the apiserver's Status message, no body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


class ResponseTooLarge(Exception):
    """The response body exceeded `MAX_RESPONSE_BYTES`."""


class InvalidResponse(Exception):
    """A 2xx answer whose body is not a JSON object."""


def status_message(body: object) -> str:
    """The `message` of a Kubernetes Status body; never the raw body."""
    try:
        message = json.loads(body)["message"] if isinstance(body, str | bytes) else ""
    except (ValueError, KeyError, TypeError):
        return "(no message)"
    return str(message)[:300]


def unsupported(configuration: Any) -> str | None:
    """Why this transport cannot reproduce `configuration` exactly (None: it can)."""
    parts = urlsplit(str(configuration.host or ""))
    if parts.scheme != "https" or not parts.hostname:
        return "is not to an https:// URL"
    if configuration.proxy:
        return "it goes through a proxy"
    if not configuration.verify_ssl:
        return "it skips TLS verification"
    if configuration.assert_hostname is not None or configuration.tls_server_name:
        return "it overrides the TLS server name"
    if configuration.socket_options is not None:
        return "it sets socket options"
    return None


def tls_context(configuration: Any) -> ssl.SSLContext:
    """Verify the server as the official client does: its CA file or data, else the system's;
    hostname checked; TLS 1.2 or later; the client certificate if there is one."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                         cafile=configuration.ssl_ca_cert or None,
                                         cadata=configuration.ca_cert_data or None)
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file or None)
    return context


class _Connection(http.client.HTTPSConnection):
    """Connects within the connect timeout, then reads with the read timeout."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext,
                 connect_timeout: float, read_timeout: float) -> None:
        super().__init__(host, port, timeout=connect_timeout, context=context)
        self._read_timeout = read_timeout

    def connect(self) -> None:
        super().connect()  # TCP and the TLS handshake, within the connect timeout
        self.sock.settimeout(self._read_timeout)

    def dropped(self) -> bool:
        """True if the server has closed this idle connection (or sent what we did not ask
        for): an idle HTTP/1.1 connection has nothing to read."""
        sock = self.sock
        if sock is None:
            return False
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True
        poller = select.poll()  # not select(): no limit on the descriptor's number
        try:
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0))
        except (OSError, ValueError):
            return True


class KubeHTTP:
    """Blocking JSON requests to one apiserver; call `request` from worker threads."""

    def __init__(self, configuration: Any, timeout_seconds: float, *,
                 user_agent: str, max_response_bytes: int = MAX_RESPONSE_BYTES) -> None:
        reason = unsupported(configuration)
        if reason is not None:
            raise ValueError(f"the thin Kubernetes transport cannot be used: {reason}")
        parts = urlsplit(str(configuration.host))
        self._configuration = configuration
        self._host = parts.hostname or ""
        self._port = parts.port or 443
        self._prefix = parts.path.rstrip("/")
        self._connect_timeout = min(3.0, timeout_seconds)
        self._read_timeout = timeout_seconds
        self._user_agent = user_agent
        self._max = max_response_bytes
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: set[_Connection] = set()
        self._closed = False

    def request(self, method: str, path: str, body: Obj | None = None) -> Obj:
        """Send `body` as JSON; the answer's JSON object, or `HTTPStatusError`,
        `ResponseTooLarge`, `InvalidResponse`, or a network error (`OSError`,
        `http.client.HTTPException`)."""
        payload = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        headers = {"Accept": "application/json", "User-Agent": self._user_agent}
        if payload is not None:
            headers["Content-Type"] = "application/json"
        # Asked every time: the Configuration's hook refreshes a rotated token.
        authorization = self._configuration.get_api_key_with_prefix(
            "BearerToken", alias="authorization")
        if authorization:
            headers["Authorization"] = authorization
        status, data = self._exchange(method, self._prefix + path, payload, headers)
        if not 200 <= status < 300:
            raise HTTPStatusError(status, status_message(data))
        try:
            result = json.loads(data)
        except ValueError:
            result = None  # raised below, outside this handler: the error keeps no body
        if not isinstance(result, dict):
            raise InvalidResponse(f"{method} answered {status} without a JSON object")
        return result

    def _exchange(self, method: str, url: str, payload: bytes | None,
                  headers: dict[str, str]) -> tuple[int, bytes]:
        for attempt in (1, 2):
            connection, reused = self._connection()
            try:
                connection.request(method, url, body=payload, headers=headers)
                response = connection.getresponse()
                data = self._read(response)
            except _DROPPED:
                self._discard(connection)
                if reused and attempt == 1:
                    continue  # the kept connection was gone: once more, on a new one
                raise
            except BaseException:
                self._discard(connection)
                raise
            if data is None or response.will_close:  # unread bytes, or the server is done
                self._discard(connection)
            if data is None:
                if 200 <= response.status < 300:
                    raise ResponseTooLarge(f"the answer is over {self._max} bytes")
                data = b""  # an error's status is what counts; its message is lost
            return response.status, data
        raise AssertionError("unreachable")  # pragma: no cover

    def _read(self, response: http.client.HTTPResponse) -> bytes | None:
        """The body, or None if it is over the bound (then the rest is left unread)."""
        if response.length is not None and response.length > self._max:
            return None
        data = response.read(self._max + 1)
        if len(data) > self._max or (not response.isclosed() and response.read(1)):
            return None
        return data

    def _connection(self) -> tuple[_Connection, bool]:
        """This thread's connection, and whether it has carried a request before."""
        if self._closed:
            raise ConnectionAbortedError("the Kubernetes API client is closed")
        connection: _Connection | None = getattr(self._local, "connection", None)
        if connection is not None and connection.sock is not None and not connection.dropped():
            return connection, True
        if connection is not None:
            self._discard(connection)
        connection = _Connection(self._host, self._port, tls_context(self._configuration),
                                 self._connect_timeout, self._read_timeout)
        with self._lock:
            self._open.add(connection)
        self._local.connection = connection
        return connection, False

    def _discard(self, connection: _Connection) -> None:
        connection.close()
        with self._lock:
            self._open.discard(connection)
        if getattr(self._local, "connection", None) is connection:
            self._local.connection = None

    def open_connections(self) -> int:
        with self._lock:
            return len(self._open)

    def close(self) -> None:
        """Close every thread's connection; later requests fail as unreachable."""
        self._closed = True
        with self._lock:
            connections, self._open = list(self._open), set()
        for connection in connections:
            connection.close()
