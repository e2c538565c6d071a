"""Wire types shared by the CLI and the concierge.

Both sides import this one module so that a field renamed here breaks both at
once, in tests, instead of drifting apart in production. It uses only the
standard library: the CLI imports it and must stay cheap to start.

The shapes follow Pinniped's `login.concierge.pinniped.dev/v1alpha1`
TokenCredentialRequest, so existing Pinniped tooling recognises them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from pinniped_apis import rfc3339
from pinniped_apis.constants import (  # noqa: F401 - re-exported
    AUTHENTICATION_FAILED,
    AUTHENTICATOR_GROUP,
    IDENTITY_GROUP,
    JWT_AUTHENTICATOR_KIND,
    LOGIN_GROUP,
    LOGOUT_REQUEST_KIND,
    LOGOUT_REQUEST_PATH,
    MAX_NAME_LENGTH,
    MAX_REQUEST_BYTES,
    MAX_TOKEN_BYTES,
    TOKEN_CREDENTIAL_REQUEST_KIND,
    TOKEN_CREDENTIAL_REQUEST_PATH,
    VERSION,
    WHOAMI_REQUEST_KIND,
    WHOAMI_REQUEST_PATH,
)


class WireError(ValueError):
    """A message that does not have the expected shape; `field` names the culprit."""

    def __init__(self, field_path: str, problem: str) -> None:
        super().__init__(f"{field_path}: {problem}")
        self.field = field_path
        self.problem = problem


@dataclass(frozen=True)
class Identity:
    username: str
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClusterCredential:
    """The short-lived token the cluster accepts, and the identity it may act as."""

    token: str = field(repr=False)
    expiration: dt.datetime
    identity: Identity

    @property
    def impersonation_headers(self) -> dict[str, list[str]]:
        return impersonation_headers(self.identity)


def impersonation_headers(identity: Identity) -> dict[str, list[str]]:
    headers = {"Impersonate-User": [identity.username]}
    if identity.groups:
        headers["Impersonate-Group"] = list(identity.groups)
    return headers


#: Timestamps on the wire are RFC 3339 in UTC, written as the CLI's cached path writes them.
format_time = rfc3339.format_time


def parse_time(value: object, field_path: str) -> dt.datetime:
    """The UTC time in `value`, or a WireError naming `field_path` (see `pinniped_apis.rfc3339`)."""
    parsed = rfc3339.parse_time(value)
    if parsed is None:
        raise WireError(field_path, "must be an RFC 3339 timestamp string with a time zone")
    return parsed


# --- TokenCredentialRequest ------------------------------------------------


@dataclass(frozen=True)
class TokenCredentialRequest:
    token: str = field(repr=False)
    authenticator_name: str
    authenticator_kind: str = JWT_AUTHENTICATOR_KIND
    authenticator_group: str = AUTHENTICATOR_GROUP

    def to_wire(self) -> dict[str, Any]:
        return {
            "apiVersion": f"{LOGIN_GROUP}/{VERSION}",
            "kind": TOKEN_CREDENTIAL_REQUEST_KIND,
            "spec": {
                "token": self.token,
                "authenticator": {
                    "apiGroup": self.authenticator_group,
                    "kind": self.authenticator_kind,
                    "name": self.authenticator_name,
                },
            },
        }

    @classmethod
    def from_wire(cls, body: object) -> TokenCredentialRequest:
        """Parse a client's request, naming the first field that is wrong."""
        obj = _expect_object(body, "body")
        _expect_type_meta(obj, LOGIN_GROUP, TOKEN_CREDENTIAL_REQUEST_KIND)
        spec = _expect_object(obj.get("spec"), "spec")
        token = _expect_string(spec.get("token"), "spec.token", MAX_TOKEN_BYTES)
        auth = _expect_object(spec.get("authenticator"), "spec.authenticator")
        name = _expect_string(auth.get("name"), "spec.authenticator.name", MAX_NAME_LENGTH)
        kind = _expect_string(auth.get("kind"), "spec.authenticator.kind", MAX_NAME_LENGTH)
        group = auth.get("apiGroup", AUTHENTICATOR_GROUP)
        group = _expect_string(group, "spec.authenticator.apiGroup", MAX_NAME_LENGTH)
        if group != AUTHENTICATOR_GROUP:
            raise WireError("spec.authenticator.apiGroup", f"must be {AUTHENTICATOR_GROUP!r}")
        return cls(token=token, authenticator_name=name, authenticator_kind=kind,
                   authenticator_group=group)


def credential_response(request: TokenCredentialRequest,
                        credential: ClusterCredential) -> dict[str, Any]:
    body = request.to_wire()
    body["spec"]["token"] = ""  # never echo the ID token back
    body["status"] = {
        "credential": {
            "token": credential.token,
            "expirationTimestamp": format_time(credential.expiration),
        },
        "identity": {
            "username": credential.identity.username,
            "groups": list(credential.identity.groups),
        },
        "impersonationHeaders": credential.impersonation_headers,
    }
    return body


def failure_response(request: TokenCredentialRequest | None, message: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": f"{LOGIN_GROUP}/{VERSION}", "kind": TOKEN_CREDENTIAL_REQUEST_KIND,
    }
    if request is not None:
        body = request.to_wire()
        body["spec"]["token"] = ""  # never echo the ID token back
    body["status"] = {"message": message}
    return body


class LoginRejected(Exception):
    """The concierge answered, and said no. Carries only the concierge's safe message."""


def parse_credential_response(body: object) -> ClusterCredential:
    """Read the concierge's answer; raise LoginRejected when it carries no credential."""
    obj = _expect_object(body, "body")
    status = _expect_object(obj.get("status"), "status")
    if status.get("credential") is None:
        message = status.get("message")
        raise LoginRejected(message if isinstance(message, str) else AUTHENTICATION_FAILED)
    cred = _expect_object(status.get("credential"), "status.credential")
    token = _expect_string(cred.get("token"), "status.credential.token", MAX_TOKEN_BYTES)
    expiration = parse_time(cred.get("expirationTimestamp"),
                            "status.credential.expirationTimestamp")
    identity = parse_identity(status.get("identity"), "status.identity")
    return ClusterCredential(token=token, expiration=expiration, identity=identity)


def parse_identity(value: object, field_path: str) -> Identity:
    obj = _expect_object(value, field_path)
    username = _expect_string(obj.get("username"), f"{field_path}.username", MAX_NAME_LENGTH)
    groups_raw = obj.get("groups", [])
    if not isinstance(groups_raw, list) or not all(isinstance(g, str) for g in groups_raw):
        raise WireError(f"{field_path}.groups", "must be a list of strings")
    return Identity(username=username, groups=tuple(groups_raw))


# --- WhoAmIRequest and LogoutRequest ---------------------------------------
# Both are sent with the cluster credential as the bearer token: the concierge
# asks the apiserver who that token is, so the answer is the cluster's view.


def whoami_request() -> dict[str, Any]:
    return {"apiVersion": f"{IDENTITY_GROUP}/{VERSION}", "kind": WHOAMI_REQUEST_KIND, "spec": {}}


def whoami_response(identity: Identity, expiration: dt.datetime | None) -> dict[str, Any]:
    body = whoami_request()
    status: dict[str, Any] = {
        "kubernetesUserInfo": {
            "user": {"username": identity.username, "groups": list(identity.groups)},
        },
    }
    if expiration is not None:
        status["credentialExpirationTimestamp"] = format_time(expiration)
    body["status"] = status
    return body


def parse_whoami_response(body: object) -> tuple[Identity, dt.datetime | None]:
    obj = _expect_object(body, "body")
    status = _expect_object(obj.get("status"), "status")
    info = _expect_object(status.get("kubernetesUserInfo"), "status.kubernetesUserInfo")
    identity = parse_identity(info.get("user"), "status.kubernetesUserInfo.user")
    raw_exp = status.get("credentialExpirationTimestamp")
    if raw_exp is None:
        return identity, None
    return identity, parse_time(raw_exp, "status.credentialExpirationTimestamp")


def logout_request() -> dict[str, Any]:
    return {"apiVersion": f"{LOGIN_GROUP}/{VERSION}", "kind": LOGOUT_REQUEST_KIND, "spec": {}}


def logout_response(session_ended: bool) -> dict[str, Any]:
    """`sessionEnded` is false when the session was already gone (logout is idempotent)."""
    body = logout_request()
    body["status"] = {"sessionEnded": session_ended}
    return body


# --- errors ----------------------------------------------------------------
# Requests that are not answered at all (malformed, too large, concierge or
# Kubernetes unavailable) get a Kubernetes `Status` object, as an aggregated
# API would. Note its top-level `status` is the string "Failure", not an object.


def status_error(code: int, reason: str, message: str,
                 field_path: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"apiVersion": "v1", "kind": "Status", "status": "Failure",
                            "message": message, "reason": reason, "code": code}
    if field_path is not None:
        body["details"] = {"causes": [{"field": field_path, "message": message}]}
    return body


def is_status_error(body: object) -> bool:
    return (isinstance(body, dict) and body.get("kind") == "Status"
            and body.get("status") == "Failure")


# --- helpers ---------------------------------------------------------------


def _expect_object(value: object, field_path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise WireError(field_path, "must be an object")
    return value


def _expect_string(value: object, field_path: str, max_length: int) -> str:
    if not isinstance(value, str) or not value:
        raise WireError(field_path, "must be a non-empty string")
    if len(value) > max_length:
        raise WireError(field_path, f"must be at most {max_length} characters")
    return value


def _expect_type_meta(obj: dict[str, Any], group: str, kind: str) -> None:
    if obj.get("apiVersion") != f"{group}/{VERSION}":
        raise WireError("apiVersion", f"must be {group}/{VERSION!s}")
    if obj.get("kind") != kind:
        raise WireError("kind", f"must be {kind}")
