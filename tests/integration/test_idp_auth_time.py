"""The local IdP says when the person authenticated (`auth_time`), and a refresh keeps it.

`revoke-user` refuses ID tokens authenticated before the revocation; that only
holds against a stolen refresh token if refreshed ID tokens carry the original
`auth_time` (`iat` is renewed by every refresh). hack/idp/server.mjs turns on
`require_auth_time` for every client by default, and its password grant honours
it too; a client registered with `require_auth_time: false` gets no `auth_time`,
the case where the concierge falls back to `iat`.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from localenv.idp import LocalIdP, default_clients

pytestmark = pytest.mark.integration


def claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


GRANTS: dict[str, Callable[[LocalIdP], dict[str, Any]]] = {
    "password": lambda idp: idp.password_grant("alice"),
    "authorization code": lambda idp: idp.authorization_code_login("alice"),
    "device": lambda idp: idp.device_login("alice"),
}


@pytest.mark.parametrize("grant", GRANTS)
def test_every_grant_carries_auth_time_and_a_refresh_keeps_it(idp: LocalIdP,
                                                               grant: str) -> None:
    before = int(time.time())
    tokens = GRANTS[grant](idp)
    first = claims(tokens["id_token"])
    assert before - 1 <= first["auth_time"] <= int(time.time()) + 1
    time.sleep(1.1)  # so that a refreshed iat is visibly later
    refreshed = claims(idp.refresh(tokens["refresh_token"])["id_token"])
    assert refreshed["auth_time"] == first["auth_time"]
    assert refreshed["iat"] > first["iat"]


def test_a_client_that_opts_out_gets_no_auth_time(
        idp_factory: Callable[..., LocalIdP]) -> None:
    clients = [dict(client, require_auth_time=False) for client in default_clients()]
    idp = idp_factory(clients=clients)
    for grant in ("password", "authorization code"):
        tokens = GRANTS[grant](idp)
        assert "auth_time" not in claims(tokens["id_token"])
        assert "auth_time" not in claims(idp.refresh(tokens["refresh_token"])["id_token"])
