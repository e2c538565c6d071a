"""The elevation API's decisions, against FakeKube: who may ask, approve, deny and revoke."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from typing import Any

import pytest

from localenv.elevation_fakes import (
    ALICE,
    BOB,
    CAROL,
    DAVE,
    GROUP,
    MALLORY,
    NS,
    ElevationServiceEnv,
    event,
    policy_spec,
)
from pinniped_apis import wire
from pinniped_apis.constants import ELEVATION_ID_PATTERN
from pinniped_apis.elevation import ElevationCreate, ElevationDecision
from pinniped_concierge import naming
from pinniped_concierge.elevation_service import (
    MAX_LIST_BYTES,
    MAX_LISTED,
    UNAPPROVED_RETENTION_SECONDS,
)
from pinniped_concierge.errors import Reason, Refused, Unavailable
from pinniped_concierge.kubeapi import ELEVATION_POLICIES, Conflict, Obj


@pytest.fixture
def env() -> ElevationServiceEnv:
    made = ElevationServiceEnv()
    made.policy()
    return made


def refused(call: Any) -> Refused:
    with pytest.raises(Refused) as caught:
        ElevationServiceEnv.run(call)
    return caught.value


def account(who: wire.Identity) -> str:
    """The ServiceAccount name the TokenReview says a credential of `who` belongs to."""
    return naming.user_object_name(who.username, NS)


def create(env: ElevationServiceEnv, caller: wire.Identity, **body: Any) -> Any:
    return env.service.create(caller, ElevationCreate.model_validate(
        {"group": GROUP, "reason": "incident 42"} | body), event())


# --- create -------------------------------------------------------------------------


def test_a_request_records_the_reviewed_caller_as_requester(env: ElevationServiceEnv) -> None:
    audit = event()
    view = env.run(env.service.create(ALICE, ElevationCreate.model_validate(
        {"group": GROUP, "reason": "incident 42"}), audit))
    assert re.fullmatch(ELEVATION_ID_PATTERN, view.id)
    assert (view.requester, view.group, view.phase) == ("corp:alice", GROUP, "Pending")
    assert view.duration_seconds == 3600  # the policy's maximum, when not asked for
    assert not view.may_approve
    assert view.may_revoke
    obj = env.obj(view.id)
    assert obj["spec"]["requester"] == {"username": "corp:alice", "groups": ["corp:sre"]}
    assert obj["status"]["phase"] == "Pending"
    assert obj["metadata"]["labels"] == naming.user_labels("corp:alice", NS)
    assert audit.extra == {"group": GROUP, "requestReason": "incident 42", "id": view.id,
                           "phase": "Pending"}


@pytest.mark.parametrize(("group", "spec", "code", "reason", "says"), [
    ("corp:nothing", None, 400, Reason.NO_ELEVATION_POLICY,
     "no ElevationPolicy governs group corp:nothing; ask your cluster administrator"),
    (GROUP, {**policy_spec(), "approvalsRequired": 0}, 400, Reason.NO_ELEVATION_POLICY,
     "is not valid"),
])
def test_a_group_without_a_usable_policy_is_refused(group: str, spec: Any, code: int,
                                                     reason: Reason, says: str) -> None:
    env = ElevationServiceEnv()
    env.policy(spec=spec if spec is not None else policy_spec())
    error = refused(create(env, ALICE, group=group))
    assert (error.code, error.reason) == (code, reason)
    assert says in error.message
    assert env.kube.namespaced_custom == {}


def test_only_requesters_may_ask(env: ElevationServiceEnv) -> None:
    error = refused(create(env, MALLORY))
    assert (error.code, error.reason) == (403, Reason.NOT_A_REQUESTER)
    assert "does not list you among its requesters" in error.message
    named = ElevationServiceEnv()
    named.policy(spec={**policy_spec(), "requesters": {"users": ["corp:mallory"]}})
    assert named.ask(MALLORY)  # by name, not only by group


def test_a_duration_over_the_policys_maximum_is_refused(env: ElevationServiceEnv) -> None:
    error = refused(create(env, ALICE, durationSeconds=3601))
    assert (error.code, error.reason) == (400, Reason.DURATION_TOO_LONG)
    assert "maximum of 3600 s" in error.message
    assert "3600 s or less" in error.message
    assert env.run(create(env, ALICE, durationSeconds=3600)).duration_seconds == 3600


def test_one_open_request_per_group_and_user(env: ElevationServiceEnv) -> None:
    first = env.ask(ALICE)
    error = refused(create(env, ALICE))
    assert (error.code, error.reason) == (409, Reason.ELEVATION_ALREADY_OPEN)
    assert first in error.message
    assert env.ask(BOB)  # another user may
    env.decide(ALICE, first, "revoke")
    assert env.ask(ALICE) != first  # once it ended, a new one


def test_an_ended_elevation_no_longer_counts_as_open(env: ElevationServiceEnv) -> None:
    first = env.approved(duration=60)
    env.clock.now += 61  # over, even before the controller writes Expired
    assert env.ask(ALICE) != first


@pytest.mark.parametrize(("limit", "says"), [
    ({"maxOpenPerUser": 2}, "you have 2 requests open, the most allowed"),
    # maxPerUser counts open ones too; with nothing ended yet, the usual wait.
    ({"maxPerUser": 2}, "you have 2 elevation requests, the most one person may have"),
])
def test_open_requests_per_user_are_limited(limit: dict[str, int], says: str) -> None:
    env = ElevationServiceEnv(**limit)
    for n in range(3):
        env.policy(f"p{n}", policy_spec(f"corp:g{n}"))
    env.ask(ALICE, "corp:g0")
    env.ask(ALICE, "corp:g1")
    error = refused(create(env, ALICE, group="corp:g2"))
    assert (error.code, error.reason, error.retry_after) == (
        429, Reason.ELEVATION_LIMIT_REACHED, 60)
    assert says in error.message
    assert env.ask(BOB, "corp:g2")


def test_one_user_cannot_fill_the_requests_by_asking_and_withdrawing() -> None:
    """Ended requests count towards maxPerUser until they are deleted, so a loop of create
    and revoke stops at the user's own cap, long before it fills maxRequests for everyone."""
    env = ElevationServiceEnv(maxPerUser=3, maxRequests=10)
    env.policy()
    for _ in range(3):
        env.decide(ALICE, env.ask(ALICE), "revoke")
    error = refused(create(env, ALICE))
    assert (error.code, error.reason) == (429, Reason.ELEVATION_LIMIT_REACHED)
    assert "you have 3 elevation requests, the most one person may have" in error.message
    assert "wait for ended ones to be cleaned up (the next in about 60 min)" in error.message
    # Never approved: deleted an hour after it ended (then the next controller pass).
    assert error.retry_after == UNAPPROVED_RETENTION_SECONDS + 2
    assert len(env.kube.namespaced_custom) == 3
    assert env.ask(BOB)  # everyone else may still ask
    env.clock.now += 1000
    later = refused(create(env, ALICE))
    assert later.retry_after == UNAPPROVED_RETENTION_SECONDS - 1000 + 2
    assert "(the next in about 43 min)" in later.message


def test_requests_in_all_are_limited() -> None:
    env = ElevationServiceEnv(maxRequests=2)
    env.policy()
    env.ask(ALICE)
    env.ask(BOB)
    error = refused(create(env, wire.Identity("corp:erin", ("corp:sre",))))
    assert (error.code, error.reason) == (429, Reason.ELEVATION_LIMIT_REACHED)
    assert error.retry_after == 60
    assert len(env.kube.namespaced_custom) == 2


def test_policies_not_known_refuse_with_503(env: ElevationServiceEnv) -> None:
    env.kube.unavailable = True  # no watch up, and listing them fails
    with pytest.raises(Unavailable) as caught:
        env.run(create(env, ALICE))
    assert caught.value.reason == Reason.ELEVATION_POLICIES_UNKNOWN


# --- approve ------------------------------------------------------------------------


def test_the_requester_cannot_approve_their_own_request(env: ElevationServiceEnv) -> None:
    env.policy(spec={**policy_spec(), "approvers": {"users": ["corp:alice"]}})
    request_id = env.ask(ALICE)  # alice is an approver too, and still may not
    error = refused(env.service.decide(ALICE, request_id, "approve", None, event()))
    assert (error.code, error.reason) == (403, Reason.SELF_APPROVAL)
    assert error.message == "you cannot approve your own request; ask one of the approvers"
    assert env.obj(request_id)["status"]["phase"] == "Pending"


def test_someone_who_is_not_an_approver_is_told_nothing_exists(env: ElevationServiceEnv) -> None:
    request_id = env.ask(ALICE)
    for caller in (BOB, MALLORY):
        for action in ("approve", "deny", "revoke"):
            error = refused(env.service.decide(caller, request_id, action, None, event()))
            assert (error.code, error.reason) == (404, Reason.ELEVATION_NOT_FOUND)
            assert error.message == (f"no elevation request {request_id} that you may see: "
                                     "only its requester and the approvers of its group can "
                                     "see or decide it; check the id with 'pinniped elevate "
                                     "list'")
    missing = refused(env.service.decide(CAROL, "elev-0000000000000000", "approve", None,
                                         event()))
    assert missing.message.startswith("no elevation request elev-0000000000000000")
    assert env.obj(request_id)["status"]["phase"] == "Pending"


def test_an_approver_approves_and_the_clock_starts(env: ElevationServiceEnv) -> None:
    request_id = env.ask(ALICE, duration=600)
    audit = event()
    view = env.run(env.service.decide(CAROL, request_id, "approve", None, audit))
    assert view.phase == "Approved"
    status = env.obj(request_id)["status"]
    assert status["approvals"] == [{"user": "corp:carol",
                                    "at": wire.format_time(_at(env.clock.now))}]
    assert status["approvedAt"] == wire.format_time(_at(env.clock.now))
    assert status["expiresAt"] == wire.format_time(_at(env.clock.now + 600))
    assert audit.extra == {"id": request_id, "group": GROUP, "phase": "Approved"}
    again = refused(env.service.decide(CAROL, request_id, "approve", None, event()))
    assert (again.code, again.reason) == (409, Reason.ALREADY_APPROVED)
    late = refused(env.service.decide(DAVE, request_id, "approve", None, event()))
    assert (late.code, late.reason) == (409, Reason.ELEVATION_ENDED)
    assert "is Approved, not Pending" in late.message


def test_two_approvals_required_means_two_distinct_approvers() -> None:
    env = ElevationServiceEnv()
    env.policy(spec=policy_spec(approvals_required=2))
    request_id = env.ask(ALICE)
    assert env.decide(CAROL, request_id, "approve") == "Pending"
    twice = refused(env.service.decide(CAROL, request_id, "approve", None, event()))
    assert (twice.code, twice.reason) == (409, Reason.ALREADY_APPROVED)
    assert "2 distinct approvers" in twice.message
    assert env.obj(request_id)["status"]["phase"] == "Pending"
    assert env.decide(DAVE, request_id, "approve") == "Approved"
    assert [a["user"] for a in env.obj(request_id)["status"]["approvals"]] == [
        "corp:carol", "corp:dave"]


def test_approval_is_judged_under_the_current_policy(env: ElevationServiceEnv) -> None:
    request_id = env.ask(ALICE)
    env.policy(spec={**policy_spec(), "approvers": {"users": ["corp:dave"]}})
    assert refused(env.service.decide(CAROL, request_id, "approve", None,
                                      event())).code == 404
    assert env.decide(DAVE, request_id, "approve") == "Approved"


def test_a_request_past_the_pending_timeout_cannot_be_approved() -> None:
    env = ElevationServiceEnv(pendingTimeoutSeconds=60)
    env.policy()
    request_id = env.ask(ALICE)
    env.clock.now += 60
    error = refused(env.service.decide(CAROL, request_id, "approve", None, event()))
    assert (error.code, error.reason) == (409, Reason.ELEVATION_ENDED)
    assert "is Expired" in error.message


# --- deny and revoke ------------------------------------------------------------------


def test_an_approver_denies_with_a_reason(env: ElevationServiceEnv) -> None:
    request_id = env.ask(ALICE)
    own = refused(env.service.decide(ALICE, request_id, "deny", None, event()))
    assert (own.code, own.reason) == (403, Reason.SELF_APPROVAL)
    assert f"pinniped elevate revoke {request_id}" in own.message
    view = env.run(env.service.decide(CAROL, request_id, "deny",
                                      ElevationDecision(reason="not during the freeze"),
                                      event()))
    assert (view.phase, view.ended_by, view.end_reason) == (
        "Denied", "corp:carol", "not during the freeze")
    after = refused(env.service.decide(DAVE, request_id, "approve", None, event()))
    assert (after.code, after.reason) == (409, Reason.ELEVATION_ENDED)
    assert refused(env.service.decide(ALICE, request_id, "revoke", None,
                                      event())).reason == Reason.ELEVATION_ENDED


def test_the_requester_revokes_a_pending_request(env: ElevationServiceEnv) -> None:
    request_id = env.ask(ALICE)
    view = env.run(env.service.decide(ALICE, request_id, "revoke", None, event()))
    assert (view.phase, view.ended_by, view.end_reason) == (
        "Revoked", "corp:alice", "revoked by corp:alice")
    assert "accessRemovedAt" not in env.obj(request_id)["status"]  # it never granted anything


def test_an_approver_revokes_an_active_elevation_and_access_goes_at_once(
        env: ElevationServiceEnv) -> None:
    request_id = env.approved()
    env.logged_in_with(ALICE, GROUP)
    env.session(ALICE, "s-elevated", request_id)
    env.session(ALICE, "s-ordinary")
    env.session(ALICE, "s-other", "elev-1111111111111111")
    audit = event()
    view = env.run(env.service.decide(CAROL, request_id, "revoke",
                                      ElevationDecision(reason="done"), audit))
    assert (view.phase, view.ended_by, view.end_reason) == ("Revoked", "corp:carol", "done")
    assert GROUP not in env.role_groups(ALICE)
    assert "corp:sre" in env.role_groups(ALICE)
    assert env.sessions() == ["s-ordinary", "s-other"]
    assert env.obj(request_id)["status"]["accessRemovedAt"] == wire.format_time(
        _at(env.clock.now))
    assert audit.extra["sessionsEnded"] == "1"
    assert (audit.extra["phase"], audit.extra["endReason"]) == ("Revoked", "done")
    assert refused(env.service.decide(ALICE, request_id, "revoke", None,
                                      event())).code == 409


def test_a_mirror_lagging_behind_the_revoke_does_not_keep_the_group(
        env: ElevationServiceEnv) -> None:
    """The store still shows the request Approved (its watch has not delivered the revoke):
    that stale grant is the request being ended, and must not count as another one."""
    request_id = env.approved()
    env.logged_in_with(ALICE, GROUP)
    env.store.requests_target.reset([dict(env.obj(request_id))])  # a mirror, frozen here
    assert env.decide(CAROL, request_id, "revoke") == "Revoked"
    assert env.run(env.store.requests())[0].status.phase == "Approved"  # still stale
    assert GROUP not in env.role_groups(ALICE)


def test_the_requester_revokes_their_active_elevation(env: ElevationServiceEnv) -> None:
    request_id = env.approved()
    env.logged_in_with(ALICE, GROUP)
    assert env.decide(ALICE, request_id, "revoke") == "Revoked"
    assert GROUP not in env.role_groups(ALICE)


def test_a_lost_race_is_decided_again_from_a_fresh_read(env: ElevationServiceEnv) -> None:
    """Carol and dave approve at once (two required): both approvals count, neither is lost."""
    env.policy(spec=policy_spec(approvals_required=2))
    request_id = env.ask(ALICE)
    replace = env.kube.replace_namespaced_custom
    raced: list[bool] = []

    async def racing(resource: Any, namespace: str, name: str, body: Obj) -> Obj:
        if not raced:
            raced.append(True)
            await env.service.decide(DAVE, request_id, "approve", None, event())
        return await replace(resource, namespace, name, body)

    env.kube.replace_namespaced_custom = racing  # type: ignore[method-assign]
    assert env.decide(CAROL, request_id, "approve") == "Approved"
    assert [a["user"] for a in env.obj(request_id)["status"]["approvals"]] == [
        "corp:dave", "corp:carol"]
    assert env.kube.calls.count("read ElevationRequest") == 3  # carol's twice, dave's once


def test_a_request_that_keeps_changing_gives_up_with_503(env: ElevationServiceEnv) -> None:
    request_id = env.ask(ALICE)

    async def always_stale(resource: Any, namespace: str, name: str, body: Obj) -> Obj:
        raise Conflict("resourceVersion precondition failed")

    env.kube.replace_namespaced_custom = always_stale  # type: ignore[method-assign]
    with pytest.raises(Unavailable) as caught:
        env.run(env.service.decide(CAROL, request_id, "approve", None, event()))
    assert caught.value.retry_after_seconds == 1
    assert env.kube.calls.count("read ElevationRequest") == 3


@pytest.mark.parametrize("request_id", ["elev-XYZ", "../secrets", "elev-" + "a" * 17, "",
                                        "x" * 16_000])
def test_an_id_that_cannot_be_ours_is_not_found_without_an_api_call(
        env: ElevationServiceEnv, request_id: str) -> None:
    """Whatever the path held is not echoed, in the answer or in the audit line (a short hash
    of it is, to correlate)."""
    env.kube.calls.clear()
    audit = event()
    error = refused(env.service.decide(CAROL, request_id, "approve", None, audit))
    assert (error.code, error.reason) == (404, Reason.ELEVATION_NOT_FOUND)
    assert error.message == ("no elevation request has the id you gave: ids are elev- and 16 "
                             "hexadecimal digits; check the id with 'pinniped elevate list'")
    digest = hashlib.sha256(request_id.encode()).hexdigest()[:12]
    assert audit.extra == {"id": f"malformed:{digest}"}
    assert env.kube.calls == []


def test_a_request_not_made_by_this_concierge_is_never_acted_on(env: ElevationServiceEnv) -> None:
    request_id = env.ask(ALICE)
    env.obj(request_id)["metadata"]["labels"][naming.NAMESPACE_LABEL] = "elsewhere"
    assert refused(env.service.decide(CAROL, request_id, "approve", None,
                                      event())).code == 404
    forged = env.obj(request_id)
    forged["metadata"]["labels"] = naming.user_labels("corp:alice", NS)
    forged["spec"]["requester"]["username"] = "corp:carol"  # label of alice, says carol
    assert refused(env.service.decide(DAVE, request_id, "approve", None,
                                      event())).code == 404
    assert env.obj(request_id)["status"]["phase"] == "Pending"


# --- list and state ------------------------------------------------------------------


def test_lists_show_own_requests_and_those_to_decide(env: ElevationServiceEnv) -> None:
    alices = env.ask(ALICE)
    env.clock.now += 5
    bobs = env.ask(BOB)
    listing = env.run(env.service.list(CAROL, event()))
    assert [v.id for v in listing.items] == [bobs, alices]  # newest first
    assert all(v.may_approve and v.may_revoke for v in listing.items)
    assert [v.id for v in env.run(env.service.list(ALICE, event())).items] == [alices]
    assert env.run(env.service.list(MALLORY, event())).items == []
    env.decide(CAROL, alices, "approve")
    (view,) = [v for v in env.run(env.service.list(DAVE, event())).items if v.id == alices]
    assert (view.phase, view.may_approve, view.may_revoke) == ("Approved", False, True)
    assert [a.user for a in view.approvals] == ["corp:carol"]


def test_state_names_pending_and_active_requests_of_the_caller_only(
        env: ElevationServiceEnv) -> None:
    env.policy("other", policy_spec("corp:other"))
    pending = env.ask(ALICE, "corp:other")
    active = env.approved(duration=600)
    env.ask(BOB)
    audit = event()
    state = env.run(env.service.state(account(ALICE), audit))
    assert state.pending == [pending]
    assert [(a.id, a.group, a.expires_at.timestamp()) for a in state.active] == [
        (active, GROUP, float(int(env.clock.now) + 600))]
    assert (audit.extra["pending"], audit.extra["active"]) == ("1", "1")
    env.clock.now += 600
    later = env.run(env.service.state(account(ALICE), event()))
    assert (later.pending, later.active) == ([pending], [])
    assert env.run(env.service.state(account(MALLORY), event())).model_dump() == {
        "pending": [], "active": []}


def test_state_agrees_with_logins_when_a_policy_goes_or_changes_its_group(
        env: ElevationServiceEnv) -> None:
    """A login grants only still-governed groups (`ElevationStore.active_for`); the state
    must say the same, or the plugin sees a difference on every kubectl call and logs in
    again each time."""
    account = naming.user_object_name(ALICE.username, NS)
    env.policy("other", policy_spec("corp:other"))
    kept = env.approved(duration=600)
    moved = env.ask(ALICE, "corp:other", duration=600)
    env.decide(CAROL, moved, "approve")

    def state_and_login() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        state = env.run(env.service.state(account, event()))
        login = env.run(env.store.active_for(ALICE.username, env.clock.now))
        return [(a.id, a.group) for a in state.active], [(g.id, g.group) for g in login]

    assert state_and_login() == ([(moved, "corp:other"), (kept, GROUP)],) * 2
    env.policy("other", policy_spec("corp:renamed"))  # the policy now governs another group
    assert state_and_login() == ([(kept, GROUP)],) * 2
    env.kube.delete_custom(ELEVATION_POLICIES, "prod-admins")
    assert state_and_login() == ([], [])


def test_state_is_found_by_the_service_account_alone(env: ElevationServiceEnv) -> None:
    """The app hands over only the ServiceAccount the TokenReview named: the user's requests
    are those whose requester it was made for; anything else names nobody's."""
    pending = env.ask(ALICE)
    env.ask(BOB)
    audit = event()
    state = env.run(env.service.state(naming.user_object_name(ALICE.username, NS), audit))
    assert (state.pending, state.active) == ([pending], [])
    assert (audit.username, audit.extra["pending"], audit.extra["active"]) == (
        ALICE.username, "1", "0")
    for account in (naming.user_object_name(ALICE.username, "elsewhere"),
                    naming.USER_OBJECT_PREFIX + "not-a-key,x=y", naming.USER_OBJECT_PREFIX):
        nobody = event()
        assert env.run(env.service.state(account, nobody)).model_dump() == {
            "pending": [], "active": []}
        assert nobody.username is None


def _many_requests(env: ElevationServiceEnv, count: int, reason: str) -> list[str]:
    """`count` of alice's requests, ended by carol with `reason`, a second apart (the limits
    on creating them are not what is tested here)."""
    ids = []
    for _ in range(count):
        made = env.run(env.service._create_object(ALICE, GROUP, reason, 600))
        env.run(env.service.decide(CAROL, made.name, "deny", ElevationDecision(reason=reason),
                                   event()))
        ids.append(made.name)
        env.clock.now += 1
    return ids


def test_a_list_answer_stays_well_under_the_clis_read_limit() -> None:
    """400 requests with the longest reasons of characters sent escaped (six bytes each): the
    answer holds the newest that fit in MAX_LIST_BYTES, and says how many it left out."""
    env = ElevationServiceEnv(maxRequests=1000)
    env.policy()
    ids = _many_requests(env, 400, "\u20ac" * 512)
    audit = event()
    listing = env.run(env.service.list(CAROL, audit))
    size = len(json.dumps(listing.to_wire(), ensure_ascii=True, separators=(",", ":")))
    assert MAX_LIST_BYTES - 8 * 1024 < size <= MAX_LIST_BYTES + 64 < 1024 * 1024
    shown = [v.id for v in listing.items]
    assert shown == ids[::-1][:len(shown)]  # newest first, without gaps
    assert 0 < len(shown) < 400
    assert audit.extra == {"listed": str(len(shown)), "leftOut": str(400 - len(shown))}
    assert listing.omitted == 400 - len(shown)  # the answer says so too


def test_a_list_answer_holds_at_most_max_listed_items() -> None:
    env = ElevationServiceEnv(maxRequests=1000)
    env.policy()
    ids = _many_requests(env, MAX_LISTED + 10, "x")
    audit = event()
    listing = env.run(env.service.list(CAROL, audit))
    assert [v.id for v in listing.items] == ids[::-1][:MAX_LISTED]
    assert listing.omitted == 10
    assert audit.extra == {"listed": str(MAX_LISTED), "leftOut": "10"}
    assert len(env.run(env.service.list(ALICE, event())).items) == MAX_LISTED


def _at(when: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(when, dt.UTC)
