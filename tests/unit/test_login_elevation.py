"""Logins with temporary elevated access: governed groups withheld, active elevations granted.

Through the real app (`AppEnv`), with the elevation store fed by the fake's
watches, so the API calls a login makes are the ones it would make for real.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from localenv.app_env import ALICE_TOKEN, NS, AppEnv
from localenv.elevation_app_env import ALICE, PROD, ROLE, ElevationEnv
from pinniped_apis import rfc3339
from pinniped_concierge import naming
from pinniped_concierge.errors import Reason, Unavailable
from pinniped_concierge.kubeapi import ELEVATION_POLICIES, ELEVATION_REQUESTS, Conflict, Kind, Obj


def test_a_governed_group_in_the_token_is_withheld_from_role_and_credential() -> None:
    env = ElevationEnv()
    env.govern("corp:readers")
    credential, status, audit = env.credential()
    assert credential.identity.groups == ("corp:devs",)
    assert env.role_groups() == ("corp:devs",)
    assert audit["groups"] == ["corp:devs"]
    assert audit["groupsGovernedByPolicy"] == '["corp:readers"]'
    assert "elevatedGroups" not in audit
    assert "elevation" not in status  # nothing open: no hint, the plugin never checks
    assert credential.elevated_groups == ()
    assert not credential.check_elevation


def test_an_active_elevation_adds_its_group_and_caps_the_credential_at_its_end() -> None:
    env = ElevationEnv()
    env.govern(PROD)
    env.elevate(ends_in=120)
    credential, status, audit = env.credential()
    assert credential.identity.groups == ("corp:devs", PROD, "corp:readers")
    assert env.role_groups() == ("corp:devs", PROD, "corp:readers")
    assert credential.elevated_groups == (PROD,)
    assert credential.check_elevation
    assert status["elevation"] == {"check": True, "groups": [PROD]}
    assert audit["elevatedGroups"] == f'["{PROD}"]'
    assert "groupsGovernedByPolicy" not in audit
    ends = time.time() + 120
    assert ends - 5 < credential.expiration.timestamp() <= ends + 1  # not the 600 s TTL
    secret = env.session_secret(credential)
    assert secret["metadata"]["labels"][naming.ELEVATED_LABEL] == "true"
    annotations = secret["metadata"]["annotations"]
    assert annotations[naming.ELEVATIONS_ANNOTATION] == "elev-00000000000000a1"
    expires = rfc3339.parse_time(annotations[naming.EXPIRES_ANNOTATION])
    assert expires is not None
    assert expires.timestamp() <= ends + 1
    # the TokenRequest still asks for the TTL (600 s is the apiserver's minimum)
    assert env.kube.token_requests[-1]["spec"]["expirationSeconds"] == 600


def test_the_elevated_group_comes_only_from_the_elevation_not_from_the_token() -> None:
    env = ElevationEnv()
    env.govern("corp:readers")  # in alice's token
    env.elevate("corp:readers")
    credential, _, audit = env.credential()
    assert credential.identity.groups == ("corp:devs", "corp:readers")
    assert credential.elevated_groups == ("corp:readers",)
    assert audit["groupsGovernedByPolicy"] == '["corp:readers"]'


def test_a_pending_request_asks_the_plugin_to_check_and_grants_nothing() -> None:
    env = ElevationEnv()
    env.govern(PROD)
    env.elevate(phase="Pending")
    credential, status, _ = env.credential()
    assert PROD not in credential.identity.groups
    assert status["elevation"] == {"check": True, "groups": []}
    secret = env.session_secret(credential)
    assert naming.ELEVATED_LABEL not in secret["metadata"]["labels"]
    assert naming.ELEVATIONS_ANNOTATION not in secret["metadata"]["annotations"]


def test_an_expired_or_ungoverned_approval_grants_nothing() -> None:
    env = ElevationEnv()
    env.govern(PROD)
    env.elevate(ends_in=-1)
    env.elevate("corp:nobody-governs-this", name="elev-00000000000000a2")
    credential, status, _ = env.credential()
    assert credential.identity.groups == ("corp:devs", "corp:readers")
    # the approval of the ungoverned group is still open: the plugin keeps checking
    assert status["elevation"] == {"check": True, "groups": []}


def test_the_warm_path_stays_warm_and_an_elevation_changes_the_role_at_the_next_login() -> None:
    env = ElevationEnv()
    env.govern(PROD)
    env.credential()
    _, _, audit = env.credential()
    assert audit["kubeApiCalls"] == 2  # returning user, no elevation: Secret + TokenRequest

    request = env.elevate()
    credential, _, audit = env.credential()
    assert PROD in credential.identity.groups
    assert PROD in env.role_groups()
    # the role's one conditional write, then as before, then the request read afresh
    assert audit["kubeApiCalls"] == 4
    _, _, audit = env.credential()
    assert audit["kubeApiCalls"] == 3  # warm again, with the elevation (and its one GET)

    env.end(request)
    credential, status, audit = env.credential()
    assert PROD not in credential.identity.groups
    assert PROD not in env.role_groups()
    assert audit["kubeApiCalls"] == 3
    assert "elevation" not in status
    assert credential.expiration.timestamp() > time.time() + 500  # the full TTL again


def test_a_governed_group_left_in_the_role_is_taken_out_at_the_next_login() -> None:
    env = ElevationEnv()
    env.credential()
    assert "corp:readers" in env.role_groups()
    env.govern("corp:readers")  # a policy appears for a group alice already has
    credential, _, _ = env.credential()
    assert env.role_groups() == ("corp:devs",)
    assert credential.identity.groups == ("corp:devs",)


def test_logins_are_refused_503_while_the_policies_cannot_be_listed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    env = ElevationEnv(listed=False)

    async def down(*_: object, **__: object) -> Any:
        raise Unavailable(Reason.KUBERNETES_UNAVAILABLE, "the API is down")

    monkeypatch.setattr(env.kube, "list_custom", down)  # the watch has not listed, either
    response = env.login(ALICE_TOKEN)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert env.audit()[-1]["reason"] == "elevation_policies_unknown"
    assert env.kube.objects == {}  # nothing was made for a login that could not be decided
    env.kube.watch_custom(ELEVATION_POLICIES, env.store.policies_target)
    env.kube.watch_custom(ELEVATION_REQUESTS, env.store.requests_target, NS,
                          naming.owned_selector(NS))
    assert env.login(ALICE_TOKEN).status_code == 200


def test_group_history_still_holds_for_ungoverned_groups_next_to_an_elevation() -> None:
    env = ElevationEnv()
    env.govern(PROD)
    env.elevate()
    claims: dict[str, Any] = env.verifier.claims
    now = int(time.time())
    claims[ALICE_TOKEN] = claims[ALICE_TOKEN] | {"iat": now, "groups": ["devs"]}
    env.credential()
    assert env.role_groups() == ("corp:devs", PROD)
    # an older token with more groups speaks for the past: it widens nothing
    claims[ALICE_TOKEN] = claims[ALICE_TOKEN] | {"iat": now - 60, "groups": ["devs", "readers"]}
    credential, _, audit = env.credential()
    assert credential.identity.groups == ("corp:devs", PROD)
    assert audit["groupsNarrowedByAge"] == '["corp:readers"]'
    assert env.role_groups() == ("corp:devs", PROD)


# --- withdraw ---------------------------------------------------------------------------


def test_withdraw_takes_the_groups_out_keeps_the_record_and_forgets_the_user() -> None:
    env = ElevationEnv()
    env.govern(PROD)
    request = env.elevate()
    env.credential()
    before = env.kube.get(Kind.CLUSTER_ROLE, ROLE)
    assert before is not None
    env.end(request)  # the store no longer grants it; the role still allows it
    assert asyncio.run(env.user_objects.withdraw(ALICE, [PROD, "corp:never-had"]))
    assert env.role_groups() == ("corp:devs", "corp:readers")
    after = env.kube.get(Kind.CLUSTER_ROLE, ROLE)
    assert after is not None
    for key in (naming.GROUPS_ISSUED_AT_ANNOTATION, naming.LAST_LOGIN_ANNOTATION):
        assert after["metadata"]["annotations"].get(key) == \
            before["metadata"]["annotations"].get(key)
    assert not asyncio.run(env.user_objects.withdraw(ALICE, [PROD]))  # nothing left to take
    assert not asyncio.run(env.user_objects.withdraw("corp:nobody", [PROD]))  # no role
    _, _, audit = env.credential()
    assert audit["kubeApiCalls"] > 2  # forgotten: the role is read again


def test_withdraw_decides_again_after_losing_a_race(monkeypatch: pytest.MonkeyPatch) -> None:
    env = ElevationEnv()
    env.govern(PROD)
    env.elevate()
    env.credential()
    real = env.kube.replace
    lost: list[str] = []

    async def racing(kind: Kind, name: str, body: Obj, namespace: str | None = None) -> Obj:
        if not lost:
            lost.append(name)
            raise Conflict("someone wrote first")
        return await real(kind, name, body, namespace)

    monkeypatch.setattr(env.kube, "replace", racing)
    assert asyncio.run(env.user_objects.withdraw(ALICE, [PROD]))
    assert lost == [ROLE]
    assert PROD not in env.role_groups()


def test_the_login_route_carries_no_hint_without_elevations() -> None:
    env = AppEnv()
    response: httpx.Response = env.login(ALICE_TOKEN)
    assert response.status_code == 200
    assert "elevation" not in response.json()["status"]
