"""The hostile token corpus (`localenv.hostile_tokens`) against the real concierge process.

Every case is sent as a TokenCredentialRequest to the authenticator it
names. The client must see exactly the uniform failure (the same body for
every refusal, whatever the reason); the request's one audit line must give
the case's reason and attribute nothing to anyone; the login must cost no
Kubernetes API call and leave no new object in the cluster; and no log may
hold the token. The tokens of the real IdP (`corp`, `corp-es256`) come from
its password grant; the others are signed by `minting_issuer`, whose keys
the tests hold. Names that would reach `system:` are tried on a concierge of
this module's own whose `minted-raw` authenticator has no prefixes (the
config refuses that next to any other authenticator).

The controls (`CONTROLS`) log in with the same issuers and authenticators,
so each refusal is down to what the case changed.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from localenv import pki
from localenv.cluster import LocalCluster
from localenv.concierge import LocalConcierge, MintingIssuer
from localenv.hostile_tokens import (
    CONTROLS,
    CORPUS,
    RAW,
    Control,
    Forge,
    HostileToken,
    expected_identity,
    send_login,
    uniform_failure,
)
from localenv.idp import LocalIdP
from pinniped_apis import wire
from pinniped_concierge import naming

pytestmark = pytest.mark.integration

#: A refused TokenCredentialRequest is answered 200 with the refusal in `status.message`,
#: as Pinniped's API does; clients read the message, not the HTTP status.
REFUSED_LOGIN_STATUS = 200


@pytest.fixture(scope="module")
def raw_concierge(local_workdir: Path, local_ca: pki.CA, cluster: LocalCluster, idp: LocalIdP,
                  minting_issuer: MintingIssuer) -> Iterator[LocalConcierge]:
    """A concierge whose only authenticator is `minted-raw`: no prefixes at all."""
    running = LocalConcierge.start(local_workdir / "concierge-hostile-raw", local_ca, cluster,
                                   idp, raw_issuer=minting_issuer)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def forge(minting_issuer: MintingIssuer, id_token_for: Callable[..., str]) -> Forge:
    return Forge(minting_issuer, lambda client_id: id_token_for("bob", client_id=client_id))


class ClusterObjects:
    """The objects a concierge manages, read with the cluster admin's credentials."""

    def __init__(self, cluster: LocalCluster) -> None:
        self._http = httpx.Client(
            base_url=cluster.server, timeout=30,
            verify=ssl.create_default_context(cafile=str(cluster.ca_file)),
            headers={"Authorization": f"Bearer {cluster.admin_token}"})

    def names(self, namespace: str) -> set[str]:
        """ServiceAccounts, session Secrets, ClusterRoles and ClusterRoleBindings, as
        "kind/name"."""
        owned = naming.owned_selector(namespace)
        rbac = "/apis/rbac.authorization.k8s.io/v1"
        found = set()
        for path, selector in ((f"/api/v1/namespaces/{namespace}/serviceaccounts", owned),
                               (f"/api/v1/namespaces/{namespace}/secrets",
                                naming.session_selector()),
                               (f"{rbac}/clusterroles", owned),
                               (f"{rbac}/clusterrolebindings", owned)):
            response = self._http.get(path, params={"labelSelector": selector})
            response.raise_for_status()
            found |= {f"{path.rpartition('/')[2]}/{item['metadata']['name']}"
                      for item in response.json()["items"]}
        return found

    def close(self) -> None:
        self._http.close()


@pytest.fixture(scope="module")
def cluster_objects(cluster: LocalCluster) -> Iterator[ClusterObjects]:
    objects = ClusterObjects(cluster)
    try:
        yield objects
    finally:
        objects.close()


def target(authenticator: str, concierge: LocalConcierge,
           raw_concierge: LocalConcierge) -> LocalConcierge:
    return raw_concierge if authenticator == RAW else concierge


def assert_not_logged(concierge: LocalConcierge, token: str) -> None:
    logs = concierge.all_logs()
    for part in token.split("."):
        if len(part) > 8:
            assert part not in logs


@pytest.mark.parametrize("case", CORPUS, ids=[case.id for case in CORPUS])
def test_a_hostile_token_is_refused_uniformly_for_its_reason(
        case: HostileToken, forge: Forge, concierge: LocalConcierge,
        raw_concierge: LocalConcierge, cluster_objects: ClusterObjects) -> None:
    server = target(case.authenticator, concierge, raw_concierge)
    token = case.make(forge)
    objects_before = cluster_objects.names(server.namespace)
    lines_before = len(server.audit_lines())

    response = send_login(server, token, case.authenticator)

    lines = server.audit_lines()[lines_before:]
    assert len(lines) == 1, lines
    (line,) = lines
    if case.wire is None:
        assert response.status_code == REFUSED_LOGIN_STATUS, response.text
        assert response.json() == uniform_failure(case.authenticator)
        assert (line["outcome"], line["reason"]) == ("failure", case.reason), line
        assert line["tokenHash"].startswith("sha256:")
    else:  # refused as a request, before any token is looked at
        assert response.status_code == case.wire.status, response.text
        assert response.json()["details"]["causes"][0]["field"] == case.wire.field
        assert (line["outcome"], line["reason"]) == ("error", case.wire.reason), line
    assert (line["request"], line["username"], line["groups"], line["session"]) == (
        "login", None, [], None)  # nothing unproven is attributed to anyone
    assert line["kubeApiCalls"] == 0
    assert cluster_objects.names(server.namespace) <= objects_before
    assert_not_logged(server, token)


@pytest.mark.parametrize("control", CONTROLS, ids=[control.id for control in CONTROLS])
def test_the_genuine_counterparts_log_in_under_their_own_prefix(
        control: Control, forge: Forge, concierge: LocalConcierge,
        raw_concierge: LocalConcierge) -> None:
    """Each authenticator the corpus uses accepts its genuine tokens, including names that
    look like another authenticator's (corp:) or the cluster's (system:): behind a prefix
    they are harmless, and stay the verifying authenticator's own."""
    server = target(control.authenticator, concierge, raw_concierge)
    token = control.make(forge)
    response = send_login(server, token, control.authenticator)
    assert response.status_code == 200, response.text
    credential = wire.parse_credential_response(response.json())
    assert credential.identity == expected_identity(control, token)
    line: dict[str, Any] = server.audit_lines()[-1]
    assert (line["outcome"], line["reason"], line["username"]) == (
        "success", "ok", credential.identity.username)
    assert_not_logged(server, token)
