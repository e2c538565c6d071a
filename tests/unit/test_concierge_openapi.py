"""/openapi.json describes the three APIs with the very models that validate them."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

import jsonschema
import pytest

from localenv.app_env import ALICE_TOKEN, AppEnv
from localenv.openapi_schema import component_validator
from pinniped_apis import wire

API_PATHS = (wire.TOKEN_CREDENTIAL_REQUEST_PATH, wire.WHOAMI_REQUEST_PATH,
             wire.LOGOUT_REQUEST_PATH)


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    response = AppEnv().request("GET", "/openapi.json")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def request_schema_name(document: dict[str, Any], path: str) -> str:
    content = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    schema = content["schema"]
    refs = [schema] if "$ref" in schema else schema.get("anyOf", [])
    (ref,) = [r["$ref"] for r in refs if "$ref" in r]
    return str(ref.rsplit("/", 1)[1])


def test_the_document_describes_exactly_the_three_apis(document: dict[str, Any]) -> None:
    assert sorted(document["paths"]) == sorted(API_PATHS)
    assert [request_schema_name(document, p) for p in API_PATHS] == [
        "TokenCredentialRequest", "WhoAmIRequest", "LogoutRequest"]
    login = document["paths"][wire.TOKEN_CREDENTIAL_REQUEST_PATH]["post"]
    assert login["requestBody"]["required"] is True
    ok = login["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert ok.endswith("/TokenCredentialRequestResponse")
    assert set(login["responses"]) == {"200", "400", "408", "413", "415", "429", "503"}
    whoami = document["paths"][wire.WHOAMI_REQUEST_PATH]["post"]
    assert "required" not in whoami["requestBody"]  # the body is optional
    assert "401" in whoami["responses"]
    assert "HTTPValidationError" not in document["components"]["schemas"]  # no 422s here


def test_a_real_request_matches_the_published_schema(document: dict[str, Any]) -> None:
    schema = component_validator(document, "TokenCredentialRequest")
    request = wire.TokenCredentialRequest.create(token=ALICE_TOKEN, authenticator_name="corp")
    schema.validate(request.to_wire())
    # What Pinniped's own Go client sends, metadata and empty status included.
    schema.validate({**request.to_wire(), "metadata": {"creationTimestamp": None}, "status": {}})


@pytest.mark.parametrize("mutate", [
    lambda b: b["spec"].update(token=7),
    lambda b: b["spec"].update(token=""),
    lambda b: b["spec"].update(token="x" * (wire.MAX_TOKEN_BYTES + 1)),
    lambda b: b["spec"].pop("authenticator"),
    lambda b: b["spec"]["authenticator"].update(apiGroup="evil.example.com"),
    lambda b: b.update(kind="Pod"),
    lambda b: b.update(surprise=True),
    lambda b: b.pop("apiVersion"),
    lambda b: b.pop("kind"),
    lambda b: b["spec"]["authenticator"].pop("kind"),
])
def test_the_schema_refuses_what_the_concierge_refuses(document: dict[str, Any],
                                                       mutate: Any) -> None:
    body = wire.TokenCredentialRequest.create(token=ALICE_TOKEN,
                                              authenticator_name="corp").to_wire()
    mutate(body)
    with pytest.raises(jsonschema.ValidationError):
        component_validator(document, "TokenCredentialRequest").validate(body)
    response = AppEnv().request("POST", wire.TOKEN_CREDENTIAL_REQUEST_PATH, json=body)
    assert response.status_code == 400


def test_real_answers_match_the_published_response_schemas(document: dict[str, Any]) -> None:
    env = AppEnv()
    component_validator(document, "TokenCredentialRequestResponse").validate(env.login().json())
    component_validator(document, "TokenCredentialRequestResponse").validate(
        env.login(token="not-a-valid-token").json())
    error = env.request("POST", wire.TOKEN_CREDENTIAL_REQUEST_PATH, json={"kind": "Pod"})
    component_validator(document, "Status").validate(error.json())
    whoami = wire.whoami_response(wire.Identity("corp:alice", ("corp:devs",)),
                                  dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
    component_validator(document, "WhoAmIRequestResponse").validate(whoami)
    component_validator(document, "LogoutRequestResponse").validate(wire.logout_response(True))


@pytest.mark.parametrize("where", ["spec.token", "spec.authenticator.name", "metadata",
                                   "surprise"])
def test_a_400_never_quotes_what_was_sent(where: str) -> None:
    """FastAPI's own validation errors quote the input; ours, at the HTTP level, never do."""
    secret = "eyJhbGciOiJSUzI1NiJ9.secret-claims." + "s" * 40
    body = wire.TokenCredentialRequest.create(token=ALICE_TOKEN,
                                              authenticator_name="corp").to_wire()
    if where == "spec.token":
        body["spec"]["token"] = [secret]
    elif where == "spec.authenticator.name":
        body["spec"]["authenticator"]["name"] = {"token": secret}
    elif where == "metadata":
        body["metadata"] = secret
    else:
        body["surprise"] = secret
    env = AppEnv()
    response = env.request("POST", wire.TOKEN_CREDENTIAL_REQUEST_PATH, json=body)
    assert response.status_code == 400
    assert response.json()["details"]["causes"][0]["field"] == where
    assert "secret-claims" not in response.text
    assert "secret-claims" not in env.audit_stream.getvalue()


@pytest.mark.parametrize(("headers", "content", "code"), [
    ({}, b'{"kind": "x"}', 415),  # no Content-Type: refused, not guessed at
    ({"content-type": "text/plain"}, b'{"kind": "x"}', 415),
    ({"content-type": "text/x+json"}, b'{"kind": "x"}', 415),  # +json only under application/
    ({"content-type": "application/merge-patch+json"}, b'{"kind": "x"}', 400),
    ({"content-type": "application/json; charset=utf-8"}, b'{"kind": "x"}', 400),
])
def test_only_json_content_types_are_read(headers: dict[str, str], content: bytes,
                                          code: int) -> None:
    response = AppEnv().request("POST", wire.TOKEN_CREDENTIAL_REQUEST_PATH, content=content,
                                headers=headers)
    assert response.status_code == code
    field = "body" if code == 415 else "apiVersion"
    assert response.json()["details"]["causes"][0]["field"] == field


def test_a_wrong_content_type_is_refused_before_the_body_is_read() -> None:
    """A sender announcing a non-JSON body gets 415 at once, not after 10 s of trickling."""
    async def never() -> Any:
        yield b"{"
        await asyncio.sleep(30)

    started = time.monotonic()
    response = AppEnv().request("POST", wire.TOKEN_CREDENTIAL_REQUEST_PATH, content=never(),
                                headers={"content-type": "text/plain"})
    assert response.status_code == 415
    assert time.monotonic() - started < 5
