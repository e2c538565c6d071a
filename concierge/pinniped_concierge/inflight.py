"""At most `maxConcurrentRequests` requests in flight; beyond that, 503 at once.

This replaces uvicorn's `limit_concurrency`, which counts open *connections*
as well as requests: there, connections that never finish their request (or
sit idle after one) take the slots, and a few hundred of them get every
request 503, /healthz included. Here only requests count, from the moment
their headers are complete until their response is sent; connections are
bounded by `connection_limits` instead.

A refusal costs no audit line (the request was never read, so there is
nothing to say about it beyond the count): it is counted in the metrics, and
the log gets at most one line per `LOG_EVERY_SECONDS` saying how many.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from pinniped_apis import wire

log = logging.getLogger("concierge.inflight")
LOG_EVERY_SECONDS = 10.0
RETRY_AFTER_SECONDS = 1


class InFlightLimit:
    """ASGI middleware: HTTP requests beyond `limit` in flight are answered 503."""

    def __init__(self, app: ASGIApp, limit: int, *,
                 on_refused: Callable[[], None] | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.limit = limit
        self.in_flight = 0
        self._on_refused = on_refused
        self._monotonic = monotonic
        self._refused_since_log = 0
        self._logged_at: float | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            self._refused()
            await send({"type": "http.response.start", "status": 503, "headers": _HEADERS})
            await send({"type": "http.response.body", "body": _BODY})
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

    def _refused(self) -> None:
        if self._on_refused is not None:
            self._on_refused()
        self._refused_since_log += 1
        now = self._monotonic()
        if self._logged_at is None or now - self._logged_at >= LOG_EVERY_SECONDS:
            log.warning("%d requests answered 503: %d already in flight (maxConcurrentRequests)",
                        self._refused_since_log, self.limit)
            self._refused_since_log, self._logged_at = 0, now


_BODY = json.dumps(wire.status_error(
    503, "ServiceUnavailable", "the concierge is serving as many requests as it may at once; "
    f"retry after {RETRY_AFTER_SECONDS} s")).encode("ascii")
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(_BODY)).encode()),
            (b"cache-control", b"no-store"), (b"retry-after", str(RETRY_AFTER_SECONDS).encode())]
