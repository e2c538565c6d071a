"""The wire types round-trip, and refuse malformed input naming the field."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from pinniped_apis import wire


def _request_body(**spec_overrides: Any) -> dict[str, Any]:
    body = wire.TokenCredentialRequest(token="id.token.value", authenticator_name="corp").to_wire()
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
    request = wire.TokenCredentialRequest(token="id.token.value", authenticator_name="corp")
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


@pytest.mark.parametrize("value", ["yesterday", 5, "2030-01-02T03:04:05"])
def test_timestamps_must_be_rfc3339_with_zone(value: object) -> None:
    with pytest.raises(wire.WireError):
        wire.parse_time(value, "t")


def test_whoami_round_trips() -> None:
    identity = wire.Identity("corp:alice", ("corp:devs",))
    expiry = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    assert wire.parse_whoami_response(wire.whoami_response(identity, expiry)) == (identity, expiry)
    assert wire.parse_whoami_response(wire.whoami_response(identity, None)) == (identity, None)
