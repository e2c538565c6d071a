"""Revoked users: the markers, the mirror the watch feeds, and the login's refusal."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import math
import time
from typing import Any

import pytest

from localenv import decoys
from localenv.app_env import ALICE_TOKEN, BOB_TOKEN, NS, AppEnv
from localenv.fixtures_concierge import FakeKube, ManualClock
from pinniped_apis import wire
from pinniped_concierge import naming
from pinniped_concierge.audit import AuditEvent
from pinniped_concierge.errors import Reason, Rejected
from pinniped_concierge.kubeapi import Kind, Obj
from pinniped_concierge.login import LoginService
from pinniped_concierge.revocations import (
    REVOKED_LABEL,
    RevocationCheck,
    RevocationMirror,
    authenticated_at,
    marker_selector,
    new_marker,
    read_marker,
    sweep_expired,
)
from pinniped_concierge.revoke_user import revoke

ALICE = "corp:alice@example.com"
SKEW = 30


def stamped(obj: Obj, created: float) -> Obj:
    """`obj` as the apiserver returns it: with a uid and creationTimestamp."""
    obj = copy.deepcopy(obj)
    obj["metadata"] |= {"uid": "uid-m", "resourceVersion": "1", "creationTimestamp":
                        wire.format_time(dt.datetime.fromtimestamp(created, dt.UTC))}
    return obj


def marker(username: str = ALICE, created: float = 1_000_000.0, namespace: str = NS) -> Obj:
    return stamped(new_marker(username, namespace, created, "admin"), created)


# --- when did the person authenticate ----------------------------------------------------


@pytest.mark.parametrize(("claims", "expected"), [
    ({"auth_time": 100, "iat": 500}, 100.0),  # a refreshed token keeps the original auth_time
    ({"iat": 500}, 500.0),
    ({"auth_time": 100.5}, 100.5),
    ({}, None),
    ({"auth_time": True, "iat": 500}, None),  # present but not a number: unknown, not iat
    ({"auth_time": "100", "iat": 500}, None),
    ({"auth_time": math.nan}, None),
    ({"iat": math.inf}, None),
])
def test_authentication_time_is_auth_time_else_iat(claims: dict[str, object],
                                                    expected: float | None) -> None:
    assert authenticated_at(claims) == expected


# --- what counts as a marker ----------------------------------------------------------------


def test_a_marker_counts_only_when_every_mark_agrees() -> None:
    good = marker()
    assert read_marker(good, NS) == (naming.user_key(ALICE, NS), good["metadata"]["name"],
                                     1_000_000.0)

    def changed(path: tuple[str, ...], value: Any) -> Obj:
        return decoys.changed(good, path, value)

    unlike = [
        changed(("labels", naming.MANAGED_BY_LABEL), None),
        changed(("labels", naming.NAMESPACE_LABEL), "another-concierge"),
        changed(("labels", REVOKED_LABEL), None),
        changed(("labels", naming.USER_LABEL), naming.user_key("corp:bob@example.com", NS)),
        changed(("annotations", naming.USERNAME_ANNOTATION), "corp:bob@example.com"),
        changed(("annotations", naming.USERNAME_ANNOTATION), None),
        changed(("name",), "pinniped-revoked-" + "0" * 32 + "-abcd"),
        changed(("name",), "my-own-secret"),
    ]
    assert [read_marker(decoy, NS) for decoy in unlike] == [None] * len(unlike)
    assert read_marker(good, "another-concierge") is None
    # no creationTimestamp (no apiserver does that): refuses everything, never nothing
    assert read_marker(changed(("creationTimestamp",), None), NS) == (
        naming.user_key(ALICE, NS), good["metadata"]["name"], math.inf)


def test_marker_names_are_unique_per_revocation_and_hold_no_data() -> None:
    first, second = (new_marker(ALICE, NS, 1.0, "admin") for _ in range(2))
    assert first["metadata"]["name"] != second["metadata"]["name"]
    assert first["type"] == "Opaque"
    assert "data" not in first
    assert "stringData" not in first
    assert naming.SESSION_LABEL not in first["metadata"]["labels"]  # never swept as a session


# --- the mirror ---------------------------------------------------------------------------


def test_the_mirror_knows_the_latest_revocation_of_each_user_while_the_watch_is_up() -> None:
    mirror = RevocationMirror(NS)
    assert mirror.lookup(ALICE) == (False, None)
    older, newer = marker(created=100.0), marker(created=200.0)
    mirror.reset([older])
    assert mirror.lookup(ALICE) == (True, 100.0)
    assert mirror.lookup("corp:bob@example.com") == (True, None)
    mirror.apply("ADDED", newer)
    assert mirror.lookup(ALICE) == (True, 200.0)
    mirror.apply("DELETED", newer)
    assert mirror.lookup(ALICE) == (True, 100.0)
    unlabelled = copy.deepcopy(older)
    del unlabelled["metadata"]["labels"][naming.MANAGED_BY_LABEL]
    mirror.apply("MODIFIED", unlabelled)  # no longer a marker: no longer counted
    assert mirror.lookup(ALICE) == (True, None)
    assert mirror.count() == 0
    mirror.apply("ADDED", older)
    mirror.lost()
    assert mirror.lookup(ALICE) == (False, None)
    mirror.apply("ADDED", older)  # events between a break and the next list are ignored
    assert mirror.lookup(ALICE) == (False, None)
    assert mirror.count() is None


def test_the_watch_source_lists_the_markers_of_this_namespace() -> None:
    client = type("Client", (), {"user_agent": ""})()
    mirror = RevocationMirror(NS)
    source = mirror.watch_source(client)
    assert source.label_selector == marker_selector(NS)
    assert source.arguments == {"namespace": NS}
    assert source.target is mirror
    assert source.list_fn.__name__ == "list_namespaced_secret"
    assert client.user_agent == "pinniped-concierge-watch"


# --- the check ----------------------------------------------------------------------------


def _check(kube: FakeKube, mirror: RevocationMirror | None) -> RevocationCheck:
    return RevocationCheck(kube, NS, mirror, SKEW)


def test_tokens_authenticated_before_the_revocation_are_refused_from_memory() -> None:
    kube = FakeKube()
    mirror = RevocationMirror(NS)
    mirror.reset([marker(created=1000.0)])
    check = _check(kube, mirror)

    def refused(claims: dict[str, object], username: str = ALICE) -> str | None:
        try:
            asyncio.run(check.check(username, claims))
        except Rejected as exc:
            return f"{exc.reason}: {exc.detail}"
        return None

    assert refused({"auth_time": 999, "iat": 5000}) is not None  # a refresh keeps auth_time
    assert refused({"auth_time": 1000 + SKEW}) is not None  # within the clock skew
    assert refused({"auth_time": 1001 + SKEW, "iat": 5000}) is None  # a new sign-in
    assert refused({"iat": 999}) is not None
    assert refused({"iat": 1001 + SKEW}) is None
    assert refused({}) == (f"{Reason.USER_REVOKED}: the user was revoked, and the token has "
                           "neither auth_time nor iat")
    assert refused({"iat": 1}, "corp:bob@example.com") is None
    detail = refused({"auth_time": 999})
    assert detail is not None
    assert detail.startswith("user_revoked: the user was revoked at 1970-01-01T00:16:40Z")
    assert "sign in at the IdP again" in detail
    assert kube.calls == []  # all from the mirror


def test_while_the_watch_is_down_a_login_lists_its_users_markers_once() -> None:
    kube = FakeKube()
    mirror = RevocationMirror(NS)
    check = _check(kube, mirror)
    asyncio.run(kube.create(Kind.SECRET, new_marker(ALICE, NS, time.time(), "admin"), NS))
    decoy = new_marker("corp:bob@example.com", NS, time.time(), "admin")
    decoy["metadata"]["labels"][naming.USER_LABEL] = naming.user_key(ALICE, NS)
    asyncio.run(kube.create(Kind.SECRET, decoy, NS))  # bob's marker relabelled as alice's
    kube.calls.clear()
    with pytest.raises(Rejected):
        asyncio.run(check.check(ALICE, {"auth_time": time.time() - 60}))
    assert kube.calls == ["list Secret"]
    assert asyncio.run(check.revoked_at("corp:bob@example.com")) is None
    # Asked again later in the login, while the watch is still down: listed again.
    kube.calls.clear()
    assert asyncio.run(check.revoked_meanwhile(ALICE, {"auth_time": 1}))
    assert kube.calls == ["list Secret"]
    mirror.reset([])
    kube.calls.clear()
    assert asyncio.run(check.revoked_at(ALICE)) is None  # the (empty) mirror is believed
    assert kube.calls == []


def test_markers_past_their_retention_are_deleted_and_nothing_else() -> None:
    clock = ManualClock(10_000.0)
    kube = FakeKube(clock)
    old = asyncio.run(kube.create(Kind.SECRET, new_marker(ALICE, NS, clock(), "admin"), NS))
    foreign = new_marker(ALICE, NS, clock(), "admin")
    foreign["metadata"]["labels"][naming.NAMESPACE_LABEL] = "elsewhere"
    asyncio.run(kube.create(Kind.SECRET, foreign, NS))
    clock.now += 3000
    young = asyncio.run(kube.create(Kind.SECRET, new_marker("corp:bob@example.com", NS,
                                                            clock(), "admin"), NS))
    clock.now += 1001
    assert asyncio.run(sweep_expired(kube, NS, 4000, clock)) == 1
    left = kube.names(Kind.SECRET)
    assert old["metadata"]["name"] not in left
    assert young["metadata"]["name"] in left
    assert foreign["metadata"]["name"] in left


# --- in the login ------------------------------------------------------------------------


class RevocableEnv(AppEnv):
    """`AppEnv` whose logins check revocations, with the mirror fed from the fake's Secrets."""

    def __init__(self) -> None:
        super().__init__()
        self.mirror = RevocationMirror(NS)
        self.mirror.reset([])
        self.check = RevocationCheck(self.kube, NS, self.mirror, SKEW)
        old = self.services.login
        self.services.login = LoginService(old.authenticator_set, old._user_objects,
                                           old._sessions, revocations=self.check)

    def sync(self) -> None:
        """What the marker watch would have delivered by now."""
        self.mirror.reset([obj for (kind, _, _), obj in self.kube.objects.items()
                           if kind == Kind.SECRET and read_marker(obj, NS)])

    def revoke(self, username: str = ALICE) -> None:
        asyncio.run(revoke(self.kube, NS, username))
        self.sync()

    def authenticated(self, token: str, when: float) -> None:
        claims: dict[str, Any] = self.verifier.claims  # it holds any claims, not just names
        claims[token] = claims[token] | {"auth_time": int(when), "iat": int(time.time())}


def test_a_revoked_users_replayed_token_gets_the_uniform_401_and_touches_nothing() -> None:
    env = RevocableEnv()
    env.authenticated(ALICE_TOKEN, time.time() - 120)
    env.authenticated(BOB_TOKEN, time.time() - 120)
    assert env.login().status_code == 200
    env.revoke()
    assert env.kube.names(Kind.SERVICE_ACCOUNT) == []
    before = len(env.kube.calls)

    replay = env.login()
    assert replay.status_code == 200  # a TokenCredentialRequest's failure is in its status
    assert replay.json()["status"] == {"message": wire.AUTHENTICATION_FAILED}
    line = env.audit()[-1]
    assert (line["outcome"], line["reason"], line["username"]) == (
        "failure", "user_revoked", ALICE)
    assert line["kubeApiCalls"] == 0
    assert env.kube.calls[before:] == []
    assert env.kube.names(Kind.SERVICE_ACCOUNT) == []
    assert env.login(BOB_TOKEN).json()["status"].get("credential")  # others are unaffected


def test_a_new_sign_in_after_the_revocation_works_again() -> None:
    env = RevocableEnv()
    env.revoke()
    env.authenticated(ALICE_TOKEN, time.time() + SKEW + 2)  # the IdP's auth_time, after it
    response = env.login()
    assert response.json()["status"].get("credential"), response.text
    assert env.audit()[-1]["reason"] == "ok"


def test_a_revocation_that_lands_during_a_login_ends_that_logins_session() -> None:
    env = RevocableEnv()
    env.authenticated(ALICE_TOKEN, time.time() - 120)
    real_create_token = env.kube.create_token

    async def revoked_meanwhile(namespace: str, account: str, body: Obj) -> Obj:
        issued = await real_create_token(namespace, account, body)
        await env.kube.create(Kind.SECRET, new_marker(ALICE, NS, time.time(), "admin"), NS)
        env.sync()
        return issued

    env.kube.create_token = revoked_meanwhile  # type: ignore[method-assign,assignment]
    response = env.login()
    assert response.json()["status"] == {"message": wire.AUTHENTICATION_FAILED}
    assert env.audit()[-1]["reason"] == "user_revoked"
    sessions = [n for n in env.kube.names(Kind.SECRET) if n.startswith(naming.SESSION_PREFIX)]
    assert sessions == []
    # ...and the objects it made again after revoke-user deleted them are gone too.
    for kind in (Kind.SERVICE_ACCOUNT, Kind.CLUSTER_ROLE, Kind.CLUSTER_ROLE_BINDING):
        assert env.kube.names(kind) == [], kind


def test_a_login_that_waited_for_the_users_lock_while_revoke_user_ran_makes_nothing() -> None:
    """It passed the first check before the marker existed, then queued behind an earlier
    login of the same user; revoke-user deleted everything meanwhile."""
    env = RevocableEnv()
    env.authenticated(ALICE_TOKEN, time.time() - 120)
    assert env.login().status_code == 200
    service = env.services.login
    request = wire.TokenCredentialRequest.create(token=ALICE_TOKEN, authenticator_name="corp")

    async def scenario() -> None:
        async with service._user_objects.exclusive(ALICE):  # an earlier login, still running
            waiting = asyncio.create_task(service.login(request, AuditEvent("login", "")))
            await asyncio.sleep(0.05)  # past the first check, queued for the lock
            await revoke(env.kube, NS, ALICE)
            env.sync()
            calls_before = len(env.kube.calls)
        with pytest.raises(Rejected) as refused:
            await waiting
        assert refused.value.reason == Reason.USER_REVOKED
        assert env.kube.calls[calls_before:] == []  # refused before making anything again

    asyncio.run(scenario())
    for kind in (Kind.SERVICE_ACCOUNT, Kind.CLUSTER_ROLE, Kind.CLUSTER_ROLE_BINDING):
        assert env.kube.names(kind) == [], kind


def test_a_token_older_than_the_idle_timeout_is_refused_and_touches_nothing() -> None:
    """After the idle clean-up the group record is gone, so such a token could widen again."""
    env = RevocableEnv()
    old = env.services.login
    env.services.login = LoginService(old.authenticator_set, old._user_objects, old._sessions,
                                      max_token_age_seconds=3600)
    env.authenticated(ALICE_TOKEN, time.time() - 7200)
    claims: dict[str, Any] = env.verifier.claims
    claims[ALICE_TOKEN]["iat"] = int(time.time()) - 3601
    response = env.login()
    assert response.json()["status"] == {"message": wire.AUTHENTICATION_FAILED}
    assert env.audit()[-1]["reason"] == "token_too_old"
    assert env.kube.names(Kind.SERVICE_ACCOUNT) == []
    claims[ALICE_TOKEN]["iat"] = int(time.time()) - 3500
    assert env.login().json()["status"].get("credential")
