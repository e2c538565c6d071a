"""The wire types round-trip, and refuse malformed input naming the field."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from pydantic import ValidationError

from pinniped_apis import validation, wire


def _request_body(**spec_overrides: Any) -> dict[str, Any]:
    body = wire.TokenCredentialRequest.create(token="id.token.value",
                                              authenticator_name="corp").to_wire()
    body["spec"].update(spec_overrides)
    return body


def test_request_round_trips() -> None:
    parsed = wire.TokenCredentialRequest.from_wire(_request_body())
    assert parsed.token == "id.token.value"
    assert parsed.authenticator_name == "corp"
    assert parsed.authenticator_kind == wire.JWT_AUTHENTICATOR_KIND


def test_request_repr_hides_the_token() -> None:
    assert "id.token.value" not in repr(wire.TokenCredentialRequest.from_wire(_request_body()))


@pytest.mark.parametrize(("mutate", "field"), [
    (lambda b: b.update(apiVersion="v1"), "apiVersion"),
    (lambda b: b.update(kind="Pod"), "kind"),
    (lambda b: b.pop("spec"), "spec"),
    (lambda b: b["spec"].update(token=""), "spec.token"),
    (lambda b: b["spec"].update(token=7), "spec.token"),
    (lambda b: b["spec"].update(token="x" * (wire.MAX_TOKEN_BYTES + 1)), "spec.token"),
    (lambda b: b["spec"].update(authenticator="corp"), "spec.authenticator"),
    (lambda b: b["spec"]["authenticator"].pop("name"), "spec.authenticator.name"),
    (lambda b: b["spec"]["authenticator"].update(apiGroup="evil.io"),
     "spec.authenticator.apiGroup"),
])
def test_request_errors_name_the_field(mutate: Any, field: str) -> None:
    body = _request_body()
    mutate(body)
    with pytest.raises(wire.WireError) as caught:
        wire.TokenCredentialRequest.from_wire(body)
    assert caught.value.field == field
    assert "id.token.value" not in str(caught.value)


def test_response_round_trips_without_echoing_the_id_token() -> None:
    request = wire.TokenCredentialRequest.create(token="id.token.value", authenticator_name="corp")
    expiry = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    credential = wire.ClusterCredential(
        token="cluster-token", expiration=expiry,
        identity=wire.Identity("corp:alice", ("corp:devs", "corp:readers")))
    body = wire.credential_response(request, credential)
    assert body["spec"]["token"] == ""
    assert body["status"]["credential"]["expirationTimestamp"] == "2030-01-02T03:04:05Z"
    assert body["status"]["impersonationHeaders"] == {
        "Impersonate-User": ["corp:alice"],
        "Impersonate-Group": ["corp:devs", "corp:readers"],
    }
    assert wire.parse_credential_response(body) == credential


def test_failure_response_raises_login_rejected_with_the_safe_message() -> None:
    body = wire.failure_response(None, wire.AUTHENTICATION_FAILED)
    with pytest.raises(wire.LoginRejected, match="authentication failed"):
        wire.parse_credential_response(body)


@pytest.mark.parametrize("value", ["yesterday", 5, "2030-01-02T03:04:05",
                                   "9999-12-31T23:59:59-23:59"])
def test_timestamps_must_be_rfc3339_with_zone(value: object) -> None:
    with pytest.raises(wire.WireError):
        wire.parse_time(value, "t")


def test_whoami_round_trips() -> None:
    identity = wire.Identity("corp:alice", ("corp:devs",))
    expiry = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    assert wire.parse_whoami_response(wire.whoami_response(identity, expiry)) == (identity, expiry)
    assert wire.parse_whoami_response(wire.whoami_response(identity, None)) == (identity, None)


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda b: b["spec"].update(token=""), "spec.token: must not be empty"),
    (lambda b: b["spec"].update(token=7), "spec.token: must be a string"),
    (lambda b: b["spec"].update(token="x" * (wire.MAX_TOKEN_BYTES + 1)),
     f"spec.token: must have at most {wire.MAX_TOKEN_BYTES} characters"),
    (lambda b: b["spec"]["authenticator"].update(apiGroup="evil.io"),
     "spec.authenticator.apiGroup: must be 'authentication.concierge.pinniped.dev'"),
    (lambda b: b["spec"].pop("authenticator"), "spec.authenticator: is required"),
    (lambda b: b["spec"].update(tokn="x"), "spec.tokn: is not a known field (check the spelling)"),
    (lambda b: b.update(spec=[]), "spec: must be an object"),
])
def test_request_errors_say_what_is_accepted(mutate: Any, message: str) -> None:
    body = _request_body()
    mutate(body)
    with pytest.raises(wire.WireError) as caught:
        wire.TokenCredentialRequest.from_wire(body)
    assert str(caught.value) == message


def test_errors_never_quote_the_input() -> None:
    """pydantic's own error text includes the input, which here is the ID token."""
    secret = "eyJ.secret-id-token." + "s" * 40
    for body in (_request_body(token=secret, extra=1), {"spec": secret},
                 _request_body(token=[secret])):
        with pytest.raises(wire.WireError) as caught:
            wire.TokenCredentialRequest.from_wire(body)
        assert secret not in str(caught.value)
        assert secret not in repr(caught.value)


def test_the_models_spell_the_api_names_as_the_constants_do() -> None:
    request = wire.TokenCredentialRequest.create(token="t", authenticator_name="corp").to_wire()
    assert request["apiVersion"] == f"{wire.LOGIN_GROUP}/{wire.VERSION}"
    assert request["kind"] == wire.TOKEN_CREDENTIAL_REQUEST_KIND
    assert request["spec"]["authenticator"]["apiGroup"] == wire.AUTHENTICATOR_GROUP
    assert wire.whoami_request()["apiVersion"] == f"{wire.IDENTITY_GROUP}/{wire.VERSION}"
    assert wire.whoami_request()["kind"] == wire.WHOAMI_REQUEST_KIND
    assert wire.logout_request()["apiVersion"] == f"{wire.LOGIN_GROUP}/{wire.VERSION}"
    assert wire.logout_request()["kind"] == wire.LOGOUT_REQUEST_KIND


def test_requests_refuse_unknown_fields_but_answers_tolerate_them() -> None:
    """A typo in a request is an error; a field a newer concierge adds is not."""
    with pytest.raises(wire.WireError, match=r"^surprise: is not a known field"):
        wire.TokenCredentialRequest.from_wire({**_request_body(), "surprise": 1})
    identity = wire.Identity("corp:alice", ("corp:devs",))
    answer = wire.whoami_response(identity, None)
    answer["status"]["newerField"] = {"anything": True}
    answer["status"]["kubernetesUserInfo"]["user"]["extra"] = {"k": ["v"]}
    assert wire.parse_whoami_response(answer) == (identity, None)


def test_pinniped_clients_metadata_and_empty_status_are_accepted() -> None:
    body = {**_request_body(), "metadata": {"creationTimestamp": None}, "status": {}}
    assert wire.TokenCredentialRequest.from_wire(body).token == "id.token.value"


@pytest.mark.parametrize(("mutate", "field"), [
    (lambda s: s["identity"].update(groups=[f"g{i}" for i in range(wire.MAX_GROUPS + 1)]),
     "status.identity.groups"),
    (lambda s: s["identity"].update(groups=["ok", 5]), "status.identity.groups[1]"),
    (lambda s: s["credential"].update(token=""), "status.credential.token"),
    (lambda s: s["credential"].update(expirationTimestamp="tomorrow"),
     "status.credential.expirationTimestamp"),
    (lambda s: s.pop("identity"), "status.identity"),
])
def test_the_cli_refuses_malformed_answers(mutate: Any, field: str) -> None:
    request = wire.TokenCredentialRequest.create(token="id.token.value", authenticator_name="c")
    credential = wire.ClusterCredential(token="cluster-token",
                                        expiration=dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
                                        identity=wire.Identity("corp:alice", ("corp:devs",)))
    body = wire.credential_response(request, credential)
    mutate(body["status"])
    with pytest.raises(wire.WireError) as caught:
        wire.parse_credential_response(body)
    assert caught.value.field == field
    assert "cluster-token" not in str(caught.value)


def test_logout_answers_round_trip() -> None:
    assert wire.parse_logout_response(wire.logout_response(True)) is True
    assert wire.parse_logout_response(wire.logout_response(False)) is False
    with pytest.raises(wire.WireError, match=r"status\.sessionEnded: must be true or false"):
        wire.parse_logout_response({**wire.logout_request(), "status": {"sessionEnded": "no"}})


@pytest.mark.parametrize(("missing", "field"), [
    (lambda b: b.pop("apiVersion"), "apiVersion"),
    (lambda b: b.pop("kind"), "kind"),
    (lambda b: b["spec"]["authenticator"].pop("kind"), "spec.authenticator.kind"),
])
def test_requests_must_say_what_they_are(missing: Any, field: str) -> None:
    """As a Kubernetes API would: no apiVersion, kind or authenticator kind, no login."""
    body = _request_body()
    missing(body)
    with pytest.raises(wire.WireError, match=rf"^{re.escape(field)}: is required$"):
        wire.TokenCredentialRequest.from_wire(body)


@pytest.mark.parametrize("document", [wire.WhoAmIRequest, wire.LogoutRequest])
def test_an_empty_whoami_or_logout_document_is_refused(document: Any) -> None:
    with pytest.raises(wire.WireError, match=r"^apiVersion: is required$"):
        document.from_wire({})


def test_answers_echo_the_spec_in_any_shape() -> None:
    """The CLI reads nothing from the echoed spec, so other servers' echoes are fine."""
    request = wire.TokenCredentialRequest.create(token="id.token.value", authenticator_name="c")
    credential = wire.ClusterCredential(token="cluster-token",
                                        expiration=dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
                                        identity=wire.Identity("corp:alice", ()))
    body = wire.credential_response(request, credential)
    body["spec"]["authenticator"] = {"apiGroup": None, "name": "", "uid": "x"}
    body["spec"]["extra"] = True
    assert wire.parse_credential_response(body) == credential


def test_a_long_refusal_is_cut_not_refused() -> None:
    body = wire.failure_response(None, "no: " + "x" * 5000)
    with pytest.raises(wire.LoginRejected) as caught:
        wire.parse_credential_response(body)
    assert len(str(caught.value)) == wire.MAX_MESSAGE_LENGTH
    assert str(caught.value).startswith("no: x")


@pytest.mark.parametrize("field", ["token", "name", "kind"])
@pytest.mark.parametrize("text", ["\udc80", "\ud800x", "a\udfff"])
def test_strings_with_unpaired_surrogates_are_refused_by_the_models(field: str,
                                                                    text: str) -> None:
    """Python's JSON parser hands them over as is (`"\\udc80"`); no UTF-8 encoder takes them.
    The models refuse them themselves (a value_error of ours), so the answer does not depend
    on whether the installed pydantic-core happens to."""
    body = _request_body()
    target = body["spec"] if field == "token" else body["spec"]["authenticator"]
    target[field] = text
    with pytest.raises(wire.WireError) as caught:
        wire.TokenCredentialRequest.from_wire(body)
    path = "spec.token" if field == "token" else f"spec.authenticator.{field}"
    assert str(caught.value) == f"{path}: {validation.NOT_UNICODE}"
    with pytest.raises(ValidationError) as raw:
        wire.TokenCredentialRequest.model_validate(body)
    assert raw.value.errors()[0]["type"] == "value_error"


def test_valid_unicode_of_any_kind_is_text() -> None:
    for text in ("caf\u00e9", "\U0001f600", "\u202e\x1b"):
        request = wire.TokenCredentialRequest.from_wire(_request_body(token=text))
        assert request.token == text
    identity = wire.parse_whoami_response(wire.whoami_response(
        wire.Identity("corp:j\u00f6rg", ("corp:\U0001f600",)), None))[0]
    assert identity.groups == ("corp:\U0001f600",)


def test_an_answer_with_an_unpaired_surrogate_is_refused_by_the_cli() -> None:
    body = wire.whoami_response(wire.Identity("corp:alice"), None)
    body["status"]["kubernetesUserInfo"]["user"]["username"] = "corp:\udc80"
    with pytest.raises(wire.WireError, match="valid Unicode"):
        wire.parse_whoami_response(body)
