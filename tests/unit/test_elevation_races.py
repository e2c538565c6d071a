"""Elevations racing across replicas: a policy the watch has not delivered, a revoke the mirror
has not seen yet.

Each replica is an `ElevationStore` of its own over one `FakeKube` (one
apiserver), fed by the fake's watches; a watch that is a moment behind is a
`_Lagging` target that holds its events back. Logins go through the real app
(`ElevationEnv`), so the API calls they make are the ones they would make.
"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any, cast

import pytest

from localenv.app_env import ALICE_TOKEN, NS
from localenv.elevation_app_env import ALICE, PROD, ElevationEnv
from localenv.fixtures_concierge import FakeKube, ManualClock
from pinniped_concierge import elevation_store, naming
from pinniped_concierge.cluster_lists import ClusterLister
from pinniped_concierge.config import ElevationConfig
from pinniped_concierge.elevation_service import ElevationService
from pinniped_concierge.elevation_store import ElevationStore
from pinniped_concierge.errors import Reason, Unavailable
from pinniped_concierge.governed_sweep import GovernedGroupSweep
from pinniped_concierge.kubeapi import ELEVATION_POLICIES, ELEVATION_REQUESTS, Kind, Obj
from pinniped_concierge.login import LoginService
from pinniped_concierge.object_watch import Mirror

READERS = "corp:readers"  # in alice's ID token


class _Client:
    user_agent = ""


class _Lagging:
    """A watch that is up but a moment behind: it lists at once, and holds its events back
    until `catch_up`."""

    def __init__(self, target: Mirror[Any]) -> None:
        self.target = target
        self.held: list[tuple[str, Obj]] = []

    def reset(self, objects: list[Obj]) -> None:
        self.target.reset(objects)

    def apply(self, event_type: str, obj: Obj) -> None:
        self.held.append((event_type, obj))

    def lost(self) -> None:
        self.target.lost()

    def catch_up(self) -> None:
        for event_type, obj in self.held:
            self.target.apply(event_type, obj)
        self.held = []


def sweeper(env: ElevationEnv, clock: ManualClock) -> GovernedGroupSweep:
    """The leader's sweep, with its store; the fake lists the ClusterRoles (namespace None)."""
    async def list_cluster(kind: Kind, selector: str, limit: int,
                           token: str | None = None) -> tuple[list[Obj], str | None]:
        return await env.kube.list(kind, cast(str, None), selector, limit, token)

    lister = cast(ClusterLister, SimpleNamespace(list_cluster=list_cluster))
    return GovernedGroupSweep(lister, NS, env.store, env.user_objects, 2, clock=clock)


def role_lists(env: ElevationEnv) -> int:
    return env.kube.calls.count(f"list {Kind.CLUSTER_ROLE}")


def replica(env: ElevationEnv, clock: ManualClock, *, lag_policies: bool = False,
            lag_requests: bool = False) -> tuple[ElevationStore, list[_Lagging]]:
    """Another replica's store, over the same apiserver (as the server builds it), and the
    watches of it that lag."""
    store = ElevationStore(env.kube, NS, ElevationConfig(), monotonic=clock)
    store.watch_sources(_Client())
    lagging: list[_Lagging] = []
    policies: Any = store.policies_target
    requests: Any = store.requests_target
    if lag_policies:
        policies = _Lagging(store.policies_target)
        lagging.append(policies)
    if lag_requests:
        requests = _Lagging(store.requests_target)
        lagging.append(requests)
    env.kube.watch_custom(ELEVATION_POLICIES, policies)
    env.kube.watch_custom(ELEVATION_REQUESTS, requests, NS, naming.owned_selector(NS))
    return store, lagging


def serve_logins_from(env: ElevationEnv, store: ElevationStore) -> None:
    """From now on `env`'s logins are served as the replica with `store` serves them."""
    old = env.services.login
    env.services.login = LoginService(old.authenticator_set, env.user_objects, old._sessions,
                                      elevations=store)


def live_sessions_naming(env: ElevationEnv, request_id: str) -> list[str]:
    return [obj["metadata"]["name"] for (kind, _, _), obj in env.kube.objects.items()
            if kind == Kind.SECRET and request_id in obj["metadata"].get(
                "annotations", {}).get(naming.ELEVATIONS_ANNOTATION, "").split(",")]


# --- a policy created while a replica's watch is down (attack finding 1) -----------------


def test_a_policy_created_while_the_watch_reconnects_is_enforced_and_readyz_follows() -> None:
    env = ElevationEnv()
    clock = ManualClock()
    store, _ = replica(env, clock)
    serve_logins_from(env, store)
    env.services.readiness_checks = [store.readiness_problem]
    env.govern(PROD)
    env.kube.stop_custom_watch(store.policies_target)  # the watch breaks, and reconnects
    env.govern(READERS, name="readers")  # meanwhile an administrator governs readers

    credential, _, audit = env.credential()
    assert credential.identity.groups == ("corp:devs",)
    assert env.role_groups() == ("corp:devs",)
    assert audit["groupsGovernedByPolicy"] == f'["{READERS}"]'
    assert env.request("GET", "/readyz").status_code == 200  # listed: logins are decided

    env.kube.unavailable = True
    clock.now += elevation_store.LISTED_POLICIES_SECONDS
    assert env.request("GET", "/readyz").status_code == 503
    env.kube.unavailable = False
    response = env.login(ALICE_TOKEN)  # the failed list still answers, for a second
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert env.audit()[-1]["reason"] == Reason.ELEVATION_POLICIES_UNKNOWN


def test_a_storm_of_logins_while_the_watch_is_down_costs_one_list_a_second() -> None:
    env = ElevationEnv()
    clock = ManualClock()
    store, _ = replica(env, clock)
    env.govern(READERS)
    env.kube.stop_custom_watch(store.policies_target)
    env.kube.interleave = True  # every call yields: concurrent questions overlap
    env.kube.calls.clear()

    async def storm() -> list[frozenset[str]]:
        return await asyncio.gather(*(store.governed() for _ in range(50)))

    assert set(asyncio.run(storm())) == {frozenset({READERS})}
    assert asyncio.run(store.governed()) == {READERS}
    assert env.kube.calls == ["list ElevationPolicy"]
    clock.now += elevation_store.LISTED_POLICIES_SECONDS
    assert asyncio.run(store.governed()) == {READERS}
    assert env.kube.calls == ["list ElevationPolicy"] * 2


def test_listed_policies_are_paged_and_bounded_by_max_policies(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(elevation_store, "PAGE_SIZE", 2)
    kube = FakeKube()
    clock = ManualClock()
    store = ElevationStore(kube, NS, ElevationConfig(max_policies=5), monotonic=clock)
    store.watch_sources(_Client())  # never listed by its watch
    for n in range(5):
        kube.apply_custom(ELEVATION_POLICIES, f"p{n}", {"group": f"corp:g{n}"})
    assert asyncio.run(store.governed()) == {f"corp:g{n}" for n in range(5)}
    assert kube.calls == ["list ElevationPolicy"] * 3  # 2 + 2 + 1
    kube.apply_custom(ELEVATION_POLICIES, "p5", {"group": "corp:g5"})
    kube.calls.clear()
    clock.now += elevation_store.LISTED_POLICIES_SECONDS
    with pytest.raises(Unavailable, match="maxPolicies"):
        asyncio.run(store.governed())
    assert kube.calls == ["list ElevationPolicy"] * 3  # stops at maxPolicies + 1


def test_a_login_that_writes_a_newly_governed_group_back_is_swept_within_30_s() -> None:
    env = ElevationEnv()
    clock = ManualClock(time.time())
    env.credential()  # before the policy: readers is in the role
    lagging_store, (lagging_policies,) = replica(env, clock, lag_policies=True)
    env.govern(READERS)  # the leader knows it; the lagging replica has not heard yet
    sweep = sweeper(env, clock)
    assert asyncio.run(sweep.sweep()) == 1
    assert env.role_groups() == ("corp:devs",)

    serve_logins_from(env, lagging_store)
    env.credential()  # its watch is up, and behind: it still grants readers from the token
    assert READERS in env.role_groups()
    clock.now += 2
    assert asyncio.run(sweep.sweep()) == 1  # the next pass takes it out again
    assert env.role_groups() == ("corp:devs",)

    lagging_policies.catch_up()
    env.credential()
    assert env.role_groups() == ("corp:devs",)
    lists = role_lists(env)
    clock.now += 30
    assert asyncio.run(sweep.sweep()) == 0
    assert role_lists(env) == lists  # past its first 30 s the group is not looked at again
    assert asyncio.run(sweeper(env, clock).sweep()) == 0  # a new leadership: every group
    assert role_lists(env) == lists + 1


# --- a revoke racing a login on another replica (attack finding 2) ------------------------


def revoke_on_the_leader(env: ElevationEnv, request: Obj) -> None:
    """What the replica serving the revoke does: write the end, then remove the access."""
    env.end(request)
    service = ElevationService(env.kube, NS, env.store, env.user_objects, ElevationConfig(),
                               sessions=env.sessions)
    (stored,) = [r for r in asyncio.run(env.store.requests_of(ALICE))
                 if r.name == request["metadata"]["name"]]
    asyncio.run(service.remove_access(stored))


def test_a_login_whose_elevation_was_revoked_meanwhile_is_undone_and_refused() -> None:
    env = ElevationEnv()
    env.govern(PROD)
    request = env.elevate()
    rid = request["metadata"]["name"]
    env.credential()
    assert PROD in env.role_groups()
    behind, (lagging_requests,) = replica(env, ManualClock(), lag_requests=True)

    revoke_on_the_leader(env, request)
    assert PROD not in env.role_groups()
    assert live_sessions_naming(env, rid) == []

    serve_logins_from(env, behind)  # its mirror has not seen the revoke
    response = env.login(ALICE_TOKEN)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["message"] == (
        f"your elevated access ({rid}) ended during this login, so its session was ended "
        "and the group taken back; run the command again")
    assert PROD not in env.role_groups()
    assert live_sessions_naming(env, rid) == []
    audit = env.audit()[-1]
    assert audit["reason"] == Reason.ELEVATION_ENDED
    assert audit["session"] is not None
    assert audit["elevatedGroups"] == f'["{PROD}"]'
    assert audit["elevationsEndedDuringLogin"] == f'["{rid}"]'
    assert audit["groupsWithdrawn"] == f'["{PROD}"]'
    assert audit["kubeApiCalls"] > 0

    lagging_requests.catch_up()  # the retry, once the mirror has caught up
    credential, _, _ = env.credential()
    assert PROD not in credential.identity.groups
    assert PROD not in env.role_groups()


def test_a_revoke_written_after_the_logins_check_is_cleaned_up_by_the_revoker() -> None:
    env = ElevationEnv()
    env.govern(PROD)
    request = env.elevate()
    rid = request["metadata"]["name"]
    behind, _ = replica(env, ManualClock(), lag_requests=True)
    serve_logins_from(env, behind)
    credential, _, _ = env.credential()  # confirmed: the request was still Approved
    assert credential.elevated_groups == (PROD,)
    assert live_sessions_naming(env, rid) != []

    revoke_on_the_leader(env, request)  # after our GET: after our role write and session
    assert PROD not in env.role_groups()
    assert live_sessions_naming(env, rid) == []


def test_only_the_ended_grant_is_taken_back() -> None:
    env = ElevationEnv()
    env.govern(PROD)
    env.govern(READERS, name="readers")
    prod = env.elevate()
    env.elevate(READERS, name="elev-00000000000000b2")
    behind, _ = replica(env, ManualClock(), lag_requests=True)
    serve_logins_from(env, behind)
    env.end(prod)  # nobody has removed the access yet
    response = env.login(ALICE_TOKEN)
    assert response.status_code == 503
    assert env.role_groups() == ("corp:devs", READERS)
    assert env.audit()[-1]["groupsWithdrawn"] == f'["{PROD}"]'
    assert live_sessions_naming(env, "elev-00000000000000b2") == []  # the login's session


def test_an_elevation_that_cannot_be_confirmed_is_not_handed_out(
        monkeypatch: pytest.MonkeyPatch) -> None:
    env = ElevationEnv()
    env.govern(PROD)
    rid = env.elevate()["metadata"]["name"]

    async def down(*_: object, **__: object) -> Obj:
        raise Unavailable(Reason.KUBERNETES_UNAVAILABLE, "the API is down")

    monkeypatch.setattr(env.kube, "read_namespaced_custom", down)
    response = env.login(ALICE_TOKEN)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert "could not confirm" in response.json()["message"]
    assert env.audit()[-1]["reason"] == Reason.KUBERNETES_UNAVAILABLE
    assert PROD not in env.role_groups()  # fail closed: the next login grants it again
    assert live_sessions_naming(env, rid) == []


def test_logins_without_elevations_read_no_request() -> None:
    env = ElevationEnv()
    env.govern(PROD)
    env.elevate(phase="Pending")
    env.credential()
    env.kube.calls.clear()
    env.credential()
    assert "read ElevationRequest" not in " ".join(env.kube.calls)
    assert len(env.kube.calls) == 2  # Secret + TokenRequest, as before
