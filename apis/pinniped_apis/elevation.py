"""Temporary elevated access: the objects and the API documents, one definition each.

A group an `ElevationPolicy` governs is never granted by a login alone, whatever
the ID token says; it is granted only while an `ElevationRequest` for it is
Approved and not yet over. Two kinds of object, in
`elevation.concierge.pinniped.dev/v1alpha1`:

- `ElevationPolicy` (cluster-scoped, applied by an administrator): the group,
  who may ask for it, who may approve, how many distinct approvals it takes
  (never the requester's own), and the longest an elevation may last. Its CRD
  in deploy/ is generated from `ElevationPolicySpec` (`pinniped_apis.crds`).
- `ElevationRequest` (in the concierge's namespace): created and changed only
  by the concierge, which writes who asked (`spec.requester`) from the caller's
  reviewed cluster credential, never from anything the client sent. Users get
  no RBAC on these objects; they go through the concierge's API.

The lifecycle of a request (`status.phase`):

    Pending --approvals reach approvalsRequired--> Approved --expiresAt passes--> Expired
       |  \\--an approver denies--> Denied              \\--requester or approver revokes--> Revoked
       |--requester or approver revokes--> Revoked
       \\--not approved within the pending timeout--> Expired

`expiresAt` is set at approval: approval time plus `spec.durationSeconds`.
Once an approved request has ended, the concierge removes the group from the
user's ClusterRole and ends the sessions minted while it was active, and
records that in `status.accessRemovedAt`.

The API documents (`ElevationCreate`, `ElevationDecision`, `ElevationView`,
`ElevationList`, `ElevationState`) are what the CLI sends and reads; they name
no one the caller did not already know of, and carry no token.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field

from pinniped_apis.authentication import SpecModel
from pinniped_apis.constants import (
    MAX_APPROVALS_REQUIRED,
    MAX_ELEVATION_SECONDS,
    MAX_GROUPS,
    MAX_NAME_LENGTH,
    MAX_POLICY_SUBJECTS,
    MAX_REASON_LENGTH,
    MIN_ELEVATION_SECONDS,
)
from pinniped_apis.models import Name, Strict, Timestamp, Tolerant

Phase = Literal["Pending", "Approved", "Denied", "Expired", "Revoked"]
#: Phases of a request that may still be decided, or revoked.
OPEN_PHASES: tuple[Phase, ...] = ("Pending", "Approved")
#: Phases after which nothing changes any more (besides `accessRemovedAt`).
FINAL_PHASES: tuple[Phase, ...] = ("Denied", "Expired", "Revoked")

RESERVED_PREFIX = "system:"


def _not_reserved(value: str) -> str:
    """A `system:` group belongs to Kubernetes; no login ever carries one, so no policy may
    hand one out."""
    if value.lower().startswith(RESERVED_PREFIX):  # as logins refuse them, in any case
        raise ValueError("must not start with 'system:' (reserved for Kubernetes)")
    return value


def _plain_text(value: object) -> object:
    """Refuse what is not printable text in a reason (control and format characters, a
    bidirectional override, line breaks, unpaired surrogates): it is shown in terminals and
    written to audit logs, where such characters could forge lines, colours or reading order."""
    if isinstance(value, str):
        if not value.isprintable():
            raise ValueError("must be plain text: no control or format characters, no line "
                             "breaks")
        if not value.strip():
            raise ValueError("must say why, in a few words")
    return value


#: A subject or group name in an object: bounded like every name in the API.
ObjectName = Annotated[str, Field(min_length=1, max_length=MAX_NAME_LENGTH)]
GovernedGroup = Annotated[ObjectName, AfterValidator(_not_reserved)]
Reason = Annotated[str, Field(min_length=1, max_length=MAX_REASON_LENGTH),
                   BeforeValidator(_plain_text)]
Duration = Annotated[int, Field(ge=MIN_ELEVATION_SECONDS, le=MAX_ELEVATION_SECONDS)]
#: Times in the objects are RFC 3339 text, as Kubernetes stores them (`rfc3339.format_time`).
Time = Annotated[str, Field(max_length=40, description="RFC 3339, UTC.")]


# --- the objects ------------------------------------------------------------------


class Subjects(SpecModel):
    """People, by (prefixed) username or by (prefixed) group."""

    users: tuple[ObjectName, ...] = Field(default=(), max_length=MAX_POLICY_SUBJECTS)
    groups: tuple[ObjectName, ...] = Field(default=(), max_length=MAX_POLICY_SUBJECTS)

    def include(self, username: str, groups: tuple[str, ...] | list[str]) -> bool:
        return username in self.users or any(g in self.groups for g in groups)


class ElevationPolicySpec(SpecModel):
    """Who may have `group`, for how long, and who must say yes first."""

    group: GovernedGroup = Field(description="The (prefixed) group this policy governs: no "
                                 "login grants it, only an approved ElevationRequest.")
    requesters: Subjects = Field(description="Who may ask for the group.")
    approvers: Subjects = Field(description="Who may approve or deny; never their own request.")
    approvals_required: int = Field(default=1, ge=1, le=MAX_APPROVALS_REQUIRED,
                                    description="Distinct approvers needed.")
    max_duration_seconds: Duration = Field(default=3600,
                                           description="The longest one elevation may last.")


class ElevationPolicyStatus(SpecModel):
    """Nothing yet: the policy is read as it is applied."""

    model_config = ConfigDict(extra="ignore")


class Requester(SpecModel):
    """Who asked, as the concierge reviewed their cluster credential (never client-set)."""

    username: ObjectName
    groups: tuple[ObjectName, ...] = Field(default=(), max_length=MAX_GROUPS)


class ElevationRequestSpec(SpecModel):
    group: GovernedGroup
    reason: Reason
    duration_seconds: Duration = Field(description="How long it lasts once approved.")
    requester: Requester


class Approval(SpecModel):
    user: ObjectName
    at: Time


class ElevationRequestStatus(SpecModel):
    model_config = ConfigDict(extra="ignore")

    phase: Phase = "Pending"
    approvals: tuple[Approval, ...] = Field(default=(), max_length=MAX_APPROVALS_REQUIRED)
    approved_at: Time | None = Field(default=None, description="When it became Approved.")
    expires_at: Time | None = Field(default=None, description="When an approved elevation "
                                    "ends by itself: approvedAt plus spec.durationSeconds.")
    ended_at: Time | None = Field(default=None, description="When it was denied, revoked or "
                                  "expired.")
    ended_by: ObjectName | None = Field(default=None, description="Who denied or revoked it "
                                        "(absent when it expired).")
    end_reason: Reason | None = Field(default=None, description="Why it ended.")
    access_removed_at: Time | None = Field(
        default=None, description="When the group left the user's ClusterRole and the "
        "sessions minted during the elevation were ended.")


# --- the API documents ---------------------------------------------------------------


class ElevationCreate(Strict):
    """POST ELEVATION_REQUESTS_PATH: ask for `group`. Who asks is the bearer credential's."""

    group: Name
    reason: Reason
    duration_seconds: Duration | None = Field(
        default=None, alias="durationSeconds",
        description="Omitted: the policy's maxDurationSeconds.")


class ElevationDecision(Strict):
    """The optional body of approve, deny and revoke."""

    reason: Reason | None = None


class ApprovalView(Tolerant):
    user: Name
    at: Timestamp


class ElevationView(Tolerant):
    """One request, as its requester or one of its approvers sees it."""

    id: Name
    group: Name
    requester: Name
    reason: Annotated[str, Field(max_length=MAX_REASON_LENGTH)]
    phase: Phase
    duration_seconds: int = Field(alias="durationSeconds")
    created_at: Timestamp | None = Field(default=None, alias="createdAt")
    approvals: list[ApprovalView] = Field(default=[], max_length=MAX_APPROVALS_REQUIRED)
    approvals_required: int = Field(alias="approvalsRequired")
    expires_at: Timestamp | None = Field(default=None, alias="expiresAt")
    ended_by: Name | None = Field(default=None, alias="endedBy")
    end_reason: Annotated[str, Field(max_length=MAX_REASON_LENGTH)] | None = Field(
        default=None, alias="endReason")
    may_approve: bool = Field(default=False, alias="mayApprove",
                              description="The caller may approve or deny it now.")
    may_revoke: bool = Field(default=False, alias="mayRevoke",
                             description="The caller may revoke it now.")


class ElevationList(Tolerant):
    items: list[ElevationView] = Field(max_length=10_000)
    omitted: int = Field(default=0, ge=0, description="Requests the caller may see that the "
                         "answer leaves out (it holds the newest, within a size bound).")


class ActiveElevation(Tolerant):
    id: Name
    group: Name
    expires_at: Timestamp = Field(alias="expiresAt")


class ElevationState(Tolerant):
    """GET ELEVATION_STATE_PATH: the caller's own open requests, for the plugin's check.

    The plugin compares `active` with the elevated groups of the credential it
    holds: a difference means it must log in again (to gain or lose a group).
    Nothing pending and nothing active means it may stop asking.
    """

    pending: list[Name] = Field(default=[], max_length=10_000)
    active: list[ActiveElevation] = Field(default=[], max_length=10_000)


__all__ = [
    "FINAL_PHASES",
    "OPEN_PHASES",
    "ActiveElevation",
    "Approval",
    "ApprovalView",
    "ElevationCreate",
    "ElevationDecision",
    "ElevationList",
    "ElevationPolicySpec",
    "ElevationPolicyStatus",
    "ElevationRequestSpec",
    "ElevationRequestStatus",
    "ElevationState",
    "ElevationView",
    "Phase",
    "Requester",
    "Subjects",
]
