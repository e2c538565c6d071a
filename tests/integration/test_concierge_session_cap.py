"""The per-user session cap under a storm: one ID token replayed in 200 parallel logins.

The outside review found 158, then 249, live session Secrets against a cap of
50, logins that each deleted ~200 Secrets (208 API calls in one audit line),
and other users' logins getting 503 meanwhile. Here the storm runs against
the real concierge and apiserver, and the Secrets are counted with kubectl.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import secrets
import statistics
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from localenv.cluster import LocalCluster
from localenv.concierge import MINTED_PREFIX, LocalConcierge, MintingIssuer
from localenv.idp import LocalIdP
from localenv.logins import tls
from pinniped_apis import wire
from pinniped_concierge import naming

pytestmark = pytest.mark.integration

CAP = 50
STORM = 200
#: A storm login costs the Secret and the TokenRequest, at most one delete once at the cap,
#: and a full reconcile (3 creates answered 409, 3 reads) while the watch has not yet shown
#: the user's objects; more than this would mean deleting on behalf of other logins.
MAX_CALLS_PER_LOGIN = 9
STORM_SETTINGS = {"maxSessionsPerUser": CAP,
                  # the 200 storm connections plus the other user's must all be let in
                  "maxConcurrentRequests": 2 * STORM,
                  "sessionSweepIntervalSeconds": 5}


def live_sessions(cluster: LocalCluster, namespace: str, username: str) -> int:
    selector = (f"{naming.session_selector()},"
                f"{naming.USER_LABEL}={naming.user_key(username, namespace)}")
    result = cluster.kubectl("get", "secrets", "-n", namespace, "-l", selector, "-o", "json")
    return len(json.loads(result.stdout)["items"])


def body(token: str) -> dict[str, Any]:
    return wire.TokenCredentialRequest.create(token=token, authenticator_name="minted").to_wire()


async def storm(replicas: list[LocalConcierge], storm_token: str,
                other_token: str) -> tuple[list[int], list[int]]:
    """STORM parallel logins with one token (spread over `replicas`), and meanwhile the other
    user's logins one after another at the first replica; the status codes of each."""
    limits = httpx.Limits(max_connections=STORM + 10, max_keepalive_connections=STORM + 10)
    async with httpx.AsyncClient(verify=tls(replicas[0]), timeout=60, limits=limits) as http:
        async def one(i: int) -> int:
            url = replicas[i % len(replicas)].url + wire.TOKEN_CREDENTIAL_REQUEST_PATH
            response = await http.post(url, json=body(storm_token))
            return response.status_code

        tasks = [asyncio.create_task(one(i)) for i in range(STORM)]
        others: list[int] = []
        while not all(task.done() for task in tasks) or not others:
            url = replicas[0].url + wire.TOKEN_CREDENTIAL_REQUEST_PATH
            others.append((await http.post(url, json=body(other_token))).status_code)
        return list(await asyncio.gather(*tasks)), others


def storm_user(issuer: MintingIssuer) -> tuple[str, str]:
    """A user of its own (email, minted username) so no other test's sessions are counted."""
    email = f"storm-{secrets.token_hex(3)}@example.com"
    return email, MINTED_PREFIX + email


def summary(concierge: list[LocalConcierge], username: str, since: int = 0) -> dict[str, Any]:
    """The storm user's login audit lines (from line `since` on, with one replica)."""
    lines = [line for c in concierge for line in c.audit_lines()[since:]
             if line["request"] == "login" and line["username"] == username]
    calls = [line["kubeApiCalls"] for line in lines]
    served = [line["kubeApiCalls"] for line in lines if line["outcome"] == "success"]
    return {"logins": len(lines), "max_calls": max(calls), "p50_calls": statistics.median(served),
            "successes": len(served),
            "turned_away": sum(line["reason"] == "rate_limited" for line in lines)}


def storm_answered(codes: list[int], figures: dict[str, Any]) -> None:
    """Each login served, or turned away at once (429, audited): beyond the user's share of
    the request slots, or beyond their login rate (`maxSessionsPerUser` at once)."""
    assert set(codes) <= {200, 429}
    assert 200 in codes
    assert codes.count(429) == figures["turned_away"]


def test_one_token_in_200_parallel_logins_keeps_the_cap_and_others_get_in(
        idp: LocalIdP, cluster: LocalCluster, minting_issuer: MintingIssuer,
        concierge_factory: Callable[..., LocalConcierge]) -> None:
    """Twice: the first storm fills the cap, the second arrives with the user at it (where
    the review saw each login delete the same ~200 Secrets)."""
    concierge = concierge_factory(idp, extra_issuers=[minting_issuer], **STORM_SETTINGS)
    email, username = storm_user(minting_issuer)
    _, other = storm_user(minting_issuer)
    token = minting_issuer.mint(email=email)
    other_token = minting_issuer.mint(email=other.removeprefix(MINTED_PREFIX))
    for round_ in (1, 2):
        seen = len(concierge.audit_lines())
        started = time.monotonic()
        codes, others = asyncio.run(storm([concierge], token, other_token))
        elapsed = time.monotonic() - started
        live = live_sessions(cluster, concierge.namespace, username)
        figures = summary([concierge], username, since=seen)
        print(f"\nstorm {round_}: {elapsed:.1f} s, statuses {sorted(set(codes))}, live Secrets "
              f"{live}, audit {figures}, other user's logins {len(others)} statuses "
              f"{sorted(set(others))}")

        storm_answered(codes, figures)
        assert live == CAP  # exact on one replica: every login beyond the 50th ended one
        assert figures["logins"] == STORM
        assert figures["max_calls"] <= MAX_CALLS_PER_LOGIN
        # Secret and TokenRequest, and once at the cap (all of round 2) one delete.
        assert figures["p50_calls"] == (3 if round_ == 2 else pytest.approx(2.5, abs=0.5))
        assert others
        assert set(others) == {200}


def leftover_sessions(cluster: LocalCluster, namespace: str, username: str, count: int) -> None:
    """Session Secrets as a replica that crashed mid-storm would leave them (newest of all)."""
    now = dt.datetime.now(dt.UTC)
    expires = wire.format_time(now + dt.timedelta(seconds=600))
    # As the replica wrote them: with their start to the microsecond, so that they sort
    # after the storm's (a creationTimestamp has whole seconds only).
    items = [{"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": {
        "name": naming.session_secret_name(f"leftover{i:02d}{secrets.token_hex(4)}"),
        "labels": naming.user_labels(username, namespace) | {naming.SESSION_LABEL: "true"},
        "annotations": {naming.USERNAME_ANNOTATION: username,
                        naming.STARTED_ANNOTATION: now.strftime(naming.STARTED_FORMAT),
                        naming.EXPIRES_ANNOTATION: expires}}} for i in range(count)]
    cluster.kubectl("apply", "-n", namespace, "-f", "-",
                    input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))


def test_two_replicas_under_the_storm_and_a_crashed_ones_leftovers_keep_the_cap(
        idp: LocalIdP, cluster: LocalCluster, minting_issuer: MintingIssuer,
        concierge_factory: Callable[..., LocalConcierge]) -> None:
    """Each replica knows only its own writes until its watch shows the other's, so together
    they may pass the cap by a little, and a replica that crashed may leave more; the Lease
    holder's sweeper ends what is over it, oldest first, so that no login pays for it."""
    namespace = f"pinniped-concierge-{secrets.token_hex(3)}"
    replicas = [concierge_factory(idp, extra_issuers=[minting_issuer], namespace=namespace,
                                  **STORM_SETTINGS) for _ in range(2)]
    email, username = storm_user(minting_issuer)
    _, other = storm_user(minting_issuer)
    codes, others = asyncio.run(storm(replicas, minting_issuer.mint(email=email),
                                      minting_issuer.mint(email=other.removeprefix(
                                          MINTED_PREFIX))))
    right_after = live_sessions(cluster, namespace, username)
    figures = summary(replicas, username)
    print(f"\ntwo replicas: live Secrets right after {right_after}; audit {figures}; "
          f"other user's statuses {sorted(set(others))}")
    storm_answered(codes, figures)
    assert set(others) == {200}
    assert figures["max_calls"] <= MAX_CALLS_PER_LOGIN
    assert right_after < CAP + STORM // 4  # the review saw 158 and 249

    leftover_sessions(cluster, namespace, username, 20)
    assert live_sessions(cluster, namespace, username) >= CAP + 20
    started = time.monotonic()
    while (live := live_sessions(cluster, namespace, username)) > CAP:
        assert time.monotonic() - started < 30, f"{live} live sessions after 30 s"
        time.sleep(1)
    print(f"sweeper: back at {live} after {time.monotonic() - started:.1f} s")
    assert live == CAP
    kept = cluster.kubectl("get", "secrets", "-n", namespace, "-o", "name", "-l",
                           naming.user_session_selector(username, namespace)).stdout
    assert kept.count("leftover") == 20  # the newest are kept, the storm's oldest ended
