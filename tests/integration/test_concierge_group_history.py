"""Groups never widen from the past, against the real concierge, apiserver and kubectl.

The review replayed a still-valid ID token issued before a narrowing login and
got the removed group back for all of the user's credentials. Tokens here come
from the minting issuer, so a test can choose their `iat`.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from localenv.cluster import LocalCluster
from localenv.concierge import MINTED_PREFIX, LocalConcierge, MintingIssuer
from localenv.idp import LocalIdP
from localenv.logins import Kubectl, login
from pinniped_apis import rfc3339, wire
from pinniped_concierge import naming

pytestmark = pytest.mark.integration


def new_user() -> tuple[str, str]:
    email = f"history-{secrets.token_hex(3)}@example.com"
    return email, MINTED_PREFIX + email


def token(issuer: MintingIssuer, email: str, groups: list[str], age_seconds: int) -> str:
    iat = int(time.time()) - age_seconds
    return issuer.mint({"groups": groups, "iat": iat, "nbf": iat}, email=email)


def role(cluster: LocalCluster, username: str, namespace: str) -> dict[str, Any]:
    name = naming.user_object_name(username, namespace)
    return dict(json.loads(cluster.kubectl("get", "clusterrole", name, "-o", "json").stdout))


def allowed_groups(cluster: LocalCluster, username: str, namespace: str) -> list[str]:
    rules = role(cluster, username, namespace)["rules"]
    return sorted(n for rule in rules if rule["resources"] == ["groups"]
                  for n in rule["resourceNames"])


def may_impersonate(kubectl: Kubectl, credential: wire.ClusterCredential, group: str) -> bool:
    code, output = kubectl.run(credential, "auth", "can-i", "--list", groups=(group,))
    assert code == 0 or 'cannot impersonate resource "groups"' in output, output
    return code == 0


def test_replaying_an_older_token_after_a_narrowing_never_widens_again(
        concierge: LocalConcierge, cluster: LocalCluster, minting_issuer: MintingIssuer,
        tmp_path: Path) -> None:
    kubectl = Kubectl(cluster, tmp_path)
    email, username = new_user()
    old_token = token(minting_issuer, email, ["devs", "admins"], age_seconds=120)
    widened = login(concierge, old_token, "minted")
    assert may_impersonate(kubectl, widened, "minted:admins")

    narrowed = login(concierge, token(minting_issuer, email, ["devs"], age_seconds=60),
                     "minted")  # admins removed at the IdP
    assert narrowed.identity.groups == ("minted:devs",)
    recorded = naming.annotation(role(cluster, username, concierge.namespace),
                                 naming.GROUPS_ISSUED_AT_ANNOTATION)
    assert recorded is not None

    replayed = login(concierge, old_token, "minted")  # the review's replay
    line = concierge.audit_lines()[-1]
    assert line["outcome"] == "success"
    assert line["groups"] == ["minted:devs"]
    assert json.loads(line["groupsNarrowedByAge"]) == ["minted:admins"]
    assert replayed.identity == wire.Identity(username, ("minted:devs",))
    assert allowed_groups(cluster, username, concierge.namespace) == ["minted:devs"]
    assert naming.annotation(role(cluster, username, concierge.namespace),
                             naming.GROUPS_ISSUED_AT_ANNOTATION) == recorded
    for credential in (widened, narrowed, replayed):  # no credential of the user gets it back
        assert not may_impersonate(kubectl, credential, "minted:admins")
    assert kubectl.run(replayed, "auth", "can-i", "--list")[0] == 0  # what it got works


def test_an_old_laptops_token_gets_less_but_takes_nothing_away(
        concierge: LocalConcierge, cluster: LocalCluster, minting_issuer: MintingIssuer,
        tmp_path: Path) -> None:
    kubectl = Kubectl(cluster, tmp_path)
    email, username = new_user()
    new_laptop = login(concierge, token(minting_issuer, email, ["devs", "readers"], 10),
                       "minted")
    old_laptop = login(concierge, token(minting_issuer, email, ["devs"], 300), "minted")
    assert old_laptop.identity.groups == ("minted:devs",)
    assert "groupsNarrowedByAge" not in concierge.audit_lines()[-1]
    assert allowed_groups(cluster, username, concierge.namespace) == [
        "minted:devs", "minted:readers"]
    assert may_impersonate(kubectl, new_laptop, "minted:readers")


def test_last_seen_is_recorded_without_a_write_at_every_login(
        concierge: LocalConcierge, cluster: LocalCluster, minting_issuer: MintingIssuer) -> None:
    email, username = new_user()
    before = time.time()
    login(concierge, minting_issuer.mint(email=email), "minted")
    first = role(cluster, username, concierge.namespace)
    seen = rfc3339.parse_time(naming.annotation(first, naming.LAST_LOGIN_ANNOTATION))
    assert seen is not None
    assert before - 1 <= seen.timestamp() <= time.time() + 1
    time.sleep(1.1)  # a rewrite would change the (whole-second) time
    login(concierge, minting_issuer.mint(email=email), "minted")
    assert concierge.audit_lines()[-1]["kubeApiCalls"] == 2
    again = role(cluster, username, concierge.namespace)
    assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]


def test_a_narrowing_at_one_replica_holds_at_the_other(
        idp: LocalIdP, cluster: LocalCluster, minting_issuer: MintingIssuer,
        concierge_factory: Callable[..., LocalConcierge], tmp_path: Path) -> None:
    """`first` has the user in its warm cache with the wide groups; the narrowing happens at
    `second`; the old token replayed at `first` must not undo it."""
    kubectl = Kubectl(cluster, tmp_path)
    namespace = f"pinniped-concierge-{secrets.token_hex(3)}"
    first, second = (concierge_factory(idp, extra_issuers=[minting_issuer],
                                       namespace=namespace) for _ in range(2))
    email, username = new_user()
    old_token = token(minting_issuer, email, ["devs", "admins"], age_seconds=120)
    login(first, old_token, "minted")
    login(first, old_token, "minted")
    assert first.audit_lines()[-1]["kubeApiCalls"] == 2  # cached at `first`
    login(second, token(minting_issuer, email, ["devs"], age_seconds=60), "minted")
    time.sleep(1)  # the watch delay, with room to spare

    replayed = login(first, old_token, "minted")
    assert replayed.identity.groups == ("minted:devs",)
    assert first.audit_lines()[-1]["kubeApiCalls"] > 2  # the cache noticed the change
    assert allowed_groups(cluster, username, namespace) == ["minted:devs"]
    assert not may_impersonate(kubectl, replayed, "minted:admins")
