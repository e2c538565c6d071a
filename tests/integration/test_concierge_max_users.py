"""`maxUsers`: a concierge that already manages that many users sets up no new one, against
the real apiserver; the users it has keep logging in."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable

import httpx
import pytest

from localenv.cluster import LocalCluster
from localenv.concierge import LocalConcierge, MintingIssuer
from localenv.idp import LocalIdP
from localenv.logins import login, post
from pinniped_apis import wire

pytestmark = pytest.mark.integration


def attempt(concierge: LocalConcierge, token: str) -> httpx.Response:
    request = wire.TokenCredentialRequest.create(token=token, authenticator_name="minted")
    return post(concierge, wire.TOKEN_CREDENTIAL_REQUEST_PATH, request.to_wire())


def test_a_new_user_beyond_max_users_waits_and_known_users_go_on(
        concierge_factory: Callable[..., LocalConcierge], idp: LocalIdP, cluster: LocalCluster,
        minting_issuer: MintingIssuer) -> None:
    concierge = concierge_factory(idp, extra_issuers=[minting_issuer], maxUsers=2)
    emails = [f"max-users-{n}-{secrets.token_hex(3)}@example.com" for n in range(3)]
    for email in emails[:2]:
        login(concierge, minting_issuer.mint(email=email), "minted")
    time.sleep(1)  # the watch shows the two bindings within milliseconds; room for a busy box

    refused = attempt(concierge, minting_issuer.mint(email=emails[2]))
    assert refused.status_code == 503, refused.text
    assert int(refused.headers["Retry-After"]) >= 1
    assert concierge.audit_lines()[-1]["reason"] == "user_limit_reached"
    bindings = json.loads(cluster.kubectl(
        "get", "clusterrolebindings", "-l",
        f"concierge.pinniped.dev/namespace={concierge.namespace}", "-o", "json").stdout)
    assert len(bindings["items"]) == 2

    again = login(concierge, minting_issuer.mint(email=emails[0]), "minted")
    assert again.identity.username.endswith(emails[0])
