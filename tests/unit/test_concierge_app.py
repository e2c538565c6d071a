"""The HTTP API with a fake Kubernetes and a fake token verifier: shapes, codes, audit."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import pytest

from localenv.app_env import ALICE_TOKEN, NS, AppEnv, FakeVerifier
from pinniped_apis import wire
from pinniped_concierge import app as app_module
from pinniped_concierge import naming
from pinniped_concierge.audit import token_digest
from pinniped_concierge.authenticator_set import AuthenticatorSet
from pinniped_concierge.errors import Reason, ServerError, Unavailable
from pinniped_concierge.identity import IdentityMapper
from pinniped_concierge.kubeapi import Kind
from pinniped_concierge.login import Authenticator


@pytest.fixture
def env() -> AppEnv:
    return AppEnv()


def test_a_login_returns_a_credential_and_impersonation_headers(env: AppEnv) -> None:
    response = env.login()
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["apiVersion"] == "login.concierge.pinniped.dev/v1alpha1"
    assert body["kind"] == "TokenCredentialRequest"
    assert body["spec"]["token"] == ""  # the ID token is never echoed
    status = body["status"]
    assert status["identity"] == {"username": "corp:alice@example.com",
                                  "groups": ["corp:devs", "corp:readers"]}
    assert status["impersonationHeaders"] == {
        "Impersonate-User": ["corp:alice@example.com"],
        "Impersonate-Group": ["corp:devs", "corp:readers"]}
    credential = wire.parse_credential_response(body)
    assert credential.token in env.kube.tokens
    (line,) = env.audit()
    assert line["request"] == "login"
    assert line["outcome"] == "success"
    assert line["reason"] == "ok"
    assert line["authenticator"] == "corp"
    assert line["username"] == "corp:alice@example.com"
    assert line["groups"] == ["corp:devs", "corp:readers"]
    assert line["client"] == "192.0.2.7:50123"
    assert line["tokenHash"] == token_digest(ALICE_TOKEN)
    assert line["httpStatus"] == 200
    assert line["kubeApiCalls"] == 5
    secret_name = naming.session_secret_name(line["session"])
    assert env.kube.get(Kind.SECRET, secret_name, NS) is not None


def test_a_returning_user_costs_two_api_calls(env: AppEnv) -> None:
    env.login()
    env.kube.calls.clear()
    assert env.login().status_code == 200
    assert env.kube.calls == ["create Secret", "create TokenRequest"]
    assert env.audit()[-1]["kubeApiCalls"] == 2


def test_a_vanished_service_account_is_rebuilt_transparently(env: AppEnv) -> None:
    env.login()
    sa = env.kube.names(Kind.SERVICE_ACCOUNT)[0]
    asyncio.run(env.kube.delete(Kind.SERVICE_ACCOUNT, sa, NS))
    response = env.login()
    assert wire.parse_credential_response(response.json()).token
    assert env.kube.names(Kind.SERVICE_ACCOUNT) == [sa]
    assert len(env.kube.names(Kind.SECRET)) == 2  # the orphan from the failed try was removed


@pytest.mark.parametrize(("token", "name", "kind", "reason"), [
    ("not.a.known-token", "corp", "JWTAuthenticator", "expired"),
    (ALICE_TOKEN, "nope", "JWTAuthenticator", "unknown_authenticator"),
    (ALICE_TOKEN, "corp", "WebhookAuthenticator", "unknown_authenticator"),
])
def test_failures_say_only_authentication_failed(env: AppEnv, token: str, name: str, kind: str,
                                                 reason: str) -> None:
    body = wire.TokenCredentialRequest.create(token=token, authenticator_name=name,
                                       authenticator_kind=kind).to_wire()
    response = env.request("POST", wire.TOKEN_CREDENTIAL_REQUEST_PATH, json=body)
    assert response.status_code == 200
    assert response.json()["status"] == {"message": "authentication failed"}
    assert response.json()["spec"]["token"] == ""
    with pytest.raises(wire.LoginRejected, match="authentication failed"):
        wire.parse_credential_response(response.json())
    (line,) = env.audit()
    assert line["outcome"] == "failure"
    assert line["reason"] == reason
    assert line["tokenHash"] == token_digest(token)
    assert token not in env.audit_stream.getvalue()
    assert env.kube.calls == []


def test_claims_that_map_to_system_names_fail_uniformly(env: AppEnv) -> None:
    env.services.login.authenticator_set = AuthenticatorSet({"corp": Authenticator(
        env.verifier, IdentityMapper("email", "groups", "", ""))})
    env.verifier.claims[ALICE_TOKEN] = {"email": "alice", "groups": ["system:masters"]}
    response = env.login()
    assert response.json()["status"] == {"message": "authentication failed"}
    assert env.audit()[0]["reason"] == "reserved_name"
    assert env.kube.calls == []


@pytest.mark.parametrize(("body", "field"), [
    ({"apiVersion": "v1", "kind": "TokenCredentialRequest"}, "apiVersion"),
    ({"apiVersion": "login.concierge.pinniped.dev/v1alpha1", "kind": "Pod"}, "kind"),
    ({"apiVersion": "login.concierge.pinniped.dev/v1alpha1", "kind": "TokenCredentialRequest"},
     "spec"),
    ({"apiVersion": "login.concierge.pinniped.dev/v1alpha1", "kind": "TokenCredentialRequest",
      "spec": {"authenticator": {"name": "corp", "kind": "JWTAuthenticator"}}}, "spec.token"),
    ({"apiVersion": "login.concierge.pinniped.dev/v1alpha1", "kind": "TokenCredentialRequest",
      "spec": {"token": 5, "authenticator": {"name": "corp"}}}, "spec.token"),
    ({"apiVersion": "login.concierge.pinniped.dev/v1alpha1", "kind": "TokenCredentialRequest",
      "spec": {"token": "t"}}, "spec.authenticator"),
    ({"apiVersion": "login.concierge.pinniped.dev/v1alpha1", "kind": "TokenCredentialRequest",
      "spec": {"token": "x" * (wire.MAX_TOKEN_BYTES + 1),
               "authenticator": {"name": "corp", "kind": "JWTAuthenticator"}}}, "spec.token"),
    ([1, 2, 3], "body"),
])
def test_malformed_requests_get_400_naming_the_field(env: AppEnv, body: Any, field: str) -> None:
    response = env.request("POST", wire.TOKEN_CREDENTIAL_REQUEST_PATH, json=body)
    assert response.status_code == 400
    status = response.json()
    assert wire.is_status_error(status)
    assert status["message"].startswith(f"{field}:")
    assert status["details"]["causes"][0]["field"] == field
    assert env.audit()[0]["reason"] == "malformed_request"


@pytest.mark.parametrize("content", [b"{nope", b"\xff\xfe", b"[" * 60000])
def test_invalid_json_is_400(env: AppEnv, content: bytes) -> None:
    response = env.request("POST", wire.TOKEN_CREDENTIAL_REQUEST_PATH, content=content,
                           headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["message"] == "body: must be valid JSON"


def test_bodies_over_the_limit_are_413(env: AppEnv) -> None:
    big = b'{"x": "' + b"a" * wire.MAX_REQUEST_BYTES + b'"}'
    response = env.request("POST", wire.TOKEN_CREDENTIAL_REQUEST_PATH, content=big,
                           headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert env.audit()[0]["reason"] == "request_too_large"

    async def chunks() -> Any:  # no Content-Length: the stream itself is cut off
        for _ in range(100):
            yield b"a" * 1024

    response = env.request("POST", wire.TOKEN_CREDENTIAL_REQUEST_PATH, content=chunks(),
                           headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_non_json_content_types_are_415(env: AppEnv) -> None:
    response = env.request("POST", wire.TOKEN_CREDENTIAL_REQUEST_PATH, content=b"token=x",
                           headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 415


def test_kubernetes_unreachable_is_503_with_retry_after(env: AppEnv) -> None:
    env.kube.unavailable = True
    response = env.login()
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert "Kubernetes API" in response.json()["message"]
    (line,) = env.audit()
    assert line["reason"] == "kubernetes_unavailable"
    assert line["username"] == "corp:alice@example.com"


def test_issuer_keys_unavailable_is_503(env: AppEnv) -> None:
    env.verifier.failure = Unavailable(Reason.ISSUER_UNAVAILABLE, "keys cannot be fetched")
    response = env.login()
    assert response.status_code == 503
    assert env.audit()[0]["reason"] == "issuer_unavailable"


def test_server_errors_are_500_without_details(env: AppEnv) -> None:
    env.verifier.failure = ServerError(Reason.KUBERNETES_ERROR, "create Secret: HTTP 403: no")
    response = env.login()
    assert response.status_code == 500
    assert "403" not in response.text
    assert env.audit()[0]["detail"] == "create Secret: HTTP 403: no"


def test_unexpected_errors_are_500_and_do_not_leak(env: AppEnv) -> None:
    env.verifier.failure = RuntimeError(f"boom {ALICE_TOKEN}")
    response = env.login()
    assert response.status_code == 500
    assert ALICE_TOKEN not in response.text
    assert ALICE_TOKEN not in env.audit_stream.getvalue()
    assert env.audit()[0]["reason"] == "internal_error"


def cluster_token(env: AppEnv, token: str = ALICE_TOKEN) -> str:
    return wire.parse_credential_response(env.login(token).json()).token


def test_whoami_reports_the_clusters_view_of_the_credential(env: AppEnv) -> None:
    credential = cluster_token(env)
    response = env.request("POST", wire.WHOAMI_REQUEST_PATH, json=wire.whoami_request(),
                           headers={"Authorization": f"Bearer {credential}"})
    assert response.status_code == 200
    identity, expiration = wire.parse_whoami_response(response.json())
    assert identity == wire.Identity("corp:alice@example.com", ("corp:devs", "corp:readers"))
    assert expiration is not None
    line = env.audit()[-1]
    assert line["request"] == "whoami"
    assert line["tokenHash"] == token_digest(credential)
    assert credential not in env.audit_stream.getvalue()


def test_whoami_without_or_with_a_bad_credential_is_401(env: AppEnv) -> None:
    response = env.request("POST", wire.WHOAMI_REQUEST_PATH, json=wire.whoami_request())
    assert response.status_code == 401
    assert env.audit()[-1]["reason"] == "missing_credential"
    response = env.request("POST", wire.WHOAMI_REQUEST_PATH, json=wire.whoami_request(),
                           headers={"Authorization": "Bearer not-a-token"})
    assert response.status_code == 401
    assert response.json()["message"] == "authentication failed"
    assert env.audit()[-1]["reason"] == "invalid_credential"


def test_whoami_refuses_other_service_accounts(env: AppEnv) -> None:
    cluster_token(env)
    # a token the apiserver accepts, for an account that is not one of our per-user ones
    asyncio.run(env.kube.create(Kind.SERVICE_ACCOUNT, {"metadata": {"name": "builder"}}, NS))
    asyncio.run(env.kube.create(Kind.SECRET, {"metadata": {"name": "s"}}, NS))
    uid = env.kube.get(Kind.SECRET, "s", NS)["metadata"]["uid"]  # type: ignore[index]
    issued = asyncio.run(env.kube.create_token(NS, "builder", {"spec": {
        "expirationSeconds": 600, "boundObjectRef": {"name": "s", "uid": uid}}}))
    response = env.request("POST", wire.WHOAMI_REQUEST_PATH, json=wire.whoami_request(),
                           headers={"Authorization": f"Bearer {issued['status']['token']}"})
    assert response.status_code == 401
    assert env.audit()[-1]["reason"] == "foreign_credential"


def test_whoami_body_must_be_the_right_kind(env: AppEnv) -> None:
    response = env.request("POST", wire.WHOAMI_REQUEST_PATH, json=wire.logout_request(),
                           headers={"Authorization": "Bearer x"})
    assert response.status_code == 400
    assert response.json()["details"]["causes"][0]["field"] == "apiVersion"


def test_logout_ends_exactly_that_session(env: AppEnv) -> None:
    laptop, ci = cluster_token(env), cluster_token(env)
    response = env.request("POST", wire.LOGOUT_REQUEST_PATH, json=wire.logout_request(),
                           headers={"Authorization": f"Bearer {laptop}"})
    assert response.status_code == 200
    assert response.json()["status"] == {"sessionEnded": True}
    assert env.audit()[-1]["reason"] == "ok"
    assert env.audit()[-1]["request"] == "logout"
    # the laptop's token no longer authenticates; the CI job's still does
    whoami = {"json": wire.whoami_request()}
    assert env.request("POST", wire.WHOAMI_REQUEST_PATH, **whoami,
                       headers={"Authorization": f"Bearer {laptop}"}).status_code == 401
    assert env.request("POST", wire.WHOAMI_REQUEST_PATH, **whoami,
                       headers={"Authorization": f"Bearer {ci}"}).status_code == 200


def test_healthz_and_readyz(env: AppEnv, caplog: pytest.LogCaptureFixture) -> None:
    assert env.request("GET", "/healthz").text == "ok"
    assert env.request("GET", "/readyz").status_code == 200
    env.verifier.is_ready = False
    with caplog.at_level(logging.INFO, "concierge.app"):
        response = env.request("GET", "/readyz")
    assert response.status_code == 503
    assert response.text == "not ready\n"  # the details are for the operator's log only
    assert "authenticator corp" in caplog.text
    env.verifier.is_ready = True
    env.kube.unavailable = True
    caplog.clear()
    with caplog.at_level(logging.INFO, "concierge.app"):
        response = env.request("GET", "/readyz")
    assert response.status_code == 503
    assert response.text == "not ready\n"
    assert "kubernetes" in caplog.text
    assert "kubernetes" not in response.text


def test_readyz_waits_for_the_extra_checks_and_logs_what_is_missing(
        caplog: pytest.LogCaptureFixture) -> None:
    problems = ["JWTAuthenticator objects not listed yet"]

    async def listed() -> str | None:
        return problems[0] if problems else None

    env = AppEnv(readiness_checks=[listed])
    with caplog.at_level(logging.INFO, "concierge.app"):
        assert env.request("GET", "/readyz").status_code == 503
    assert "JWTAuthenticator objects not listed yet" in caplog.text
    problems.clear()
    assert env.request("GET", "/readyz").status_code == 200


def test_an_unusable_cluster_authenticator_leaves_the_concierge_ready(env: AppEnv) -> None:
    broken = FakeVerifier()
    broken.is_ready = False
    env.services.login.authenticator_set.publish({"obj": Authenticator(
        broken, IdentityMapper("email", "groups", "obj:", "obj:"), source="cluster")}, {})
    assert "obj" in env.services.login.authenticators
    assert env.request("GET", "/readyz").status_code == 200  # its status says what is wrong


def test_a_concierge_without_any_authenticator_is_ready_and_refuses_logins(
        env: AppEnv) -> None:
    env.services.login.authenticator_set = AuthenticatorSet({})
    assert env.request("GET", "/readyz").status_code == 200
    assert env.login().json()["status"] == {"message": "authentication failed"}
    assert env.audit()[-1]["reason"] == "unknown_authenticator"


def test_readyz_checks_at_most_every_few_seconds() -> None:
    env = AppEnv(readiness_cache_seconds=5.0)
    for _ in range(5):
        assert env.request("GET", "/readyz").status_code == 200
    assert env.kube.calls.count("ping") == 1
    env.kube.unavailable = True
    assert env.request("GET", "/readyz").status_code == 200  # still the cached answer


def test_a_slow_sender_gets_408() -> None:
    env = AppEnv(body_timeout_seconds=0.3)

    async def trickle() -> Any:
        yield b'{"apiVersion": '
        await asyncio.sleep(2)
        yield b'"x"}'

    started = time.monotonic()
    response = env.request("POST", wire.TOKEN_CREDENTIAL_REQUEST_PATH, content=trickle(),
                           headers={"content-type": "application/json"})
    assert response.status_code == 408
    assert time.monotonic() - started < 2
    assert env.audit()[-1]["reason"] == "request_timeout"


def test_no_docs_ui_or_other_routes_are_exposed(env: AppEnv) -> None:
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        assert env.request("GET", path).status_code == 404
    assert env.request("GET", wire.TOKEN_CREDENTIAL_REQUEST_PATH).status_code == 405


def test_answers_escape_what_they_echo_so_any_string_encodes() -> None:
    """A client's string is echoed (the authenticator's name, a field's name in a 400). A
    lone surrogate in it made starlette's UTF-8 JSON raise, a 500; escaped, it is JSON."""
    for response, escaped in (
            (app_module._status(400, "BadRequest", "spec.\udc80: no", "spec.\udc80"), "\\udc80"),
            (app_module._json({"spec": {"authenticator": {"name": "x\ud800"}}}), "\\ud800")):
        body = bytes(response.body)
        assert body.isascii()
        assert escaped in body.decode()
        json.loads(body)  # valid JSON


def test_non_ascii_names_are_echoed_escaped(env: AppEnv) -> None:
    response = env.login(name="caf\u00e9-\U0001f600")
    assert response.content.isascii()
    assert b"caf\\u00e9-\\ud83d\\ude00" in response.content
    assert response.json()["spec"]["authenticator"]["name"] == "caf\u00e9-\U0001f600"
    assert response.json()["status"] == {"message": "authentication failed"}
