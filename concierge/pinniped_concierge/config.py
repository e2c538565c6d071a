"""The concierge's configuration file, as pydantic models: read strictly, refused loudly.

A typo in a security setting (say `usernamePrefx`) must not silently fall back
to a default, so unknown keys, duplicate keys, wrong types and out-of-range
values all stop the concierge at start with a message naming the key path.
Relative file paths are resolved against the directory of the config file, so
a config and its certificates can be moved together.

The models are the one definition of every key: they validate the file, their
JSON schema feeds the reference (`pinniped-concierge --config-reference`,
deploy/concierge-config.md, written by `config_reference`), and the
authenticator's model is the schema cluster-stored authenticators will share.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import ErrorDetails, InitErrorDetails

from pinniped_apis import validation
from pinniped_apis.constants import MAX_TOKEN_BYTES

#: Signature algorithms whose verification key is public. Symmetric (HS*) and
#: `none` are deliberately absent: with HS* the "public" JWKS would be the
#: signing secret, and `none` is no signature at all.
Algorithm = Literal["RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                    "ES256", "ES384", "ES512", "EdDSA"]
ASYMMETRIC_ALGORITHMS: tuple[Algorithm, ...] = get_args(Algorithm)

MIN_CREDENTIAL_TTL = 600  # kube-apiserver refuses TokenRequest expirationSeconds below this
MAX_CREDENTIAL_TTL = 86400

_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_CLAIM_NAME = r"^[A-Za-z0-9_.:/-]{1,128}$"
_HTTPS = r"^https://"
_ISSUER_WORDS = ("an https:// URL without query or fragment "
                 "(discovery and keys are only fetched over https)")
#: What each pattern means, for errors ("must be ...") and the reference.
PATTERN_WORDS = {
    _DNS_LABEL: "a DNS-1123 label (lower case letters, digits, '-')",
    _CLAIM_NAME: "a claim name (1 to 128 letters, digits and _ . : / -)",
    _HTTPS: _ISSUER_WORDS,
}
UNKNOWN_KEY = ("unknown key (check the spelling; `pinniped-concierge --config-reference` "
               "lists the accepted keys)")


class ConfigError(ValueError):
    """The config file is unusable; `key` names the culprit, e.g. `authenticators[0].issuer`."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}" if key else problem)
        self.key = key
        self.problem = problem


def load(path: Path) -> Config:
    """Read and validate the config file at `path`."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read config file {path}: {exc.strerror}") from exc
    return parse(text, base_dir=path.resolve().parent)


def parse(text: str, base_dir: Path) -> Config:
    """Validate a config document; relative paths in it are relative to `base_dir`."""
    try:
        document = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError("", f"not valid YAML: {exc}") from exc
    try:  # the file's keys are the camelCase aliases only, not the Python names
        return Config.model_validate(document, context={"base_dir": base_dir},
                                     by_alias=True, by_name=False)
    except ValidationError as exc:
        raise _config_error(exc) from None


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of keeping the last one."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


# --- value types ------------------------------------------------------------------


def _path(value: object, info: ValidationInfo) -> Path:
    if isinstance(value, Path):
        path = value
    elif isinstance(value, str) and value:
        path = Path(value).expanduser()
    else:
        raise ValueError("must be a file path (a non-empty string)")
    base_dir = (info.context or {}).get("base_dir")
    return base_dir / path if base_dir is not None and not path.is_absolute() else path


def _existing_file(value: object, info: ValidationInfo) -> Path:
    path = _path(value, info)
    if not path.is_file():
        raise ValueError(f"file {path} does not exist")
    return path


def _audit_log(value: object, info: ValidationInfo) -> Path | None:
    if value == "-":
        return None
    path = _path(value, info)
    if not path.parent.is_dir():
        raise ValueError(f"directory {path.parent} does not exist")
    return path


def _https_issuer(value: str) -> str:
    try:
        parts = urlsplit(value)
        ok = (parts.scheme == "https" and bool(parts.hostname) and not parts.query
              and not parts.fragment and "@" not in parts.netloc)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        ok = False
    if not ok:
        raise ValueError(f"must be {_ISSUER_WORDS}")
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


ExistingFile = Annotated[Path, BeforeValidator(_existing_file)]
DNSLabel = Annotated[str, Field(max_length=63, pattern=_DNS_LABEL)]
ClaimName = Annotated[str, Field(pattern=_CLAIM_NAME)]
Prefix = Annotated[str, Field(max_length=64), AfterValidator(_prefix)]


def _integer(default: int, low: int, high: int, description: str, **field: Any) -> Any:
    return Field(default=default, ge=low, le=high, description=description, **field)


# --- the file's sections ------------------------------------------------------------


class Section(BaseModel):
    """One mapping of the file: exact types, no unknown keys, immutable once read.

    Keys are camelCase aliases of the snake_case attributes; code may build a
    section by attribute name, the file may not (see `parse`).
    """

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True,
                              alias_generator=to_camel, validate_by_name=True,
                              validate_by_alias=True)

    @model_validator(mode="before")
    @classmethod
    def _read_as_yaml_means_it(cls, data: object) -> object:
        """A key set to null counts as omitted; YAML's lists become the tuples we hold."""
        if not isinstance(data, dict):
            return data
        return {key: tuple(value) if isinstance(value, list) else value
                for key, value in data.items() if value is not None}


class ListenConfig(Section):
    """Where the concierge serves HTTPS."""

    host: str = Field(default="127.0.0.1", min_length=1,
                      description="Address to listen on; `0.0.0.0` for every interface.")
    port: int = _integer(8443, 1, 65535, "TCP port to listen on.")


class TLSConfig(Section):
    """The concierge's serving certificate."""

    cert_file: ExistingFile = Field(
        description="PEM file with the certificate chain the concierge serves.")
    key_file: ExistingFile = Field(description="PEM file with the private key of `certFile`.")


class KubernetesConfig(Section):
    """How the concierge reaches the Kubernetes API."""

    kubeconfig: ExistingFile | None = Field(
        default=None,
        description="A kubeconfig with the concierge's own credentials. Omitted: the pod's "
                    "in-cluster ServiceAccount.")
    request_timeout_seconds: int = _integer(10, 1, 120, "Timeout of each Kubernetes API call.")


class ClaimsConfig(Section):
    """Which ID token claims name the user and their groups."""

    username: ClaimName = Field(default="email", description="The claim with the username.")
    groups: ClaimName | None = Field(
        default=None,
        description="The claim with the list of groups. Omitted: users of this IdP get no "
                    "groups from it.")


class JWTAuthenticatorConfig(Section):
    """One identity provider whose ID tokens (JWTs) the concierge accepts."""

    name: DNSLabel = Field(description="What clients put in `spec.authenticator.name`.")
    type: Literal["jwt"] = Field(
        default="jwt",
        description="The kind of authenticator; `jwt` (OIDC ID tokens) is the only one.")
    issuer: Annotated[str, Field(pattern=_HTTPS), AfterValidator(_https_issuer)] = Field(
        description="The exact `iss` of the ID tokens; discovery is read from "
                    "ISSUER/.well-known/openid-configuration.")
    audience: str = Field(
        min_length=1,
        description="Must be in the token's `aud` (the client ID the CLI has at the IdP).")
    ca_file: ExistingFile | None = Field(
        default=None,
        description="PEM bundle trusted for the issuer's https. Omitted: the system trust store.")
    claims: ClaimsConfig = Field(default_factory=ClaimsConfig,
                                 description="Which claims name the user and their groups.")
    allow_empty_prefixes: bool = Field(
        default=False,
        description="Allows `usernamePrefix` and `groupsPrefix` to be empty. This IdP's names "
                    "then meet the names of every other origin; set it only when that is meant.")
    username_prefix: Prefix = Field(
        description="Put before every username from this IdP, so that its names cannot "
                    "collide with names of other origins. Must not start with `system:`; "
                    "empty only with `allowEmptyPrefixes: true`. Two authenticators' prefixes "
                    "must not overlap (equal, empty, or one the start of the other), or one IdP "
                    "could mint the other's names; the only exception is authenticators on the "
                    "same issuer with the same claims and the very same prefix (e.g. one per "
                    "client), which map every token alike.")
    groups_prefix: Prefix = Field(
        description="Put before every group name from this IdP; the rules of "
                    "`usernamePrefix` apply.")
    algorithms: Annotated[tuple[Algorithm, ...], WrapValidator(_asymmetric_only)] = Field(
        default=ASYMMETRIC_ALGORITHMS, min_length=1,
        description="Signature algorithms accepted. Asymmetric ones only: with HS* the public "
                    "JWKS would be the signing secret, and `none` is no signature.")
    max_token_bytes: int = _integer(16 * 1024, 1024, MAX_TOKEN_BYTES,
                                    "Larger ID tokens are refused as authentication failures.")

    @field_validator("username_prefix", "groups_prefix")
    @classmethod
    def _empty_only_when_allowed(cls, value: str, info: ValidationInfo) -> str:
        if value == "" and not info.data.get("allow_empty_prefixes", False):
            raise ValueError("is empty, so names from the IdP would collide with names of "
                             "other origins; set a prefix, or set allowEmptyPrefixes: true if "
                             "that is really intended")
        return value


class Config(Section):
    """The whole file."""

    listen: ListenConfig = Field(default_factory=ListenConfig,
                                 description="Where the concierge serves HTTPS.")
    tls: TLSConfig = Field(description="The serving certificate.")
    kubernetes: KubernetesConfig = Field(default_factory=KubernetesConfig,
                                         description="How the Kubernetes API is reached.")
    namespace: DNSLabel = Field(
        description="The namespace of the per-user ServiceAccounts and session Secrets.")
    credential_ttl_seconds: int = _integer(
        MIN_CREDENTIAL_TTL, MIN_CREDENTIAL_TTL, MAX_CREDENTIAL_TTL,
        "Lifetime of the credentials the concierge mints (600 is TokenRequest's minimum).",
        alias="credentialTTLSeconds")
    clock_skew_seconds: int = _integer(30, 0, 300, "Leeway for an ID token's exp, nbf and iat.")
    audit_log: Annotated[Path | None, BeforeValidator(_audit_log)] = Field(
        default=None,
        description="File the audit log (one JSON line per request) is appended to; its "
                    "directory must exist. Omitted or `-`: standard output.")
    session_sweep_interval_seconds: int = _integer(
        300, 5, 86400, "How often expired session Secrets are deleted.")
    user_cache_ttl_seconds: int = _integer(
        300, 0, 86400, "How long a returning user's objects may be trusted without reading "
                       "them, while the watch shows them unchanged; 0: never.",
        alias="userCacheTTLSeconds")
    key_refresh_interval_seconds: int = _integer(
        300, 10, 86400, "How often every issuer's JWKS is refreshed in the background.")
    key_refresh_min_interval_seconds: int = _integer(
        10, 1, 3600, "Least time between refreshes triggered by a token with an unknown `kid`.")
    max_key_age_seconds: int = _integer(
        86400, 60, 30 * 86400, "Keys not refreshed for this long (the IdP has been unreachable "
                               "that long) are no longer used: the concierge is not ready and "
                               "logins get 503 (issuer_keys_expired). Must be longer than "
                               "`keyRefreshIntervalSeconds`.")
    max_sessions_per_user: int = _integer(
        50, 1, 10000, "A login beyond this many sessions ends the user's oldest ones.")
    request_body_timeout_seconds: int = _integer(
        10, 1, 300, "A client must send its whole request body within this time.")
    max_concurrent_requests: int = _integer(
        200, 1, 100000, "Beyond this many requests in flight, new ones are answered 503 at once.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="How much the concierge logs on standard error.")
    authenticators: tuple[JWTAuthenticatorConfig, ...] = Field(
        min_length=1, description="The identity providers whose ID tokens are accepted. Names "
                                  "must be unique, and prefixes must not overlap.")

    @field_validator("max_key_age_seconds")
    @classmethod
    def _outlives_a_refresh(cls, value: int, info: ValidationInfo) -> int:
        refresh = info.data.get("key_refresh_interval_seconds")
        if refresh is not None and value <= refresh:
            raise ValueError(f"must be longer than keyRefreshIntervalSeconds ({refresh}), "
                             "or every key would expire before its refresh")
        return value

    @field_validator("authenticators")
    @classmethod
    def _each_owns_its_names(cls, value: tuple[JWTAuthenticatorConfig, ...]
                             ) -> tuple[JWTAuthenticatorConfig, ...]:
        names = [a.name for a in value]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise _error_at((i, "name"), f"duplicate name {name!r}")
        _refuse_overlapping_prefixes(value)
        return value


def _refuse_overlapping_prefixes(authenticators: tuple[JWTAuthenticatorConfig, ...]) -> None:
    """Each authenticator must own its corner of the username and group namespaces.

    With prefixes "corp:" and "corp:x", user "x:alice" of the first IdP and
    user ":alice" of the second both become "corp:x:alice"; with an empty
    prefix, an IdP can mint any other's names. Only two
    authenticators that turn every token into the same identity may share a
    prefix: same issuer, same claims mapping, and the very same prefix.
    """
    keys = (("usernamePrefix", "username_prefix"), ("groupsPrefix", "groups_prefix"))
    for j, later in enumerate(authenticators):
        for earlier in authenticators[:j]:
            for key, attribute in keys:
                a, b = getattr(earlier, attribute), getattr(later, attribute)
                if not (a.startswith(b) or b.startswith(a)):
                    continue
                if a == b and (earlier.issuer, earlier.claims) == (later.issuer, later.claims):
                    continue
                raise _error_at(
                    (j, key),
                    f"{b!r} of authenticator {later.name!r} overlaps {a!r} of authenticator "
                    f"{earlier.name!r} ({key}): one identity provider could then mint names "
                    "of the other. Give each authenticator a prefix that neither starts nor "
                    "is the start of another's (only authenticators with the same issuer, "
                    "claims and prefix may share one)")


def _error_at(loc: tuple[int | str, ...], problem: str) -> ValidationError:
    """An error below the field being validated, e.g. at `[1].name` of `authenticators`."""
    return ValidationError.from_exception_data("Config", [InitErrorDetails(
        type="value_error", loc=loc, input=None, ctx={"error": problem})])


# --- errors in plain words ----------------------------------------------------------


def key_schemas() -> dict[str, dict[str, Any]]:
    """Every key's JSON schema by its path (`authenticators[].usernamePrefix`), in file order.

    Each schema has its `$ref` resolved and a `null` alternative dropped, and
    carries `required: True` when the key must be present.
    """
    schema = Config.model_json_schema(by_alias=True)
    definitions = schema.get("$defs", {})

    def resolved(node: dict[str, Any]) -> dict[str, Any]:
        options = [o for o in node.get("anyOf", [node]) if o.get("type") != "null"]
        node = {k: v for k, v in node.items() if k != "anyOf"} | options[0]
        if "$ref" in node:
            definition = definitions[node["$ref"].rsplit("/", 1)[1]]
            node = definition | {k: v for k, v in node.items() if k != "$ref"}
        return node

    keys: dict[str, dict[str, Any]] = {}

    def walk(section: dict[str, Any], prefix: str) -> None:
        for name, raw in section.get("properties", {}).items():
            path, node = f"{prefix}{name}", resolved(raw)
            keys[path] = node | {"required": name in section.get("required", ())}
            if node.get("type") == "array" and "items" in node:
                path, node = path + "[]", resolved(node["items"])
            walk(node, path + ".")

    walk(schema, "")
    return keys


def _config_error(exc: ValidationError) -> ConfigError:
    """The first error as `ConfigError(key path, what is accepted)`."""
    error = exc.errors(include_url=False)[0]
    loc = error["loc"]
    if error["type"] == "invalid_key":  # the location ends with the offending key itself
        return ConfigError(validation.field_path(loc[:-1], root=""),
                           f"keys must be strings, not {error['input']!r}")
    return ConfigError(validation.field_path(loc, root=""), _problem(error))


def _problem(error: ErrorDetails) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind in _WORDS:
        return _WORDS[kind]
    if kind in ("greater_than_equal", "less_than_equal"):
        key = "".join("[]" if isinstance(p, int) else f".{p}" for p in error["loc"])
        schema = key_schemas().get(key.lstrip("."), {})
        if "minimum" in schema and "maximum" in schema:
            return (f"must be between {schema['minimum']} and {schema['maximum']}, "
                    f"not {error['input']}")
    if kind == "string_pattern_mismatch" and ctx.get("pattern") in PATTERN_WORDS:
        return f"must be {PATTERN_WORDS[ctx['pattern']]}"
    if kind == "literal_error" and " or " in str(ctx.get("expected")):
        return f"must be one of {ctx['expected']}"
    return validation.problem(error)


_WORDS = {
    "extra_forbidden": UNKNOWN_KEY,
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "too_short": "must be a non-empty list",
}
