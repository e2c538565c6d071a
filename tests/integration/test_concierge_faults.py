"""Faults against the real pieces: the apiserver crashes under load, the IdP goes down, the IdP
rotates its keys.

The apiserver outage uses a private `LocalCluster`, and really kills its
kube-apiserver process (SIGKILL) in the middle of the load, then starts it
again on the same etcd, port and keys: a `TcpProxy` cut would only show
refused connections, while a crash also loses requests mid-flight and
objects half-made (a ServiceAccount created, its ClusterRole not yet), which
is what a later login must cope with. New users keep arriving during the
load, so the crash hits first logins as well as returning ones.

The IdP faults use a `MintingIssuer`, which can answer 500 or close its port,
and publish a new key.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from joserfc.jwk import RSAKey

from localenv import pki
from localenv.cluster import LocalCluster
from localenv.concierge import MINTED_PREFIX, LocalConcierge, MintingIssuer
from localenv.idp import LocalIdP
from localenv.load import (
    OK,
    LoadResult,
    Login,
    audit_figures,
    login_once_each,
    minted_logins,
    run_logins,
    spread,
)
from localenv.logins import Kubectl, login, post, tls
from localenv.user_census import Census
from pinniped_apis import wire

pytestmark = pytest.mark.integration

# The outage: load for LOAD_SECONDS, the apiserver killed DOWN_AT seconds in, for DOWN_FOR.
LOAD_SECONDS = 45
DOWN_AT = 10
DOWN_FOR = 8
#: After the apiserver is ready again, every login must succeed within this many seconds.
RECOVERY_SECONDS = 10
#: 100 tasks repeat the steady users' logins; 100 walk through the newcomers, NEWCOMER_TURNS
#: each, so that about half the logins in flight at the crash are first logins (5 API calls:
#: ServiceAccount, ClusterRole, binding, Secret, TokenRequest) that it cuts halfway.
STEADY_USERS = 50
NEWCOMER_TASKS = 100
NEWCOMER_TURNS = 5
NEWCOMERS = NEWCOMER_TASKS * NEWCOMER_TURNS
MAX_SESSIONS_PER_USER = 50


@pytest.fixture
def private_cluster(tmp_path: Path, local_ca: pki.CA) -> Iterator[LocalCluster]:
    running = LocalCluster.start(tmp_path / "cluster", local_ca)
    try:
        running.install_crds()
        yield running
    finally:
        running.stop()


def _load_in_background(concierge: LocalConcierge,
                        tasks: list[list[Login]]) -> tuple[threading.Thread, list[LoadResult]]:
    results: list[LoadResult] = []
    thread = threading.Thread(target=lambda: results.append(run_logins(
        concierge.url, concierge.ca_file, tasks, seconds=LOAD_SECONDS)), daemon=True)
    thread.start()
    return thread, results


@pytest.mark.load
def test_apiserver_crash_mid_load_gives_503_with_retry_after_then_everyone_logs_in(
        tmp_path: Path, local_ca: pki.CA, idp: LocalIdP,
        private_cluster: LocalCluster) -> None:
    cluster = private_cluster
    with MintingIssuer.start(tmp_path / "issuer", local_ca) as issuer:
        steady = minted_logins(issuer, STEADY_USERS)
        newcomers = minted_logins(issuer, NEWCOMERS, first=1000)
        concierge = LocalConcierge.start(
            tmp_path / "concierge", local_ca, cluster, idp, extra_issuers=[issuer],
            maxConcurrentRequests=400, maxSessionsPerUser=MAX_SESSIONS_PER_USER)
        try:
            pid = concierge.pid
            tasks = spread(steady, 200 - NEWCOMER_TASKS) + [
                newcomers[j::NEWCOMER_TASKS] for j in range(NEWCOMER_TASKS)]
            started = time.time()
            thread, results = _load_in_background(concierge, tasks)
            time.sleep(max(0.0, started + 3 + DOWN_AT - time.time()))  # 3 s: workers start
            down_at = time.time()
            cluster.stop_apiserver()
            time.sleep(DOWN_FOR)
            restart_at = time.time()
            restart_seconds = cluster.start_apiserver()
            up_at = time.time()
            thread.join(timeout=LOAD_SECONDS + 120)
            assert results, "the load did not finish"
            result = results[0]
            after = login_once_each(concierge.url, concierge.ca_file, steady + newcomers)
            audit = concierge.audit_lines()
            census = Census.take(cluster, concierge.namespace)
            assert concierge.pid == pid  # it never crashed or restarted
            assert concierge.is_ready()
            credential = login(concierge, json.loads(steady[0].body)["spec"]["token"],
                               authenticator="minted")
        finally:
            concierge.stop()

    # Requests that began and ended while it was down (a request that began then may still
    # succeed: it can wait in the concierge until the apiserver is back).
    during = [s for s in result.between(down_at + 1, restart_at) if s.ended < restart_at]
    since_up = [s for s in result.samples if s.started >= up_at]
    last_failure = max((s.started for s in since_up if s.outcome != OK), default=up_at)
    # A failed login that had already made one or two calls was cut mid-way: its user may
    # have a ServiceAccount without a ClusterRole, or a role without its binding.
    cut = [line for line in audit if line["httpStatus"] != 200 and line["kubeApiCalls"] in (2, 3)]
    print(f"\noutage: apiserver down {restart_at - down_at:.1f} s, ready "
          f"{restart_seconds:.1f} s after its restart; {result.summary()}\n"
          f"outage: while down {dict(Counter(s.outcome for s in during))}; since it was up "
          f"{dict(Counter(s.outcome for s in since_up))}, last failure "
          f"{last_failure - up_at:.1f} s after; 503s answered in p50 "
          f"{result.percentile(50, 'http_503') * 1000:.0f} ms; {audit_figures(audit)}\n"
          f"outage: failures by detail {result.details().most_common(8)}; {len(cut)} logins "
          f"cut after their first or second API call")

    statuses = result.statuses()
    for sample in result.samples:
        if sample.status == 503:
            assert sample.retry_after is not None, sample
            assert int(sample.retry_after) >= 1, sample
    # Before the crash, the load alone failed nobody.
    before = [s for s in result.samples if s.ended < down_at]
    assert [s for s in before if s.outcome != OK] == [], result.failures()
    # While it was down nobody got in, and every answer told them to come back later.
    assert len(during) >= 50
    assert {s.status for s in during} - {0} == {503}, Counter(s.outcome for s in during)
    assert Counter(line["reason"] for line in audit
                   if line["httpStatus"] == 503) == {"kubernetes_unavailable": statuses[503]}
    # Soon after it was back, everyone got in again.
    assert last_failure - up_at < RECOVERY_SECONDS, result.failures()
    assert len([s for s in since_up if s.outcome == OK]) >= 100
    # The crash did cut first logins halfway (it is what the next assertions are about)...
    assert cut, "no login was cut between its API calls: no half-made identity was tested"
    # ...and no half-made identity breaks a later login: every user logs in now, and the
    # cluster holds exactly their objects.
    assert Counter(s.outcome for s in after) == {OK: STEADY_USERS + NEWCOMERS}
    usernames = [login.username for login in steady + newcomers]
    assert census.problems(usernames, MAX_SESSIONS_PER_USER) == []
    code, output = Kubectl(cluster, tmp_path).run(credential, "auth", "can-i", "--list")
    assert code == 0, output  # the apiserver takes the credential minted after the outage
    # Never a 500 (nor a 409), and every request got an HTTP answer.
    assert {s for s in statuses if s >= 500} <= {503}, result.failures()
    assert 409 not in statuses, result.failures()
    assert set(result.outcomes()) <= {OK, "http_503"}, result.failures()


def _wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not after {timeout} s: {what}"
        time.sleep(0.2)


def _login_request(token: str) -> dict[str, object]:
    return wire.TokenCredentialRequest.create(token=token, authenticator_name="minted").to_wire()


def _kid(token: str) -> str:
    header = json.loads(base64.urlsafe_b64decode(token.split(".", maxsplit=1)[0] + "=="))
    return str(header["kid"])


def test_with_the_idp_down_tokens_signed_by_cached_keys_keep_validating(
        tmp_path: Path, local_ca: pki.CA, idp: LocalIdP,
        concierge_factory: Callable[..., LocalConcierge]) -> None:
    with MintingIssuer.start(tmp_path / "issuer", local_ca) as issuer:
        # The shortest periodic refresh, so that refreshes really fail during the outage.
        concierge = concierge_factory(idp, extra_issuers=[issuer], keyRefreshIntervalSeconds=10)
        email = "idp-down@example.com"
        assert login(concierge, issuer.mint(email=email),
                     authenticator="minted").identity.username == MINTED_PREFIX + email
        refresh_failed = re.compile(r"authenticator minted: key refresh failed")

        def failed_refreshes() -> int:
            return len(refresh_failed.findall(concierge.all_logs()))

        for outage in ("answers 500", "refuses connections"):
            before = failed_refreshes()
            if outage == "answers 500":
                issuer.fail_with(500)
            else:
                issuer.stop_serving()
            _wait_until(lambda: failed_refreshes() > before,  # noqa: B023 - called at once
                        15, f"a periodic key refresh failing while the IdP {outage}")
            # A fresh token, signed by a key the concierge has cached: accepted.
            credential = login(concierge, issuer.mint(email=email), authenticator="minted")
            assert credential.identity.username == MINTED_PREFIX + email, outage
            assert concierge.audit_lines()[-1]["reason"] == "ok"
            # A kid nobody has seen makes the concierge try the IdP once more, which fails:
            # the token is refused as unknown (a 200 saying so), never a 5xx.
            stranger = RSAKey.generate_key(2048, parameters={
                "alg": "RS256", "use": "sig", "kid": "never-published"})
            unknown = post(concierge, wire.TOKEN_CREDENTIAL_REQUEST_PATH,
                           _login_request(issuer.mint(email=email, key=stranger)))
            assert unknown.status_code == 200, (outage, unknown.text)
            assert concierge.audit_lines()[-1]["reason"] == "unknown_key"
            with httpx.Client(verify=tls(concierge), timeout=10) as http:
                ready = http.get(f"{concierge.url}/readyz").status_code
            assert ready == 200, f"not ready while the IdP {outage}, with usable cached keys"
            if outage == "answers 500":
                issuer.fail_with(None)
            else:
                issuer.resume_serving()
        assert issuer.failed_requests >= 1  # the concierge really met the 500s


def test_a_new_kid_at_the_issuer_is_picked_up_at_first_use(
        tmp_path: Path, local_ca: pki.CA, idp: LocalIdP,
        concierge_factory: Callable[..., LocalConcierge]) -> None:
    with MintingIssuer.start(tmp_path / "issuer", local_ca) as issuer:
        # No periodic refresh during the test: only a login can make the concierge look.
        concierge = concierge_factory(idp, extra_issuers=[issuer],
                                      keyRefreshIntervalSeconds=3600)
        email = "rotation@example.com"
        old_key = issuer.rsa_key
        old_token = issuer.mint(email=email)
        login(concierge, old_token, authenticator="minted")
        fetched = issuer.jwks_fetches

        for keep_old in (True, False):
            new_kid = issuer.rotate(keep_old=keep_old)
            # Unknown-kid refreshes are rate-limited (keyRefreshMinIntervalSeconds: 1 here).
            last = issuer.last_jwks_fetch or 0.0
            time.sleep(max(0.0, last + 1.5 - time.monotonic()))
            token = issuer.mint(email=email)
            assert _kid(token) == new_kid
            credential = login(concierge, token, authenticator="minted")  # the first try
            assert credential.identity.username == MINTED_PREFIX + email
            assert issuer.jwks_fetches == fetched + 1  # fetched for this login, and once
            fetched = issuer.jwks_fetches
            # The old key's tokens: still good while it is published, refused once it is not.
            answer = post(concierge, wire.TOKEN_CREDENTIAL_REQUEST_PATH, _login_request(
                issuer.mint(email=email, key=old_key)))
            assert answer.status_code == 200
            accepted = wire.TokenCredentialRequestResponse.from_wire(
                answer.json()).status.credential is not None
            assert accepted == keep_old, answer.text
            assert concierge.audit_lines()[-1]["reason"] == ("ok" if keep_old else "unknown_key")
