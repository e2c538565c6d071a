"""The services `pinniped-concierge` assembles, run for real against a fake Kubernetes."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import yaml

from localenv import pki
from localenv.fixtures_concierge import FakeKube
from pinniped_concierge import config, server
from pinniped_concierge.app import create_app
from pinniped_concierge.cluster_authenticators import ClusterAuthenticators
from pinniped_concierge.kubeapi import JWT_AUTHENTICATORS


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
    (listed,) = services.readiness_checks
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
