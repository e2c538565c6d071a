"""Keep-alive HTTPS requests, timed one by one, with almost no client overhead.

`http.client` on one persistent TLS connection per caller: what is timed is a
request and its response, not a handshake or a client library's machinery
(an async client library spends about a millisecond of CPU per request, which
on two shared cores would be measured as server time).
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
from urllib.parse import urlsplit

from tests.benchmark.user_objects import Caller


class KeepAlive:
    """One persistent connection to `server`, sending requests as `caller`."""

    def __init__(self, server: str, context: ssl.SSLContext, caller: Caller | None = None) -> None:
        parts = urlsplit(server)
        assert parts.hostname is not None
        self._connection = http.client.HTTPSConnection(parts.hostname, parts.port,
                                                       context=context, timeout=60)
        self._caller = caller

    def request(self, method: str, path: str, body: object = None) -> tuple[int, bytes]:
        """Send one request (a JSON `body` if given) and read the whole answer."""
        payload = None if body is None else json.dumps(body).encode()
        self._connection.putrequest(method, path, skip_accept_encoding=True)
        self._connection.putheader("Accept", "application/json")
        if self._caller is not None:
            self._connection.putheader("Authorization", f"Bearer {self._caller.token}")
            for name, value in self._caller.headers:  # repeated headers (Impersonate-Group)
                self._connection.putheader(name, value)
        if payload is not None:
            self._connection.putheader("Content-Type", "application/json")
            self._connection.putheader("Content-Length", str(len(payload)))
        self._connection.endheaders(payload)
        response = self._connection.getresponse()
        return response.status, response.read()

    def expect(self, method: str, path: str, body: object = None,
               statuses: tuple[int, ...] = (200, 201)) -> bytes:
        status, answer = self.request(method, path, body)
        if status not in statuses:  # error bodies name no token
            raise RuntimeError(f"{method} {path}: HTTP {status}: {answer[:300]!r}")
        return answer

    def get(self, path: str) -> float:
        """GET `path`; the seconds from sending to the last byte of a 200 response."""
        started = time.perf_counter()
        self.expect("GET", path, statuses=(200,))
        return time.perf_counter() - started

    def close(self) -> None:
        self._connection.close()


def interleaved(server: str, context: ssl.SSLContext, callers: dict[str, Caller], path: str,
                requests: int, *, warmup: int = 20) -> dict[str, list[float]]:
    """`requests` GETs of `path` by each caller, taking turns (A, B, A, B, ...), so that
    whatever else the machine does hits every caller alike."""
    connections = {name: KeepAlive(server, context, caller) for name, caller in callers.items()}
    samples: dict[str, list[float]] = {name: [] for name in callers}
    try:
        for _ in range(warmup):
            for connection in connections.values():
                connection.get(path)
        for _ in range(requests):
            for name, connection in connections.items():
                samples[name].append(connection.get(path))
    finally:
        for connection in connections.values():
            connection.close()
    return samples
