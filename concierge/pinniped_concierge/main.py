"""`pinniped-concierge --config FILE`: read the config, assemble the services, serve HTTPS.

Everything that can be checked before listening is checked here (config keys,
certificate files, kubeconfig), so a broken deployment fails at start with a
message naming what to fix rather than at the first login.
"""

from __future__ import annotations

import argparse
import functools
import logging
import ssl
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from pinniped_concierge import config as config_module
from pinniped_concierge.app import Services, create_app
from pinniped_concierge.audit import AuditLog
from pinniped_concierge.config import Config, ConfigError
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
    if kube is None:
        real = KubernetesClientAPI.from_kubeconfig(config.kubeconfig,
                                                   config.kubernetes_timeout_seconds)
        kube = real
        closers.append(_async(real.close))
        if versions is None:
            versions = ObjectVersions()
            watcher = ObjectWatcher(real.new_api_client(), config.namespace, versions,
                                    connect_timeout_seconds=min(5.0,
                                                                config.kubernetes_timeout_seconds))
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


def _check_tls(config: Config) -> None:
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            config.tls_cert_file, config.tls_key_file)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError("tls", f"cannot load certFile/keyFile as a TLS key pair: {exc}") from exc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pinniped-concierge",
        description="Trade OIDC ID tokens for short-lived, impersonation-only cluster "
                    "credentials. See the concierge.config module docstring for the config keys.")
    parser.add_argument("--config", required=True, type=Path, metavar="FILE",
                        help="YAML config file")
    args = parser.parse_args(argv)

    try:
        config = config_module.load(args.config)
        _check_tls(config)
    except ConfigError as exc:
        print(f"pinniped-concierge: {args.config}: {exc}", file=sys.stderr)
        return 2

    logging.basicConfig(level=config.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per key fetch is noise
    try:
        services = build_services(config)
    except Exception as exc:  # e.g. unreadable kubeconfig, not running in a pod
        print(f"pinniped-concierge: cannot set up the Kubernetes client "
              f"({'kubernetes.kubeconfig' if config.kubeconfig else 'in-cluster config'}): "
              f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 2

    import uvicorn

    log.info("serving https://%s:%d for authenticators %s; namespace %s",
             config.listen_host, config.listen_port,
             ", ".join(f"{a.name} ({a.issuer})" for a in config.authenticators), config.namespace)
    uvicorn.run(create_app(services), host=config.listen_host, port=config.listen_port,
                ssl_certfile=str(config.tls_cert_file), ssl_keyfile=str(config.tls_key_file),
                log_level=config.log_level, access_log=False, server_header=False,
                proxy_headers=False, lifespan="on",
                # uvicorn answers 503 once open connections or tasks reach this number,
                # counting the connection asking; +1 so that the key means what it says.
                limit_concurrency=config.max_concurrent_requests + 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
