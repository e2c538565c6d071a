"""The elevation types: what a policy, a request and the API documents accept, and the login
hint's round trip."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from pydantic import ValidationError

from pinniped_apis import constants, wire
from pinniped_apis.elevation import (
    ElevationCreate,
    ElevationPolicySpec,
    ElevationRequestSpec,
    ElevationRequestStatus,
    ElevationState,
    Subjects,
)
from pinniped_apis.identity import ClusterCredential, Identity

POLICY: dict[str, Any] = {
    "group": "corp:prod-admins",
    "requesters": {"groups": ["corp:sre"]},
    "approvers": {"users": ["corp:carol"], "groups": ["corp:sre-leads"]},
    "approvalsRequired": 1,
    "maxDurationSeconds": 3600,
}


def _policy(**changes: Any) -> ElevationPolicySpec:
    return ElevationPolicySpec.model_validate(POLICY | changes, by_name=False)


def test_a_policy_reads_with_its_defaults() -> None:
    spec = ElevationPolicySpec.model_validate(
        {"group": "corp:x", "requesters": {}, "approvers": {"users": ["corp:carol"]}},
        by_name=False)
    assert (spec.approvals_required, spec.max_duration_seconds) == (1, 3600)
    assert spec.requesters == Subjects()


@pytest.mark.parametrize("changes", [
    {"group": "system:masters"},
    {"group": "System:Masters"},
    {"group": ""},
    {"approvalsRequired": 0},
    {"approvalsRequired": constants.MAX_APPROVALS_REQUIRED + 1},
    {"maxDurationSeconds": constants.MIN_ELEVATION_SECONDS - 1},
    {"maxDurationSeconds": constants.MAX_ELEVATION_SECONDS + 1},
    {"approvers": {"users": ["u"] * (constants.MAX_POLICY_SUBJECTS + 1)}},
    {"requesters": {"people": ["corp:alice"]}},
    {"approvalsRequired": "1"},
])
def test_a_policy_refuses(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        _policy(**changes)


def test_subjects_match_by_username_or_any_group() -> None:
    approvers = _policy().approvers
    assert approvers.include("corp:carol", [])
    assert approvers.include("corp:dave", ["corp:devs", "corp:sre-leads"])
    assert not approvers.include("corp:alice", ["corp:sre"])


@pytest.mark.parametrize("reason", ["", "   ", "line\nbreak", "tab\there", "esc\x1b[31m",
                                    "c1\x85", "rtl\u202eoverride", "zero\u200bwidth",
                                    "line\u2028separator", "lone\udc80surrogate",
                                    "x" * (constants.MAX_REASON_LENGTH + 1)])
def test_a_reason_is_plain_bounded_text(reason: str) -> None:
    with pytest.raises(ValidationError):
        ElevationCreate.model_validate({"group": "corp:x", "reason": reason})


def test_a_create_takes_no_requester_and_bounds_the_duration() -> None:
    ok = ElevationCreate.model_validate({"group": "corp:x", "reason": "incident 42 — ünicode",
                                         "durationSeconds": 600})
    assert ok.duration_seconds == 600
    for body in ({"group": "corp:x", "reason": "r", "requester": "corp:carol"},
                 {"group": "corp:x", "reason": "r", "durationSeconds": 5},
                 {"group": "corp:x", "reason": "r", "durationSeconds": "600"}):
        with pytest.raises(ValidationError):
            ElevationCreate.model_validate(body)


def test_a_stored_request_round_trips_in_camel_case() -> None:
    spec = ElevationRequestSpec.model_validate(
        {"group": "corp:x", "reason": "r", "durationSeconds": 60,
         "requester": {"username": "corp:alice", "groups": ["corp:sre"]}}, by_name=False)
    status = ElevationRequestStatus.model_validate(
        {"phase": "Approved", "approvals": [{"user": "corp:carol", "at": "2026-12-01T00:00:00Z"}],
         "expiresAt": "2026-12-01T00:01:00Z", "someoneElses": 1}, by_name=False)
    assert spec.model_dump(mode="json", by_alias=True, exclude_none=True)["durationSeconds"] == 60
    dumped = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert dumped == {"phase": "Approved", "approvals": [{"user": "corp:carol",
                                                           "at": "2026-12-01T00:00:00Z"}],
                      "expiresAt": "2026-12-01T00:01:00Z"}
    with pytest.raises(ValidationError):
        ElevationRequestStatus.model_validate({"phase": "Granted"}, by_name=False)


def test_the_id_pattern_is_the_prefix_and_sixteen_hex_digits() -> None:
    pattern = re.compile(constants.ELEVATION_ID_PATTERN)
    assert pattern.match(constants.ELEVATION_ID_PREFIX + "0123456789abcdef")
    for bad in ("elev-0123456789ABCDEF", "elev-0123", "elev-0123456789abcdef0", "x" * 21):
        assert not pattern.match(bad)


def test_the_state_document_reads() -> None:
    state = ElevationState.from_wire({"pending": ["elev-0123456789abcdef"], "active": [
        {"id": "elev-fedcba9876543210", "group": "corp:x", "expiresAt": "2026-12-01T00:01:00Z"}]})
    assert state.active[0].expires_at == dt.datetime(2026, 12, 1, 0, 1, tzinfo=dt.UTC)


def _login(credential: ClusterCredential) -> ClusterCredential:
    request = wire.TokenCredentialRequest.create(token="t", authenticator_name="corp")
    return wire.parse_credential_response(wire.credential_response(request, credential))


def test_the_login_hint_round_trips_and_is_absent_without_elevation() -> None:
    expires = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    elevated = ClusterCredential("tok", expires, Identity("corp:alice", ("corp:sre", "corp:x")),
                                 elevated_groups=("corp:x",), check_elevation=True)
    assert _login(elevated) == elevated
    plain = ClusterCredential("tok", expires, Identity("corp:alice", ("corp:sre",)))
    request = wire.TokenCredentialRequest.create(token="t", authenticator_name="corp")
    assert "elevation" not in wire.credential_response(request, plain)["status"]
    assert _login(plain) == plain


def test_a_hint_naming_a_group_the_identity_lacks_is_refused() -> None:
    request = wire.TokenCredentialRequest.create(token="t", authenticator_name="corp")
    body = wire.credential_response(request, ClusterCredential(
        "tok", dt.datetime(2030, 1, 1, tzinfo=dt.UTC), Identity("corp:alice", ("corp:sre",))))
    body["status"]["elevation"] = {"check": True, "groups": ["corp:x"]}
    with pytest.raises(wire.WireError, match=re.escape("status.elevation.groups")):
        wire.parse_credential_response(body)
