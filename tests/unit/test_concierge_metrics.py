"""/metrics: what a login, a failure and a key refresh add, and what the output never holds."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from localenv import pki
from localenv.app_env import ALICE_TOKEN, AppEnv
from localenv.fixtures_concierge import FakeKube
from pinniped_concierge import config, server
from pinniped_concierge.app import create_app
from pinniped_concierge.audit import AuditEvent
from pinniped_concierge.jwt_authenticator import FetchError, JWTAuthenticator
from pinniped_concierge.metrics import OTHER, BoundedNames, ConciergeMetrics


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition, by name and sorted labels."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def scrape(env: AppEnv) -> str:
    response = env.request("GET", "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return response.text


def test_metrics_count_logins_by_outcome_reason_latency_and_api_calls() -> None:
    env = AppEnv()
    assert env.login().json()["status"]["credential"]  # alice, cold: reconciles
    assert env.login().json()["status"]["credential"]  # warm: two API calls
    failed = env.login("eyJhbGciOiJSUzI1NiJ9.nobody.sig")
    assert failed.json()["status"]["message"] == "authentication failed"
    text = scrape(env)
    got = samples(text)

    assert got[("pinniped_concierge_logins_total", (("outcome", "success"), ("reason", "ok")))] \
        == 2
    assert got[("pinniped_concierge_logins_total",
                (("outcome", "failure"), ("reason", "expired")))] == 1
    assert got[("pinniped_concierge_login_duration_seconds_count",
                (("outcome", "success"),))] == 2
    assert got[("pinniped_concierge_login_duration_seconds_count",
                (("outcome", "failure"),))] == 1
    calls = [e["kubeApiCalls"] for e in env.audit()]
    assert calls[0] > 2  # cold
    assert calls[1] == 2  # warm
    assert calls[2] == 0  # rejected before any call
    assert got[("pinniped_concierge_login_kube_api_calls_count", ())] == 3
    assert got[("pinniped_concierge_login_kube_api_calls_sum", ())] == sum(calls)
    assert got[("pinniped_concierge_login_kube_api_calls_bucket", (("le", "2.0"),))] == 2
    # the watches' mirror: alice's two sessions and her ServiceAccount
    assert got[("pinniped_concierge_sessions", ())] == 2
    assert got[("pinniped_concierge_managed_users", ())] == 1

    for secret in (ALICE_TOKEN, "nobody", "alice", "example.com", "corp:", "devs",
                   "192.0.2.7", env.audit()[0]["tokenHash"]):
        assert secret not in text


def test_metrics_are_not_in_the_openapi_document() -> None:
    env = AppEnv()
    assert "/metrics" not in env.request("GET", "/openapi.json").json()["paths"]


def test_a_separate_metrics_port_takes_metrics_off_the_serving_port() -> None:
    env = AppEnv(serve_metrics=False)
    assert env.request("GET", "/metrics").status_code == 404


def test_whoami_and_logout_are_not_counted_as_logins() -> None:
    env = AppEnv()
    env.request("POST", "/apis/login.concierge.pinniped.dev/v1alpha1/whoamirequests")
    assert not any(name == "pinniped_concierge_logins_total"
                   for name, _ in samples(scrape(env)))


def test_labels_from_outside_the_enums_become_other() -> None:
    metrics = ConciergeMetrics()
    event = AuditEvent(request="login", client="", outcome="alice@example.com",
                       reason="token eyJ...")
    metrics.observe_request(event, 0.01)
    text = metrics.render().decode()
    assert 'pinniped_concierge_logins_total{outcome="other",reason="other"} 1.0' in text
    assert "alice" not in text
    assert "eyJ" not in text


def test_authenticator_names_are_bounded() -> None:
    names = BoundedNames(2)
    assert [names.label(n) for n in ("a", "b", "c", "a")] == ["a", "b", OTHER, "a"]


class _Settings:
    name, issuer, audience = "corp", "https://idp.example.com", "aud"
    algorithms, max_token_bytes = ("RS256",), 16384


def test_jwks_refreshes_and_failures_are_counted_by_authenticator() -> None:
    async def unreachable(url: str) -> object:
        raise FetchError(f"{url}: connection refused")

    metrics = ConciergeMetrics()
    verifier = JWTAuthenticator(_Settings(), unreachable, clock_skew_seconds=0,
                                min_refresh_interval_seconds=0)
    verifier.on_refresh = metrics.jwks_refreshed
    for _ in range(2):
        with pytest.raises(FetchError):
            asyncio.run(verifier.refresh_keys())
    got = samples(metrics.render().decode())
    assert got[("pinniped_concierge_jwks_refreshes_total", (("authenticator", "corp"),))] == 2
    assert got[("pinniped_concierge_jwks_refresh_failures_total",
                (("authenticator", "corp"),))] == 2


def _config(tmp_path: Path, **extra: Any) -> config.Config:
    ca = pki.CA.create(tmp_path / "ca", "serving-ca")
    tls = ca.issue(tmp_path, "concierge")
    return config.parse(yaml.safe_dump({
        "tls": {"certFile": str(tls.cert_path), "keyFile": str(tls.key_path),
                "caFile": str(ca.cert_path)},
        "namespace": "ns", "auditLog": str(tmp_path / "audit.log")} | extra), tmp_path)


def test_the_lease_gauge_follows_the_election(tmp_path: Path) -> None:
    services = server.build_services(_config(tmp_path), kube=FakeKube())
    app = create_app(services)

    def held() -> float:
        return samples(services.metrics.render().decode())[
            ("pinniped_concierge_lease_held", ())]

    async def go() -> None:
        assert held() == 0
        async with app.router.lifespan_context(app):
            async with asyncio.timeout(10):
                while held() != 1:
                    await asyncio.sleep(0.01)
        assert held() == 0  # released on shutdown

    asyncio.run(go())


def test_the_metrics_port_may_not_be_the_serving_port(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match=r"metrics\.port"):
        _config(tmp_path, listen={"port": 9443}, metrics={"port": 9443})
    assert _config(tmp_path, metrics={"port": 9090}).metrics.port == 9090


def test_refusals_and_closed_connections_are_counted_with_bounded_labels() -> None:
    metrics = ConciergeMetrics()
    metrics.rate_limited("login")
    metrics.rate_limited("/apis/anything-a-client-chose")
    metrics.over_capacity()
    metrics.connection_closed("header_timeout")
    metrics.connection_closed("made-up")
    got = samples(metrics.render().decode())
    assert got[("pinniped_concierge_requests_rate_limited_total", (("request", "login"),))] == 1
    assert got[("pinniped_concierge_requests_rate_limited_total", (("request", OTHER),))] == 1
    assert got[("pinniped_concierge_requests_over_capacity_total", ())] == 1
    assert got[("pinniped_concierge_connections_closed_total",
                (("reason", "header_timeout"),))] == 1
    assert got[("pinniped_concierge_connections_closed_total", (("reason", OTHER),))] == 1
