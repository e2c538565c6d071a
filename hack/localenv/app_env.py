"""The concierge's HTTP app with a fake Kubernetes and a fake token verifier, for unit tests.

`AppEnv` wires the real services (logins, sessions, per-user objects, the
audit log) to `FakeKube` and `FakeVerifier`, and sends requests through
httpx's ASGI transport, so a test sees exactly what a client would.
"""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import httpx

from localenv.fixtures_concierge import FakeKube
from pinniped_apis import wire
from pinniped_concierge.app import Services, create_app
from pinniped_concierge.audit import AuditLog
from pinniped_concierge.credential_review import CredentialReviewer
from pinniped_concierge.errors import Reason, Rejected
from pinniped_concierge.identity import IdentityMapper
from pinniped_concierge.login import Authenticator, LoginService
from pinniped_concierge.object_watch import ObjectVersions
from pinniped_concierge.ratelimit import RateLimiter
from pinniped_concierge.sessions import Sessions
from pinniped_concierge.userobjects import UserObjects

NS = "pinniped-concierge"
ALICE_TOKEN = "eyJhbGciOiJSUzI1NiJ9.alice-id-token-payload.signature-of-alice"
BOB_TOKEN = "eyJhbGciOiJSUzI1NiJ9.bob-id-token-payload.signature-of-bob"


class FakeVerifier:
    """Maps known token strings to claims; anything else is 'expired'."""

    def __init__(self) -> None:
        self.claims = {
            ALICE_TOKEN: {"email": "alice@example.com", "groups": ["devs", "readers"]},
            BOB_TOKEN: {"email": "bob@example.com", "groups": ["ops"]},
        }
        self.failure: Exception | None = None
        self.is_ready = True

    @property
    def name(self) -> str:
        return "corp"

    async def verify(self, token: str) -> dict[str, object]:
        if self.failure is not None:
            raise self.failure
        if token not in self.claims:
            raise Rejected(Reason.EXPIRED, "expired 5s ago")
        return dict(self.claims[token])

    async def ready(self) -> bool:
        return self.is_ready


#: The client address requests come from, unless a test says otherwise.
CLIENT = ("192.0.2.7", 50123)


class AppEnv:
    def __init__(self, *, rate_limiter: RateLimiter | None = None, **settings: Any) -> None:
        self.kube = FakeKube()
        self.verifier = FakeVerifier()
        self.audit_stream = io.StringIO()
        versions = self.kube.watch(ObjectVersions(), NS)
        user_objects = UserObjects(self.kube, NS, 300, versions)
        self.sessions = Sessions(self.kube, NS, 600, 30, versions=versions)
        mapper = IdentityMapper("email", "groups", "corp:", "corp:")
        self.services = Services(
            login=LoginService({"corp": Authenticator(self.verifier, mapper)}, user_objects,
                               self.sessions),
            reviewer=CredentialReviewer(self.kube, NS, user_objects),
            sessions=self.sessions, kube=self.kube, namespace=NS,
            audit=AuditLog(self.audit_stream), **{"readiness_cache_seconds": 0.0} | settings)
        self.services.metrics.watch_objects(versions)
        self.app = create_app(self.services, rate_limiter=rate_limiter)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.request_from(CLIENT, method, path, **kwargs)

    def request_from(self, client: tuple[str, int], method: str, path: str,
                     **kwargs: Any) -> httpx.Response:
        """One request from `client` (the TCP peer's address and port)."""
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app, client=client)
            async with httpx.AsyncClient(transport=transport,
                                         base_url="https://concierge") as http:
                return await http.request(method, path, **kwargs)

        return asyncio.run(go())

    def login(self, token: str = ALICE_TOKEN, name: str = "corp", **extra: Any) -> httpx.Response:
        body = wire.TokenCredentialRequest.create(token=token, authenticator_name=name).to_wire()
        return self.request("POST", wire.TOKEN_CREDENTIAL_REQUEST_PATH, json=body, **extra)

    def audit(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit_stream.getvalue().splitlines()]
