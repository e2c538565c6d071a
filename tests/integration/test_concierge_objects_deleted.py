"""A user's ServiceAccount, ClusterRole or ClusterRoleBinding deleted by an administrator is
made again at the user's next login, also while the user is in the warm cache."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from localenv.cluster import LocalCluster
from localenv.concierge import MINTED_PREFIX, LocalConcierge, MintingIssuer
from localenv.idp import LocalIdP
from localenv.logins import Kubectl, login
from pinniped_apis import wire
from pinniped_concierge import naming

pytestmark = pytest.mark.integration

KINDS = {"serviceaccount": True, "clusterrole": False, "clusterrolebinding": False}
#: The watch delivers a deletion within milliseconds; this leaves room for a loaded machine.
WATCH_DELAY_SECONDS = 2.0


def uid_of(cluster: LocalCluster, kind: str, name: str, namespace: str) -> str | None:
    args = ["get", kind, name, "-o", "json"] + (["-n", namespace] if KINDS[kind] else [])
    result = cluster.kubectl(*args, check=False)
    if result.returncode != 0:
        assert "NotFound" in result.stderr, result.stderr
        return None
    return str(json.loads(result.stdout)["metadata"]["uid"])


def delete(cluster: LocalCluster, kind: str, name: str, namespace: str) -> None:
    cluster.kubectl("delete", kind, name, *(["-n", namespace] if KINDS[kind] else []))


def acts_as_the_user(kubectl: Kubectl, credential: wire.ClusterCredential) -> bool:
    code, output = kubectl.run(credential, "auth", "can-i", "--list")
    return code == 0 and "cannot impersonate" not in output


@pytest.mark.parametrize("kind", list(KINDS))
def test_an_object_deleted_while_the_user_is_cached_is_made_again_at_the_next_login(
        concierge: LocalConcierge, cluster: LocalCluster, minting_issuer: MintingIssuer,
        tmp_path: Path, kind: str) -> None:
    email = f"deleted-{kind}-{secrets.token_hex(3)}@example.com"
    username = MINTED_PREFIX + email
    name = naming.user_object_name(username, concierge.namespace)
    kubectl = Kubectl(cluster, tmp_path)
    login(concierge, minting_issuer.mint(email=email), "minted")
    login(concierge, minting_issuer.mint(email=email), "minted")
    assert concierge.audit_lines()[-1]["kubeApiCalls"] == 2  # warm: cached, trusted
    before = uid_of(cluster, kind, name, concierge.namespace)
    assert before is not None

    delete(cluster, kind, name, concierge.namespace)  # an administrator, by hand
    assert uid_of(cluster, kind, name, concierge.namespace) is None
    time.sleep(WATCH_DELAY_SECONDS)
    credential = login(concierge, minting_issuer.mint(email=email), "minted")
    line = concierge.audit_lines()[-1]
    assert line["outcome"] == "success"
    assert line["kubeApiCalls"] > 2  # it reconciled instead of trusting the cache
    after = uid_of(cluster, kind, name, concierge.namespace)
    assert after is not None
    assert after != before
    assert acts_as_the_user(kubectl, credential)


def test_without_the_cache_each_deleted_object_is_made_again(
        idp: LocalIdP, cluster: LocalCluster, minting_issuer: MintingIssuer,
        concierge_factory: Callable[..., LocalConcierge], tmp_path: Path) -> None:
    """The cold path (userCacheTTLSeconds: 0): every login reconciles, no watch delay."""
    concierge = concierge_factory(idp, extra_issuers=[minting_issuer], userCacheTTLSeconds=0)
    email = f"deleted-{secrets.token_hex(3)}@example.com"
    name = naming.user_object_name(MINTED_PREFIX + email, concierge.namespace)
    kubectl = Kubectl(cluster, tmp_path)
    login(concierge, minting_issuer.mint(email=email), "minted")
    for kind in KINDS:
        before = uid_of(cluster, kind, name, concierge.namespace)
        delete(cluster, kind, name, concierge.namespace)
        credential = login(concierge, minting_issuer.mint(email=email), "minted")
        after = uid_of(cluster, kind, name, concierge.namespace)
        assert after is not None, kind
        assert after != before, kind
        assert acts_as_the_user(kubectl, credential), kind
