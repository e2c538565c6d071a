"""The serving half of `pinniped-concierge`: assemble the services from a config, serve HTTPS.

It imports FastAPI, uvicorn and the Kubernetes client, which come with the
`[concierge]` extra; `main` imports this module only once it knows they are
installed, so `--help`, `--version` and `--config-reference` work without them.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import uvicorn

from pinniped_concierge.app import Services, create_app
from pinniped_concierge.audit import AuditLog
from pinniped_concierge.config import Config
from pinniped_concierge.credential_review import CredentialReviewer
from pinniped_concierge.identity import IdentityMapper
from pinniped_concierge.jwt_authenticator import HttpsFetcher, JWTAuthenticator
from pinniped_concierge.kubeapi import KubeAPI, KubernetesClientAPI
from pinniped_concierge.login import Authenticator, LoginService
from pinniped_concierge.object_watch import ObjectVersions, ObjectWatcher
from pinniped_concierge.sessions import Sessions
from pinniped_concierge.userobjects import UserObjects

log = logging.getLogger("concierge")


def build_services(config: Config, kube: KubeAPI | None = None,
                   versions: ObjectVersions | None = None) -> Services:
    """Wire the concierge together from its config; `kube` and `versions` may be swapped by tests.

    With the real Kubernetes client, `versions` is fed by an `ObjectWatcher`
    started with the server; with a swapped `kube` and no `versions`, the
    per-user cache is off (every login reconciles).
    """
    closers: list[Callable[[], Awaitable[None]]] = []
    background: list[Callable[[], Coroutine[Any, Any, None]]] = []
    timeout = float(config.kubernetes.request_timeout_seconds)
    if kube is None:
        real = KubernetesClientAPI.from_kubeconfig(config.kubernetes.kubeconfig, timeout)
        kube = real
        closers.append(_async(real.close))
        if versions is None:
            versions = ObjectVersions()
            watcher = ObjectWatcher(real.new_api_client(), config.namespace, versions,
                                    connect_timeout_seconds=min(5.0, timeout))
            background.append(watcher.run)

    authenticators: dict[str, Authenticator] = {}
    for auth_config in config.authenticators:
        fetcher = HttpsFetcher(auth_config.ca_file)
        closers.append(fetcher.aclose)
        verifier = JWTAuthenticator(
            auth_config, fetcher, clock_skew_seconds=config.clock_skew_seconds,
            min_refresh_interval_seconds=config.key_refresh_min_interval_seconds,
            max_key_age_seconds=config.max_key_age_seconds)
        authenticators[auth_config.name] = Authenticator(verifier,
                                                         IdentityMapper.from_config(auth_config))
        background.append(functools.partial(verifier.run_refresh_loop,
                                            config.key_refresh_interval_seconds))

    user_objects = UserObjects(kube, config.namespace, config.user_cache_ttl_seconds, versions)
    sessions = Sessions(kube, config.namespace, config.credential_ttl_seconds,
                        config.clock_skew_seconds, max_per_user=config.max_sessions_per_user,
                        versions=versions)
    background.append(functools.partial(sessions.run_sweeper,
                                        config.session_sweep_interval_seconds))
    audit = AuditLog.open(config.audit_log)
    closers.append(_async(audit.close))

    return Services(
        login=LoginService(authenticators, user_objects, sessions),
        reviewer=CredentialReviewer(kube, config.namespace, user_objects),
        sessions=sessions, kube=kube, namespace=config.namespace, audit=audit,
        body_timeout_seconds=float(config.request_body_timeout_seconds),
        background=background, on_shutdown=closers,
    )


def _async(close: Callable[[], None]) -> Callable[[], Awaitable[None]]:
    async def closer() -> None:
        close()
    return closer


def serve(config: Config, services: Services) -> None:
    """Serve the API over TLS until stopped."""
    log.info("serving https://%s:%d for authenticators %s; namespace %s",
             config.listen.host, config.listen.port,
             ", ".join(f"{a.name} ({a.issuer})" for a in config.authenticators), config.namespace)
    uvicorn.run(create_app(services), host=config.listen.host, port=config.listen.port,
                ssl_certfile=str(config.tls.cert_file), ssl_keyfile=str(config.tls.key_file),
                log_level=config.log_level, access_log=False, server_header=False,
                proxy_headers=False, lifespan="on",
                # uvicorn answers 503 once open connections or tasks reach this number,
                # counting the connection asking; +1 so that the key means what it says.
                limit_concurrency=config.max_concurrent_requests + 1)
