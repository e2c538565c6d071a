"""Serving over HTTP: the API over TLS, and optionally /metrics on a port of its own.

Everything about connections lives here (uvicorn's settings, limits and
timeouts), apart from the wiring of the services (`server`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Iterator

import uvicorn

from pinniped_concierge.app import Services, create_app
from pinniped_concierge.config import Config
from pinniped_concierge.metrics import ConciergeMetrics

log = logging.getLogger("concierge")
#: Scrapers come once every few seconds; more connections than this get 503 at once.
METRICS_MAX_CONNECTIONS = 8


class _MetricsServer(uvicorn.Server):
    """A second server in the main one's event loop; the main server handles the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_metrics(config: Config, metrics: ConciergeMetrics) -> None:
    """Serve /metrics over plain HTTP on `metrics.port` for as long as the app runs.

    Plain HTTP, like most exporters, so a scraper needs no CA: what it serves
    is counts only (`metrics`). Bounded like the API: few connections, short keep-alive.
    """
    from prometheus_client import make_asgi_app

    assert config.metrics.port is not None
    server = _MetricsServer(uvicorn.Config(
        make_asgi_app(metrics.registry), host=config.listen.host, port=config.metrics.port,
        log_level=config.log_level, access_log=False, server_header=False,
        proxy_headers=False, lifespan="off", limit_concurrency=METRICS_MAX_CONNECTIONS,
        timeout_keep_alive=5))
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
    uvicorn.run(create_app(services), host=config.listen.host, port=config.listen.port,
                ssl_certfile=str(config.tls.cert_file), ssl_keyfile=str(config.tls.key_file),
                log_level=config.log_level, access_log=False, server_header=False,
                proxy_headers=False, lifespan="on",
                # uvicorn answers 503 once open connections or tasks reach this number,
                # counting the connection asking; +1 so that the key means what it says.
                limit_concurrency=config.max_concurrent_requests + 1)
