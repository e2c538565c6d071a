"""Serving over HTTP: the API over TLS, and optionally /metrics on a port of its own.

Everything about connections lives here (uvicorn's settings, limits and
timeouts), apart from the wiring of the services (`server`). uvicorn parses
HTTP; what a client may make us spend is bounded by our own layers around it:
`connection_limits` (TLS handshake and request headers within
`requestHeaderTimeoutSeconds`, a bounded number of open connections),
`inflight` (`maxConcurrentRequests`) and, inside the app, the per-address
`rateLimit` and the body's size and time limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import ssl
from collections.abc import Iterator, Sequence
from typing import Literal

import uvicorn
from starlette.types import ASGIApp

from pinniped_concierge.app import Services, create_app
from pinniped_concierge.config import Config
from pinniped_concierge.connection_limits import ConnectionLimits, protocol_class
from pinniped_concierge.inflight import InFlightLimit
from pinniped_concierge.metrics import ConciergeMetrics
from pinniped_concierge.ratelimit import RateLimiter

log = logging.getLogger("concierge")
#: Scrapers come once every few seconds; more requests than this get 503 at once.
METRICS_MAX_REQUESTS = 8
#: Open connections allowed per `maxConcurrentRequests` slot: one holds each request in
#: flight, the rest are clients between requests or in their handshake, which are closed
#: (longest waiting first) when a new connection needs the room.
CONNECTIONS_PER_REQUEST_SLOT = 4
MIN_OPEN_CONNECTIONS = 16
def max_open_connections(max_concurrent_requests: int) -> int:
    return max(MIN_OPEN_CONNECTIONS, CONNECTIONS_PER_REQUEST_SLOT * max_concurrent_requests)


class _Server(uvicorn.Server):
    """uvicorn's server, without its start-up line: it would say http://, since TLS is done
    by `connection_limits` rather than by uvicorn (`serve` logs the right address)."""

    def _log_started_message(self, listeners: Sequence[object]) -> None:
        pass


class _MetricsServer(_Server):
    """A second server in the main one's event loop; the main server handles the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bounded_config(app: ASGIApp, *, host: str, port: int, log_level: str,
                   header_timeout_seconds: float, max_in_flight: int,
                   tls: ssl.SSLContext | None, metrics: ConciergeMetrics,
                   lifespan: Literal["on", "off"]) -> uvicorn.Config:
    """uvicorn's settings for a server whose connections and requests are bounded."""
    limits = ConnectionLimits(header_timeout_seconds=header_timeout_seconds,
                              max_open=max_open_connections(max_in_flight), tls=tls,
                              on_close=metrics.connection_closed)
    return uvicorn.Config(
        InFlightLimit(app, max_in_flight, on_refused=metrics.over_capacity),
        host=host, port=port, http=protocol_class(limits), ws="none", loop="asyncio",
        log_level=log_level, access_log=False, server_header=False, proxy_headers=False,
        lifespan=lifespan, limit_concurrency=None,
        # An idle connection stays open as long as a request's headers may take
        # (`connection_limits` closes it then): longer than clients keep theirs idle (httpx
        # 5 s). A server that closes first races the client's next POST on that
        # connection, which the client cannot safely retry; 1 in ~2,500 logins under
        # load failed that way with uvicorn's 5 s.
        timeout_keep_alive=max(1, math.ceil(header_timeout_seconds)))


def tls_context(config: Config) -> ssl.SSLContext:
    """The serving certificate, with Python's defaults for a server (TLS 1.2 or later)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.tls.cert_file, config.tls.key_file)
    return context


async def serve_metrics(config: Config, metrics: ConciergeMetrics) -> None:
    """Serve /metrics over plain HTTP on `metrics.port` for as long as the app runs.

    Plain HTTP, like most exporters, so a scraper needs no CA: what it serves
    is counts only (`metrics`). Bounded like the API: few connections, short keep-alive.
    """
    from prometheus_client import make_asgi_app

    assert config.metrics.port is not None
    server = _MetricsServer(bounded_config(
        make_asgi_app(metrics.registry), host=config.listen.host, port=config.metrics.port,
        log_level=config.log_level,
        header_timeout_seconds=config.request_header_timeout_seconds,
        max_in_flight=METRICS_MAX_REQUESTS, tls=None, metrics=metrics, lifespan="off"))
    log.info("serving metrics on http://%s:%d/metrics", config.listen.host, config.metrics.port)
    task = asyncio.create_task(server.serve())
    try:
        await asyncio.shield(task)
    finally:
        server.should_exit = True  # close the listener before the process goes on
        with contextlib.suppress(Exception):
            await task


def _unspecified(host: str) -> bool:
    """`0.0.0.0` or `::`: every interface, which no client can connect to by that name."""
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def serve(config: Config, services: Services) -> None:
    """Serve the API over TLS until stopped."""
    log.info("serving https://%s:%d (clients: %s) for authenticators %s; namespace %s",
             config.listen.host, config.listen.port, config.public_endpoint(),
             ", ".join(f"{a.name} ({a.issuer})" for a in config.authenticators) or "(none)",
             config.namespace)
    if config.jwt_authenticators.watch:
        selector = config.jwt_authenticators.label_selector
        log.info("JWTAuthenticator objects are used too (label selector %s)",
                 repr(selector) if selector else "none: every object")
    if not config.authenticators:
        log.warning("the config file lists no authenticators: logins use JWTAuthenticator "
                    "objects only, and fail until one is applied and Ready "
                    "(kubectl get jwtauthenticators)")
    if config.external_endpoint is None and _unspecified(config.listen.host):
        log.warning("externalEndpoint is not set, so the CredentialIssuer tells clients %s, "
                    "which they cannot reach; set externalEndpoint to the Service's or load "
                    "balancer's https URL", config.public_endpoint())
    app = create_app(services, rate_limiter=RateLimiter.from_config(config.rate_limit))
    _Server(bounded_config(
        app, host=config.listen.host, port=config.listen.port, log_level=config.log_level,
        header_timeout_seconds=config.request_header_timeout_seconds,
        max_in_flight=config.max_concurrent_requests, tls=tls_context(config),
        metrics=services.metrics, lifespan="on")).run()
