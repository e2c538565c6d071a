"""Authenticators: which identity providers' ID tokens the concierge accepts, and how.

One definition serves both places an authenticator can live:
- `JWTAuthenticatorSpec`, the spec of a cluster-scoped `JWTAuthenticator`
  (`authentication.concierge.pinniped.dev/v1alpha1`), whose CRD schema in
  deploy/ is generated from this model (`pinniped_apis.crds`);
- the config file's `authenticators[]`, which `pinniped_concierge.config`
  builds from the same `JWTAuthenticatorFields`.
So a rule (https issuers only, asymmetric algorithms only, no `system:`
prefix) is written once and holds for both, and a test fails if the CRD and
the model drift apart.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import ssl
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from pinniped_apis import rfc3339

#: Signature algorithms whose verification key is public. Symmetric (HS*) and
#: `none` are deliberately absent: with HS* the "public" JWKS would be the
#: signing secret, and `none` is no signature at all.
Algorithm = Literal["RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                    "ES256", "ES384", "ES512", "EdDSA"]
ASYMMETRIC_ALGORITHMS: tuple[Algorithm, ...] = get_args(Algorithm)

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
CLAIM_NAME = r"^[A-Za-z0-9_.:/-]{1,128}$"
HTTPS = r"^https://"
ISSUER_WORDS = ("an https:// URL without query or fragment "
                "(discovery and keys are only fetched over https)")
#: What each pattern means, for errors ("must be ...") and references.
PATTERN_WORDS = {
    DNS_LABEL: "a DNS-1123 label (lower case letters, digits, '-')",
    CLAIM_NAME: "a claim name (1 to 128 letters, digits and _ . : / -)",
    HTTPS: ISSUER_WORDS,
}
#: A CA bundle is a few certificates; far more is a mistake, and it is parsed on every change.
MAX_CA_BUNDLE_BYTES = 64 * 1024


class SpecModel(BaseModel):
    """A Kubernetes-style object part: camelCase keys, exact types, no unknown keys, frozen.

    Keys are camelCase aliases of snake_case attributes; code may build one by
    attribute name, a document may not (read it with `by_name=False`). A key
    set to null counts as omitted (YAML and Kubernetes both write such
    nulls), and lists become the tuples the models hold.
    """

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True,
                              alias_generator=to_camel, validate_by_name=True,
                              validate_by_alias=True)

    @model_validator(mode="before")
    @classmethod
    def _nulls_are_omitted(cls, data: object) -> object:
        if not isinstance(data, dict):
            return data
        return {key: tuple(value) if isinstance(value, list) else value
                for key, value in data.items() if value is not None}


def https_issuer(value: str) -> str:
    try:
        parts = urlsplit(value)
        ok = (parts.scheme == "https" and bool(parts.hostname) and not parts.query
              and not parts.fragment and "@" not in parts.netloc)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        ok = False
    if not ok:
        raise ValueError(f"must be {ISSUER_WORDS}")
    return value


def _prefix(value: str) -> str:
    if value.lower().startswith("system:"):
        raise ValueError("must not start with 'system:' (reserved by Kubernetes)")
    if not value.isprintable():
        raise ValueError("must be printable characters only")
    return value


def _asymmetric_only(value: object, handler: ValidatorFunctionWrapHandler) -> object:
    """Say why an algorithm is refused, at the `algorithms` key itself."""
    try:
        return handler(value)
    except ValidationError as exc:
        refused = [e["input"] for e in exc.errors() if e["type"] == "literal_error"]
        if not refused:
            raise
        raise ValueError(f"{refused[0]!r} is not allowed; choose from the asymmetric "
                         f"algorithms {', '.join(ASYMMETRIC_ALGORITHMS)}") from None


def _pem_bundle(value: str) -> str:
    """Base64 of one or more PEM certificates that Python's TLS stack can load."""
    try:
        pem = base64.b64decode(value, validate=True).decode("ascii")
        ssl.create_default_context(cadata=pem)
    except (binascii.Error, UnicodeDecodeError, ssl.SSLError, ValueError):
        raise ValueError("must be base64 of PEM certificates (base64 -w0 ca.pem); this does "
                         "not decode to certificates") from None
    return value


DNSLabel = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL)]
ClaimName = Annotated[str, Field(pattern=CLAIM_NAME)]
Prefix = Annotated[str, Field(max_length=64), AfterValidator(_prefix)]
Issuer = Annotated[str, Field(max_length=2048, pattern=HTTPS), AfterValidator(https_issuer)]
Algorithms = Annotated[tuple[Algorithm, ...], WrapValidator(_asymmetric_only)]

_PREFIX_RULES = (
    "Must not start with `system:`. Two authenticators' prefixes must not overlap (equal, "
    "empty, or one the start of the other), or one IdP could mint the other's names; the "
    "only exception is authenticators on the same issuer with the same claims and the very "
    "same prefix (e.g. one per client), which map every token alike.")


class ClaimMappings(SpecModel):
    """Which ID token claims name the user and their groups."""

    username: ClaimName = Field(default="email", description="The claim with the username.")
    groups: ClaimName | None = Field(
        default=None,
        description="The claim with the list of groups. Omitted: users of this IdP get no "
                    "groups from it.")


class JWTAuthenticatorFields(SpecModel):
    """What every JWT authenticator says, wherever it is defined."""

    issuer: Issuer = Field(
        description="The exact `iss` of the ID tokens; discovery is read from "
                    "ISSUER/.well-known/openid-configuration.")
    audience: str = Field(
        min_length=1, max_length=256,
        description="Must be in the token's `aud` (the client ID the CLI has at the IdP).")
    claims: ClaimMappings = Field(default_factory=ClaimMappings,
                                  description="Which claims name the user and their groups.")
    username_prefix: Prefix = Field(
        description="Put before every username from this IdP, so that its names cannot "
                    f"collide with names of other origins. {_PREFIX_RULES}")
    groups_prefix: Prefix = Field(
        description="Put before every group name from this IdP; the rules of "
                    "`usernamePrefix` apply.")
    algorithms: Algorithms = Field(
        default=ASYMMETRIC_ALGORITHMS, min_length=1,
        description="Signature algorithms accepted. Asymmetric ones only: with HS* the public "
                    "JWKS would be the signing secret, and `none` is no signature.")


class TLSSpec(SpecModel):
    certificate_authority_data: Annotated[str, Field(max_length=MAX_CA_BUNDLE_BYTES),
                                          AfterValidator(_pem_bundle)] = Field(
        description="Base64 of the PEM bundle trusted for the issuer's https. Omitted: the "
                    "system trust store.")


class JWTAuthenticatorSpec(JWTAuthenticatorFields):
    """The spec of a cluster-scoped JWTAuthenticator. Its name is its `metadata.name`."""

    username_prefix: Annotated[Prefix, Field(min_length=1)] = Field(
        description="Put before every username from this IdP, so that its names cannot "
                    f"collide with names of other origins. Never empty. {_PREFIX_RULES}")
    groups_prefix: Annotated[Prefix, Field(min_length=1)] = Field(
        description="Put before every group name from this IdP; never empty, and the rules "
                    "of `usernamePrefix` apply.")
    tls: TLSSpec | None = Field(default=None,
                                description="How to trust the issuer's https.")


# --- status -------------------------------------------------------------------------------

Phase = Literal["Pending", "Ready", "Error"]
ConditionType = Literal["Ready", "IssuerURLValid", "DiscoveryURLValid", "JWKSURLValid",
                        "JWKSFetchValid", "AuthenticatorValid"]


class Condition(SpecModel):
    """One Kubernetes-style condition (`metav1.Condition`)."""

    model_config = ConfigDict(extra="ignore")  # conditions others add stay readable

    type: str = Field(max_length=316)
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    message: str = Field(default="", max_length=32768)
    last_transition_time: str = Field(
        description="RFC 3339; when the status last changed.")
    observed_generation: int | None = Field(
        default=None, ge=0, description="The spec generation this condition is about.")


class JWTAuthenticatorStatus(SpecModel):
    model_config = ConfigDict(extra="ignore")

    phase: Phase = Field(default="Pending",
                         description="Ready: logins use it. Error: see the conditions.")
    conditions: tuple[Condition, ...] = Field(default=(), max_length=32)


def condition(type_: ConditionType, ok: bool | None, *, reason: str, message: str,
              generation: int | None, now: dt.datetime,
              previous: tuple[Condition, ...] = ()) -> Condition:
    """A condition, keeping its last transition time when its status did not change."""
    status: Literal["True", "False", "Unknown"] = \
        "Unknown" if ok is None else ("True" if ok else "False")
    since = rfc3339.format_time(now)
    for old in previous:
        if old.type == type_ and old.status == status:
            since = old.last_transition_time
    return Condition(type=type_, status=status, reason=reason, message=message,
                     last_transition_time=since, observed_generation=generation)


def schema_without_refs(model: type[BaseModel]) -> dict[str, Any]:
    """`model`'s JSON schema (camelCase keys) with every `$ref` inlined."""
    schema = model.model_json_schema(by_alias=True)
    definitions = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                target = definitions[node["$ref"].rsplit("/", 1)[1]]
                rest = {k: v for k, v in node.items() if k != "$ref"}
                return inline(target | rest)
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    result: dict[str, Any] = inline(schema)
    return result
