"""Sessions: an Opaque Secret per login, a token bound to it, swept when expired."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from collections.abc import Awaitable

import pytest

from localenv.fixtures_concierge import FakeKube, ManualClock
from pinniped_apis import wire
from pinniped_concierge import naming
from pinniped_concierge.elevation_store import Grant
from pinniped_concierge.errors import Reason, ServerError, Unavailable
from pinniped_concierge.kubeapi import Conflict, Kind, Obj, counting_calls
from pinniped_concierge.object_watch import ObjectVersions, Seen
from pinniped_concierge.session_ledger import SessionLedger
from pinniped_concierge.sessions import (
    MAX_DELETIONS_PER_LOGIN,
    ServiceAccountGone,
    Session,
    Sessions,
)
from pinniped_concierge.userobjects import UserObjects, UserRef

NS = "pinniped-concierge"
ALICE = wire.Identity("corp:alice@example.com", ("corp:devs",))



@pytest.fixture
def user(fake_kube: FakeKube) -> UserRef:
    return asyncio.run(UserObjects(fake_kube, NS, 300).ensure(ALICE))


@pytest.fixture
def versions(fake_kube: FakeKube) -> ObjectVersions:
    return fake_kube.watch(ObjectVersions(), NS)


@pytest.fixture
def sessions(fake_kube: FakeKube, clock: ManualClock, versions: ObjectVersions) -> Sessions:
    fake_kube._clock = clock
    return Sessions(fake_kube, NS, ttl_seconds=900, clock_skew_seconds=30, clock=clock,
                    versions=versions)


def session_names(fake_kube: FakeKube) -> list[str]:
    return [n for n in fake_kube.names(Kind.SECRET) if n.startswith(naming.SESSION_PREFIX)]


def secret_names(*sessions: Session) -> list[str]:
    """The session Secrets' names of `sessions`, sorted (to compare with `session_names`)."""
    return sorted(naming.session_secret_name(s.id) for s in sessions)


def test_a_session_is_an_opaque_secret_owned_by_the_account(fake_kube: FakeKube,
                                                            sessions: Sessions,
                                                            user: UserRef) -> None:
    fake_kube.calls.clear()
    session = asyncio.run(sessions.start(user))
    assert fake_kube.calls == ["create Secret", "create TokenRequest"]
    secret = fake_kube.get(Kind.SECRET, naming.session_secret_name(session.id), NS)
    assert secret is not None
    assert secret["type"] == "Opaque"
    assert "data" not in secret
    assert secret["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "ServiceAccount", "name": user.service_account,
         "uid": user.uid}]
    assert secret["metadata"]["labels"][naming.SESSION_LABEL] == "true"
    (request,) = fake_kube.token_requests
    assert request["spec"]["expirationSeconds"] == 900
    assert request["spec"]["boundObjectRef"] == {
        "apiVersion": "v1", "kind": "Secret", "name": secret["metadata"]["name"],
        "uid": secret["metadata"]["uid"]}
    assert session.expiration.timestamp() == pytest.approx(1_700_000_900, abs=1)
    assert session.token in fake_kube.tokens


def test_every_login_gets_its_own_session(sessions: Sessions, user: UserRef) -> None:
    first, second = (asyncio.run(sessions.start(user)) for _ in range(2))
    assert first.id != second.id
    assert first.token != second.token


def test_a_vanished_account_is_reported_and_the_orphan_secret_removed(
        fake_kube: FakeKube, sessions: Sessions, user: UserRef) -> None:
    asyncio.run(fake_kube.delete(Kind.SERVICE_ACCOUNT, user.service_account, NS))
    with pytest.raises(ServiceAccountGone):
        asyncio.run(sessions.start(user))
    assert fake_kube.names(Kind.SECRET) == []


def test_ending_a_session_deletes_only_that_secret(fake_kube: FakeKube, sessions: Sessions,
                                                   user: UserRef) -> None:
    first, second = (asyncio.run(sessions.start(user)) for _ in range(2))
    first_name = naming.session_secret_name(first.id)
    secret = fake_kube.get(Kind.SECRET, first_name, NS)
    assert secret is not None
    assert asyncio.run(sessions.end(first_name, secret["metadata"]["uid"])) is True
    assert fake_kube.names(Kind.SECRET) == [naming.session_secret_name(second.id)]
    assert asyncio.run(sessions.end(first_name, None)) is False  # idempotent


def test_end_refuses_secrets_that_are_not_sessions_of_ours(fake_kube: FakeKube,
                                                           sessions: Sessions) -> None:
    asyncio.run(fake_kube.create(Kind.SECRET, {"metadata": {"name": "pinniped-session-x"}}, NS))
    asyncio.run(fake_kube.create(Kind.SECRET, {"metadata": {
        "name": "db-password", "labels": {naming.MANAGED_BY_LABEL: naming.MANAGED_BY}}}, NS))
    assert asyncio.run(sessions.end("pinniped-session-x", None)) is False
    assert asyncio.run(sessions.end("db-password", None)) is False
    assert fake_kube.names(Kind.SECRET) == ["db-password", "pinniped-session-x"]


def test_end_checks_the_uid(fake_kube: FakeKube, sessions: Sessions, user: UserRef) -> None:
    session = asyncio.run(sessions.start(user))
    name = naming.session_secret_name(session.id)
    assert asyncio.run(sessions.end(name, "some-other-uid")) is False
    assert fake_kube.get(Kind.SECRET, name, NS) is not None


def test_logout_ends_the_bound_secret_even_with_its_labels_edited(
        fake_kube: FakeKube, sessions: Sessions, user: UserRef) -> None:
    """The token is bound to this Secret's uid: only deleting it ends the token."""
    session = asyncio.run(sessions.start(user))
    name = naming.session_secret_name(session.id)
    secret = fake_kube.get(Kind.SECRET, name, NS)
    assert secret is not None
    secret["metadata"]["labels"] = {}
    assert asyncio.run(sessions.end(name, None)) is False  # no uid: labelled ones only
    assert asyncio.run(sessions.end(name, secret["metadata"]["uid"])) is True
    assert fake_kube.get(Kind.SECRET, name, NS) is None


def test_sweep_deletes_expired_sessions_only(fake_kube: FakeKube, sessions: Sessions,
                                             user: UserRef, clock: ManualClock) -> None:
    old = asyncio.run(sessions.start(user))
    clock.now += 600
    fresh = asyncio.run(sessions.start(user))
    asyncio.run(fake_kube.create(Kind.SECRET, {"metadata": {"name": "unrelated"}}, NS))
    clock.now += 331  # old expired 31 s ago (> 30 s skew); fresh has 569 s left
    assert asyncio.run(sessions.sweep()) == 1
    assert fake_kube.names(Kind.SECRET) == [naming.session_secret_name(fresh.id), "unrelated"]
    assert old.id != fresh.id


def test_sweep_pages_through_many_sessions(fake_kube: FakeKube, user: UserRef,
                                           clock: ManualClock, versions: ObjectVersions) -> None:
    fake_kube._clock = clock
    sessions = Sessions(fake_kube, NS, 900, 30, clock=clock, max_per_user=1000,
                        versions=versions)
    for _ in range(300):
        asyncio.run(sessions.start(user))
    clock.now += 2000
    assert asyncio.run(sessions.sweep()) == 300
    assert fake_kube.calls.count("list Secret") == 2
    assert fake_kube.names(Kind.SECRET) == []


class FailingTokenRequests(FakeKube):
    def __init__(self, failure: BaseException | None) -> None:
        super().__init__()
        self.failure = failure

    async def create_token(self, namespace: str, service_account: str, body: Obj) -> Obj:
        self._call("create TokenRequest")
        if self.failure is not None:
            raise self.failure
        return {**body, "status": {}}  # "succeeds" without a token


@pytest.mark.parametrize("failure", [
    Unavailable(Reason.KUBERNETES_UNAVAILABLE, "down"),
    ServerError(Reason.KUBERNETES_ERROR, "HTTP 403: forbidden"),
    RuntimeError("surprise"),
    None,  # no token in the answer
])
def test_a_failed_token_request_leaves_no_secret_behind(failure: BaseException | None) -> None:
    kube = FailingTokenRequests(failure)
    user = asyncio.run(UserObjects(kube, NS, 300).ensure(ALICE))
    sessions = Sessions(kube, NS, 900, 30, versions=kube.watch(ObjectVersions(), NS))
    with pytest.raises((Unavailable, ServerError, RuntimeError)) as info:
        asyncio.run(sessions.start(user))
    if failure is not None:
        assert info.value is failure
    assert session_names(kube) == []
    assert kube.calls[-3:] == ["create Secret", "create TokenRequest", "delete Secret"]


def test_a_cancelled_login_leaves_no_secret_behind() -> None:
    kube = FailingTokenRequests(asyncio.CancelledError())
    user = asyncio.run(UserObjects(kube, NS, 300).ensure(ALICE))
    sessions = Sessions(kube, NS, 900, 30, versions=kube.watch(ObjectVersions(), NS))
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(sessions.start(user))
    assert session_names(kube) == []


def test_sessions_per_user_are_bounded_without_extra_calls(
        fake_kube: FakeKube, clock: ManualClock, user: UserRef, versions: ObjectVersions) -> None:
    fake_kube._clock = clock
    sessions = Sessions(fake_kube, NS, 900, 30, clock=clock, max_per_user=3, versions=versions)
    bob = asyncio.run(UserObjects(fake_kube, NS, 300).ensure(
        wire.Identity("corp:bob@example.com")))
    bobs = asyncio.run(sessions.start(bob))
    started = []
    for _ in range(3):
        clock.now += 1
        fake_kube.calls.clear()
        started.append(asyncio.run(sessions.start(user)))
        assert fake_kube.calls == ["create Secret", "create TokenRequest"]
    for _ in range(2):
        clock.now += 1
        fake_kube.calls.clear()
        started.append(asyncio.run(sessions.start(user)))
        assert fake_kube.calls == ["delete Secret", "create Secret", "create TokenRequest"]
    # alice's two oldest are gone, her three newest and bob's one remain
    assert sorted(session_names(fake_kube)) == secret_names(bobs, *started[2:])


def test_while_the_watch_is_down_the_bound_is_kept_by_listing(fake_kube: FakeKube,
                                                             clock: ManualClock, user: UserRef,
                                                             versions: ObjectVersions) -> None:
    fake_kube._clock = clock
    sessions = Sessions(fake_kube, NS, 900, 30, clock=clock, max_per_user=2, versions=versions)
    first = asyncio.run(sessions.start(user))
    clock.now += 1
    second = asyncio.run(sessions.start(user))
    versions.lost(Kind.SECRET)
    clock.now += 1
    fake_kube.calls.clear()
    third = asyncio.run(sessions.start(user))
    assert fake_kube.calls == ["list Secret", "delete Secret", "create Secret",
                               "create TokenRequest"]
    assert sorted(session_names(fake_kube)) == secret_names(second, third)
    assert first.id not in {second.id, third.id}


# --- the cap under concurrency, a lagging watch, and leftovers ------------------------------


def live_sessions_of(kube: FakeKube, user: UserRef) -> list[str]:
    key = naming.user_key(user.username, NS)
    return [name for name in session_names(kube)
            if kube.objects[(Kind.SECRET, NS, name)]["metadata"]["labels"][naming.USER_LABEL]
            == key]


def assert_newest_kept(kube: FakeKube, clock: ManualClock, sessions: Sessions, user: UserRef,
                       *, logins: int, apart: float, kept: int) -> None:
    """`logins` logins `apart` seconds apart, one after another: the newest `kept` remain."""
    started = []
    for _ in range(logins):
        clock.now += apart
        started.append(asyncio.run(sessions.start(user)))
    assert sorted(live_sessions_of(kube, user)) == sorted(
        naming.session_secret_name(s.id) for s in started[-kept:])


async def counted(start: Awaitable[Session]) -> int:
    """The Kubernetes API calls one login's session start made (as its audit line counts)."""
    with counting_calls() as calls:
        await start
    return calls.value


def test_a_storm_of_one_users_logins_keeps_exactly_the_cap(
        fake_kube: FakeKube, clock: ManualClock, user: UserRef) -> None:
    """The review's finding: one token replayed in parallel, the watch behind the writes."""
    fake_kube._clock = clock
    versions = fake_kube.watch(ObjectVersions(), NS)
    sessions = Sessions(fake_kube, NS, 900, 30, clock=clock, max_per_user=5, versions=versions)
    fake_kube.interleave = True  # the logins really interleave, call by call
    fake_kube.hold_watch = True  # and the mirror shows none of their Secrets yet
    fake_kube.calls.clear()

    async def storm() -> list[int]:
        return list(await asyncio.gather(*(counted(sessions.start(user)) for _ in range(40))))

    calls = asyncio.run(storm())
    assert len(live_sessions_of(fake_kube, user)) == 5
    assert fake_kube.calls.count("delete Secret") == 35  # each excess session once
    assert max(calls) == 3  # Secret, TokenRequest and at most one delete each

    assert fake_kube.deliver_watch_events() > 0  # the watch catches up: nothing counted twice
    fake_kube.calls.clear()
    asyncio.run(sessions.start(user))
    assert fake_kube.calls == ["delete Secret", "create Secret", "create TokenRequest"]
    assert len(live_sessions_of(fake_kube, user)) == 5


def test_a_lagging_watch_alone_does_not_let_sequential_logins_past_the_cap(
        fake_kube: FakeKube, clock: ManualClock, user: UserRef) -> None:
    fake_kube._clock = clock
    versions = fake_kube.watch(ObjectVersions(), NS)
    sessions = Sessions(fake_kube, NS, 900, 30, clock=clock, max_per_user=2, versions=versions)
    fake_kube.hold_watch = True
    assert_newest_kept(fake_kube, clock, sessions, user, logins=5, apart=1, kept=2)
    assert fake_kube.calls.count("delete Secret") == 3


def test_one_login_ends_only_a_few_sessions_and_the_sweeper_the_rest(
        fake_kube: FakeKube, clock: ManualClock, user: UserRef, versions: ObjectVersions) -> None:
    """Far over the cap (a replica crashed, or several raced): no login pays for all of it."""
    fake_kube._clock = clock
    other_replica = Sessions(fake_kube, NS, 900, 30, clock=clock, max_per_user=1000,
                             versions=versions)
    for _ in range(20):
        clock.now += 1
        asyncio.run(other_replica.start(user))
    sessions = Sessions(fake_kube, NS, 900, 30, clock=clock, max_per_user=5, versions=versions)
    fake_kube.calls.clear()
    calls = asyncio.run(counted(sessions.start(user)))
    assert calls == MAX_DELETIONS_PER_LOGIN + 2
    assert len(live_sessions_of(fake_kube, user)) == 20 - MAX_DELETIONS_PER_LOGIN + 1

    newest = sorted(live_sessions_of(fake_kube, user),
                    key=lambda n: fake_kube.objects[(Kind.SECRET, NS, n)]["metadata"][
                        "creationTimestamp"])[-5:]
    assert asyncio.run(sessions.sweep()) == 18 - 5
    assert sorted(live_sessions_of(fake_kube, user)) == sorted(newest)


def test_the_sweeper_trims_only_users_over_the_cap(
        fake_kube: FakeKube, clock: ManualClock, user: UserRef, versions: ObjectVersions) -> None:
    fake_kube._clock = clock
    bob = asyncio.run(UserObjects(fake_kube, NS, 300).ensure(wire.Identity("corp:bob@example.com")))
    loose = Sessions(fake_kube, NS, 900, 30, clock=clock, max_per_user=1000, versions=versions)
    for _ in range(4):
        clock.now += 1
        asyncio.run(loose.start(user))
        asyncio.run(loose.start(bob))
    sessions = Sessions(fake_kube, NS, 900, 30, clock=clock, max_per_user=3, versions=versions)
    versions.lost(Kind.SECRET)  # also without the mirror: the user's sessions are listed
    assert asyncio.run(sessions.sweep()) == 2
    assert len(live_sessions_of(fake_kube, user)) == 3
    assert len(live_sessions_of(fake_kube, bob)) == 3
    assert asyncio.run(sessions.sweep()) == 0


def test_the_session_cap_holds_the_users_lock(fake_kube: FakeKube, clock: ManualClock,
                                              user: UserRef, versions: ObjectVersions) -> None:
    """Even with a watch that never lags, concurrent logins must count one after another."""
    fake_kube._clock = clock
    sessions = Sessions(fake_kube, NS, 900, 30, clock=clock, max_per_user=3, versions=versions)
    fake_kube.interleave = True

    async def storm() -> None:
        await asyncio.gather(*(sessions.start(user) for _ in range(10)))

    asyncio.run(storm())
    assert len(live_sessions_of(fake_kube, user)) == 3
    assert fake_kube.calls.count("delete Secret") == 7


def test_a_session_never_shows_its_token(sessions: Sessions, user: UserRef) -> None:
    session = asyncio.run(sessions.start(user))
    assert session.token not in repr(session)
    assert session.user == user


# --- the ledger ------------------------------------------------------------------------


def seen(name: str, created: str = "2024-01-01T00:00:00Z") -> Seen:
    return Seen("1", f"uid-{name}", "u", created)


def test_the_ledger_corrects_the_mirror_until_it_catches_up(clock: ManualClock) -> None:
    ledger = SessionLedger(monotonic=clock, pending_seconds=60)
    ledger.created("u", ("2024-01-01T00:00:02Z", "new", "uid-new"))
    ledger.deleted("u", "old")
    mirrored = {"old": seen("old"), "kept": seen("kept", "2024-01-01T00:00:01Z")}
    assert [name for _, name, _ in ledger.live("u", mirrored)] == ["kept", "new"]
    mirrored = {"kept": seen("kept"), "new": seen("new", "2024-01-01T00:00:02Z")}
    assert [name for _, name, _ in ledger.live("u", mirrored)] == ["kept", "new"]
    # a Secret deleted by someone else once the mirror had it is not counted from our notes
    assert [name for _, name, _ in ledger.live("u", {"kept": seen("kept")})] == ["kept"]


def test_a_deleted_note_outlives_a_late_added_event(clock: ManualClock) -> None:
    """Created and deleted before the mirror ever showed it: its ADDED event comes later."""
    ledger = SessionLedger(monotonic=clock, pending_seconds=60)
    ledger.created("u", ("t", "brief", None))
    ledger.deleted("u", "brief")
    assert ledger.live("u", {}) == []
    clock.now += 1
    assert ledger.live("u", {"brief": seen("brief")}) == []


def test_the_ledger_forgets_after_the_pending_time_and_stays_bounded(
        clock: ManualClock) -> None:
    ledger = SessionLedger(monotonic=clock, pending_seconds=60)
    for i in range(100):
        ledger.created(f"user-{i}", ("t", f"s-{i}", None))
    assert len(ledger) == 100
    clock.now += 61
    ledger.created("someone", ("t", "s", None))  # any write drops users with only old notes
    assert len(ledger) == 1
    assert ledger.live("user-1", {}) == []
    ledger.listed("someone")
    assert len(ledger) == 0


def test_the_oldest_ended_is_the_oldest_to_the_microsecond(
        fake_kube: FakeKube, clock: ManualClock, user: UserRef, versions: ObjectVersions) -> None:
    """Ten logins within one second (one creationTimestamp): the newest two stay."""
    fake_kube._clock = clock
    clock.now = 1_700_000_000.0
    sessions = Sessions(fake_kube, NS, 900, 30, clock=clock, max_per_user=2, versions=versions)
    assert_newest_kept(fake_kube, clock, sessions, user, logins=10, apart=0.05, kept=2)


def test_a_create_resent_after_the_apiserver_died_answers_503(
        fake_kube: FakeKube, sessions: Sessions, user: UserRef,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The thin transport may resend a create whose first copy the apiserver did make: the
    session's random name then exists already, which is the apiserver's fault, not ours."""
    async def taken(*_args: object, **_kwargs: object) -> Obj:
        raise Conflict("create Secret")

    monkeypatch.setattr(fake_kube, "create", taken)
    with pytest.raises(Unavailable) as refused:
        asyncio.run(sessions.start(user))
    assert refused.value.reason == Reason.KUBERNETES_UNAVAILABLE
    assert fake_kube.token_requests == []


def test_ending_an_elevation_ends_only_its_sessions_and_the_cap_knows(
        fake_kube: FakeKube, clock: ManualClock, user: UserRef) -> None:
    """The ended session must leave the ledger too: a lagging watch would otherwise count it
    and the user's next login would end one of their ordinary sessions to make room."""
    fake_kube._clock = clock
    sessions = Sessions(fake_kube, NS, 900, 30, clock=clock, max_per_user=3,
                        versions=fake_kube.watch(ObjectVersions(), NS))
    fake_kube.hold_watch = True  # the mirror shows none of what follows
    ordinary = asyncio.run(sessions.start(user))
    clock.now += 1
    elevated_user = dataclasses.replace(user, grants=(Grant("elev-1", "corp:prod", 2e9),))
    asyncio.run(sessions.start(elevated_user))
    other = asyncio.run(sessions.start(dataclasses.replace(
        user, grants=(Grant("elev-2", "corp:prod", 2e9),))))
    assert asyncio.run(sessions.end_elevated(user.username, "elev-1")) == 1
    assert asyncio.run(sessions.end_elevated(user.username, "elev-1")) == 0
    assert sorted(session_names(fake_kube)) == secret_names(ordinary, other)
    clock.now += 1
    fake_kube.calls.clear()
    newest = asyncio.run(sessions.start(user))  # the third of 3: nothing need go
    assert "delete Secret" not in fake_kube.calls
    assert sorted(session_names(fake_kube)) == secret_names(ordinary, other, newest)


@pytest.mark.parametrize("watch", ["lagging", "caught up"])
def test_a_logged_out_session_is_not_counted_at_the_cap(
        fake_kube: FakeKube, clock: ManualClock, user: UserRef, watch: str) -> None:
    fake_kube._clock = clock
    sessions = Sessions(fake_kube, NS, 900, 30, clock=clock, max_per_user=2,
                        versions=fake_kube.watch(ObjectVersions(), NS))
    fake_kube.hold_watch = True
    kept = asyncio.run(sessions.start(user))  # say, the user's CI job
    clock.now += 1
    laptop = asyncio.run(sessions.start(user))
    assert asyncio.run(sessions.end(naming.session_secret_name(laptop.id), None))
    if watch == "caught up":
        fake_kube.deliver_watch_events()  # ADDED, ADDED, DELETED
    clock.now += 1
    newest = asyncio.run(sessions.start(user))  # the second of 2: nothing need go
    assert sorted(session_names(fake_kube)) == secret_names(kept, newest)


def test_a_session_another_replica_ended_is_not_counted_at_the_cap(
        fake_kube: FakeKube, clock: ManualClock, user: UserRef) -> None:
    """The replica that minted it learns of the end only from its watch."""
    fake_kube._clock = clock
    minting, leader = (Sessions(fake_kube, NS, 900, 30, clock=clock, max_per_user=2,
                                versions=fake_kube.watch(ObjectVersions(), NS))
                       for _ in range(2))
    kept = asyncio.run(minting.start(user))
    clock.now += 1
    asyncio.run(minting.start(dataclasses.replace(
        user, grants=(Grant("elev-1", "corp:prod", 2e9),))))
    assert asyncio.run(leader.end_elevated(user.username, "elev-1")) == 1
    clock.now += 1
    newest = asyncio.run(minting.start(user))  # the second of 2: nothing need go
    assert sorted(session_names(fake_kube)) == secret_names(kept, newest)


def test_a_session_name_deleted_and_taken_again_is_still_counted(
        fake_kube: FakeKube, clock: ManualClock, user: UserRef) -> None:
    """By uid: a resent POST (`kube_http`) may re-create a name deleted a moment before; while
    the watch has shown that deletion but not the second create, the second still counts."""
    fake_kube._clock = clock
    sessions = Sessions(fake_kube, NS, 900, 30, clock=clock, max_per_user=2,
                        versions=fake_kube.watch(ObjectVersions(), NS))
    asyncio.run(sessions.start(user))
    fake_kube.hold_watch = True
    create = fake_kube.create

    async def created_deleted_created(kind: Kind, body: Obj, namespace: str | None = None
                                      ) -> Obj:
        if kind is not Kind.SECRET:
            return await create(kind, body, namespace)
        first = await create(kind, copy.deepcopy(body), namespace)  # its answer lost
        await fake_kube.delete(kind, first["metadata"]["name"], namespace)
        return await create(kind, body, namespace)  # the resent POST

    fake_kube.create = created_deleted_created  # type: ignore[method-assign]
    clock.now += 1
    asyncio.run(sessions.start(user))
    fake_kube.create = create  # type: ignore[method-assign]
    held, fake_kube._held_events = fake_kube._held_events, []
    assert [event for _, kind, event, _ in held if kind is Kind.SECRET] == [
        "ADDED", "DELETED", "ADDED"]
    for versions, kind, event, body in held[:2]:  # the second ADDED still to come
        versions.apply(kind, event, body)
    clock.now += 1
    asyncio.run(sessions.start(user))  # two live already: the oldest must go
    assert len(session_names(fake_kube)) == 2
