"""The running concierge publishes /openapi.json, and a real login matches it."""

from __future__ import annotations

import ssl

import httpx
import pytest

from localenv.concierge import LocalConcierge
from localenv.idp import LocalIdP
from localenv.openapi_schema import component_validator
from pinniped_apis import constants, wire

pytestmark = pytest.mark.integration


def test_a_real_login_matches_the_published_schemas(concierge: LocalConcierge,
                                                    idp: LocalIdP) -> None:
    context = ssl.create_default_context(cafile=str(concierge.ca_file))
    with httpx.Client(base_url=concierge.url, verify=context, timeout=30) as http:
        document = http.get("/openapi.json").json()
        requests = constants.ELEVATION_REQUESTS_PATH
        assert set(document["paths"]) == {
            wire.TOKEN_CREDENTIAL_REQUEST_PATH, wire.WHOAMI_REQUEST_PATH,
            wire.LOGOUT_REQUEST_PATH, requests, constants.ELEVATION_STATE_PATH,
            *(f"{requests}/{{request_id}}/{action}" for action in constants.ELEVATION_ACTIONS)}
        # The request exactly as the CLI's concierge client builds it, with a real ID token.
        request = wire.TokenCredentialRequest.create(
            token=idp.password_grant("alice")["id_token"],
            authenticator_name=concierge.authenticator_name).to_wire()
        component_validator(document, "TokenCredentialRequest").validate(request)
        answer = http.post(wire.TOKEN_CREDENTIAL_REQUEST_PATH, json=request)
        assert answer.status_code == 200, answer.text
        component_validator(document, "TokenCredentialRequestResponse").validate(answer.json())
        assert wire.parse_credential_response(answer.json()).identity.username.startswith(
            "corp:")
        broken = {**request, "spec": {**request["spec"], "token": 42}}
        refused = http.post(wire.TOKEN_CREDENTIAL_REQUEST_PATH, json=broken)
        assert refused.status_code == 400
        component_validator(document, "Status").validate(refused.json())
        assert refused.json()["details"]["causes"][0]["field"] == "spec.token"
        assert http.get("/docs").status_code == 404
