"""The CredentialIssuer the concierge publishes, with a fake Kubernetes."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import pytest

from localenv import pki
from localenv.app_env import FakeVerifier
from localenv.fixtures_concierge import FakeKube, ManualClock
from pinniped_concierge import naming
from pinniped_concierge.authenticator_set import Authenticator, AuthenticatorSet
from pinniped_concierge.credential_issuer_publisher import CredentialIssuerPublisher
from pinniped_concierge.errors import ServerError
from pinniped_concierge.identity import IdentityMapper
from pinniped_concierge.kubeapi import Conflict, NotFound

CA = b"-----BEGIN CERTIFICATE-----\nMIIB...\n-----END CERTIFICATE-----\n"
ENDPOINT = "https://concierge.example.com"
MAPPER = IdentityMapper("email", "groups", "x:", "x:")


def authenticator(issuer: str, source: Any = "config",
                  ca_data: str | None = None) -> Authenticator:
    return Authenticator(FakeVerifier(), MAPPER, issuer=issuer, audience="pinniped-cli",
                         source=source, issuer_ca_data=ca_data)


class World:
    def __init__(self, file: dict[str, Authenticator] | None = None) -> None:
        self.clock = ManualClock()
        self.kube = FakeKube(self.clock)
        self.set = AuthenticatorSet(file if file is not None else {
            "corp": authenticator("https://corp.example")})
        self.publisher = CredentialIssuerPublisher(
            self.kube, self.set, name="pinniped-concierge", endpoint=ENDPOINT, ca_bundle=CA,
            namespace="pinniped-concierge", clock=self.clock)

    def publish(self) -> bool:
        return asyncio.run(self.publisher.publish())

    def obj(self) -> dict[str, Any]:
        return self.kube.custom[("credentialissuers", "pinniped-concierge")]


def test_it_is_created_with_the_endpoint_the_ca_and_the_authenticators() -> None:
    w = World()
    assert w.publish()
    obj = w.obj()
    assert obj["metadata"]["labels"] == {naming.MANAGED_BY_LABEL: naming.MANAGED_BY,
                                         naming.NAMESPACE_LABEL: "pinniped-concierge"}
    (strategy,) = obj["status"]["strategies"]
    assert strategy["type"] == "ImpersonationToken"
    assert (strategy["status"], strategy["reason"]) == ("Success", "Ready")
    assert strategy["lastUpdateTime"] == "2023-11-14T22:13:20Z"
    assert strategy["frontend"] == {
        "type": "TokenCredentialRequestAPI",
        "tokenCredentialRequestInfo": {"server": ENDPOINT,
                                       "certificateAuthorityData": base64.b64encode(CA).decode()}}
    assert obj["status"]["authenticators"] == [
        {"name": "corp", "kind": "JWTAuthenticator", "issuer": "https://corp.example",
         "audience": "pinniped-cli", "source": "config"}]
    assert w.kube.calls == ["read CredentialIssuer", "create CredentialIssuer",
                            "update CredentialIssuer status"]


def test_nothing_is_written_while_nothing_changed_not_even_the_time() -> None:
    w = World()
    w.publish()
    w.clock.now += 3600
    assert not w.publish()
    assert w.kube.calls.count("update CredentialIssuer status") == 1
    assert w.obj()["status"]["strategies"][0]["lastUpdateTime"] == "2023-11-14T22:13:20Z"


def test_authenticators_coming_and_going_are_published_file_ones_first() -> None:
    w = World()
    w.publish()
    w.clock.now += 60
    w.set.publish({"b-obj": authenticator("https://b.example", "cluster"),
                   "a-obj": authenticator("https://a.example", "cluster")}, {})
    assert w.publish()
    published = [(a["name"], a["source"]) for a in w.obj()["status"]["authenticators"]]
    assert published == [("corp", "config"), ("a-obj", "cluster"), ("b-obj", "cluster")]
    assert w.obj()["status"]["strategies"][0]["lastUpdateTime"] == "2023-11-14T22:14:20Z"
    w.set.publish({}, {"a-obj": "Error"})
    assert w.publish()
    assert [a["name"] for a in w.obj()["status"]["authenticators"]] == ["corp"]


def test_each_issuers_ca_is_published_when_it_has_one(tmp_path: Path) -> None:
    ca = pki.CA.create(tmp_path, "idp-ca")
    ca_data = base64.b64encode(ca.cert_path.read_bytes()).decode()
    w = World(file={"corp": authenticator("https://corp.example", ca_data=ca_data),
                    "public": authenticator("https://public.example")})
    w.publish()
    corp, public = w.obj()["status"]["authenticators"]
    assert corp["tls"] == {"certificateAuthorityData": ca_data}
    assert "tls" not in public  # the system trust store


def test_with_no_usable_authenticator_the_strategy_says_what_to_do() -> None:
    w = World(file={})
    w.publish()
    (strategy,) = w.obj()["status"]["strategies"]
    assert (strategy["status"], strategy["reason"]) == ("Error", "NoUsableAuthenticators")
    assert "apply a JWTAuthenticator" in strategy["message"]
    assert w.obj()["status"]["authenticators"] == []


def test_a_change_wakes_the_publisher() -> None:
    w = World()

    async def go() -> None:
        task = asyncio.create_task(w.publisher.run())
        async with asyncio.timeout(5):
            while ("credentialissuers", "pinniped-concierge") not in w.kube.custom:
                await asyncio.sleep(0.01)
            w.set.publish({"obj": authenticator("https://obj.example", "cluster")}, {})
            while len(w.obj()["status"]["authenticators"]) != 2:
                await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())


def test_an_edit_by_someone_else_is_repaired_at_the_next_resync() -> None:
    w = World()
    w.publish()
    w.obj()["status"] = {"strategies": []}
    w.obj()["metadata"]["resourceVersion"] = "someone-else"
    assert not w.publish()  # our copy says all is well: no read, no write
    w.publisher.resync()
    assert w.publish()
    assert w.obj()["status"]["authenticators"][0]["name"] == "corp"


def test_a_stale_copy_is_refused_then_read_again() -> None:
    w = World()
    w.publish()
    w.obj()["metadata"]["resourceVersion"] = "someone-else"
    w.set.publish({"obj": authenticator("https://obj.example", "cluster")}, {})
    with pytest.raises(Conflict):
        w.publish()
    assert w.publish()
    assert len(w.obj()["status"]["authenticators"]) == 2


def test_a_deleted_object_is_created_again() -> None:
    w = World()
    w.publish()
    del w.kube.custom[("credentialissuers", "pinniped-concierge")]
    w.publisher.resync()
    assert w.publish()
    assert w.obj()["status"]["authenticators"][0]["name"] == "corp"
    assert w.kube.calls.count("create CredentialIssuer") == 2


def test_a_cluster_without_the_crd_gets_an_error_naming_the_file_to_apply() -> None:
    w = World()

    async def missing(resource: Any, body: dict[str, Any]) -> dict[str, Any]:
        raise NotFound(resource.plural)

    w.kube.create_custom = missing  # type: ignore[method-assign]
    with pytest.raises(ServerError, match=r"apply deploy/crds\.yaml"):
        w.publish()
