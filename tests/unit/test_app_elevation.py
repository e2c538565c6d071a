"""The elevation API over HTTP, in-process: bearer review, Status refusals, audit, OpenAPI."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema
import pytest

from localenv.app_env import ALICE_TOKEN, BOB_TOKEN, NS, AppEnv
from localenv.openapi_schema import component_validator
from pinniped_apis import wire
from pinniped_apis.constants import ELEVATION_REQUESTS_PATH, ELEVATION_STATE_PATH
from pinniped_cli import elevation_check
from pinniped_concierge import naming
from pinniped_concierge.app import create_app
from pinniped_concierge.audit import token_digest
from pinniped_concierge.config import ElevationConfig
from pinniped_concierge.credential_review import CredentialReviewer
from pinniped_concierge.elevation_service import ElevationService
from pinniped_concierge.elevation_store import ElevationStore
from pinniped_concierge.kubeapi import ELEVATION_POLICIES, ELEVATION_REQUESTS
from pinniped_concierge.login import LoginService
from pinniped_concierge.userobjects import UserObjects

CAROL_TOKEN = "eyJhbGciOiJSUzI1NiJ9.carol-id-token-payload.signature-of-carol"
GROUP = "corp:prod-admins"
ROUTES = {
    (ELEVATION_REQUESTS_PATH, "post"): "elevation.create",
    (ELEVATION_REQUESTS_PATH, "get"): "elevation.list",
    (f"{ELEVATION_REQUESTS_PATH}/{{request_id}}/approve", "post"): "elevation.approve",
    (f"{ELEVATION_REQUESTS_PATH}/{{request_id}}/deny", "post"): "elevation.deny",
    (f"{ELEVATION_REQUESTS_PATH}/{{request_id}}/revoke", "post"): "elevation.revoke",
    (ELEVATION_STATE_PATH, "get"): "elevation.state",
}


class ElevationApp:
    """AppEnv with the elevation API served, and logins granting elevations as the server's
    do; alice may ask, carol approves, bob neither."""

    def __init__(self, *, watched: bool = False, **config: Any) -> None:
        self.env = AppEnv()
        self.env.verifier.claims[CAROL_TOKEN] = {"email": "carol@example.com",
                                                 "groups": ["leads"]}
        settings = ElevationConfig.model_validate(config)
        store = ElevationStore(self.env.kube, NS, settings)
        if watched:  # the mirrors fed as their watches would (else: a list per call)
            self.env.kube.watch_custom(ELEVATION_POLICIES, store.policies_target)
            self.env.kube.watch_custom(ELEVATION_REQUESTS, store.requests_target, NS,
                                       naming.owned_selector(NS))
        user_objects = UserObjects(self.env.kube, NS, 0)
        services = self.env.services
        services.login = LoginService(services.login.authenticator_set, user_objects,
                                      self.env.sessions, elevations=store)
        services.reviewer = CredentialReviewer(self.env.kube, NS, user_objects)
        services.elevation = ElevationService(self.env.kube, NS, store, user_objects, settings,
                                              sessions=self.env.sessions)
        self.env.app = create_app(self.env.services)
        self.policy(GROUP)
        self.bearers = {who: self._credential(token) for who, token in (
            ("alice", ALICE_TOKEN), ("bob", BOB_TOKEN), ("carol", CAROL_TOKEN))}
        self.env.audit_stream.truncate(0)
        self.env.audit_stream.seek(0)

    def policy(self, group: str, name: str | None = None) -> None:
        self.env.kube.apply_custom(ELEVATION_POLICIES, name or group.replace(":", "-"), {
            "group": group, "requesters": {"groups": ["corp:devs"]},
            "approvers": {"groups": ["corp:leads"]}, "maxDurationSeconds": 3600})

    def _credential(self, token: str) -> str:
        response = self.env.login(token)
        assert response.status_code == 200, response.text
        return wire.parse_credential_response(response.json()).token

    def call(self, who: str | None, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.bearers[who]}"} if who else {}
        return self.env.request(method, path, headers=headers, **kwargs)

    def ask(self, who: str = "alice", group: str = GROUP, **body: Any) -> httpx.Response:
        return self.call(who, "POST", ELEVATION_REQUESTS_PATH,
                         json={"group": group, "reason": "incident 42"} | body)

    def decide(self, who: str, request_id: str, action: str,
               **kwargs: Any) -> httpx.Response:
        return self.call(who, "POST", f"{ELEVATION_REQUESTS_PATH}/{request_id}/{action}",
                         **kwargs)


@pytest.fixture
def app() -> ElevationApp:
    return ElevationApp()


def refusal(response: httpx.Response, code: int, reason: str) -> str:
    assert response.status_code == code, response.text
    body = response.json()
    assert (body["kind"], body["status"], body["code"], body["reason"]) == (
        "Status", "Failure", code, reason)
    message: str = body["message"]
    return message


def test_the_whole_story_over_http_one_audit_line_per_call(app: ElevationApp) -> None:
    created = app.ask()
    assert created.status_code == 200, created.text
    view = created.json()
    request_id = view["id"]
    assert (view["requester"], view["group"], view["phase"], view["durationSeconds"]) == (
        "corp:alice@example.com", GROUP, "Pending", 3600)
    assert created.headers["cache-control"] == "no-store"
    assert refusal(app.decide("alice", request_id, "approve"), 403, "Forbidden") == (
        "you cannot approve your own request; ask one of the approvers")
    assert "elevate list" in refusal(app.decide("bob", request_id, "approve"), 404,
                                     "NotFound")
    listed = app.call("carol", "GET", ELEVATION_REQUESTS_PATH)
    assert [(v["id"], v["mayApprove"]) for v in listed.json()["items"]] == [(request_id, True)]
    approved = app.decide("carol", request_id, "approve", json={})
    assert approved.json()["phase"] == "Approved"
    state = app.call("alice", "GET", ELEVATION_STATE_PATH).json()
    assert (state["pending"], [a["group"] for a in state["active"]]) == ([], [GROUP])
    revoked = app.decide("carol", request_id, "revoke", json={"reason": "done"})
    assert (revoked.json()["phase"], revoked.json()["endReason"]) == ("Revoked", "done")

    lines = app.env.audit()
    assert [(line["request"], line["username"], line["outcome"], line["httpStatus"])
            for line in lines] == [
        ("elevation.create", "corp:alice@example.com", "success", 200),
        ("elevation.approve", "corp:alice@example.com", "failure", 403),
        ("elevation.approve", "corp:bob@example.com", "failure", 404),
        ("elevation.list", "corp:carol@example.com", "success", 200),
        ("elevation.approve", "corp:carol@example.com", "success", 200),
        ("elevation.state", "corp:alice@example.com", "success", 200),
        ("elevation.revoke", "corp:carol@example.com", "success", 200),
    ]
    assert [line["reason"] for line in lines[1:3]] == ["self_approval", "elevation_not_found"]
    assert lines[0]["groups"] == ["corp:devs", "corp:readers"]
    assert (lines[0]["id"], lines[0]["group"], lines[0]["phase"], lines[0]["reason"],
            lines[0]["requestReason"]) == (request_id, GROUP, "Pending", "ok", "incident 42")
    assert (lines[6]["id"], lines[6]["phase"]) == (request_id, "Revoked")
    assert lines[0]["tokenHash"] == token_digest(app.bearers["alice"])
    assert all(app.bearers["alice"] not in str(line) for line in lines)


@pytest.mark.parametrize(("headers", "reason"), [
    ({}, "missing_credential"),
    ({"Authorization": "Bearer not-a-cluster-credential"}, "invalid_credential"),
])
def test_every_route_needs_a_valid_cluster_credential(app: ElevationApp,
                                                      headers: dict[str, str],
                                                      reason: str) -> None:
    for (path, method), kind in ROUTES.items():
        url = path.replace("{request_id}", "elev-0123456789abcdef")
        response = app.env.request(method.upper(), url, headers=headers,
                                   **({"json": {"group": GROUP, "reason": "x"}}
                                      if kind == "elevation.create" else {}))
        assert response.status_code == 401, (kind, response.text)
        assert response.json()["kind"] == "Status"
    lines = app.env.audit()
    assert [line["request"] for line in lines] == list(ROUTES.values())
    assert {line["reason"] for line in lines} == {reason}
    assert app.env.kube.namespaced_custom == {}


def test_refusals_are_statuses_that_say_what_to_do(app: ElevationApp) -> None:
    assert "no ElevationPolicy governs group corp:nope" in refusal(
        app.ask(group="corp:nope"), 400, "BadRequest")
    assert "does not list you among its requesters" in refusal(
        app.ask("bob"), 403, "Forbidden")
    assert "maximum of 3600 s" in refusal(app.ask(durationSeconds=3601), 400, "BadRequest")
    request_id = app.ask().json()["id"]
    assert request_id in refusal(app.ask(), 409, "Conflict")
    assert refusal(app.decide("carol", "elev-NOT-AN-ID", "approve"), 404, "NotFound")
    app.decide("carol", request_id, "deny")
    assert "nothing to approve" in refusal(app.decide("carol", request_id, "approve"),
                                           409, "Conflict")
    reasons = [line["reason"] for line in app.env.audit()]
    assert reasons == ["no_elevation_policy", "not_a_requester", "duration_too_long", "ok",
                       "elevation_already_open", "elevation_not_found", "ok",
                       "elevation_ended"]


def test_the_state_check_costs_one_tokenreview_and_list_no_more_than_whoami() -> None:
    """Served from the mirror: the plugin's check (on every kubectl call) costs the
    TokenReview only, without reading the ServiceAccount or the ClusterRole; the list costs
    what whoami does."""
    app = ElevationApp(watched=True)
    app.policy("corp:other")
    request_id = app.ask().json()["id"]
    pending = app.ask(group="corp:other").json()["id"]
    app.decide("carol", request_id, "approve")
    app.call("alice", "POST", wire.WHOAMI_REQUEST_PATH, json=wire.whoami_request())
    app.env.kube.calls.clear()
    answer = app.call("alice", "GET", ELEVATION_STATE_PATH).json()
    assert app.env.kube.calls == ["create TokenReview"]
    app.call("carol", "GET", ELEVATION_REQUESTS_PATH)
    nobodys = app.call("carol", "GET", ELEVATION_STATE_PATH).json()
    whoami, state, listed, carol = app.env.audit()[-4:]
    assert (state["request"], state["kubeApiCalls"], carol["kubeApiCalls"]) == (
        "elevation.state", 1, 1)
    assert whoami["kubeApiCalls"] == listed["kubeApiCalls"] == 3
    # The same answer as before: the caller's own requests, found by their ServiceAccount.
    assert (answer["pending"], [(a["id"], a["group"]) for a in answer["active"]]) == (
        [pending], [(request_id, GROUP)])
    assert nobodys == {"pending": [], "active": []}  # carol approves, but asked for nothing
    assert (state["username"], state["pending"], state["active"]) == (
        "corp:alice@example.com", "1", "1")
    assert state["serviceAccount"] == naming.user_object_name("corp:alice@example.com", NS)
    assert (carol["username"], carol["serviceAccount"]) == (
        None, naming.user_object_name("corp:carol@example.com", NS))


def test_the_state_check_without_a_mirror_lists_only_the_callers_requests() -> None:
    app = ElevationApp()
    request_id = app.ask().json()["id"]
    app.decide("carol", request_id, "approve")
    app.env.kube.calls.clear()
    state = app.call("alice", "GET", ELEVATION_STATE_PATH).json()
    assert [a["id"] for a in state["active"]] == [request_id]
    assert "read ServiceAccount" not in app.env.kube.calls
    assert "read ClusterRole" not in app.env.kube.calls


def test_the_plugin_and_the_login_agree_when_a_policy_is_deleted_or_renamed() -> None:
    """The state's `active` is what a login grants; were it not, the plugin would see a
    difference, log in again, and see it again, on every kubectl call until the request's
    end."""
    for change in ("delete", "rename"):
        app = ElevationApp(watched=True)
        request_id = app.ask().json()["id"]
        app.decide("carol", request_id, "approve")
        during = wire.parse_credential_response(app.env.login(ALICE_TOKEN).json())
        assert during.elevated_groups == (GROUP,)
        state = app.call("alice", "GET", ELEVATION_STATE_PATH).json()
        assert elevation_check.outcome(200, state, during.elevated_groups) == "same"
        if change == "delete":
            app.env.kube.delete_custom(ELEVATION_POLICIES, "corp-prod-admins")
        else:
            app.policy("corp:prod-admins-v2", name="corp-prod-admins")
        after = wire.parse_credential_response(app.env.login(ALICE_TOKEN).json())
        app.bearers["alice"] = after.token
        assert after.elevated_groups == ()
        state = app.call("alice", "GET", ELEVATION_STATE_PATH).json()
        assert (change, state["active"]) == (change, [])
        assert elevation_check.outcome(200, state, after.elevated_groups) == "done"


def test_a_malformed_id_is_never_echoed() -> None:
    app = ElevationApp()
    garbage = "elev-" + "%e2%80%ae" * 1000
    response = app.decide("carol", garbage, "approve")
    message = refusal(response, 404, "NotFound")
    assert "the id you gave" in message
    (line,) = app.env.audit()
    written = json.dumps(line)
    assert "%e2" not in written
    assert "\u202e" not in written
    assert line["id"].startswith("malformed:")
    assert len(json.dumps(line)) < 1500


def test_a_limit_answers_429_with_retry_after() -> None:
    app = ElevationApp(maxOpenPerUser=1)
    app.policy("corp:other")
    assert app.ask().status_code == 200
    response = app.ask(group="corp:other")
    assert "revoke one you no longer need" in refusal(response, 429, "TooManyRequests")
    assert response.headers["retry-after"] == "60"


@pytest.mark.parametrize("body", [
    {"group": GROUP, "reason": "x", "requester": "corp:carol@example.com"},  # never client-set
    {"group": GROUP, "reason": "two\nlines"},
    {"group": GROUP, "reason": "x", "durationSeconds": 86401},
    {"group": GROUP},
])
def test_a_malformed_create_is_a_400_naming_the_field(app: ElevationApp,
                                                      body: dict[str, Any]) -> None:
    response = app.call("alice", "POST", ELEVATION_REQUESTS_PATH, json=body)
    refusal(response, 400, "BadRequest")
    assert response.json()["details"]["causes"][0]["field"]
    assert app.env.kube.namespaced_custom == {}


# --- the OpenAPI document ------------------------------------------------------------


@pytest.fixture
def document(app: ElevationApp) -> dict[str, Any]:
    response = app.env.request("GET", "/openapi.json")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def test_the_document_describes_the_six_routes(document: dict[str, Any]) -> None:
    for (path, method), _kind in ROUTES.items():
        operation = document["paths"][path][method]
        assert {"200", "400", "401", "403", "404", "409", "429", "503"} <= set(
            operation["responses"]), (path, method)
        assert "422" not in operation["responses"]
    create = document["paths"][ELEVATION_REQUESTS_PATH]["post"]
    assert create["requestBody"]["required"] is True
    approve = document["paths"][f"{ELEVATION_REQUESTS_PATH}/{{request_id}}/approve"]["post"]
    assert "required" not in approve["requestBody"]  # the decision's body is optional


def test_served_answers_match_the_published_schemas(app: ElevationApp,
                                                    document: dict[str, Any]) -> None:
    created = app.ask()
    component_validator(document, "ElevationCreate").validate(
        {"group": GROUP, "reason": "incident 42", "durationSeconds": 600})
    component_validator(document, "ElevationView").validate(created.json())
    request_id = created.json()["id"]
    component_validator(document, "ElevationView").validate(
        app.decide("carol", request_id, "approve").json())
    component_validator(document, "ElevationList").validate(
        app.call("carol", "GET", ELEVATION_REQUESTS_PATH).json())
    component_validator(document, "ElevationState").validate(
        app.call("alice", "GET", ELEVATION_STATE_PATH).json())
    component_validator(document, "Status").validate(
        app.decide("alice", request_id, "approve").json())
    with pytest.raises(jsonschema.ValidationError):
        component_validator(document, "ElevationCreate").validate(
            {"group": GROUP, "reason": "x", "requester": "corp:carol"})


def test_without_elevation_the_routes_are_not_served() -> None:
    env = AppEnv()
    assert env.request("GET", ELEVATION_STATE_PATH).status_code == 404
    assert ELEVATION_STATE_PATH not in env.request("GET", "/openapi.json").json()["paths"]
