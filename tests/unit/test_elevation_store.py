"""The elevation store: policies and requests from memory, failing closed where it must.

The mirrors are fed by `FakeKube.watch_custom`, as the real list-then-watch
would; without a watch the store lists from the (fake) API on each call.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from localenv.fixtures_concierge import FakeKube, ManualClock
from pinniped_apis import rfc3339
from pinniped_apis.elevation import ElevationRequestStatus
from pinniped_concierge import naming
from pinniped_concierge.config import ElevationConfig
from pinniped_concierge.elevation_store import ElevationInput, ElevationStore, Grant, read_request
from pinniped_concierge.errors import Reason, Unavailable
from pinniped_concierge.kubeapi import ELEVATION_POLICIES, ELEVATION_REQUESTS, Conflict, NotFound

NS = "pinniped-concierge"
NOW = 1_700_000_000.0
ALICE, BOB = "corp:alice", "corp:bob"


def when(t: float) -> str:
    return rfc3339.format_time(dt.datetime.fromtimestamp(t, dt.UTC))


def policy(group: str, **extra: Any) -> dict[str, Any]:
    return {"group": group, "requesters": {"groups": ["corp:sre"]},
            "approvers": {"users": ["corp:carol"]}} | extra


def request_body(name: str, username: str = ALICE, group: str = "corp:prod", *,
                 phase: str = "Approved", expires: float | None = NOW + 600,
                 namespace: str = NS) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if phase == "Approved" and expires is not None:
        status |= {"approvedAt": when(NOW - 60), "expiresAt": when(expires),
                   "approvals": [{"user": "corp:carol", "at": when(NOW - 60)}]}
    return {"apiVersion": ELEVATION_REQUESTS.api_version, "kind": ELEVATION_REQUESTS.kind,
            "metadata": {"name": name, "labels": naming.user_labels(username, namespace)},
            "spec": {"group": group, "reason": "incident 42", "durationSeconds": 600,
                     "requester": {"username": username, "groups": ["corp:sre"]}},
            "status": status}


def put(kube: FakeKube, body: dict[str, Any]) -> dict[str, Any]:
    return asyncio.run(kube.create_namespaced_custom(ELEVATION_REQUESTS, NS, body))


def watched(kube: FakeKube, monotonic: ManualClock | None = None,
            **limits: int) -> ElevationStore:
    """A store fed by watches of both kinds, as the server runs it."""
    store = ElevationStore(kube, NS, ElevationConfig(**limits),
                           monotonic=monotonic or ManualClock())
    store.watch_sources(_Client())
    kube.watch_custom(ELEVATION_POLICIES, store.policies_target)
    kube.watch_custom(ELEVATION_REQUESTS, store.requests_target, NS, naming.owned_selector(NS))
    return store


class _Client:
    user_agent = ""


def test_until_their_watch_lists_them_the_policies_are_listed_or_logins_refused() -> None:
    kube = FakeKube()
    clock = ManualClock()
    store = ElevationStore(kube, NS, ElevationConfig(), monotonic=clock)
    sources = store.watch_sources(_Client())
    assert [s.what for s in sources] == ["ElevationPolicies", "ElevationRequests"]
    assert sources[0].arguments == {"group": "elevation.concierge.pinniped.dev",
                                    "version": "v1alpha1", "plural": "elevationpolicies"}
    assert sources[1].arguments["namespace"] == NS
    assert sources[1].label_selector == naming.owned_selector(NS)

    kube.unavailable = True  # not listed by the watch, and the API does not answer
    with pytest.raises(Unavailable) as refused:
        asyncio.run(store.governed())
    assert refused.value.reason == Reason.ELEVATION_POLICIES_UNKNOWN
    assert refused.value.retry_after_seconds == 5
    assert refused.value.http_status == 503
    assert "listing them failed" in refused.value.message
    with pytest.raises(Unavailable):
        asyncio.run(store.active_for(ALICE, NOW))
    problem = asyncio.run(store.readiness_problem())
    assert problem is not None
    assert "elevationpolicies" in problem
    assert kube.calls == ["list ElevationPolicy"]  # the failure, too, answers for a second

    kube.unavailable = False
    kube.apply_custom(ELEVATION_POLICIES, "prod", policy("corp:prod"))
    clock.now += 1
    assert asyncio.run(store.governed()) == {"corp:prod"}  # listed: no need to wait
    assert asyncio.run(store.readiness_problem()) is None
    assert kube.calls == ["list ElevationPolicy"] * 2
    kube.watch_custom(ELEVATION_POLICIES, sources[0].target)
    clock.now += 1
    assert asyncio.run(store.governed()) == {"corp:prod"}
    assert kube.calls == ["list ElevationPolicy"] * 2  # the watch answers from now on


def test_invalid_or_conflicting_policies_still_govern_their_group() -> None:
    kube = FakeKube()
    store = watched(kube)
    kube.apply_custom(ELEVATION_POLICIES, "bad", policy("corp:bad", approvalsRequired=0))
    kube.apply_custom(ELEVATION_POLICIES, "reserved", policy("system:masters"))
    kube.apply_custom(ELEVATION_POLICIES, "nameless", {"group": 7})  # governs nothing we can name
    kube.apply_custom(ELEVATION_POLICIES, "one", policy("corp:twice"))
    kube.apply_custom(ELEVATION_POLICIES, "two", policy("corp:twice", approvalsRequired=2))
    kube.apply_custom(ELEVATION_POLICIES, "good", policy("corp:prod"))
    assert asyncio.run(store.governed()) == {"corp:bad", "system:masters", "corp:twice",
                                             "corp:prod"}
    bad = asyncio.run(store.policy("corp:bad"))
    assert bad is not None
    assert bad.spec is None
    assert bad.name == "bad"
    twice = asyncio.run(store.policy("corp:twice"))
    assert twice is not None
    assert twice.spec is None
    good = asyncio.run(store.policy("corp:prod"))
    assert good is not None
    assert good.spec is not None
    assert good.spec.approvers.include("corp:carol", ())
    assert asyncio.run(store.policy("corp:devs")) is None

    kube.delete_custom(ELEVATION_POLICIES, "two")
    twice = asyncio.run(store.policy("corp:twice"))
    assert twice is not None
    assert twice.spec is not None


def test_more_policies_than_max_policies_refuse_logins_until_some_are_deleted() -> None:
    kube = FakeKube()
    store = watched(kube, max_policies=2)
    kube.apply_custom(ELEVATION_POLICIES, "a", policy("corp:a"))
    kube.apply_custom(ELEVATION_POLICIES, "b", policy("corp:b"))
    assert asyncio.run(store.governed()) == {"corp:a", "corp:b"}
    kube.apply_custom(ELEVATION_POLICIES, "c", policy("corp:c"))
    with pytest.raises(Unavailable, match="maxPolicies"):
        asyncio.run(store.governed())
    assert "maxPolicies" in (asyncio.run(store.readiness_problem()) or "")
    kube.delete_custom(ELEVATION_POLICIES, "a")
    assert asyncio.run(store.governed()) == {"corp:b", "corp:c"}


def test_while_their_watch_reconnects_the_policies_are_listed_never_the_last_known() -> None:
    kube = FakeKube()
    clock = ManualClock()
    store = watched(kube, clock)
    kube.apply_custom(ELEVATION_POLICIES, "prod", policy("corp:prod"))
    kube.stop_custom_watch(store.policies_target)
    assert not store.synced()
    kube.delete_custom(ELEVATION_POLICIES, "prod")  # unseen by the watch: it is down
    kube.apply_custom(ELEVATION_POLICIES, "db", policy("corp:db"))
    assert asyncio.run(store.governed()) == {"corp:db"}
    db = asyncio.run(store.policy("corp:db"))
    assert db is not None
    assert db.spec is not None
    assert kube.calls == ["list ElevationPolicy"]  # one list answers for a second
    kube.unavailable = True
    clock.now += 1
    with pytest.raises(Unavailable) as refused:  # never the stale set
        asyncio.run(store.governed())
    assert refused.value.reason == Reason.ELEVATION_POLICIES_UNKNOWN
    assert asyncio.run(store.readiness_problem()) is not None
    kube.unavailable = False
    kube.watch_custom(ELEVATION_POLICIES, store.policies_target)  # back: listed again
    assert asyncio.run(store.governed()) == {"corp:db"}
    assert asyncio.run(store.readiness_problem()) is None
    assert kube.calls == ["list ElevationPolicy"] * 2


def test_only_approved_unexpired_requests_of_governed_groups_grant() -> None:
    kube = FakeKube()
    store = watched(kube)
    kube.apply_custom(ELEVATION_POLICIES, "prod", policy("corp:prod"))
    kube.apply_custom(ELEVATION_POLICIES, "db", policy("corp:db"))
    put(kube, request_body("elev-0000000000000001"))
    put(kube, request_body("elev-0000000000000002", group="corp:db", expires=NOW + 60))
    put(kube, request_body("elev-0000000000000003", expires=NOW - 1))  # over
    put(kube, request_body("elev-0000000000000004", phase="Pending"))
    put(kube, request_body("elev-0000000000000005", phase="Revoked"))
    put(kube, request_body("elev-0000000000000006", group="corp:ungoverned"))
    put(kube, request_body("elev-0000000000000007", username=BOB))
    assert store.synced()

    assert asyncio.run(store.active_for(ALICE, NOW)) == (
        Grant("elev-0000000000000002", "corp:db", NOW + 60),
        Grant("elev-0000000000000001", "corp:prod", NOW + 600))
    assert [g.id for g in asyncio.run(store.active_for(BOB, NOW))] == ["elev-0000000000000007"]
    assert asyncio.run(store.active_for(ALICE, NOW + 60)) == (
        Grant("elev-0000000000000001", "corp:prod", NOW + 600),)  # expiresAt is exclusive
    assert asyncio.run(store.for_login(ALICE, NOW)) == ElevationInput(
        asyncio.run(store.governed()), asyncio.run(store.active_for(ALICE, NOW)), True)
    assert asyncio.run(store.for_login(ALICE, NOW + 10_000)).check  # still pending
    assert not asyncio.run(store.for_login("corp:carol", NOW)).check
    assert len(asyncio.run(store.requests())) == 7
    assert {r.name for r in asyncio.run(store.requests_of(BOB))} == {"elev-0000000000000007"}

    kube.delete_custom(ELEVATION_POLICIES, "db")  # no longer governed: no longer granted
    assert [g.group for g in asyncio.run(store.active_for(ALICE, NOW))] == ["corp:prod"]
    assert kube.calls == ["create ElevationRequest"] * 7  # every answer came from memory


def test_a_request_that_is_not_ours_in_every_respect_grants_nothing() -> None:
    kube = FakeKube()
    store = watched(kube)
    kube.apply_custom(ELEVATION_POLICIES, "prod", policy("corp:prod"))
    forged = request_body("elev-00000000000000f1")
    forged["metadata"]["labels"] = naming.user_labels(BOB, NS)  # labels of someone else
    put(kube, forged)
    other_ns = request_body("elev-00000000000000f2")
    other_ns["metadata"]["labels"] = naming.user_labels(ALICE, "elsewhere")
    put(kube, other_ns)
    unreadable = request_body("elev-00000000000000f3")
    unreadable["spec"]["durationSeconds"] = "forever"
    put(kube, unreadable)
    assert asyncio.run(store.requests()) == []
    assert asyncio.run(store.active_for(ALICE, NOW)) == ()
    assert asyncio.run(store.active_for(BOB, NOW)) == ()
    assert read_request(forged, NS) is None


def test_while_the_requests_watch_is_down_they_are_listed_so_an_end_is_never_missed() -> None:
    kube = FakeKube()
    store = watched(kube)
    kube.apply_custom(ELEVATION_POLICIES, "prod", policy("corp:prod"))
    created = put(kube, request_body("elev-0000000000000001"))
    put(kube, request_body("elev-0000000000000002", username=BOB))
    kube.stop_custom_watch(store.requests_target)
    ended = created | {"status": {"phase": "Revoked", "endedBy": "corp:carol",
                                  "endReason": "done", "endedAt": when(NOW)}}
    asyncio.run(kube.replace_namespaced_custom(ELEVATION_REQUESTS, NS, ended["metadata"]["name"],
                                               ended))
    kube.calls.clear()
    assert asyncio.run(store.active_for(ALICE, NOW)) == ()
    assert kube.calls == ["list ElevationRequest"]  # one call, for this user only
    kube.calls.clear()
    assert asyncio.run(store.for_login(ALICE, NOW)) == ElevationInput(
        frozenset({"corp:prod"}), (), False)
    assert kube.calls == ["list ElevationRequest"]  # a login's question: one call too
    assert [r.name for r in asyncio.run(store.requests())] == ["elev-0000000000000001",
                                                                "elev-0000000000000002"]
    kube.watch_custom(ELEVATION_REQUESTS, store.requests_target, NS, naming.owned_selector(NS))
    kube.calls.clear()
    assert asyncio.run(store.active_for(BOB, NOW))
    assert kube.calls == []


def test_without_a_watch_everything_is_listed_and_bounded() -> None:
    kube = FakeKube()
    store = ElevationStore(kube, NS, ElevationConfig(max_policies=3))
    for name in "ab":
        kube.apply_custom(ELEVATION_POLICIES, name, policy(f"corp:{name}"))
    put(kube, request_body("elev-0000000000000001", group="corp:a"))
    kube.calls.clear()
    assert asyncio.run(store.governed()) == {"corp:a", "corp:b"}
    assert [g.group for g in asyncio.run(store.active_for(ALICE, NOW))] == ["corp:a"]
    assert kube.calls == ["list ElevationPolicy", "list ElevationPolicy",
                          "list ElevationRequest"]
    assert asyncio.run(store.readiness_problem()) is None
    for name in "cd":
        kube.apply_custom(ELEVATION_POLICIES, name, policy(f"corp:{name}"))
    with pytest.raises(Unavailable, match="maxPolicies"):
        asyncio.run(store.governed())


def test_the_requests_mirror_holds_at_most_max_requests() -> None:
    kube = FakeKube()
    store = watched(kube, max_requests=2)
    kube.apply_custom(ELEVATION_POLICIES, "prod", policy("corp:prod"))
    for i in range(1, 4):
        put(kube, request_body(f"elev-000000000000000{i}", phase="Pending"))
    assert [r.name for r in asyncio.run(store.requests())] == ["elev-0000000000000001",
                                                                "elev-0000000000000002"]


def test_to_object_is_a_conditional_write_of_spec_and_status() -> None:
    kube = FakeKube()
    store = watched(kube)
    put(kube, request_body("elev-0000000000000001", phase="Pending"))
    (stored,) = asyncio.run(store.requests())
    assert stored.uid
    assert stored.resource_version
    assert stored.created_at == kube._clock() // 1
    approved = ElevationRequestStatus.model_validate(
        {"phase": "Approved", "approvedAt": when(NOW), "expiresAt": when(NOW + 600)})
    body = stored.to_object(approved)
    asyncio.run(kube.replace_namespaced_custom(ELEVATION_REQUESTS, NS, stored.name, body))
    (now_stored,) = asyncio.run(store.requests())
    assert now_stored.active(NOW)
    assert now_stored.expires_at() == NOW + 600
    assert now_stored.resource_version != stored.resource_version
    with pytest.raises(Conflict):  # written from a stale read
        asyncio.run(kube.replace_namespaced_custom(ELEVATION_REQUESTS, NS, stored.name, body))
    asyncio.run(kube.delete_namespaced_custom(ELEVATION_REQUESTS, NS, stored.name,
                                              uid=stored.uid))
    assert asyncio.run(store.requests()) == []
    with pytest.raises(NotFound):
        asyncio.run(kube.read_namespaced_custom(ELEVATION_REQUESTS, NS, stored.name))


def test_ended_at_falls_back_to_the_expiry_for_an_ended_request() -> None:
    kube = FakeKube()
    store = watched(kube)
    body = request_body("elev-0000000000000001")
    body["status"] |= {"phase": "Expired"}
    put(kube, body)
    (stored,) = asyncio.run(store.requests())
    assert not stored.active(NOW)
    assert not stored.open(NOW)
    assert stored.ended_at() == NOW + 600
    body = request_body("elev-0000000000000002", phase="Pending")
    put(kube, body)
    pending = [r for r in asyncio.run(store.requests()) if r.status.phase == "Pending"]
    assert pending[0].ended_at() is None
    assert pending[0].open(NOW)


def test_the_fake_keeps_namespaced_custom_objects_like_the_apiserver() -> None:
    kube = FakeKube()
    put(kube, request_body("elev-0000000000000001"))
    with pytest.raises(Conflict):
        put(kube, request_body("elev-0000000000000001"))
    for i in range(2, 6):
        put(kube, request_body(f"elev-000000000000000{i}", username=BOB))
    with pytest.raises(Conflict):
        asyncio.run(kube.delete_namespaced_custom(ELEVATION_REQUESTS, NS,
                                                  "elev-0000000000000001", uid="another"))
    selector = ",".join(f"{k}={v}" for k, v in naming.user_labels(BOB, NS).items())
    page, token = asyncio.run(kube.list_custom(ELEVATION_REQUESTS, NS, 3,
                                               label_selector=selector))
    assert len(page) == 3
    assert token is not None
    rest, token = asyncio.run(kube.list_custom(ELEVATION_REQUESTS, NS, 3, token, selector))
    assert [o["metadata"]["name"] for o in rest] == ["elev-0000000000000005"]
    assert token is None
    assert asyncio.run(kube.list_custom(ELEVATION_REQUESTS, "elsewhere", 10)) == ([], None)
    assert asyncio.run(kube.list_custom(ELEVATION_POLICIES, None, 10)) == ([], None)
