"""The Lease holder's elevation controller: expiry, access removal, retention, bounded passes."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from localenv.elevation_fakes import ALICE, BOB, CAROL, GROUP, ElevationServiceEnv, policy_spec
from pinniped_apis import wire
from pinniped_concierge import elevation_controller
from pinniped_concierge.elevation_controller import MAX_CHANGES_PER_PASS, RECHECK_SECONDS
from pinniped_concierge.elevation_service import UNAPPROVED_RETENTION_SECONDS
from pinniped_concierge.kubeapi import ELEVATION_REQUESTS


@pytest.fixture
def env() -> ElevationServiceEnv:
    made = ElevationServiceEnv(pendingTimeoutSeconds=120, retentionSeconds=3600)
    made.policy()
    return made


def sync(env: ElevationServiceEnv) -> int:
    return env.run(env.controller.sync())


def test_a_pass_with_nothing_to_do_changes_and_records_nothing(env: ElevationServiceEnv) -> None:
    env.ask(ALICE)
    env.approved(BOB)
    assert sync(env) == 0
    assert env.audit() == []


def test_a_request_not_approved_in_time_expires(env: ElevationServiceEnv) -> None:
    request_id = env.ask(ALICE)
    env.clock.now += 119
    assert sync(env) == 0
    env.clock.now += 1
    assert sync(env) == 1
    status = env.obj(request_id)["status"]
    assert (status["phase"], status["endReason"]) == ("Expired", "not approved within 120 s")
    assert "endedBy" not in status
    assert "accessRemovedAt" not in status
    (line,) = env.audit()
    assert (line["request"], line["username"], line["id"], line["group"], line["phase"]) == (
        "elevation.expire", "corp:alice", request_id, GROUP, "Expired")
    assert line["outcome"] == "success"
    assert line["endReason"] == "not approved within 120 s"
    assert sync(env) == 0  # once
    assert len(env.audit()) == 1


def test_an_elevation_ends_and_its_access_is_taken_back(env: ElevationServiceEnv) -> None:
    request_id = env.approved(duration=600)
    env.logged_in_with(ALICE, GROUP)
    env.session(ALICE, "s-elevated", request_id)
    env.session(ALICE, "s-ordinary")
    env.clock.now += 599
    assert sync(env) == 0
    assert GROUP in env.role_groups(ALICE)
    env.clock.now += 1
    assert sync(env) == 2
    status = env.obj(request_id)["status"]
    assert (status["phase"], status["endReason"]) == ("Expired", "its duration ended")
    assert "accessRemovedAt" in status
    assert GROUP not in env.role_groups(ALICE)
    assert env.sessions() == ["s-ordinary"]
    expire, removed = env.audit()
    assert expire["request"] == "elevation.expire"
    assert (removed["request"], removed["username"], removed["id"], removed["group"],
            removed["sessionsEnded"], removed["roleChanged"]) == (
        "elevation.access_removed", "corp:alice", request_id, GROUP, "1", "true")


def test_a_login_racing_the_end_is_caught_by_the_recheck(env: ElevationServiceEnv) -> None:
    """Another replica's login read the grant just before the revoke: it writes the group back
    and mints a session a moment later. The re-check in the next 30 s takes both away."""
    request_id = env.approved()
    env.decide(CAROL, request_id, "revoke")
    assert "accessRemovedAt" in env.obj(request_id)["status"]
    assert sync(env) == 0  # done by the revoke already: nothing to record
    env.logged_in_with(ALICE, GROUP)
    env.session(ALICE, "s-raced", request_id)
    env.clock.now += RECHECK_SECONDS - 1
    assert sync(env) == 1
    assert GROUP not in env.role_groups(ALICE)
    assert env.sessions() == []
    (line,) = env.audit()
    assert (line["request"], line["sessionsEnded"], line["roleChanged"]) == (
        "elevation.access_removed", "1", "true")
    env.logged_in_with(ALICE, GROUP)
    env.clock.now += 1  # 30 s after the end: no more re-checks (a login now gets no grant)
    env.kube.calls.clear()
    assert sync(env) == 0
    assert GROUP in env.role_groups(ALICE)
    assert "list Secret" not in env.kube.calls


def test_another_active_elevation_for_the_group_keeps_it(env: ElevationServiceEnv) -> None:
    first = env.approved(duration=60)
    env.logged_in_with(ALICE, GROUP)
    env.clock.now += 60
    assert sync(env) == 2
    second = env.approved(duration=600)
    env.logged_in_with(ALICE, GROUP)
    env.session(ALICE, "s-first", first)
    env.session(ALICE, "s-second", second)
    env.clock.now += 5  # still within the first one's re-check
    assert sync(env) == 1  # its stray session only
    assert GROUP in env.role_groups(ALICE)
    assert env.sessions() == ["s-second"]


def test_an_access_removal_that_failed_on_revoke_is_done_by_the_controller(
        env: ElevationServiceEnv) -> None:
    request_id = env.approved()
    env.logged_in_with(ALICE, GROUP)
    withdraw = env.user_objects.withdraw

    async def down(username: str, groups: Any) -> bool:
        from pinniped_concierge.errors import Reason, Unavailable

        raise Unavailable(Reason.KUBERNETES_UNAVAILABLE, "down")

    env.user_objects.withdraw = down  # type: ignore[method-assign]
    env.decide(CAROL, request_id, "revoke")
    assert "accessRemovedAt" not in env.obj(request_id)["status"]
    assert sync(env) == 0  # still down: logged, retried next time
    env.user_objects.withdraw = withdraw  # type: ignore[method-assign]
    env.clock.now += RECHECK_SECONDS * 10  # however late: not removed yet, so still due
    assert sync(env) == 1
    assert GROUP not in env.role_groups(ALICE)
    assert "accessRemovedAt" in env.obj(request_id)["status"]


def test_ended_requests_are_deleted_after_the_retention(env: ElevationServiceEnv) -> None:
    denied = env.ask(ALICE)
    env.decide(CAROL, denied, "deny")
    revoked = env.approved(BOB)
    env.decide(BOB, revoked, "revoke")
    open_one = env.ask(ALICE)
    env.clock.now += 3599
    assert sync(env) == 1  # only the open one's expiry (pending timeout)
    env.clock.now += 1
    assert sync(env) == 2
    remaining = [name for (_, _, name) in env.kube.namespaced_custom]
    assert remaining == [open_one]  # expired only at the pass before: kept its own retention
    deletes = [line for line in env.audit() if line["request"] == "elevation.delete"]
    assert sorted(line["id"] for line in deletes) == sorted([denied, revoked])


def test_requests_never_approved_are_deleted_within_the_hour() -> None:
    """They granted nothing, and the audit log keeps their story: an hour after they ended
    they go, so a requester who asks and withdraws in a loop gets their room back (an
    approved one stays for the whole retention)."""
    env = ElevationServiceEnv(pendingTimeoutSeconds=60, retentionSeconds=86400)
    env.policy("other", policy_spec("corp:other"))
    env.policy()
    denied = env.ask(ALICE)
    env.decide(CAROL, denied, "deny")
    withdrawn = env.ask(BOB)
    env.decide(BOB, withdrawn, "revoke")
    timed_out = env.ask(ALICE, "corp:other")
    env.clock.now += 60
    assert sync(env) == 1  # its expiry
    approved = env.approved(BOB, duration=60)
    env.decide(BOB, approved, "revoke")
    env.clock.now += UNAPPROVED_RETENTION_SECONDS - 61
    assert sync(env) == 0
    env.clock.now += 1
    assert sync(env) == 2
    assert {line["id"] for line in env.audit() if line["request"] == "elevation.delete"} == {
        denied, withdrawn}
    env.clock.now += 60
    assert sync(env) == 1
    assert [name for (_, _, name) in env.kube.namespaced_custom] == [approved]
    env.clock.now = env.stored(approved).ended_at() + 86400  # type: ignore[operator]
    assert sync(env) == 1
    assert env.kube.namespaced_custom == {}
    assert timed_out


def test_a_retention_shorter_than_an_hour_applies_to_all() -> None:
    env = ElevationServiceEnv(retentionSeconds=600)
    env.policy()
    denied = env.ask(ALICE)
    env.decide(CAROL, denied, "deny")
    env.clock.now += 599
    assert sync(env) == 0
    env.clock.now += 1
    assert sync(env) == 1
    assert env.kube.namespaced_custom == {}


def test_a_request_whose_access_was_never_removed_is_not_deleted(env: ElevationServiceEnv) -> None:
    request_id = env.approved()
    env.decide(CAROL, request_id, "revoke")
    obj = env.obj(request_id)
    del obj["status"]["accessRemovedAt"]
    env.clock.now += 7200

    async def failing(request: Any) -> Any:
        from pinniped_concierge.errors import Reason, ServerError

        raise ServerError(Reason.KUBERNETES_ERROR, "forbidden")

    env.service.remove_access = failing  # type: ignore[method-assign]
    assert sync(env) == 0
    assert (ELEVATION_REQUESTS.plural, obj["metadata"]["namespace"],
            request_id) in env.kube.namespaced_custom


def test_one_pass_makes_a_bounded_number_of_changes() -> None:
    env = ElevationServiceEnv(pendingTimeoutSeconds=60, maxOpenPerUser=100, maxPerUser=100,
                       maxRequests=2000)
    count = MAX_CHANGES_PER_PASS + 10
    for n in range(count):
        env.policy(f"p{n}", policy_spec(f"corp:g{n}"))
        env.ask(ALICE, f"corp:g{n}")
    env.clock.now += 60
    env.kube.calls.clear()
    assert sync(env) == MAX_CHANGES_PER_PASS
    assert env.kube.calls.count("replace ElevationRequest") == MAX_CHANGES_PER_PASS
    assert sync(env) == 10
    assert sync(env) == 0
    assert len(env.audit()) == count


def test_rechecks_never_delay_a_new_removal() -> None:
    """100 elevations: 50 end at once, 50 ten seconds later, while the first 50 are still in
    their re-check. Re-checks that find nothing cost no write from the budget, and removals
    not done yet come first, so the second batch loses its group within one pass of its
    end, as the first did."""
    env = ElevationServiceEnv()
    env.policy()
    users = [wire.Identity(f"corp:u{n}", ("corp:sre",)) for n in range(100)]
    for n, user in enumerate(users):
        env.approved(user, duration=600 + (n // 50) * 10)
        env.logged_in_with(user, GROUP)
    start = env.clock.now
    removed_after: dict[str, float] = {}
    for _ in range(12):  # a pass every 2 s, from the first batch's end
        env.clock.now = start + 600 + 2 * _
        sync(env)
        for n, user in enumerate(users):
            if user.username not in removed_after and GROUP not in env.role_groups(user):
                removed_after[user.username] = env.clock.now - (start + 600 + (n // 50) * 10)
    assert len(removed_after) == 100
    late = sorted(removed_after.values())
    assert late[-1] <= 2, late  # within one sync interval of its end, both batches
    assert len(env.audit()) == 200  # 100 expiries and 100 removals; no-op re-checks: none


def test_a_pass_attempts_a_bounded_number_of_rechecks(
        env: ElevationServiceEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    """Re-checks that write nothing are not charged to the writes; their reads are bounded
    on their own."""
    for user in (ALICE, BOB, wire.Identity("corp:erin", ("corp:sre",))):
        request_id = env.approved(user)
        env.decide(user, request_id, "revoke")
    monkeypatch.setattr(elevation_controller, "MAX_ATTEMPTS_PER_PASS", 2)
    attempts: list[str] = []
    remove = env.service.remove_access

    async def counted(request: Any) -> Any:
        attempts.append(request.name)
        return await remove(request)

    env.service.remove_access = counted  # type: ignore[method-assign]
    assert sync(env) == 0
    assert len(attempts) == 2


def test_run_keeps_going_when_a_pass_fails(env: ElevationServiceEnv,
                                           monkeypatch: pytest.MonkeyPatch,
                                           caplog: pytest.LogCaptureFixture) -> None:
    """An outage is logged and retried at the next interval; run() itself never fails."""
    request_id = env.ask(ALICE)
    env.clock.now += 120
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        env.kube.unavailable = len(slept) == 1
        if len(slept) == 3:
            raise asyncio.CancelledError

    monkeypatch.setattr(asyncio, "sleep", sleep)
    with caplog.at_level(logging.WARNING, "concierge.elevation"), \
            pytest.raises(asyncio.CancelledError):
        env.run(env.controller.run())
    assert slept == [2, 2, 2]
    assert "elevation sync failed, will retry in 2 s" in caplog.text
    assert env.obj(request_id)["status"]["phase"] == "Expired"
