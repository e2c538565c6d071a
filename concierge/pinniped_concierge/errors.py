"""The ways a concierge request can end other than in success, and their reason codes.

Every outcome carries a reason code from `Reason`. The client of a failed
login only ever sees `wire.AUTHENTICATION_FAILED`; the code goes to the audit
log, where an operator can tell an expired token from a forged one without
the token itself ever being written down.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Stable reason codes written to the audit log (operators grep for these)."""

    OK = "ok"
    # The request itself.
    MALFORMED_REQUEST = "malformed_request"
    REQUEST_TOO_LARGE = "request_too_large"
    REQUEST_TIMEOUT = "request_timeout"
    #: The client address used up its `rateLimit` bucket (answered 429 with Retry-After).
    RATE_LIMITED = "rate_limited"
    UNKNOWN_AUTHENTICATOR = "unknown_authenticator"
    #: A JWTAuthenticator object of that name exists but is not Ready (see its status).
    AUTHENTICATOR_NOT_READY = "authenticator_not_ready"
    # The ID token's envelope and signature.
    TOKEN_TOO_LARGE = "token_too_large"
    MALFORMED_TOKEN = "malformed_token"
    UNSUPPORTED_ALGORITHM = "unsupported_algorithm"
    UNSUPPORTED_HEADER = "unsupported_header"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    # The ID token's registered claims.
    WRONG_ISSUER = "wrong_issuer"
    WRONG_AUDIENCE = "wrong_audience"
    WRONG_AUTHORIZED_PARTY = "wrong_authorized_party"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    ISSUED_IN_FUTURE = "issued_in_future"
    #: Issued longer ago than `identityIdleTimeoutSeconds` (see `LoginService`).
    TOKEN_TOO_OLD = "token_too_old"
    MISSING_CLAIM = "missing_claim"
    BAD_CLAIM_TYPE = "bad_claim_type"
    # The identity derived from the claims.
    EMAIL_NOT_VERIFIED = "email_not_verified"
    CLAIM_TOO_LARGE = "claim_too_large"
    RESERVED_NAME = "reserved_name"
    INVALID_NAME = "invalid_name"
    #: An admin ran `revoke-user`, and the token's authentication predates it.
    USER_REVOKED = "user_revoked"
    # Cluster credentials presented to whoami and logout.
    MISSING_CREDENTIAL = "missing_credential"
    INVALID_CREDENTIAL = "invalid_credential"
    FOREIGN_CREDENTIAL = "foreign_credential"
    ALREADY_LOGGED_OUT = "already_logged_out"
    # Our own dependencies.
    ISSUER_UNAVAILABLE = "issuer_unavailable"
    ISSUER_KEYS_EXPIRED = "issuer_keys_expired"
    KUBERNETES_UNAVAILABLE = "kubernetes_unavailable"
    KUBERNETES_ERROR = "kubernetes_error"
    USER_OBJECT_CONFLICT = "user_object_conflict"
    #: `maxUsers` users' objects exist already, and this login would set up one more.
    USER_LIMIT_REACHED = "user_limit_reached"
    INTERNAL_ERROR = "internal_error"
    # Temporary elevated access (`elevation_service`, `elevation_controller`).
    #: The ElevationPolicies have not been listed yet (or there are more than maxPolicies):
    #: no login can be granted its groups safely, so none is.
    ELEVATION_POLICIES_UNKNOWN = "elevation_policies_unknown"
    NO_ELEVATION_POLICY = "no_elevation_policy"
    NOT_A_REQUESTER = "not_a_requester"
    NOT_AN_APPROVER = "not_an_approver"
    SELF_APPROVAL = "self_approval"
    ALREADY_APPROVED = "already_approved"
    ELEVATION_NOT_FOUND = "elevation_not_found"
    #: Approve or deny of a request that is no longer Pending, revoke of one that has ended.
    ELEVATION_ENDED = "elevation_ended"
    DURATION_TOO_LONG = "duration_too_long"
    #: The user already has a request open for this group.
    ELEVATION_ALREADY_OPEN = "elevation_already_open"
    #: maxRequests in all, or maxOpenPerUser for this user.
    ELEVATION_LIMIT_REACHED = "elevation_limit_reached"


class Rejected(Exception):
    """The caller did not prove who they are. Answered with the uniform message only."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else str(reason))
        self.reason = reason
        #: For the audit log and debugging. Must never contain token material.
        self.detail = detail


class Refused(Exception):
    """The caller proved who they are but may not do this (a 4xx Status); `message` tells
    them what to do instead."""

    def __init__(self, code: int, reason: Reason, message: str, *,
                 retry_after: int | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.retry_after = retry_after


class Unavailable(Exception):
    """Not now: something we depend on is down (HTTP 503), or the caller is asking too much
    at once (429); either way the caller should retry after `retry_after_seconds`."""

    def __init__(self, reason: Reason, message: str, retry_after_seconds: int = 5, *,
                 http_status: int = 503) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.retry_after_seconds = retry_after_seconds
        self.http_status = http_status


class ServerError(Exception):
    """We cannot serve this request and retrying will not help until an operator acts (500)."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
