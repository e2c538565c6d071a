"""The documents of the concierge's API, as pydantic models: one definition of every field.

The concierge validates what clients send with these models (FastAPI reads
them, and publishes them at `/openapi.json`), and the CLI validates what the
concierge answers with the same ones, so the two cannot drift apart.

Two strictness rules, on purpose:
- What a client sends is read strictly: exact types (no "1" for 1), no
  unknown fields, every string bounded. A typo is an error, not a default.
- The status objects the concierge sends back also have exact types, but
  ignore fields they do not know, so an older CLI keeps working against a
  newer concierge that reports more (the Kubernetes API convention).

Every string must be valid Unicode text: JSON can carry an unpaired UTF-16
surrogate (`"\\udc80"`) that Python's parser turns into a string no UTF-8
encoder accepts. Such a string is refused by the model, naming the field, so
that whether it is refused never depends on the pydantic release installed.

Secrets (the ID token, the cluster token) are excluded from `repr`, and
`pinniped_apis.validation` turns a `ValidationError` into a message that names
the field without quoting the input.

The shapes follow Pinniped's `login.concierge.pinniped.dev` and
`identity.concierge.pinniped.dev` `v1alpha1` types, so Pinniped tooling
recognises them.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
)

from pinniped_apis import rfc3339, validation
from pinniped_apis.constants import (
    AUTHENTICATOR_GROUP,
    IDENTITY_API_VERSION,
    JWT_AUTHENTICATOR_KIND,
    LOGIN_API_VERSION,
    LOGOUT_REQUEST_KIND,
    MAX_GROUPS,
    MAX_MESSAGE_LENGTH,
    MAX_NAME_LENGTH,
    MAX_TOKEN_BYTES,
    TOKEN_CREDENTIAL_REQUEST_KIND,
    WHOAMI_REQUEST_KIND,
)
from pinniped_apis.identity import ClusterCredential, Identity, impersonation_headers
from pinniped_apis.validation import WireError, first_error


class Strict(BaseModel):
    """A document a client sends: exact types, no unknown fields, immutable once read."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    @classmethod
    def from_wire(cls, body: object) -> Self:
        """Read a JSON document (already parsed); WireError names the first wrong field."""
        try:
            return cls.model_validate(body)
        except ValidationError as exc:
            raise WireError(*first_error(exc)) from None

    def to_wire(self) -> dict[str, Any]:
        """The JSON object to send, with the API's camelCase names."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class Tolerant(Strict):
    """A status a client reads: exact types, but fields from a newer server are ignored."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


def _at_most(length: int) -> Any:
    """A before-validator that cuts a string to `length` characters (a message, not a secret)."""
    def cut(value: object) -> object:
        return value[:length] if isinstance(value, str) else value
    return cut


def _unicode_text(value: object) -> object:
    """A before-validator refusing strings with unpaired surrogates (other types pass on to
    the type check)."""
    if isinstance(value, str) and not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(validation.NOT_UNICODE) from None
    return value


def _parse_time(value: object) -> dt.datetime:
    if isinstance(value, dt.datetime) and value.tzinfo is not None:  # built in Python
        return value.astimezone(dt.UTC)
    parsed = rfc3339.parse_time(value)
    if parsed is None:
        raise ValueError("must be an RFC 3339 timestamp string with a time zone, "
                         "e.g. 2030-01-02T03:04:05Z")
    return parsed


# The before-validator comes last so that it wraps the constrained string (placed first,
# pydantic would check the lengths outside the string type, as for a list: "items").
Name = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME_LENGTH),
                 BeforeValidator(_unicode_text)]
#: A bearer secret: bounded, and never shown in a repr or an error.
Token = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TOKEN_BYTES),
                  BeforeValidator(_unicode_text), Field(repr=False)]
Groups = Annotated[list[Name], Field(max_length=MAX_GROUPS)]
#: Timestamps on the wire are RFC 3339 in UTC with whole seconds, as Kubernetes writes them.
Timestamp = Annotated[dt.datetime, PlainValidator(_parse_time),
                      PlainSerializer(rfc3339.format_time, return_type=str),
                      WithJsonSchema({"type": "string", "format": "date-time"})]
#: Kubernetes object metadata. Clients (Pinniped's among them) send an empty or
#: near-empty one; nothing in it is used, and the request size bounds it.
ObjectMeta = Annotated[dict[str, Any] | None,
                       Field(description="Ignored; accepted for Kubernetes clients.")]


class UserInfo(Tolerant):
    """Who a credential acts as: the (prefixed) username and groups."""

    username: Name
    groups: Groups = []

    def identity(self) -> Identity:
        return Identity(username=self.username, groups=tuple(self.groups))

    @classmethod
    def of(cls, identity: Identity) -> UserInfo:
        return cls(username=identity.username, groups=list(identity.groups))


# --- TokenCredentialRequest (login.concierge.pinniped.dev) --------------------


class KubernetesRequest(Strict):
    """What every request document carries besides its apiVersion, kind and spec.

    Subclasses declare `apiVersion` and `kind` without defaults: a request
    that omits them is refused, as a Kubernetes API would refuse it.
    """

    metadata: ObjectMeta = None
    status: dict[str, Any] | None = Field(
        default=None, description="Ignored in requests; accepted for Kubernetes clients.")


class AuthenticatorRef(Strict):
    """Which of the concierge's authenticators should check the token."""

    api_group: Literal["authentication.concierge.pinniped.dev"] = Field(
        default=AUTHENTICATOR_GROUP, alias="apiGroup")
    kind: Name
    name: Name


class TokenCredentialRequestSpec(Strict):
    token: Token = Field(description="The ID token from the identity provider.")
    authenticator: AuthenticatorRef


class TokenCredentialRequest(KubernetesRequest):
    """A client's request to trade an ID token for a cluster credential."""

    api_version: Literal["login.concierge.pinniped.dev/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["TokenCredentialRequest"]
    spec: TokenCredentialRequestSpec

    @classmethod
    def create(cls, token: str, authenticator_name: str,
               authenticator_kind: str = JWT_AUTHENTICATOR_KIND) -> TokenCredentialRequest:
        """The request for `token`; WireError (naming the field, never quoting the token)
        when it breaks the API's limits, so that a client can say so before sending it."""
        return cls.from_wire({
            "apiVersion": LOGIN_API_VERSION, "kind": TOKEN_CREDENTIAL_REQUEST_KIND,
            "spec": {"token": token, "authenticator": {
                "apiGroup": AUTHENTICATOR_GROUP, "kind": authenticator_kind,
                "name": authenticator_name}}})

    @property
    def token(self) -> str:
        return self.spec.token

    @property
    def authenticator_name(self) -> str:
        return self.spec.authenticator.name

    @property
    def authenticator_kind(self) -> str:
        return self.spec.authenticator.kind


class CredentialDoc(Tolerant):
    """The cluster credential, in the shape of an ExecCredential's status."""

    token: Token
    expiration_timestamp: Timestamp = Field(alias="expirationTimestamp")


class ElevationHint(Tolerant):
    """Present when the user has an elevation pending or active (`pinniped_apis.elevation`)."""

    check: bool = Field(description="Ask the concierge for the elevation state before each "
                        "reuse of this credential (GET ELEVATION_STATE_PATH).")
    groups: Groups = Field(default=[], description="The groups of the identity that an "
                           "approved elevation grants; the credential ends no later than it.")


class TokenCredentialRequestStatus(Tolerant):
    """Either a credential (with the identity it acts as) or a message saying why not."""

    credential: CredentialDoc | None = None
    identity: UserInfo | None = None
    impersonation_headers: dict[str, list[Name]] | None = Field(
        default=None, alias="impersonationHeaders",
        description="The headers a client must send with the credential to act as the user.")
    message: Annotated[str, BeforeValidator(_at_most(MAX_MESSAGE_LENGTH))] | None = Field(
        default=None, description="Why there is no credential (long ones are cut when read).")
    elevation: ElevationHint | None = None


class EchoedAuthenticator(Tolerant):
    """The authenticator reference as echoed; clients read nothing from it."""

    api_group: str | None = Field(default=None, alias="apiGroup")
    kind: str | None = None
    name: str | None = None


class AnsweredSpec(Tolerant):
    """The request's spec as the concierge echoes it for Kubernetes clients: never with the
    ID token. Read tolerantly, as other servers echo it their own way."""

    token: Literal[""] = ""
    authenticator: EchoedAuthenticator | None = None

    @classmethod
    def echoing(cls, request: TokenCredentialRequest) -> AnsweredSpec:
        ref = request.spec.authenticator
        return cls(authenticator=EchoedAuthenticator(apiGroup=ref.api_group, kind=ref.kind,
                                                     name=ref.name))


class TokenCredentialRequestResponse(Tolerant):
    """The concierge's answer to a TokenCredentialRequest."""

    api_version: Literal["login.concierge.pinniped.dev/v1alpha1"] = Field(
        default=LOGIN_API_VERSION, alias="apiVersion")
    kind: Literal["TokenCredentialRequest"] = TOKEN_CREDENTIAL_REQUEST_KIND
    spec: AnsweredSpec | None = None
    status: TokenCredentialRequestStatus

    @classmethod
    def success(cls, request: TokenCredentialRequest,
                credential: ClusterCredential) -> TokenCredentialRequestResponse:
        headers = impersonation_headers(credential.identity)
        hint = (ElevationHint(check=credential.check_elevation,
                              groups=list(credential.elevated_groups))
                if credential.check_elevation or credential.elevated_groups else None)
        return cls(spec=AnsweredSpec.echoing(request),
                   status=TokenCredentialRequestStatus(
                       credential=CredentialDoc(token=credential.token,
                                                expirationTimestamp=credential.expiration),
                       identity=UserInfo.of(credential.identity),
                       impersonationHeaders=headers, elevation=hint))

    @classmethod
    def failure(cls, request: TokenCredentialRequest | None,
                message: str) -> TokenCredentialRequestResponse:
        spec = None if request is None else AnsweredSpec.echoing(request)
        return cls(spec=spec, status=TokenCredentialRequestStatus(message=message))


# --- WhoAmIRequest (identity.concierge.pinniped.dev) -------------------------


class EmptySpec(Strict):
    """whoami and logout take no parameters: the bearer credential says whose session."""


class WhoAmIRequest(KubernetesRequest):
    """Ask who the bearer cluster credential acts as. The body is optional."""

    api_version: Literal["identity.concierge.pinniped.dev/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["WhoAmIRequest"]
    spec: EmptySpec = EmptySpec()


class KubernetesUserInfo(Tolerant):
    user: UserInfo


class WhoAmIRequestStatus(Tolerant):
    kubernetes_user_info: KubernetesUserInfo = Field(alias="kubernetesUserInfo")
    credential_expiration_timestamp: Timestamp | None = Field(
        default=None, alias="credentialExpirationTimestamp")


class WhoAmIRequestResponse(Tolerant):
    api_version: Literal["identity.concierge.pinniped.dev/v1alpha1"] = Field(
        default=IDENTITY_API_VERSION, alias="apiVersion")
    kind: Literal["WhoAmIRequest"] = WHOAMI_REQUEST_KIND
    status: WhoAmIRequestStatus

    @classmethod
    def of(cls, identity: Identity, expiration: dt.datetime | None) -> WhoAmIRequestResponse:
        return cls(status=WhoAmIRequestStatus(
            kubernetesUserInfo=KubernetesUserInfo(user=UserInfo.of(identity)),
            credentialExpirationTimestamp=expiration))


# --- LogoutRequest (login.concierge.pinniped.dev) ----------------------------


class LogoutRequest(KubernetesRequest):
    """End the session the bearer cluster credential belongs to. The body is optional."""

    api_version: Literal["login.concierge.pinniped.dev/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["LogoutRequest"]
    spec: EmptySpec = EmptySpec()


class LogoutRequestStatus(Tolerant):
    session_ended: bool = Field(
        alias="sessionEnded",
        description="False when the session had already ended: logout is idempotent.")


class LogoutRequestResponse(Tolerant):
    api_version: Literal["login.concierge.pinniped.dev/v1alpha1"] = Field(
        default=LOGIN_API_VERSION, alias="apiVersion")
    kind: Literal["LogoutRequest"] = LOGOUT_REQUEST_KIND
    status: LogoutRequestStatus


# --- Status (the Kubernetes error object) --------------------------------------
# Requests that are not answered at all (malformed, too large, concierge or
# Kubernetes unavailable) get a Kubernetes `Status`, as an aggregated API would.
# Its top-level `status` is the string "Failure", not an object.


class StatusCause(Tolerant):
    field: str
    message: str


class StatusDetails(Tolerant):
    causes: list[StatusCause] = []


class Status(Tolerant):
    api_version: Literal["v1"] = Field(default="v1", alias="apiVersion")
    kind: Literal["Status"] = "Status"
    status: Literal["Failure"] = "Failure"
    message: str
    reason: str
    code: int
    details: StatusDetails | None = None

    @classmethod
    def failure(cls, code: int, reason: str, message: str,
                field_path: str | None = None) -> Status:
        details = None
        if field_path is not None:
            details = StatusDetails(causes=[StatusCause(field=field_path, message=message)])
        return cls(code=code, reason=reason, message=message, details=details)
