"""The per-address token bucket, alone and in the app: 429 with Retry-After, audited, bounded."""

from __future__ import annotations

import pytest

from localenv.app_env import AppEnv
from localenv.fixtures_concierge import ManualClock
from pinniped_apis import wire
from pinniped_concierge.config import RateLimitConfig
from pinniped_concierge.ratelimit import RateLimiter, client_key


def test_a_burst_then_the_sustained_rate(clock: ManualClock) -> None:
    limiter = RateLimiter(2, burst=3, max_tracked=10, clock=clock)
    assert [limiter.check("192.0.2.1") for _ in range(3)] == [None, None, None]
    assert limiter.check("192.0.2.1") == 1  # half a second to the next token: rounded up
    clock.now += 0.5
    assert limiter.check("192.0.2.1") is None
    assert limiter.check("192.0.2.1") == 1
    clock.now += 10  # refills to the burst, not beyond
    assert [limiter.check("192.0.2.1") for _ in range(4)] == [None, None, None, 1]


def test_retry_after_is_whole_seconds_and_refusals_take_no_token(clock: ManualClock) -> None:
    limiter = RateLimiter(0.25, burst=1, max_tracked=10, clock=clock)
    assert limiter.check("192.0.2.1") is None
    assert limiter.check("192.0.2.1") == 4
    clock.now += 1.5
    assert limiter.check("192.0.2.1") == 3  # 2.5 s left, rounded up; the refusal cost nothing
    clock.now += 2.5
    assert limiter.check("192.0.2.1") is None


def test_addresses_have_buckets_of_their_own(clock: ManualClock) -> None:
    limiter = RateLimiter(1, burst=1, max_tracked=10, clock=clock)
    assert limiter.check("192.0.2.1") is None
    assert limiter.check("192.0.2.1") == 1
    assert limiter.check("192.0.2.2") is None
    assert limiter.check("2001:db8::1") is None
    assert limiter.check("2001:db8::2") == 1  # same /64


def test_the_table_is_bounded_least_recently_seen_first(clock: ManualClock) -> None:
    limiter = RateLimiter(1, burst=1, max_tracked=2, clock=clock)
    for address in ("192.0.2.1", "192.0.2.2", "192.0.2.1", "192.0.2.3"):
        limiter.check(address)
    assert len(limiter) == 2
    assert limiter.check("192.0.2.1") == 1  # seen recently: still remembered, still empty
    assert limiter.check("192.0.2.2") is None  # forgotten: a full bucket, like a new address
    for i in range(1000):
        limiter.check(f"198.51.100.{i % 250}")
    assert len(limiter) == 2


@pytest.mark.parametrize(("address", "key"), [
    ("192.0.2.7", "192.0.2.7"),
    ("::ffff:192.0.2.7", "192.0.2.7"),
    ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
    ("fe80::1%eth0", "fe80::/64"),
    ("not-an-ip", "not-an-ip"),
    ("", ""),
])
def test_client_keys(address: str, key: str) -> None:
    assert client_key(address) == key


def test_zero_turns_the_limit_off() -> None:
    assert RateLimiter.from_config(RateLimitConfig.model_validate(
        {"requestsPerSecond": 0})) is None
    limiter = RateLimiter.from_config(RateLimitConfig.model_validate(
        {"requestsPerSecond": 5, "burst": 7, "maxTrackedAddresses": 3}))
    assert limiter is not None
    assert [limiter.check("192.0.2.1") for _ in range(8)][-2:] == [None, 1]
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(0, burst=1, max_tracked=1)


# --- in the app ----------------------------------------------------------------------------


def limited_env(clock: ManualClock, burst: int = 2) -> AppEnv:
    return AppEnv(rate_limiter=RateLimiter(1, burst=burst, max_tracked=100, clock=clock))


def test_over_the_limit_is_429_with_retry_after_and_a_status(clock: ManualClock) -> None:
    env = limited_env(clock)
    assert env.login().status_code == 200
    assert env.request("POST", wire.WHOAMI_REQUEST_PATH, json=wire.whoami_request()) \
        .status_code == 401
    refused = env.login()
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["cache-control"] == "no-store"
    status = refused.json()
    assert wire.is_status_error(status)
    assert (status["code"], status["reason"]) == (429, "TooManyRequests")
    assert "retry after 1 s" in status["message"]
    line = env.audit()[-1]
    assert (line["request"], line["outcome"], line["reason"], line["httpStatus"]) == \
        ("login", "error", "rate_limited", 429)
    assert line["client"] == "192.0.2.7:50123"
    assert env.kube.calls.count("create TokenRequest") == 1  # the refused login cost nothing
    clock.now += 1
    assert env.login().status_code == 200


def test_every_refusal_has_its_audit_line_and_is_counted(clock: ManualClock) -> None:
    env = limited_env(clock, burst=1)
    statuses = [env.request("POST", path, json={}).status_code
                for path in (wire.LOGOUT_REQUEST_PATH, wire.LOGOUT_REQUEST_PATH,
                             wire.WHOAMI_REQUEST_PATH, wire.TOKEN_CREDENTIAL_REQUEST_PATH)]
    assert statuses == [400, 429, 429, 429]
    assert [(line["request"], line["reason"]) for line in env.audit()] == [
        ("logout", "malformed_request"), ("logout", "rate_limited"),
        ("whoami", "rate_limited"), ("login", "rate_limited")]
    metrics = env.request_from(("192.0.2.9", 4000), "GET", "/metrics").text
    for request in ("login", "whoami"):
        assert f'pinniped_concierge_requests_rate_limited_total{{request="{request}"}} 1.0' \
            in metrics
    assert 'pinniped_concierge_logins_total{outcome="error",reason="rate_limited"} 1.0' \
        in metrics


def test_the_address_is_the_peers_whatever_the_headers_say(clock: ManualClock) -> None:
    env = limited_env(clock, burst=1)
    assert env.login().status_code == 200
    for forwarded in ("198.51.100.1", "198.51.100.2, 192.0.2.7"):
        assert env.login(headers={"X-Forwarded-For": forwarded, "X-Real-IP": forwarded,
                                  "Forwarded": f"for={forwarded}"}).status_code == 429
    other = env.request_from(("192.0.2.8", 4000), "POST", wire.TOKEN_CREDENTIAL_REQUEST_PATH,
                             json=wire.TokenCredentialRequest.create("t", "corp").to_wire())
    assert other.status_code == 200


def test_probes_and_unknown_paths_are_not_limited(clock: ManualClock) -> None:
    env = limited_env(clock, burst=1)
    assert env.login().status_code == 200
    for _ in range(5):
        assert env.request("GET", "/healthz").status_code == 200
        assert env.request("GET", "/readyz").status_code == 200
    assert env.login().status_code == 429


def test_metrics_share_the_addresses_limit(clock: ManualClock) -> None:
    """Unlike the probes it costs a render: a flood of it slowed everyone's logins."""
    env = limited_env(clock, burst=2)
    assert env.request("GET", "/metrics").status_code == 200
    assert env.login().status_code == 200
    refused = env.request("GET", "/metrics")
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    elsewhere = env.request_from(("192.0.2.9", 4000), "GET", "/metrics")
    assert 'pinniped_concierge_requests_rate_limited_total{request="other"} 1.0' \
        in elsewhere.text


def test_429_is_in_the_openapi_document() -> None:
    document = AppEnv().request("GET", "/openapi.json").json()
    for path in (wire.TOKEN_CREDENTIAL_REQUEST_PATH, wire.WHOAMI_REQUEST_PATH,
                 wire.LOGOUT_REQUEST_PATH):
        assert "429" in document["paths"][path]["post"]["responses"]
