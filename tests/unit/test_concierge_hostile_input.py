"""No string or JSON shape a client can send gets a 5xx (property tests with hypothesis).

Each of the three request bodies is generated with every string field replaced
by arbitrary text (unpaired UTF-16 surrogates, control characters and all of
Unicode included) or by an arbitrary JSON value, plus unknown fields with such
names; the bodies are sent both as JSON escapes (`"\\udc80"`) and as raw bytes
(surrogates encoded as UTF-8 would encode them, which Python's JSON parser
accepts). Whatever comes back must be a well-formed answer below 500.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from localenv.app_env import ALICE_TOKEN, AppEnv
from pinniped_apis import constants, validation, wire

#: Every code point, unpaired surrogates (category Cs) and control characters included.
ANY_TEXT = st.text(st.characters(codec=None, categories=None), max_size=40)
NASTY_TEXT = st.sampled_from(["\udc80", "\ud800", "a\udfffb", "\x00", "\x1b[31m", "\u202e",
                              "\ufeff", "\U0001f600", "\ud83d\ude00", "", " ", "corp\n"])
TEXT = ANY_TEXT | NASTY_TEXT
JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12)
FIELD = TEXT | JSON_VALUE

PATHS = {"login": wire.TOKEN_CREDENTIAL_REQUEST_PATH, "whoami": wire.WHOAMI_REQUEST_PATH,
         "logout": wire.LOGOUT_REQUEST_PATH}


AUTHENTICATOR = JSON_VALUE | st.fixed_dictionaries({
    "apiGroup": FIELD | st.just(wire.AUTHENTICATOR_GROUP),
    "kind": FIELD | st.just("JWTAuthenticator"),
    "name": FIELD | st.just("corp")})
LOGIN_SPEC = JSON_VALUE | st.fixed_dictionaries({
    "token": FIELD | st.just(ALICE_TOKEN), "authenticator": AUTHENTICATOR})


@st.composite
def login_bodies(draw: st.DrawFn) -> Any:
    return {"apiVersion": draw(FIELD | st.just(constants.LOGIN_API_VERSION)),
            "kind": draw(FIELD | st.just("TokenCredentialRequest")),
            "metadata": draw(st.none() | JSON_VALUE),
            "spec": draw(LOGIN_SPEC)}


@st.composite
def empty_spec_bodies(draw: st.DrawFn, api_version: str, kind: str) -> Any:
    return {"apiVersion": draw(FIELD | st.just(api_version)),
            "kind": draw(FIELD | st.just(kind)),
            "spec": draw(st.just({}) | JSON_VALUE)}


BODIES = {
    "login": login_bodies(),
    "whoami": empty_spec_bodies(constants.IDENTITY_API_VERSION, "WhoAmIRequest"),
    "logout": empty_spec_bodies(constants.LOGIN_API_VERSION, "LogoutRequest"),
}


@st.composite
def requests(draw: st.DrawFn, kind: str) -> tuple[bytes, dict[str, str]]:
    body = draw(BODIES[kind] | JSON_VALUE)
    if isinstance(body, dict) and draw(st.booleans()):
        body[draw(TEXT)] = draw(JSON_VALUE)  # an unknown field, named by the client
    if draw(st.booleans()):
        content = json.dumps(body).encode("ascii")  # surrogates as \\udc80 escapes
    else:
        content = json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")
    headers = {"content-type": "application/json"}
    bearer = draw(st.none() | st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e),
                                      max_size=30))
    if bearer is not None:
        headers["authorization"] = f"Bearer {bearer}"
    return content, headers


@pytest.fixture(scope="module")
def env() -> AppEnv:
    return AppEnv()


@pytest.mark.parametrize("kind", sorted(PATHS))
def test_no_body_gets_a_5xx(env: AppEnv, kind: str) -> None:
    @settings(max_examples=250, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(requests(kind))
    def check(request: tuple[bytes, dict[str, str]]) -> None:
        content, headers = request
        response = env.request("POST", PATHS[kind], content=content, headers=headers)
        assert response.status_code < 500, response.text
        answer = response.json()  # always a JSON document, whatever was echoed
        if response.status_code >= 400:
            assert wire.is_status_error(answer)

    check()


@pytest.mark.parametrize("text", [chr(0xDC80), chr(0xD800) + "x", "a" + chr(0xDFFF)])
@pytest.mark.parametrize("field", ["name", "kind", "token"])
def test_lone_surrogates_in_a_login_are_400_naming_the_field(env: AppEnv, text: str,
                                                             field: str) -> None:
    """The review's case (`"\\udc80"` in spec.authenticator.name gave a 500), in each string
    field: refused by the model, whatever pydantic release is installed."""
    response = env.request("POST", wire.TOKEN_CREDENTIAL_REQUEST_PATH,
                           content=json.dumps(login_with(field, text)).encode("ascii"),
                           headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    path = "spec.token" if field == "token" else f"spec.authenticator.{field}"
    assert response.json()["details"]["causes"][0]["field"] == path
    assert response.json()["message"] == f"{path}: {validation.NOT_UNICODE}"
    assert env.audit()[-1]["reason"] == "malformed_request"


@pytest.mark.parametrize("text", ["\x00\x1b[2J", "\u202ecorp", "\U0001f600", "\ud83d\ude00"])
@pytest.mark.parametrize("field", ["name", "kind", "token"])
def test_other_odd_text_in_a_login_fails_uniformly(env: AppEnv, text: str, field: str) -> None:
    """Control characters and any valid Unicode (a surrogate *pair* is one character) are
    text: the login just fails, and the answer echoes them escaped."""
    response = env.request("POST", wire.TOKEN_CREDENTIAL_REQUEST_PATH,
                           content=json.dumps(login_with(field, text)).encode("ascii"),
                           headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    assert response.content.isascii()
    assert response.json()["status"] == {"message": "authentication failed"}
    if field != "token":  # as the server read it: the escaped pair joined into one character
        echoed = json.loads(json.dumps(text))
        assert response.json()["spec"]["authenticator"][field] == echoed


def login_with(field: str, text: str) -> dict[str, Any]:
    """A login whose `field` (name, kind or token) is `text`."""
    spec: dict[str, Any] = {"token": ALICE_TOKEN, "authenticator": {
        "apiGroup": wire.AUTHENTICATOR_GROUP, "kind": "JWTAuthenticator", "name": "corp"}}
    if field == "token":
        spec["token"] = text
    else:
        spec["authenticator"][field] = text
    return {"apiVersion": constants.LOGIN_API_VERSION, "kind": "TokenCredentialRequest",
            "spec": spec}
