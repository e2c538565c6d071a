"""A JWTAuthenticator's status, Pinniped-style: a phase and six conditions.

    AuthenticatorValid  the spec reads, the name is usable and the prefixes are its own
    IssuerURLValid      spec.issuer is an https URL
    DiscoveryURLValid   ISSUER/.well-known/openid-configuration was fetched and is this issuer's
    JWKSURLValid        it names an https jwks_uri
    JWKSFetchValid      the key set was fetched and holds usable signature keys
    Ready               logins use it (all of the above)

`phase` is Ready or Error once the object's first key check is done, and
Pending (its conditions Unknown) from its admission until then: that status is
written once, so `kubectl get jwtauthenticators` never shows a blank phase. A
condition that could not be checked because an earlier one failed is Unknown.
Conditions of other types (another tool's) are kept as they are: we only own
`OUR_TYPES`. Every False condition's
message says what to fix. Messages hold no time or counter, so checking an
unchanged object again yields an equal status, and nothing is written
(`condition` keeps each lastTransitionTime until the status changes).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal, get_args

from pinniped_apis.authentication import (
    Condition,
    ConditionType,
    JWTAuthenticatorStatus,
    condition,
)
from pinniped_concierge.authenticator_admission import Candidate, Verdict
from pinniped_concierge.jwt_authenticator import (
    DiscoveryError,
    FetchError,
    JWKSURLError,
    discovery_url,
)
from pinniped_concierge.kubeapi import Obj
from pinniped_concierge.object_status import read_status

#: Condition messages are cut here; the apiserver allows 32 KiB, people read the start.
MAX_MESSAGE = 1024
Stage = Literal["discovery", "jwks_uri", "jwks_fetch"]
#: The condition types this module writes; any other type on the object is kept.
OUR_TYPES: frozenset[str] = frozenset(get_args(ConditionType))
PENDING_MESSAGE = "not checked yet: the issuer's discovery and keys are being fetched"


@dataclass(frozen=True)
class KeysCheck:
    """The outcome of the last discovery and key set fetch; `failed` None means success."""

    failed: Stage | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.failed is None

    @classmethod
    def of(cls, exc: FetchError) -> KeysCheck:
        stage: Stage = ("discovery" if isinstance(exc, DiscoveryError)
                        else "jwks_uri" if isinstance(exc, JWKSURLError) else "jwks_fetch")
        return cls(stage, str(exc))


#: (condition, message when it holds, reason when not, what to do then), in check order.
_STAGES: tuple[tuple[ConditionType, Stage, str, str], ...] = (
    ("DiscoveryURLValid", "discovery", "DiscoveryFailed",
     "check that spec.issuer is exactly the identity provider's issuer URL, that the "
     "concierge can reach it, and that spec.tls.certificateAuthorityData holds the CA of its "
     "certificate (omitted: the system trust store)"),
    ("JWKSURLValid", "jwks_uri", "InvalidJWKSURL",
     "the identity provider's discovery document must name an https jwks_uri"),
    ("JWKSFetchValid", "jwks_fetch", "JWKSFetchFailed",
     "check that the identity provider publishes its signing keys (RSA of at least 2048 "
     "bits, EC or Ed25519, use sig) at its jwks_uri, reachable from the concierge"),
)
_PASSED = {"discovery": "fetched {url}", "jwks_uri": "the discovery document names an https "
           "jwks_uri", "jwks_fetch": "the key set holds usable signature keys"}


def current_status(obj: Obj) -> JWTAuthenticatorStatus | None:
    """The object's status as we would have written it; None if it has none we can read."""
    return read_status(obj, JWTAuthenticatorStatus)


def desired_status(candidate: Candidate, verdict: Verdict, check: KeysCheck | None,
                   now: dt.datetime) -> JWTAuthenticatorStatus | None:
    """The status to write; None to leave the object's alone.

    While an admitted object's first check is under way that is Pending, unless the
    object already holds a status about this very spec (e.g. after a restart): then
    it stays until the check says otherwise, rather than flickering to Pending.
    """
    current = current_status(candidate.obj)
    previous = current.conditions if current is not None else ()
    pending = verdict.admitted and check is None
    if pending and current is not None and current.phase != "Pending" and any(
            c.type in OUR_TYPES and c.observed_generation == candidate.generation
            for c in current.conditions):
        return None
    theirs = tuple(c for c in previous if c.type not in OUR_TYPES)

    def make(type_: ConditionType, ok: bool | None, reason: str, message: str) -> Condition:
        if len(message) > MAX_MESSAGE:
            message = message[:MAX_MESSAGE - 3] + "..."
        return condition(type_, ok, reason=reason, message=message,
                         generation=candidate.generation, now=now, previous=previous)

    conditions = [make("AuthenticatorValid", verdict.admitted, verdict.reason, verdict.message)]
    if pending:
        conditions.append(make("IssuerURLValid", True, "Success", "spec.issuer is an https URL"))
        conditions += [make(type_, None, "Pending", PENDING_MESSAGE)
                       for type_ in ("DiscoveryURLValid", "JWKSURLValid", "JWKSFetchValid")]
        conditions.append(make("Ready", None, "Pending", f"logins do not use it yet: "
                               f"{PENDING_MESSAGE}"))
        return JWTAuthenticatorStatus(phase="Pending", conditions=(*conditions, *theirs))
    if candidate.issuer_refused:
        conditions.append(make("IssuerURLValid", False, "InvalidIssuerURL",
                               f"{candidate.problem}; set spec.issuer to the identity "
                               "provider's https issuer URL"))
    else:
        conditions.append(make("IssuerURLValid", True, "Success", "spec.issuer is an https URL"))
    failed_at = None
    if check is not None and check.failed is not None:
        failed_at = [stage for _, stage, _, _ in _STAGES].index(check.failed)
    for i, (type_, stage, bad_reason, advice) in enumerate(_STAGES):
        if check is None:
            conditions.append(make(type_, None, "NotChecked",
                                   "not checked: the authenticator is not valid (see "
                                   "AuthenticatorValid)"))
        elif failed_at is None or i < failed_at:
            issuer = candidate.spec.issuer if candidate.spec is not None else ""
            conditions.append(make(type_, True, "Success",
                                   _PASSED[stage].format(url=discovery_url(issuer))))
        elif i == failed_at:
            conditions.append(make(type_, False, bad_reason, f"{check.detail}; {advice}"))
        else:
            conditions.append(make(type_, None, "NotChecked",
                                   f"not checked: {_STAGES[failed_at][0]} is False"))
    ready = verdict.admitted and check is not None and check.ok
    if ready:
        conditions.append(make("Ready", True, "Success", "logins use this authenticator"))
    else:
        first = next(c for c in conditions if c.status == "False")
        conditions.append(make("Ready", False, "NotReady",
                               f"logins do not use this authenticator: {first.type} is False "
                               f"({first.reason}); its message says what to fix"))
    return JWTAuthenticatorStatus(phase="Ready" if ready else "Error",
                                  conditions=(*conditions, *theirs))


def same_status(a: JWTAuthenticatorStatus | None, b: JWTAuthenticatorStatus | None) -> bool:
    """Equal but for the order of conditions (another tool may put its own first)."""
    if a is None or b is None:
        return a is b
    return a.phase == b.phase and sorted(a.conditions, key=lambda c: c.type) == sorted(
        b.conditions, key=lambda c: c.type)


def why_not(status: JWTAuthenticatorStatus | None) -> str:
    """A short why, for the audit log of a login that names an unusable object."""
    if status is None or status.phase == "Pending":
        return "Pending: its issuer's keys are still being fetched"
    for item in status.conditions:
        if item.type in OUR_TYPES and item.type != "Ready" and item.status == "False":
            return f"{status.phase}: {item.type} is False ({item.reason})"
    return status.phase
