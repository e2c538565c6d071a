"""JWTAuthenticator objects and the CredentialIssuer, against the real apiserver and concierge.

An administrator applies, changes and deletes JWTAuthenticators with the real
kubectl; the real concierge process (deploy/ RBAC, its own namespace and label
selector) picks each change up without a restart, reports every object's
status through the status subresource, never uses a broken one, and keeps its
CredentialIssuer in line. The time from starting `kubectl apply` to a working
login is measured and printed (run with -s to see it).
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from localenv import pki
from localenv.cluster import LocalCluster
from localenv.concierge import LocalConcierge, MintingIssuer, jwt_authenticator
from localenv.idp import LocalIdP
from localenv.procs import free_port
from pinniped_apis import wire
from pinniped_concierge.kubeapi import CREDENTIAL_ISSUERS, Conflict, KubernetesClientAPI, NotFound

pytestmark = pytest.mark.integration

#: The issue's promise: a change takes effect for logins within this many seconds.
EFFECTIVE_WITHIN = 10.0
#: Prefixes of the objects below: the test concierges' file authenticators use corp:.
OBJ_PREFIX = "obj:"


class Admin:
    """kubectl as the cluster's administrator, on JWTAuthenticators and CredentialIssuers."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.created: list[str] = []

    def apply(self, manifest: dict[str, Any]) -> float:
        """`kubectl apply` it; returns the monotonic time kubectl was started at."""
        self.created.append(manifest["metadata"]["name"])
        started = time.monotonic()
        self.cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
        return started

    def delete(self, name: str) -> float:
        started = time.monotonic()
        self.cluster.kubectl("delete", "jwtauthenticator", name)
        return started

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        result = self.cluster.kubectl("get", kind, name, "-o", "json", check=False)
        if result.returncode != 0:
            return None
        document: dict[str, Any] = json.loads(result.stdout)
        return document

    def status(self, name: str) -> dict[str, Any]:
        obj = self.get("jwtauthenticator", name) or {}
        status: dict[str, Any] = obj.get("status") or {}
        return status

    def cleanup(self) -> None:
        for name in self.created:
            self.cluster.kubectl("delete", "jwtauthenticator", name, "--ignore-not-found",
                                 check=False)


@pytest.fixture
def admin(cluster: LocalCluster) -> Iterator[Admin]:
    a = Admin(cluster)
    try:
        yield a
    finally:
        a.cleanup()


def unique(name: str) -> str:
    """Objects are cluster-wide and outlive a test's concierge: never reuse a name."""
    return f"{name}-{secrets.token_hex(3)}"


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """Poll every 20 ms (the measured times below are that precise) until `condition` holds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.02)


def send(concierge: LocalConcierge, token: str, authenticator: str) -> dict[str, Any]:
    request = wire.TokenCredentialRequest.create(token=token, authenticator_name=authenticator)
    with httpx.Client(verify=ssl.create_default_context(cafile=str(concierge.ca_file)),
                      timeout=30) as http:
        response = http.post(concierge.url + wire.TOKEN_CREDENTIAL_REQUEST_PATH,
                             json=request.to_wire())
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


def username(concierge: LocalConcierge, token: str, authenticator: str) -> str | None:
    """Who the login makes of `token` at `authenticator`, or None if it fails."""
    status = send(concierge, token, authenticator)["status"]
    if "credential" not in status:
        assert status == {"message": wire.AUTHENTICATION_FAILED}
        return None
    return str(status["identity"]["username"])


def last_reason(concierge: LocalConcierge) -> str:
    return str(concierge.audit_lines()[-1]["reason"])


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    (found,) = [c for c in status.get("conditions", []) if c["type"] == type_]
    return dict(found)


def minted_object(name: str, minting: MintingIssuer, concierge: LocalConcierge,
                  **spec: Any) -> dict[str, Any]:
    """An object for the tests' minting issuer, labelled for `concierge`, prefix obj:."""
    manifest = jwt_authenticator(name, minting.issuer, minting.audience, minting.ca_file,
                                 concierge.instance_labels, usernamePrefix=OBJ_PREFIX,
                                 groupsPrefix=OBJ_PREFIX)
    manifest["spec"] |= spec
    return manifest


@pytest.fixture
def private_concierge(concierge_factory: Callable[..., LocalConcierge],
                      idp: LocalIdP) -> LocalConcierge:
    """Its own namespace and label: the objects of one test are seen by its concierge only."""
    return concierge_factory(idp)


def test_an_authenticator_applied_changed_and_deleted_takes_effect_without_a_restart(
        private_concierge: LocalConcierge, admin: Admin,
        minting_issuer: MintingIssuer) -> None:
    concierge, pid = private_concierge, private_concierge.pid
    name = unique("minted-obj")
    token = minting_issuer.mint()
    assert username(concierge, token, name) is None
    assert last_reason(concierge) == "unknown_authenticator"

    applied = admin.apply(minted_object(name, minting_issuer, concierge))
    wait_until(lambda: username(concierge, token, name) == "obj:alice@example.com",
               "a login at the new object", EFFECTIVE_WITHIN)
    created_in = time.monotonic() - applied
    status = wait_until(lambda: admin.status(name).get("phase") == "Ready"
                        and admin.status(name), "status Ready")
    for type_ in ("Ready", "IssuerURLValid", "DiscoveryURLValid", "JWKSURLValid",
                  "JWKSFetchValid", "AuthenticatorValid"):
        assert condition(status, type_)["status"] == "True", type_
        assert condition(status, type_)["observedGeneration"] == 1

    changed = admin.apply(minted_object(name, minting_issuer, concierge,
                                        usernamePrefix="obj2:", groupsPrefix="obj2:"))
    wait_until(lambda: username(concierge, token, name) == "obj2:alice@example.com",
               "a login with the changed prefix", EFFECTIVE_WITHIN)
    changed_in = time.monotonic() - changed
    wait_until(lambda: condition(admin.status(name), "Ready")["observedGeneration"] == 2,
               "the status of generation 2")

    other_audience = minting_issuer.mint({"aud": "another-client"})
    assert username(concierge, other_audience, name) is None
    assert last_reason(concierge) == "wrong_audience"
    admin.apply(minted_object(name, minting_issuer, concierge, audience="another-client",
                              usernamePrefix="obj2:", groupsPrefix="obj2:"))
    wait_until(lambda: username(concierge, other_audience, name) == "obj2:alice@example.com",
               "a login with the changed audience", EFFECTIVE_WITHIN)
    assert username(concierge, token, name) is None  # the old audience is gone
    assert last_reason(concierge) == "wrong_audience"

    deleted = admin.delete(name)
    wait_until(lambda: username(concierge, other_audience, name) is None
               and last_reason(concierge) == "unknown_authenticator",
               "logins at the deleted object refused", EFFECTIVE_WITHIN)
    deleted_in = time.monotonic() - deleted

    assert concierge.pid == pid  # no restart
    assert "serving https://" in concierge.all_logs()
    assert concierge.all_logs().count("serving https://") == 1
    print(f"\nkubectl apply -> working login: {created_in:.2f} s; spec change -> in effect: "
          f"{changed_in:.2f} s; kubectl delete -> refused: {deleted_in:.2f} s")


def test_objects_without_the_concierges_label_are_not_its_own(
        private_concierge: LocalConcierge, admin: Admin,
        minting_issuer: MintingIssuer) -> None:
    concierge = private_concierge
    foreign, own = unique("foreign"), unique("own")
    manifest = minted_object(foreign, minting_issuer, concierge)
    manifest["metadata"]["labels"] = {"concierge.pinniped.dev/instance": "someone-else"}
    admin.apply(manifest)
    admin.apply(minted_object(own, minting_issuer, concierge, usernamePrefix="own:",
                              groupsPrefix="own:"))
    token = minting_issuer.mint()
    wait_until(lambda: username(concierge, token, own), "the labelled object in use")
    assert username(concierge, token, foreign) is None
    assert last_reason(concierge) == "unknown_authenticator"
    assert admin.status(foreign) == {}  # never written by this concierge


def _expect_error(admin: Admin, name: str, type_: str, reason: str, *words: str) -> None:
    status = wait_until(lambda: admin.status(name).get("phase") == "Error"
                        and admin.status(name), f"{name} reported Error")
    failed = condition(status, type_)
    assert (failed["status"], failed["reason"]) == ("False", reason), failed
    for word in words:
        assert word in failed["message"], (word, failed["message"])
    ready = condition(status, "Ready")
    assert ready["status"] == "False"
    assert type_ in ready["message"]


def test_broken_authenticators_are_reported_in_their_status_and_never_used(
        private_concierge: LocalConcierge, admin: Admin, minting_issuer: MintingIssuer,
        id_token_for: Callable[..., str], tmp_path: Path) -> None:
    concierge = private_concierge
    good = unique("good")
    admin.apply(minted_object(good, minting_issuer, concierge))
    wait_until(lambda: admin.status(good).get("phase") == "Ready", "the good object Ready")

    other_ca = pki.CA.create(tmp_path / "other-ca", "not-the-issuers-ca")
    broken: dict[str, dict[str, Any]] = {
        "overlaps-file": {"usernamePrefix": "corp:", "groupsPrefix": "minted-corp:"},
        "overlaps-object": {"usernamePrefix": "obj:more:", "groupsPrefix": "more:"},
        "system-prefix": {"usernamePrefix": "system:x", "groupsPrefix": "sx:"},
        "bad-ca-data": {"usernamePrefix": "b1:", "groupsPrefix": "b1:",
                        "tls": {"certificateAuthorityData":
                                base64.b64encode(b"not a certificate").decode()}},
        "wrong-ca": {"usernamePrefix": "b2:", "groupsPrefix": "b2:",
                     "tls": {"certificateAuthorityData":
                             base64.b64encode(other_ca.cert_path.read_bytes()).decode()}},
        "unreachable": {"usernamePrefix": "b3:", "groupsPrefix": "b3:",
                        "issuer": f"https://127.0.0.1:{free_port()}"},
    }
    names = {key: unique(key) for key in broken}
    for key, spec in broken.items():
        admin.apply(minted_object(names[key], minting_issuer, concierge, **spec))
    clash = "corp"  # the name of a file authenticator: cluster-wide, so made once per run
    clash_manifest = minted_object(clash, minting_issuer, concierge, usernamePrefix="clash:",
                                   groupsPrefix="clash:")
    admin.apply(clash_manifest)

    _expect_error(admin, names["overlaps-file"], "AuthenticatorValid", "PrefixOverlap",
                  "spec.usernamePrefix", "'corp'", "config file")
    _expect_error(admin, names["overlaps-object"], "AuthenticatorValid", "PrefixOverlap",
                  good, "JWTAuthenticator in use")
    _expect_error(admin, names["system-prefix"], "AuthenticatorValid", "InvalidSpec",
                  "spec.usernamePrefix", "system:")
    _expect_error(admin, names["bad-ca-data"], "AuthenticatorValid", "InvalidSpec",
                  "spec.tls.certificateAuthorityData", "base64 -w0")
    _expect_error(admin, names["wrong-ca"], "DiscoveryURLValid", "DiscoveryFailed",
                  "CERTIFICATE_VERIFY_FAILED", "certificateAuthorityData")
    _expect_error(admin, names["unreachable"], "DiscoveryURLValid", "DiscoveryFailed",
                  "ConnectError", "can reach it")
    _expect_error(admin, clash, "AuthenticatorValid", "NameClash", "config file")

    token = minting_issuer.mint()
    for name in names.values():
        assert username(concierge, token, name) is None, name
        assert last_reason(concierge) == "authenticator_not_ready", name
    # The file's `corp` is still the real IdP's, whatever the object called corp says.
    assert username(concierge, token, clash) is None
    assert last_reason(concierge) == "unknown_key"  # checked against the real IdP's keys
    assert username(concierge, id_token_for("alice"), clash) == "corp:alice@example.com"
    assert username(concierge, token, good) == "obj:alice@example.com"

    issuer = admin.get("credentialissuer", concierge.credential_issuer) or {}
    published = {a["name"] for a in issuer["status"]["authenticators"]}
    assert published == {"corp", "corp-es256", good}

    # Fixing an object makes it Ready and usable, with no restart.
    fixed = minted_object(names["overlaps-file"], minting_issuer, concierge,
                          usernamePrefix="fixed:", groupsPrefix="fixed:")
    admin.apply(fixed)
    wait_until(lambda: username(concierge, token, names["overlaps-file"])
               == "fixed:alice@example.com", "the fixed object used", EFFECTIVE_WITHIN)


def test_status_is_written_once_per_change_not_in_a_loop(
        private_concierge: LocalConcierge, admin: Admin, minting_issuer: MintingIssuer,
        cluster: LocalCluster) -> None:
    name = unique("steady")
    admin.apply(minted_object(name, minting_issuer, private_concierge))
    wait_until(lambda: admin.status(name).get("phase") == "Ready", "Ready")
    first = (admin.get("jwtauthenticator", name) or {})["metadata"]["resourceVersion"]
    time.sleep(3)  # our own status write came back through the watch: nothing more to do
    assert (admin.get("jwtauthenticator", name) or {})["metadata"]["resourceVersion"] == first
    writes = [line for line in cluster.audit_log.read_text().splitlines()
              if f"/jwtauthenticators/{name}/status" in line and '"update"' in line
              and '"ResponseComplete"' in line]
    assert len(writes) == 2, writes  # Pending when admitted, then Ready


def test_the_credential_issuer_publishes_endpoint_ca_and_usable_authenticators(
        private_concierge: LocalConcierge, admin: Admin, minting_issuer: MintingIssuer,
        cluster: LocalCluster) -> None:
    concierge = private_concierge

    def published() -> dict[str, Any]:
        issuer = admin.get("credentialissuer", concierge.credential_issuer) or {}
        status: dict[str, Any] = issuer.get("status") or {}
        return status

    status = wait_until(published, "the CredentialIssuer")
    (strategy,) = status["strategies"]
    assert (strategy["type"], strategy["status"]) == ("ImpersonationToken", "Success")
    info = strategy["frontend"]["tokenCredentialRequestInfo"]
    assert info["server"] == concierge.url
    assert base64.b64decode(info["certificateAuthorityData"]) == concierge.ca_file.read_bytes()
    assert [(a["name"], a["source"]) for a in status["authenticators"]] == [
        ("corp", "config"), ("corp-es256", "config")]

    name = unique("published")
    admin.apply(minted_object(name, minting_issuer, concierge))
    status = wait_until(lambda: len(published().get("authenticators", [])) == 3 and published(),
                        "the new object published", EFFECTIVE_WITHIN)
    ca_data = base64.b64encode(minting_issuer.ca_file.read_bytes()).decode()
    assert status["authenticators"][2] == {
        "name": name, "kind": "JWTAuthenticator", "issuer": minting_issuer.issuer,
        "audience": minting_issuer.audience, "source": "cluster",
        "tls": {"certificateAuthorityData": ca_data}}
    assert status["authenticators"][0]["tls"]["certificateAuthorityData"] == ca_data  # caFile
    admin.delete(name)
    wait_until(lambda: len(published().get("authenticators", [])) == 2,
               "the deleted object unpublished", EFFECTIVE_WITHIN)

    # Any authenticated user may read both kinds (pinniped get kubeconfig); nobody may write.
    def can(verb: str, resource: str) -> bool:
        result = cluster.kubectl("auth", "can-i", verb, resource, "--as=corp:someone",
                                 "--as-group=system:authenticated", check=False)
        return result.stdout.strip() == "yes"

    assert can("get", "credentialissuers.config.concierge.pinniped.dev")
    assert can("list", "jwtauthenticators.authentication.concierge.pinniped.dev")
    assert not can("create", "jwtauthenticators.authentication.concierge.pinniped.dev")
    assert not can("update", "credentialissuers.config.concierge.pinniped.dev")


def test_a_concierge_with_no_file_authenticators_works_from_objects_alone(
        concierge_factory: Callable[..., LocalConcierge], idp: LocalIdP, admin: Admin,
        id_token_for: Callable[..., str]) -> None:
    concierge = concierge_factory(idp, authenticators=[])
    assert concierge.is_ready()
    issuer = wait_until(lambda: (admin.get("credentialissuer", concierge.credential_issuer)
                                 or {}).get("status"), "the CredentialIssuer")
    assert issuer["strategies"][0]["status"] == "Error"
    assert issuer["strategies"][0]["reason"] == "NoUsableAuthenticators"
    assert "lists no authenticators" in concierge.all_logs()

    name = unique("corp-object")
    applied = admin.apply(jwt_authenticator(name, idp.issuer, idp.client_id, idp.ca_file,
                                            concierge.instance_labels))
    token = id_token_for("alice")
    wait_until(lambda: username(concierge, token, name) == "corp:alice@example.com",
               "a login from the object alone", EFFECTIVE_WITHIN)
    print(f"\nno file authenticators: kubectl apply -> working login: "
          f"{time.monotonic() - applied:.2f} s")
    issuer = wait_until(lambda: ((admin.get("credentialissuer", concierge.credential_issuer)
                                  or {}).get("status") or {}).get("authenticators"),
                        "the object published")
    assert [a["name"] for a in issuer] == [name]


def test_the_custom_object_calls_on_the_real_apiserver(cluster: LocalCluster) -> None:
    """What the concierge's KubeAPI does with custom objects, and how the apiserver answers:
    a stale status write is a Conflict (never a lost update), a missing object NotFound, and
    a status write leaves the spec alone."""
    api = KubernetesClientAPI.from_kubeconfig(cluster.admin_kubeconfig, 10)
    name = unique("calls")

    async def go() -> None:
        with pytest.raises(NotFound):
            await api.read_custom(CREDENTIAL_ISSUERS, name)
        body = {"apiVersion": CREDENTIAL_ISSUERS.api_version, "kind": CREDENTIAL_ISSUERS.kind,
                "metadata": {"name": name}, "spec": {}}
        created = await api.create_custom(CREDENTIAL_ISSUERS, body)
        with pytest.raises(Conflict):  # another replica made it first
            await api.create_custom(CREDENTIAL_ISSUERS, body)
        written = await api.replace_custom_status(CREDENTIAL_ISSUERS, name, created | {
            "status": {"authenticators": [], "strategies": []}})
        assert written["metadata"]["resourceVersion"] != created["metadata"]["resourceVersion"]
        with pytest.raises(Conflict):  # `created` is stale now
            await api.replace_custom_status(CREDENTIAL_ISSUERS, name, created | {
                "status": {"strategies": []}})
        read = await api.read_custom(CREDENTIAL_ISSUERS, name)
        assert read["status"] == {"authenticators": [], "strategies": []}

    try:
        asyncio.run(go())
    finally:
        api.close()
        cluster.kubectl("delete", "credentialissuer", name, "--ignore-not-found", check=False)
