"""Assemble the concierge's services from its config (`http_server` serves them).

It imports FastAPI and the Kubernetes client, which come with the
`[concierge]` extra; `main` imports this module only once it knows they are
installed, so `--help`, `--version` and `--config-reference` work without them.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, cast

from pinniped_concierge.app import Services
from pinniped_concierge.audit import AuditLog
from pinniped_concierge.authenticator_set import Authenticator, AuthenticatorSet
from pinniped_concierge.cluster_authenticators import (
    Built,
    ClusterAuthenticators,
    ObjectSettings,
    VerifierFactory,
    https_verifiers,
)
from pinniped_concierge.cluster_lists import ClusterLister, ConciergeKubeAPI
from pinniped_concierge.config import MAX_FILE_AUTHENTICATORS, Config
from pinniped_concierge.credential_issuer_publisher import CredentialIssuerPublisher
from pinniped_concierge.credential_review import CredentialReviewer
from pinniped_concierge.elevation_controller import ElevationController
from pinniped_concierge.elevation_service import ElevationService
from pinniped_concierge.elevation_store import ElevationStore
from pinniped_concierge.governed_sweep import GovernedGroupSweep
from pinniped_concierge.http_server import serve_metrics
from pinniped_concierge.identity import IdentityMapper
from pinniped_concierge.idle_users import IdleUsers, IdleUsersAPI, cleanup_interval
from pinniped_concierge.jwt_authenticator import HttpsFetcher, JWTAuthenticator
from pinniped_concierge.kubeapi import KubeAPI
from pinniped_concierge.lease import LeaseElector, process_identity
from pinniped_concierge.login import LoginService, per_user_login_rate
from pinniped_concierge.metrics import ConciergeMetrics
from pinniped_concierge.object_watch import ListWatch, ObjectVersions, ObjectWatcher, WatchSource
from pinniped_concierge.periodic import run_every
from pinniped_concierge.revocations import RevocationCheck, RevocationMirror, sweep_expired
from pinniped_concierge.sessions import Sessions
from pinniped_concierge.userobjects import UserObjects

#: The least number of one user's requests let in at once, however few slots there are.
MIN_REQUESTS_PER_USER = 8


def build_services(config: Config, kube: KubeAPI | None = None,
                   versions: ObjectVersions | None = None) -> Services:
    """Wire the concierge together from its config; `kube` and `versions` may be swapped by tests.

    With the real Kubernetes client, `versions` is fed by an `ObjectWatcher`
    and the JWTAuthenticator objects by their own watch, both started with
    the server; with a swapped `kube` neither watch runs (a test feeds the
    `ClusterAuthenticators` mirror itself) and, without `versions`, the
    per-user cache is off (every login reconciles).

    Session sweeps, JWTAuthenticator status writes, the CredentialIssuer,
    the idle-user clean-up, the expiry of revocation markers and the
    elevation controller (expiry, and access removal when an elevation ends)
    run only while this replica holds the Lease (`lease`); logins, the
    watches (revocation markers and elevation objects included) and
    admitting JWTAuthenticators run on every replica. With a swapped
    `kube`, the idle-user clean-up runs only if it can list cluster-scoped
    objects (`cluster_lists.ClusterLister`), and logins list each user's
    revocation markers and the elevation objects (there is no watch).
    """
    closers: list[Callable[[], Awaitable[None]]] = []
    background: list[Callable[[], Coroutine[Any, Any, None]]] = []
    metrics = ConciergeMetrics(
        max_authenticators=MAX_FILE_AUTHENTICATORS + config.jwt_authenticators.max_objects)
    if config.metrics.port is not None:
        background.append(functools.partial(serve_metrics, config, metrics))
    timeout = float(config.kubernetes.request_timeout_seconds)
    watches: list[WatchSource] = []
    real: ConciergeKubeAPI | None = None
    revoked: RevocationMirror | None = None
    if kube is None:
        real = ConciergeKubeAPI.from_kubeconfig(config.kubernetes.kubeconfig, timeout)
        kube = real
        closers.append(_async(real.close))
        if versions is None:
            versions = ObjectVersions()
            watches += ObjectWatcher(real.new_api_client(), config.namespace, versions).sources
        revoked = RevocationMirror(config.namespace)
        watches.append(revoked.watch_source(real.new_api_client()))
    elevations = ElevationStore(kube, config.namespace, config.elevation)
    if real is not None:
        watches += elevations.watch_sources(real.new_api_client())

    elector = LeaseElector(kube, config.namespace, config.lease.name,
                           identity=process_identity(),
                           duration_seconds=config.lease.duration_seconds,
                           renew_seconds=config.lease.renew_interval_seconds)
    background.append(elector.run)
    metrics.watch_lease(lambda: elector.leading)
    if versions is not None:
        metrics.watch_objects(versions)
    authenticators = AuthenticatorSet(_file_authenticators(config, closers, background, metrics))
    readiness: list[Callable[[], Awaitable[str | None]]] = [elevations.readiness_problem]
    if config.jwt_authenticators.watch:
        cluster = ClusterAuthenticators(
            kube, authenticators, {a.name: a for a in config.authenticators},
            _counted(https_verifiers(
                clock_skew_seconds=config.clock_skew_seconds,
                min_refresh_interval_seconds=config.key_refresh_min_interval_seconds,
                max_key_age_seconds=config.max_key_age_seconds), metrics),
            max_objects=config.jwt_authenticators.max_objects,
            refresh_interval_seconds=config.key_refresh_interval_seconds,
            may_write_status=lambda: elector.leading)
        elector.on_change(lambda _leading: cluster.wake())
        background.append(cluster.run)
        readiness.append(cluster.readiness_problem)
        if real is not None:
            watches.append(cluster.watch_source(real.new_api_client(),
                                                config.jwt_authenticators.label_selector))
    if watches:
        background.append(ListWatch(watches, connect_timeout_seconds=min(5.0, timeout)).run)
    publisher = CredentialIssuerPublisher(
        kube, authenticators, name=config.credential_issuer(), endpoint=config.public_endpoint(),
        ca_bundle=config.tls.client_ca_file().read_bytes(), namespace=config.namespace)
    elector.while_leading(publisher.run)

    user_objects = UserObjects(
        kube, config.namespace, config.user_cache_ttl_seconds, versions,
        # One identity may hold at most a quarter of the request slots (see `user_locks`).
        max_requests_per_user=max(MIN_REQUESTS_PER_USER, config.max_concurrent_requests // 4),
        max_users=config.max_users)
    sessions = Sessions(kube, config.namespace, config.credential_ttl_seconds,
                        config.clock_skew_seconds, max_per_user=config.max_sessions_per_user,
                        versions=versions)
    elector.while_leading(functools.partial(sessions.run_sweeper,
                                            config.session_sweep_interval_seconds))
    _clean_up_on_the_leader(config, kube, versions, elector)
    audit = AuditLog.open(config.audit_log)
    closers.append(_async(audit.close))
    elevation = ElevationService(kube, config.namespace, elevations, user_objects,
                                 config.elevation, sessions=sessions)
    elector.while_leading(ElevationController(elevation, elevations, audit,
                                              config.elevation).run)
    if isinstance(kube, ClusterLister):  # a new policy's group leaves roles granted before it
        elector.while_leading(GovernedGroupSweep(
            kube, config.namespace, elevations, user_objects,
            config.elevation.sync_interval_seconds, versions=versions).run)

    return Services(
        login=LoginService(authenticators, user_objects, sessions,
                           revocations=RevocationCheck(kube, config.namespace, revoked,
                                                       config.clock_skew_seconds),
                           max_token_age_seconds=config.identity_idle_timeout_seconds,
                           user_rate=per_user_login_rate(config.max_sessions_per_user),
                           elevations=elevations),
        reviewer=CredentialReviewer(kube, config.namespace, user_objects),
        sessions=sessions, kube=kube, namespace=config.namespace, audit=audit,
        body_timeout_seconds=float(config.request_body_timeout_seconds),
        background=background, on_shutdown=closers, readiness_checks=readiness,
        metrics=metrics, serve_metrics=config.metrics.port is None, elevation=elevation,
    )


def _clean_up_on_the_leader(config: Config, kube: KubeAPI, versions: ObjectVersions | None,
                            elector: LeaseElector) -> None:
    """Idle users and expired revocation markers, removed by the Lease holder only."""
    interval = cleanup_interval(config.identity_idle_timeout_seconds)
    elector.while_leading(functools.partial(
        run_every, interval, "revocation marker expiry", functools.partial(
            sweep_expired, kube, config.namespace, config.revocation_retention_seconds)))
    if isinstance(kube, ClusterLister):
        idle = IdleUsers(cast(IdleUsersAPI, kube), config.namespace,
                         config.identity_idle_timeout_seconds, versions=versions)
        what = (f"idle-user clean-up (users without a live session for "
                f"{config.identity_idle_timeout_seconds} s)")
        elector.while_leading(functools.partial(run_every, interval, what, idle.sweep))


def _file_authenticators(config: Config, closers: list[Callable[[], Awaitable[None]]],
                         background: list[Callable[[], Coroutine[Any, Any, None]]],
                         metrics: ConciergeMetrics) -> dict[str, Authenticator]:
    """The config file's authenticators, each with its key refresh loop."""
    authenticators: dict[str, Authenticator] = {}
    for auth_config in config.authenticators:
        fetcher = HttpsFetcher(auth_config.ca_file)
        closers.append(fetcher.aclose)
        verifier = JWTAuthenticator(
            auth_config, fetcher, clock_skew_seconds=config.clock_skew_seconds,
            min_refresh_interval_seconds=config.key_refresh_min_interval_seconds,
            max_key_age_seconds=config.max_key_age_seconds)
        verifier.on_refresh = metrics.jwks_refreshed
        ca_data = (base64.b64encode(auth_config.ca_file.read_bytes()).decode("ascii")
                   if auth_config.ca_file is not None else None)
        authenticators[auth_config.name] = Authenticator(
            verifier, IdentityMapper.from_config(auth_config), issuer=auth_config.issuer,
            audience=auth_config.audience, source="config", issuer_ca_data=ca_data)
        background.append(functools.partial(verifier.run_refresh_loop,
                                            config.key_refresh_interval_seconds))
    return authenticators


def _counted(build: VerifierFactory, metrics: ConciergeMetrics) -> VerifierFactory:
    """`build`, with each JWTAuthenticator object's key refreshes counted in `metrics`."""
    def counted(settings: ObjectSettings) -> Built:
        built = build(settings)
        if isinstance(built.verifier, JWTAuthenticator):
            built.verifier.on_refresh = metrics.jwks_refreshed
        return built
    return counted


def _async(close: Callable[[], None]) -> Callable[[], Awaitable[None]]:
    async def closer() -> None:
        close()
    return closer
