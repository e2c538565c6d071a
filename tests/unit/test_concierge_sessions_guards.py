"""Sessions: the cap counts only what is there, deletions touch only what is ours, and the
sweeper keeps going.

Each session Secret is deleted with a uid precondition wherever its name came
from (the watch mirror, a list, the sweep), so a Secret that took the name in
between (someone else's) survives. A session that failed, was swept or was
trimmed must not count against the user's next login. The sweeper must keep
running, end what is unreadable and spend API calls only on users over the cap.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from localenv.fixtures_concierge import FakeKube, ManualClock
from pinniped_apis import wire
from pinniped_concierge import naming
from pinniped_concierge import sessions as sessions_module
from pinniped_concierge.errors import Reason, ServerError, Unavailable
from pinniped_concierge.kubeapi import Kind, Obj
from pinniped_concierge.object_watch import ObjectVersions
from pinniped_concierge.sessions import ServiceAccountGone, Session, Sessions
from pinniped_concierge.userobjects import UserObjects, UserRef

NS = "pinniped-concierge"
TTL, SKEW = 900, 30


def identity(name: str) -> wire.Identity:
    return wire.Identity(f"corp:{name}@example.com", ("corp:devs",))


@pytest.fixture
def kube(fake_kube: FakeKube, clock: ManualClock) -> FakeKube:
    fake_kube._clock = clock
    return fake_kube


@pytest.fixture
def versions(kube: FakeKube) -> ObjectVersions:
    return kube.watch(ObjectVersions(), NS)


def user_of(kube: FakeKube, name: str = "alice") -> UserRef:
    return asyncio.run(UserObjects(kube, NS, 300).ensure(identity(name)))


@pytest.fixture
def alice(kube: FakeKube) -> UserRef:
    return user_of(kube)


def make(kube: FakeKube, clock: ManualClock, versions: ObjectVersions | None, *,
         cap: int = 50) -> Sessions:
    return Sessions(kube, NS, TTL, SKEW, clock=clock, max_per_user=cap, versions=versions)


def start(sessions: Sessions, user: UserRef) -> Session:
    return asyncio.run(sessions.start(user))


def secret_name(session: Session) -> str:
    return naming.session_secret_name(session.id)


def sessions_of(kube: FakeKube, user: UserRef) -> set[str]:
    key = naming.user_key(user.username, NS)
    return {name for (kind, _, name), obj in kube.objects.items()
            if kind == Kind.SECRET and name.startswith(naming.SESSION_PREFIX)
            and obj["metadata"].get("labels", {}).get(naming.USER_LABEL) == key}


def started(kube: FakeKube, clock: ManualClock, sessions: Sessions, user: UserRef,
            count: int) -> list[Session]:
    """`count` sessions one second apart (so their order is their age)."""
    made = []
    for _ in range(count):
        clock.now += 1
        made.append(start(sessions, user))
    return made


# --- someone else's Secret under a session's name is never deleted ---------------------------


FOREIGN: Obj = {"metadata": {"name": "", "uid": "someone-elses", "resourceVersion": "1"},
                "type": "Opaque"}


def swap_before_delete(kube: FakeKube, target: str) -> Obj:
    """When `target` is next deleted, it has just come to hold someone else's Secret."""
    foreign = {**FOREIGN, "metadata": {**FOREIGN["metadata"], "name": target}}
    delete = kube.delete

    async def swapped(kind: Kind, name: str, namespace: str | None = None,
                      uid: str | None = None) -> None:
        if kind == Kind.SECRET and name == target:
            kube.objects[(kind, namespace, name)] = foreign
        await delete(kind, name, namespace, uid)

    kube.delete = swapped  # type: ignore[method-assign]
    return foreign


@pytest.mark.parametrize("watch", ["mirror", "down"])
def test_the_cap_never_deletes_a_secret_that_took_a_sessions_name(
        kube: FakeKube, clock: ManualClock, versions: ObjectVersions, alice: UserRef,
        watch: str) -> None:
    sessions = make(kube, clock, versions, cap=1)
    (oldest,) = started(kube, clock, sessions, alice, 1)
    if watch == "down":
        versions.lost(Kind.SECRET)  # the user's sessions are listed instead
    foreign = swap_before_delete(kube, secret_name(oldest))
    start(sessions, alice)
    assert kube.get(Kind.SECRET, secret_name(oldest), NS) is foreign


@pytest.mark.parametrize("reason", ["expired", "over the cap"])
def test_the_sweeper_never_deletes_a_secret_that_took_a_sessions_name(
        kube: FakeKube, clock: ManualClock, versions: ObjectVersions, alice: UserRef,
        reason: str) -> None:
    loose = make(kube, clock, versions, cap=1000)
    oldest, _ = started(kube, clock, loose, alice, 2)
    if reason == "expired":
        clock.now += TTL + SKEW + 10
    foreign = swap_before_delete(kube, secret_name(oldest))
    # Expired: both were, and only the other one is deleted. Over the cap: nothing is.
    expected = 1 if reason == "expired" else 0
    assert asyncio.run(make(kube, clock, versions, cap=1).sweep()) == expected
    assert kube.get(Kind.SECRET, secret_name(oldest), NS) is foreign


def test_a_failed_token_request_never_deletes_a_secret_that_took_the_name(
        kube: FakeKube, clock: ManualClock, versions: ObjectVersions, alice: UserRef) -> None:
    """The Secret was swapped between its creation and the TokenRequest (which therefore
    fails, its uid no longer matching): cleaning up must spare the newcomer."""
    swapped: list[Obj] = []
    create_token = kube.create_token

    async def swapping(namespace: str, service_account: str, body: Obj) -> Obj:
        name = body["spec"]["boundObjectRef"]["name"]
        foreign = {**FOREIGN, "metadata": {**FOREIGN["metadata"], "name": name}}
        kube.objects[(Kind.SECRET, namespace, name)] = foreign
        swapped.append(foreign)
        return await create_token(namespace, service_account, body)

    kube.create_token = swapping  # type: ignore[method-assign]
    with pytest.raises(ServiceAccountGone):
        start(make(kube, clock, versions), alice)
    (foreign,) = swapped
    assert kube.get(Kind.SECRET, foreign["metadata"]["name"], NS) is foreign


def test_logout_never_deletes_a_secret_that_took_the_sessions_name(
        kube: FakeKube, clock: ManualClock, versions: ObjectVersions, alice: UserRef) -> None:
    sessions = make(kube, clock, versions)
    session = start(sessions, alice)
    foreign = swap_before_delete(kube, secret_name(session))
    assert asyncio.run(sessions.end(secret_name(session), None)) is False
    assert kube.get(Kind.SECRET, secret_name(session), NS) is foreign


# --- what the cap counts --------------------------------------------------------------------


def test_a_failed_login_does_not_count_against_the_next(
        kube: FakeKube, clock: ManualClock, versions: ObjectVersions, alice: UserRef) -> None:
    sessions = make(kube, clock, versions, cap=2)
    (first,) = started(kube, clock, sessions, alice, 1)
    create_token = kube.create_token

    async def failing_once(namespace: str, service_account: str, body: Obj) -> Obj:
        kube.create_token = create_token  # type: ignore[method-assign]
        raise Unavailable(Reason.KUBERNETES_UNAVAILABLE, "down for a moment")

    kube.create_token = failing_once  # type: ignore[method-assign]
    clock.now += 1
    with pytest.raises(Unavailable):
        start(sessions, alice)
    (second,) = started(kube, clock, sessions, alice, 1)
    assert sessions_of(kube, alice) == {secret_name(first), secret_name(second)}


def test_a_session_already_gone_when_the_cap_ends_it_is_no_trouble(
        kube: FakeKube, clock: ManualClock, versions: ObjectVersions, alice: UserRef) -> None:
    """And it is not counted (or deleted) again by the logins that follow."""
    sessions = make(kube, clock, versions, cap=1)
    (oldest,) = started(kube, clock, sessions, alice, 1)
    kube.hold_watch = True  # the mirror has not seen it go
    del kube.objects[(Kind.SECRET, NS, secret_name(oldest))]
    started(kube, clock, sessions, alice, 1)
    kube.calls.clear()
    (newest,) = started(kube, clock, sessions, alice, 1)
    assert kube.calls == ["delete Secret", "create Secret", "create TokenRequest"]
    assert sessions_of(kube, alice) == {secret_name(newest)}


@pytest.mark.parametrize("ended_by", ["expiry", "the cap"])
def test_sessions_the_sweeper_ended_do_not_count_while_the_watch_lags(
        kube: FakeKube, clock: ManualClock, versions: ObjectVersions, alice: UserRef,
        ended_by: str) -> None:
    """Four sessions ended by the sweeper still show in a lagging mirror: the next login must
    end one of the two real ones (cap 2), not spend its few deletions on those four."""
    loose = make(kube, clock, versions, cap=1000)
    started(kube, clock, loose, alice, 4)
    if ended_by == "expiry":
        clock.now += 500
    live = started(kube, clock, loose, alice, 2)
    if ended_by == "expiry":
        clock.now += TTL + SKEW - 500  # the first four have expired, the last two not
    sessions = make(kube, clock, versions, cap=2)
    kube.hold_watch = True
    assert asyncio.run(sessions.sweep()) == 4
    (newest,) = started(kube, clock, sessions, alice, 1)
    assert sessions_of(kube, alice) == {secret_name(live[1]), secret_name(newest)}


def test_without_the_watch_a_users_sessions_are_listed_page_by_page(
        kube: FakeKube, clock: ManualClock, versions: ObjectVersions, alice: UserRef,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sessions_module, "SWEEP_PAGE_SIZE", 2)
    sessions = make(kube, clock, versions, cap=3)
    made = started(kube, clock, sessions, alice, 3)
    versions.lost(Kind.SECRET)
    kube.interleave = True  # every call yields, so a listing that never ends times out
    kube.calls.clear()

    async def bounded() -> Session:
        async with asyncio.timeout(5):
            return await sessions.start(alice)

    newest = asyncio.run(bounded())
    assert kube.calls.count("list Secret") == 2
    assert sessions_of(kube, alice) == {*map(secret_name, made[1:]), secret_name(newest)}


# --- the session's times, wherever the concierge runs ---------------------------------------


@pytest.fixture
def far_time_zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The host's local time is UTC+05:30; annotations and expiry must still be UTC."""
    monkeypatch.setenv("TZ", "FAR-05:30")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("far_time_zone")
def test_session_times_are_utc_whatever_the_hosts_time_zone(
        kube: FakeKube, clock: ManualClock, versions: ObjectVersions, alice: UserRef) -> None:
    clock.now = 1_700_000_000.25
    session = start(make(kube, clock, versions), alice)
    secret = kube.get(Kind.SECRET, secret_name(session), NS)
    assert secret is not None
    annotations = secret["metadata"]["annotations"]
    assert annotations[naming.STARTED_ANNOTATION] == "2023-11-14T22:13:20.250000Z"
    assert annotations[naming.EXPIRES_ANNOTATION] == "2023-11-14T22:28:20Z"


@pytest.mark.usefixtures("far_time_zone")
def test_without_an_expiry_from_the_token_request_the_session_lasts_the_ttl(
        kube: FakeKube, clock: ManualClock, versions: ObjectVersions, alice: UserRef) -> None:
    answer_with(kube, lambda status: {"token": status["token"]})
    session = start(make(kube, clock, versions), alice)
    assert session.expiration == dt.datetime.fromtimestamp(clock.now + TTL, dt.UTC)


def test_the_session_expires_when_the_apiserver_says_its_token_does(
        kube: FakeKube, clock: ManualClock, versions: ObjectVersions, alice: UserRef) -> None:
    """The apiserver may issue a shorter token than asked (--service-account-max-token-
    expiration): the client must renew when that one ends, not when we hoped it would."""
    sooner = wire.format_time(dt.datetime.fromtimestamp(clock.now + 600, dt.UTC))
    answer_with(kube, lambda status: {**status, "expirationTimestamp": sooner})
    session = start(make(kube, clock, versions), alice)
    assert wire.format_time(session.expiration) == sooner


def test_an_empty_token_is_a_server_error_and_leaves_no_session(
        kube: FakeKube, clock: ManualClock, versions: ObjectVersions, alice: UserRef) -> None:
    answer_with(kube, lambda status: {**status, "token": ""})
    with pytest.raises(ServerError) as info:
        start(make(kube, clock, versions), alice)
    assert info.value.reason == Reason.KUBERNETES_ERROR
    assert sessions_of(kube, alice) == set()


def answer_with(kube: FakeKube, change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """The TokenRequest's answer, with its `status` changed by `change`."""
    create_token = kube.create_token

    async def changed(namespace: str, service_account: str, body: Obj) -> Obj:
        answer = await create_token(namespace, service_account, body)
        return {**answer, "status": change(answer["status"])}

    kube.create_token = changed  # type: ignore[method-assign]


# --- different users do not wait for each other ------------------------------------------


def test_two_users_sessions_start_side_by_side(kube: FakeKube, clock: ManualClock,
                                               versions: ObjectVersions,
                                               alice: UserRef) -> None:
    bob = user_of(kube, "bob")
    sessions = make(kube, clock, versions)
    kube.interleave = True
    kube.calls.clear()

    async def both() -> None:
        await asyncio.gather(sessions.start(alice), sessions.start(bob))

    asyncio.run(both())
    assert kube.calls[:2] == ["create Secret", "create Secret"]  # neither waited


# --- the sweeper ---------------------------------------------------------------------------


def session_secret(name: str, expires: str, labels: dict[str, str] | None = None) -> Obj:
    return {"metadata": {
        "name": name,
        "labels": {naming.MANAGED_BY_LABEL: naming.MANAGED_BY, naming.SESSION_LABEL: "true",
                   **(labels or {})},
        "annotations": {naming.EXPIRES_ANNOTATION: expires}}, "type": "Opaque"}


def test_expired_sessions_without_a_user_label_are_swept_too(
        kube: FakeKube, clock: ManualClock, versions: ObjectVersions, alice: UserRef) -> None:
    """Ours (managed, session label) but whose user label was lost: still ended on expiry."""
    long_ago = "2020-01-01T00:00:00Z"
    for suffix in ("0000000000000000", "0000000000000001"):  # listed before alice's
        asyncio.run(kube.create(Kind.SECRET, session_secret(
            naming.SESSION_PREFIX + suffix, long_ago), NS))
    old = start(make(kube, clock, versions), alice)
    clock.now += TTL + SKEW + 1
    assert asyncio.run(make(kube, clock, versions).sweep()) == 3
    assert secret_name(old) not in kube.names(Kind.SECRET)
    assert [n for n in kube.names(Kind.SECRET) if n.startswith(naming.SESSION_PREFIX)] == []


@pytest.mark.parametrize("meanwhile", ["deleted", "replaced"])
def test_a_label_less_session_gone_or_replaced_meanwhile_does_not_stop_the_sweep(
        kube: FakeKube, clock: ManualClock, versions: ObjectVersions, meanwhile: str) -> None:
    first, second = (naming.SESSION_PREFIX + s for s in ("0000000000000000", "0000000000000001"))
    for name in (first, second):
        asyncio.run(kube.create(Kind.SECRET, session_secret(name, "2020-01-01T00:00:00Z"), NS))
    if meanwhile == "replaced":
        foreign = swap_before_delete(kube, first)
    else:
        delete = kube.delete

        async def vanished(kind: Kind, name: str, namespace: str | None = None,
                           uid: str | None = None) -> None:
            kube.objects.pop((kind, namespace, first), None)
            await delete(kind, name, namespace, uid)

        kube.delete = vanished  # type: ignore[method-assign]
    assert asyncio.run(make(kube, clock, versions).sweep()) == 1
    assert kube.get(Kind.SECRET, second, NS) is None
    assert kube.get(Kind.SECRET, first, NS) is (foreign if meanwhile == "replaced" else None)


def test_a_session_whose_expiry_is_unreadable_is_swept(
        kube: FakeKube, clock: ManualClock, versions: ObjectVersions) -> None:
    """It cannot be told apart from an expired one, and kept it would stay for ever."""
    name = naming.SESSION_PREFIX + "0123456789abcdef"
    asyncio.run(kube.create(Kind.SECRET, session_secret(name, "next tuesday"), NS))
    assert asyncio.run(make(kube, clock, versions).sweep()) == 1
    assert kube.get(Kind.SECRET, name, NS) is None


def test_a_session_is_swept_only_once_the_clock_skew_has_passed_too(
        kube: FakeKube, clock: ManualClock, versions: ObjectVersions, alice: UserRef) -> None:
    """Its token stays valid to clients with a clock behind ours; ending it early would
    revoke a credential that is still good."""
    sessions = make(kube, clock, versions)
    session = start(sessions, alice)
    clock.now += TTL + SKEW - 1
    assert asyncio.run(sessions.sweep()) == 0
    assert sessions_of(kube, alice) == {secret_name(session)}
    clock.now += 2
    assert asyncio.run(sessions.sweep()) == 1
    assert sessions_of(kube, alice) == set()


def test_the_sweeper_spends_no_call_on_users_within_the_cap(
        kube: FakeKube, clock: ManualClock, versions: ObjectVersions) -> None:
    """Without the watch, trimming a user costs a list of their sessions: only users over
    the cap may cost one, or a sweep would cost a call per user."""
    sessions = make(kube, clock, versions, cap=1)
    for name in ("a", "b", "c"):
        start(sessions, user_of(kube, name))  # exactly at the cap
    versions.lost(Kind.SECRET)
    kube.calls.clear()
    assert asyncio.run(sessions.sweep()) == 0
    assert kube.calls == ["list Secret"]


def test_the_sweeper_trims_by_what_is_left_when_it_gets_to_the_user(
        kube: FakeKube, clock: ManualClock, versions: ObjectVersions, alice: UserRef) -> None:
    """Over the cap when listed, back within it (a logout) by the time it is trimmed: the
    user keeps every remaining session."""
    made = started(kube, clock, make(kube, clock, versions, cap=1000), alice, 3)
    sessions = make(kube, clock, versions, cap=2)
    listing = kube.list

    async def logout_right_after(*args: Any, **kwargs: Any) -> tuple[list[Obj], str | None]:
        page = await listing(*args, **kwargs)
        kube.list = listing  # type: ignore[method-assign]
        await kube.delete(Kind.SECRET, secret_name(made[2]), NS)
        return page

    kube.list = logout_right_after  # type: ignore[method-assign]
    assert asyncio.run(sessions.sweep()) == 0
    assert sessions_of(kube, alice) == {secret_name(made[0]), secret_name(made[1])}


def test_the_sweeper_runs_until_it_is_stopped(kube: FakeKube, clock: ManualClock,
                                              versions: ObjectVersions,
                                              alice: UserRef) -> None:
    sessions = make(kube, clock, versions)
    start(sessions, alice)
    clock.now += TTL + SKEW + 1

    async def run() -> None:
        sweeper = asyncio.create_task(sessions.run_sweeper(0.01))
        try:
            await _until(lambda: sessions_of(kube, alice) == set(), sweeper)
            sweeps = kube.calls.count("list Secret")
            await _until(lambda: kube.calls.count("list Secret") > sweeps, sweeper)  # and on
        finally:
            sweeper.cancel()

    asyncio.run(run())


async def _until(condition: Callable[[], bool], task: asyncio.Task[None]) -> None:
    async with asyncio.timeout(5):
        while not condition():
            assert not task.done(), "the sweeper stopped"
            await asyncio.sleep(0.01)
