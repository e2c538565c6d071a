"""The services `pinniped-concierge` assembles, run for real against a fake Kubernetes."""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from localenv import pki
from localenv.fake_cluster_lists import ListingFakeKube
from localenv.fixtures_concierge import FakeKube
from pinniped_apis import wire
from pinniped_concierge import config, server
from pinniped_concierge.app import create_app
from pinniped_concierge.cluster_authenticators import ClusterAuthenticators
from pinniped_concierge.kubeapi import JWT_AUTHENTICATORS, Kind
from pinniped_concierge.revocations import new_marker
from pinniped_concierge.userobjects import UserObjects


def test_a_config_without_authenticators_serves_jwtauthenticator_objects(
        tmp_path: Path) -> None:
    ca = pki.CA.create(tmp_path / "ca", "serving-ca")
    tls = ca.issue(tmp_path, "concierge")
    cfg = config.parse(yaml.safe_dump({
        "tls": {"certFile": str(tls.cert_path), "keyFile": str(tls.key_path),
                "caFile": str(ca.cert_path)},
        "namespace": "ns", "externalEndpoint": "https://concierge.example.com",
        "auditLog": str(tmp_path / "audit.log")}), tmp_path)
    kube = FakeKube()
    services = server.build_services(cfg, kube=kube)
    (listed,) = [check for check in services.readiness_checks
                 if isinstance(getattr(check, "__self__", None), ClusterAuthenticators)]
    controller = getattr(listed, "__self__", None)
    assert isinstance(controller, ClusterAuthenticators)
    app = create_app(services)

    def issuer() -> dict[str, Any]:
        status: dict[str, Any] = kube.custom.get(("credentialissuers", "ns"), {}).get(
            "status") or {}
        return status

    async def until(condition: Any) -> None:
        async with asyncio.timeout(10):
            while not condition():
                await asyncio.sleep(0.01)

    async def go() -> None:
        async with app.router.lifespan_context(app):
            assert await listed() is not None  # not ready before the objects are listed
            kube.watch_custom(JWT_AUTHENTICATORS, controller.mirror)
            assert await listed() is None
            await until(lambda: issuer().get("strategies"))
            (strategy,) = issuer()["strategies"]
            assert strategy["reason"] == "NoUsableAuthenticators"
            info = strategy["frontend"]["tokenCredentialRequestInfo"]
            assert info["server"] == "https://concierge.example.com"
            assert base64.b64decode(info["certificateAuthorityData"]) == \
                ca.cert_path.read_bytes()
            kube.apply_custom(JWT_AUTHENTICATORS, "down", {
                "issuer": "https://127.0.0.1:1", "audience": "a",
                "usernamePrefix": "d:", "groupsPrefix": "d:"})
            await until(lambda: (kube.custom[("jwtauthenticators", "down")].get("status")
                                 or {}).get("phase") == "Error")
        # the lifespan's end stopped the key check of the object and closed its client
        assert controller._entries == {}

    asyncio.run(go())
    conditions = kube.custom[("jwtauthenticators", "down")]["status"]["conditions"]
    (discovery,) = [c for c in conditions if c["type"] == "DiscoveryURLValid"]
    assert discovery["status"] == "False"
    assert "127.0.0.1:1/.well-known/openid-configuration" in discovery["message"]


def _config(tmp_path: Path, **keys: Any) -> config.Config:
    ca = pki.CA.create(tmp_path / "ca", "serving-ca")
    tls = ca.issue(tmp_path, "concierge")
    return config.parse(yaml.safe_dump({
        "tls": {"certFile": str(tls.cert_path), "keyFile": str(tls.key_path),
                "caFile": str(ca.cert_path)},
        "namespace": "ns", "externalEndpoint": "https://concierge.example.com",
        "auditLog": str(tmp_path / "audit.log"), "jwtAuthenticators": {"watch": False},
        "authenticators": [{"name": "corp", "issuer": "https://127.0.0.1:1", "audience": "a",
                            "usernamePrefix": "corp:", "groupsPrefix": "corp:"}]} | keys),
        tmp_path)


@pytest.mark.parametrize("leading", [True, False])
def test_only_the_lease_holder_removes_idle_users_and_expired_revocations(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, leading: bool) -> None:
    cfg = _config(tmp_path, identityIdleTimeoutSeconds=600, revocationRetentionSeconds=3600)
    long_ago = time.time() - 100_000
    kube = ListingFakeKube(lambda: long_ago)
    alice = wire.Identity("corp:alice@example.com", ("corp:devs",))
    asyncio.run(UserObjects(kube, "ns", 0, clock=lambda: long_ago).ensure(alice))
    asyncio.run(kube.create(Kind.SECRET, new_marker(alice.username, "ns", long_ago, "admin"),
                            "ns"))
    if not leading:  # another replica holds the Lease, and keeps renewing it
        kube.leases[("ns", cfg.lease.name)] = {
            "metadata": {"name": cfg.lease.name, "namespace": "ns", "resourceVersion": "1"},
            "spec": {"holderIdentity": "another-replica", "leaseDurationSeconds": 300}}
    monkeypatch.setattr(server, "cleanup_interval", lambda _timeout: 0.05)
    app = create_app(server.build_services(cfg, kube=kube))

    def remaining() -> list[str]:
        return [f"{kind} {name}" for (kind, _, name) in kube.objects]

    async def go() -> list[str]:
        async with app.router.lifespan_context(app):
            async with asyncio.timeout(10):
                while leading and remaining():
                    await asyncio.sleep(0.02)
            if not leading:
                await asyncio.sleep(0.5)  # ten intervals: a leader would have cleaned up
            return remaining()

    left = asyncio.run(go())
    assert (left == []) == leading, left
    assert len(left) == (0 if leading else 4)
