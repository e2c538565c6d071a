"""The concierge's Prometheus metrics: what an operator can see without reading its logs.

Each `ConciergeMetrics` has its own registry (never prometheus_client's global
one), so several apps in one process, and tests, do not see each other's counts.

Every label value comes from a bounded set decided here, never from a client:
`outcome` and `reason` are the audit log's enums (anything else is "other"),
`request` names one of the three APIs, a closed connection's `reason` is one
of `CONNECTION_CLOSE_REASONS`, and `authenticator` is an admin-chosen name,
but only the first `max_authenticators` distinct names get their own value
(then "other"), so churning JWTAuthenticator objects cannot grow the series
without bound.
Usernames, tokens and groups never appear.

The gauges of sessions and users are read at scrape time from what the
concierge's watches already mirror (`object_watch.ObjectVersions`): a scrape
costs no Kubernetes API call. While a watch is down (or there is none) its
gauge is left out rather than guessed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pinniped_concierge.audit import AuditEvent
from pinniped_concierge.errors import Reason
from pinniped_concierge.kubeapi import Kind
from pinniped_concierge.object_watch import ObjectVersions

#: Prometheus' text format, version 0.0.4 (what every scraper reads).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "pinniped_concierge"
OUTCOMES = frozenset({"success", "failure", "error"})
REASONS = frozenset(str(reason) for reason in Reason)
OTHER = "other"
REQUESTS = frozenset({"login", "whoami", "logout"})
#: Why the server closed a connection (`connection_limits`).
CONNECTION_CLOSE_REASONS = frozenset({"header_timeout", "evicted", "refused"})
#: Logins take milliseconds warm and a few hundred cold (six API writes); 503s wait on an IdP.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: A warm login costs 2 calls (session Secret, TokenRequest); a new user about 5.
CALL_BUCKETS = (0, 1, 2, 3, 4, 6, 8, 10, 15, 20, 30)

Count = Callable[[], int | None]


class BoundedNames:
    """Label values for admin-chosen names: the first `limit` distinct names, then "other"."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._names: set[str] = set()
        self._lock = threading.Lock()

    def label(self, name: str) -> str:
        with self._lock:
            if name in self._names:
                return name
            if len(self._names) < self._limit:
                self._names.add(name)
                return name
            return OTHER


class ConciergeMetrics:
    def __init__(self, *, max_authenticators: int = 128) -> None:
        self.registry = CollectorRegistry()
        self._logins = Counter(
            "logins", "Login requests (TokenCredentialRequests) by outcome and audit reason.",
            ["outcome", "reason"], namespace=PREFIX, registry=self.registry)
        self._latency = Histogram(
            "login_duration_seconds", "Time to answer a login request, by outcome.",
            ["outcome"], namespace=PREFIX, buckets=LATENCY_BUCKETS, registry=self.registry)
        self._calls = Histogram(
            "login_kube_api_calls", "Kubernetes API calls one login request cost.",
            namespace=PREFIX, buckets=CALL_BUCKETS, registry=self.registry)
        self._refreshes = Counter(
            "jwks_refreshes", "Attempts to fetch an issuer's discovery document and JWKS.",
            ["authenticator"], namespace=PREFIX, registry=self.registry)
        self._refresh_failures = Counter(
            "jwks_refresh_failures", "JWKS refreshes that failed (cached keys stay in use).",
            ["authenticator"], namespace=PREFIX, registry=self.registry)
        self._rate_limited = Counter(
            "requests_rate_limited", "API requests refused with 429: their client address was "
            "over its rateLimit.", ["request"], namespace=PREFIX, registry=self.registry)
        self._over_capacity = Counter(
            "requests_over_capacity", "Requests refused with 503: maxConcurrentRequests were "
            "already in flight.", namespace=PREFIX, registry=self.registry)
        self._connections_closed = Counter(
            "connections_closed", "Connections the server closed: no request line and headers "
            "within requestHeaderTimeoutSeconds (header_timeout), to make room for a new one "
            "(evicted), or refused because every open one had a request in flight (refused).",
            ["reason"], namespace=PREFIX, registry=self.registry)
        self._authenticators = BoundedNames(max_authenticators)
        self._state = _StateCollector()
        self.registry.register(self._state)

    def observe_request(self, event: AuditEvent, seconds: float) -> None:
        """Count one finished API request from its audit event (only logins, for now)."""
        if event.request != "login":
            return
        outcome = event.outcome if event.outcome in OUTCOMES else OTHER
        reason = event.reason if event.reason in REASONS else OTHER
        self._logins.labels(outcome, reason).inc()
        self._latency.labels(outcome).observe(seconds)
        self._calls.observe(event.kube_api_calls)

    def rate_limited(self, request: str) -> None:
        self._rate_limited.labels(request if request in REQUESTS else OTHER).inc()

    def over_capacity(self) -> None:
        self._over_capacity.inc()

    def connection_closed(self, reason: str) -> None:
        self._connections_closed.labels(
            reason if reason in CONNECTION_CLOSE_REASONS else OTHER).inc()

    def jwks_refreshed(self, authenticator: str, ok: bool) -> None:
        label = self._authenticators.label(authenticator)
        self._refreshes.labels(label).inc()
        if not ok:
            self._refresh_failures.labels(label).inc()

    def watch_objects(self, versions: ObjectVersions) -> None:
        """Report the sessions and users the watches mirror in `versions`."""
        self._state.gauges["sessions"] = (
            "Session Secrets in the namespace, as the watch sees them (one per login not yet "
            "logged out or swept).", lambda: versions.count(Kind.SECRET))
        self._state.gauges["managed_users"] = (
            "Users with a ServiceAccount managed by this concierge, as the watch sees them.",
            lambda: versions.count(Kind.SERVICE_ACCOUNT))

    def watch_lease(self, leading: Callable[[], bool]) -> None:
        self._state.gauges["lease_held"] = (
            "1 while this replica holds the Lease and does the background work, else 0.",
            lambda: int(leading()))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector(Collector):
    """Gauges computed at scrape time from state the concierge already keeps."""

    def __init__(self) -> None:
        self.gauges: dict[str, tuple[str, Count]] = {}

    def collect(self) -> Iterator[Metric]:
        for name, (documentation, count) in list(self.gauges.items()):
            value = count()
            if value is not None:
                yield GaugeMetricFamily(f"{PREFIX}_{name}", documentation, value=value)
