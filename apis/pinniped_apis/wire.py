"""Speaking the concierge's API: from the values each side computes with to documents and back.

The documents are the models in `pinniped_apis.models`; the values are
`Identity` and `ClusterCredential`. The functions here are the few
conversions both sides need, named for what they make, and this module is
the one import a caller needs: it re-exports the names, limits and values of
the API beside them. The CLI's cached path imports none of it (pydantic costs
more than a cached kubectl call); it uses `pinniped_apis.rfc3339` and
`pinniped_apis.identity` directly.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pinniped_apis import rfc3339
from pinniped_apis.constants import (
    AUTHENTICATION_FAILED,
    AUTHENTICATOR_GROUP,
    IDENTITY_API_VERSION,
    IDENTITY_GROUP,
    JWT_AUTHENTICATOR_KIND,
    LOGIN_API_VERSION,
    LOGIN_GROUP,
    LOGOUT_REQUEST_KIND,
    LOGOUT_REQUEST_PATH,
    MAX_GROUPS,
    MAX_MESSAGE_LENGTH,
    MAX_NAME_LENGTH,
    MAX_REQUEST_BYTES,
    MAX_TOKEN_BYTES,
    TOKEN_CREDENTIAL_REQUEST_KIND,
    TOKEN_CREDENTIAL_REQUEST_PATH,
    VERSION,
    WHOAMI_REQUEST_KIND,
    WHOAMI_REQUEST_PATH,
)
from pinniped_apis.identity import (
    ClusterCredential,
    Identity,
    impersonation_headers,
)
from pinniped_apis.models import (
    LogoutRequest,
    LogoutRequestResponse,
    LogoutRequestStatus,
    Status,
    TokenCredentialRequest,
    TokenCredentialRequestResponse,
    WhoAmIRequest,
    WhoAmIRequestResponse,
)
from pinniped_apis.validation import WireError

#: What this module offers: its own conversions, and the API's names and values beside them.
__all__ = [
    "AUTHENTICATION_FAILED",
    "AUTHENTICATOR_GROUP",
    "IDENTITY_GROUP",
    "JWT_AUTHENTICATOR_KIND",
    "LOGIN_GROUP",
    "LOGOUT_REQUEST_KIND",
    "LOGOUT_REQUEST_PATH",
    "MAX_GROUPS",
    "MAX_MESSAGE_LENGTH",
    "MAX_NAME_LENGTH",
    "MAX_REQUEST_BYTES",
    "MAX_TOKEN_BYTES",
    "TOKEN_CREDENTIAL_REQUEST_KIND",
    "TOKEN_CREDENTIAL_REQUEST_PATH",
    "VERSION",
    "WHOAMI_REQUEST_KIND",
    "WHOAMI_REQUEST_PATH",
    "ClusterCredential",
    "Identity",
    "LoginRejected",
    "LogoutRequest",
    "LogoutRequestResponse",
    "LogoutRequestStatus",
    "Status",
    "TokenCredentialRequest",
    "TokenCredentialRequestResponse",
    "WhoAmIRequest",
    "WhoAmIRequestResponse",
    "WireError",
    "credential_response",
    "failure_response",
    "format_time",
    "impersonation_headers",
    "is_status_error",
    "logout_request",
    "logout_response",
    "parse_credential_response",
    "parse_logout_response",
    "parse_time",
    "parse_whoami_response",
    "status_error",
    "whoami_request",
    "whoami_response",
]

#: Timestamps on the wire are RFC 3339 in UTC, written as the CLI's cached path writes them.
format_time = rfc3339.format_time


class LoginRejected(Exception):
    """The concierge answered, and said no. Carries only the concierge's safe message."""


def parse_time(value: object, field_path: str) -> dt.datetime:
    """The UTC time in `value`, or a WireError naming `field_path` (see `pinniped_apis.rfc3339`)."""
    parsed = rfc3339.parse_time(value)
    if parsed is None:
        raise WireError(field_path, "must be an RFC 3339 timestamp string with a time zone")
    return parsed


# --- TokenCredentialRequest ----------------------------------------------------


def credential_response(request: TokenCredentialRequest,
                        credential: ClusterCredential) -> dict[str, Any]:
    return TokenCredentialRequestResponse.success(request, credential).to_wire()


def failure_response(request: TokenCredentialRequest | None, message: str) -> dict[str, Any]:
    return TokenCredentialRequestResponse.failure(request, message).to_wire()


def parse_credential_response(body: object) -> ClusterCredential:
    """Read the concierge's answer; raise LoginRejected when it carries no credential."""
    status = TokenCredentialRequestResponse.from_wire(body).status
    if status.credential is None:
        raise LoginRejected(status.message or AUTHENTICATION_FAILED)
    if status.identity is None:
        raise WireError("status.identity", "is required with a credential")
    identity = status.identity.identity()
    hint = status.elevation
    elevated = tuple(hint.groups) if hint is not None else ()
    if not set(elevated) <= set(identity.groups):
        raise WireError("status.elevation.groups", "must be groups of status.identity")
    return ClusterCredential(token=status.credential.token,
                             expiration=status.credential.expiration_timestamp,
                             identity=identity, elevated_groups=elevated,
                             check_elevation=hint is not None and hint.check)


# --- WhoAmIRequest and LogoutRequest ---------------------------------------------
# Both are sent with the cluster credential as the bearer token: the concierge
# asks the apiserver who that token is, so the answer is the cluster's view.


def whoami_request() -> dict[str, Any]:
    return WhoAmIRequest(apiVersion=IDENTITY_API_VERSION, kind=WHOAMI_REQUEST_KIND).to_wire()


def whoami_response(identity: Identity, expiration: dt.datetime | None) -> dict[str, Any]:
    return WhoAmIRequestResponse.of(identity, expiration).to_wire()


def parse_whoami_response(body: object) -> tuple[Identity, dt.datetime | None]:
    status = WhoAmIRequestResponse.from_wire(body).status
    return (status.kubernetes_user_info.user.identity(),
            status.credential_expiration_timestamp)


def logout_request() -> dict[str, Any]:
    return LogoutRequest(apiVersion=LOGIN_API_VERSION, kind=LOGOUT_REQUEST_KIND).to_wire()


def logout_response(session_ended: bool) -> dict[str, Any]:
    """`sessionEnded` is false when the session was already gone (logout is idempotent)."""
    return LogoutRequestResponse(status=LogoutRequestStatus(sessionEnded=session_ended)).to_wire()


def parse_logout_response(body: object) -> bool:
    """Whether the concierge ended a session (False: it had already ended)."""
    return LogoutRequestResponse.from_wire(body).status.session_ended


# --- errors ------------------------------------------------------------------


def status_error(code: int, reason: str, message: str,
                 field_path: str | None = None) -> dict[str, Any]:
    return Status.failure(code, reason, message, field_path).to_wire()


def is_status_error(body: object) -> bool:
    return (isinstance(body, dict) and body.get("kind") == "Status"
            and body.get("status") == "Failure")
