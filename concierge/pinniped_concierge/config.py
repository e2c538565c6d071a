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
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, InitErrorDetails

from pinniped_apis import validation
from pinniped_apis.authentication import (
    MAX_CA_BUNDLE_BYTES,
    PATTERN_WORDS,
    ClaimMappings,
    DNSLabel,
    JWTAuthenticatorFields,
    SpecModel,
    https_issuer,
    schema_without_refs,
)
from pinniped_apis.constants import MAX_TOKEN_BYTES
from pinniped_concierge import prefixes

MIN_CREDENTIAL_TTL = 600  # kube-apiserver refuses TokenRequest expirationSeconds below this
MAX_CREDENTIAL_TTL = 86400
#: Larger ID tokens are refused; a JWTAuthenticator object has no key for it and gets this.
DEFAULT_MAX_TOKEN_BYTES = 16 * 1024
#: Authenticators the file may list; every one costs a key refresh loop and a CredentialIssuer
#: entry, and far more than this is a mistake.
MAX_FILE_AUTHENTICATORS = 64

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


def _ca_bundle(value: object, info: ValidationInfo) -> Path:
    path = _existing_file(value, info)
    if path.stat().st_size > MAX_CA_BUNDLE_BYTES:
        raise ValueError(f"file {path} is larger than {MAX_CA_BUNDLE_BYTES} bytes; a CA "
                         "bundle is a few certificates")
    return path


def _https_endpoint(value: str) -> str:
    try:
        return https_issuer(value)
    except ValueError:
        raise ValueError("must be an https:// URL (https://host:port) without query or "
                         "fragment") from None


ExistingFile = Annotated[Path, BeforeValidator(_existing_file)]
Endpoint = Annotated[str, Field(max_length=2048), AfterValidator(_https_endpoint)]
CABundleFile = Annotated[Path, BeforeValidator(_ca_bundle)]


def _integer(default: int, low: int, high: int, description: str, **field: Any) -> Any:
    return Field(default=default, ge=low, le=high, description=description, **field)


# --- the file's sections ------------------------------------------------------------


class Section(SpecModel):
    """One mapping of the file (see `SpecModel`: camelCase keys, exact types, no unknown
    keys, immutable once read, null meaning omitted)."""


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
    ca_file: CABundleFile | None = Field(
        default=None,
        description="PEM bundle that clients should trust for `certFile`, published in the "
                    "CredentialIssuer (what `pinniped get kubeconfig` puts in the kubeconfig). "
                    "Omitted: `certFile` itself, which suits a self-signed certificate or a "
                    "file that holds the chain up to its CA.")

    def client_ca_file(self) -> Path:
        """The bundle clients are told to trust."""
        return self.ca_file or self.cert_file


class KubernetesConfig(Section):
    """How the concierge reaches the Kubernetes API."""

    kubeconfig: ExistingFile | None = Field(
        default=None,
        description="A kubeconfig with the concierge's own credentials. Omitted: the pod's "
                    "in-cluster ServiceAccount.")
    request_timeout_seconds: int = _integer(10, 1, 120, "Timeout of each Kubernetes API call.")


#: The claims mapping is the same in the file and in a JWTAuthenticator.
ClaimsConfig = ClaimMappings


class JWTAuthenticatorConfig(Section, JWTAuthenticatorFields):
    """One identity provider whose ID tokens (JWTs) the concierge accepts.

    Its issuer, audience, claims, prefixes and algorithms are those of a
    JWTAuthenticator object (`JWTAuthenticatorFields`); the file adds a name,
    a CA file instead of inline CA data, and the escape hatch for empty
    prefixes.
    """

    name: DNSLabel = Field(description="What clients put in `spec.authenticator.name`.")
    type: Literal["jwt"] = Field(
        default="jwt",
        description="The kind of authenticator; `jwt` (OIDC ID tokens) is the only one.")
    ca_file: CABundleFile | None = Field(
        default=None,
        description="PEM bundle trusted for the issuer's https (also published in the "
                    "CredentialIssuer, for clients). Omitted: the system trust store.")
    allow_empty_prefixes: bool = Field(
        default=False,
        description="Allows `usernamePrefix` and `groupsPrefix` to be empty. This IdP's names "
                    "then meet the names of every other origin; set it only when that is meant.")
    max_token_bytes: int = _integer(DEFAULT_MAX_TOKEN_BYTES, 1024, MAX_TOKEN_BYTES,
                                    "Larger ID tokens are refused as authentication failures.")

    @model_validator(mode="after")
    def _empty_only_when_allowed(self) -> JWTAuthenticatorConfig:
        for key, value in (("usernamePrefix", self.username_prefix),
                           ("groupsPrefix", self.groups_prefix)):
            if value == "" and not self.allow_empty_prefixes:
                raise _error_at((key,), "is empty, so names from the IdP would collide with "
                                "names of other origins; set a prefix, or set "
                                "allowEmptyPrefixes: true if that is really intended")
        return self


class JWTAuthenticatorsConfig(Section):
    """Which cluster-scoped JWTAuthenticator objects the concierge uses besides the file's."""

    watch: bool = Field(
        default=True,
        description="Use JWTAuthenticator objects (`authentication.concierge.pinniped.dev`; "
                    "apply deploy/crds.yaml first), watched: a created, changed or deleted "
                    "object takes effect within seconds, with no restart. The concierge is "
                    "not ready until it has listed them once. false: the file's "
                    "authenticators only.")
    label_selector: str = Field(
        default="", max_length=1024,
        description="Only objects matching this Kubernetes label selector (e.g. "
                    "`concierge.pinniped.dev/instance=prod`), so that several concierges "
                    "in one cluster each use their own. Empty: every object.")
    max_objects: int = _integer(
        64, 1, 128, "Objects beyond this many (the oldest are kept) are not used; their "
                    "status says so.")

    @field_validator("label_selector")
    @classmethod
    def _printable(cls, value: str) -> str:
        if not value.isprintable():
            raise ValueError("must be a label selector on one line (printable characters)")
        return value


class LeaseConfig(Section):
    """The `coordination.k8s.io/v1` Lease that picks one replica for background work."""

    name: DNSLabel = Field(
        default="pinniped-concierge",
        description="The Lease, in `namespace`, that the replicas of this concierge share. "
                    "deploy/rbac.yaml grants get and update on this name only: change both "
                    "together.")
    duration_seconds: int = _integer(
        15, 3, 300, "How long a holder's Lease lasts without renewal: when the holder dies, "
                    "another replica takes over within this plus `renewIntervalSeconds`.")
    renew_interval_seconds: int = _integer(
        5, 1, 100, "How often the holder renews the Lease and the others look at it (one "
                   "API call each). At most a third of `durationSeconds`, so that the holder "
                   "can fail twice and still step down before its Lease runs out.")

    @model_validator(mode="after")
    def _renewed_in_time(self) -> LeaseConfig:
        if self.renew_interval_seconds * 3 > self.duration_seconds:
            raise _error_at(("renewIntervalSeconds",), "must be at most a third of "
                            "durationSeconds; lower it or raise durationSeconds")
        return self


class RateLimitConfig(Section):
    """A token bucket per client address, so that one client cannot crowd out the rest.

    Every request to the three APIs and to /metrics (not the probes /healthz and
    /readyz) takes a token from its address's bucket; an empty bucket is
    answered 429 with Retry-After.
    The address is the TCP peer's (IPv6 addresses share a bucket per /64);
    forwarding headers are never trusted. Behind a load balancer or NAT that
    hides client addresses, many people share one bucket: raise the figures to
    suit, or set `requestsPerSecond: 0` to turn the limit off. `Retry-After` is
    in whole seconds.
    """

    requests_per_second: int = _integer(
        20, 0, 100000, "Sustained requests per second allowed from one client address; 0: no "
                       "limit.")
    burst: int = _integer(
        100, 1, 1000000, "Requests one client address may make at once before the sustained "
                         "rate applies.")
    max_tracked_addresses: int = _integer(
        10000, 1, 1000000, "Client addresses remembered at once (least recently seen ones are "
                           "forgotten first), which bounds the memory the limit uses.")


class ElevationConfig(Section):
    """Temporary elevated access (`ElevationPolicy`, `ElevationRequest`): the bounds on it, and
    how quickly an ended elevation is enforced."""

    sync_interval_seconds: int = _integer(
        2, 1, 10, "How often the Lease holder expires requests and, for an elevation that "
                  "ended, removes the group from the user's ClusterRole and ends the sessions "
                  "minted during it. With the apiserver's ~10 s token cache, an ended "
                  "elevation stops working within this plus 10 s.")
    pending_timeout_seconds: int = _integer(
        3600, 60, 604800, "A request not approved within this long expires. While one is "
                          "pending, each of the requester's kubectl calls asks the concierge "
                          "about it (one cheap call).")
    retention_seconds: int = _integer(
        604800, 0, 31536000, "Ended requests are deleted this long after they ended, or "
                             "after an hour at most if they were never approved (the audit "
                             "log keeps every step).")
    max_requests: int = _integer(
        1000, 1, 100000, "ElevationRequest objects at most, all users together; beyond it, "
                         "new requests are refused until ended ones are deleted.")
    max_open_per_user: int = _integer(
        5, 1, 100, "Pending or active requests one user may have at once.")
    max_per_user: int = _integer(
        20, 1, 1000, "ElevationRequest objects one user may have in any phase (ended ones "
                     "count until deleted), so that one person cannot use up `maxRequests` "
                     "for everyone by asking and revoking in a loop.")
    max_policies: int = _integer(
        200, 1, 10000, "ElevationPolicy objects the concierge reads; beyond it, logins are "
                       "refused (it could not know every governed group).")


class MetricsConfig(Section):
    """Where Prometheus metrics are served."""

    port: int | None = Field(
        default=None, ge=1, le=65535,
        description="Serve `/metrics` on this port instead, over plain HTTP on `listen.host` "
                    "without authentication (it holds only counts: no username, token or "
                    "address), so that a scraper needs neither the serving CA nor a route "
                    "to the API port; restrict it with a NetworkPolicy. Omitted: served at "
                    "`/metrics` on the serving port, over its TLS.")


class Config(Section):
    """The whole file."""

    listen: ListenConfig = Field(default_factory=ListenConfig,
                                 description="Where the concierge serves HTTPS.")
    tls: TLSConfig = Field(description="The serving certificate.")
    kubernetes: KubernetesConfig = Field(default_factory=KubernetesConfig,
                                         description="How the Kubernetes API is reached.")
    namespace: DNSLabel = Field(
        description="The namespace of the per-user ServiceAccounts and session Secrets.")
    external_endpoint: Endpoint | None = Field(
        default=None,
        description="The https URL clients reach the concierge at (a Service or load "
                    "balancer in front of it), published in the CredentialIssuer. Omitted: "
                    "`https://<listen.host>:<listen.port>`.")
    credential_issuer_name: DNSLabel | None = Field(
        default=None,
        description="The cluster-scoped CredentialIssuer (`config.concierge.pinniped.dev`) "
                    "this concierge publishes its endpoint, CA bundle and usable "
                    "authenticators in. Omitted: the value of `namespace`, so that "
                    "concierges in different namespaces never share one.")
    jwt_authenticators: JWTAuthenticatorsConfig = Field(
        default_factory=JWTAuthenticatorsConfig,
        description="JWTAuthenticator objects in the cluster.")
    lease: LeaseConfig = Field(
        default_factory=LeaseConfig,
        description="Leader election: session sweeps, JWTAuthenticator status writes and the "
                    "CredentialIssuer run on the one replica holding this Lease; logins are "
                    "served by every replica.")
    metrics: MetricsConfig = Field(default_factory=MetricsConfig,
                                   description="Prometheus metrics.")
    elevation: ElevationConfig = Field(
        default_factory=ElevationConfig,
        description="Temporary elevated access, approved by someone else.")
    rate_limit: RateLimitConfig = Field(default_factory=RateLimitConfig,
                                        description="Requests allowed per client address.")
    credential_ttl_seconds: int = _integer(
        MIN_CREDENTIAL_TTL, MIN_CREDENTIAL_TTL, MAX_CREDENTIAL_TTL,
        "Lifetime of the credentials the concierge mints (600 is TokenRequest's minimum).",
        alias="credentialTTLSeconds")
    clock_skew_seconds: int = _integer(
        30, 0, 300, "Leeway for an ID token's exp, nbf and iat; also how long after a "
                    "`revoke-user` a new sign-in is still refused.")
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
    max_users: int = _integer(
        20000, 1, 1000000,
        "Users whose objects may exist at once; a login that would set up one more gets 503 "
        "(user_limit_reached) until idle users are cleaned up. It bounds what an IdP that "
        "hands out identities freely (self-service sign-up) can cost the cluster: every "
        "user's ClusterRoleBinding slows down every request (see "
        "`identityIdleTimeoutSeconds`; at 20,000 users an unrelated request took 8.4 ms "
        "instead of 1.5 ms at p50 on a local apiserver).")
    max_sessions_per_user: int = _integer(
        50, 1, 10000, "A login beyond this many sessions ends the user's oldest ones.")
    request_body_timeout_seconds: int = _integer(
        10, 1, 300, "A client must send its whole request body within this time.")
    request_header_timeout_seconds: int = _integer(
        10, 1, 300, "A client must finish the TLS handshake and send its request line and "
                    "headers within this time of connecting, or of the end of its previous "
                    "response; bytes that trickle in do not extend it. A half-received "
                    "request gets 408, an idle connection is closed.")
    identity_idle_timeout_seconds: int = _integer(
        3600, 600, 30 * 86400,
        "A user with no live session for this long has their ServiceAccount, ClusterRole, "
        "ClusterRoleBinding and session Secrets deleted by the replica holding the Lease, "
        "which checks every tenth of this time (at least 1 and at most 5 minutes apart). Why: "
        "every user's ClusterRoleBinding slows down every request in the cluster, because "
        "RBAC walks all bindings on each check; on a local apiserver an unrelated request "
        "takes 1.5 ms at p50 with 1 user, 4.6 ms with 10,000 and 8.4 ms with 20,000 (about "
        "+0.35 ms per 1,000 users), while setting a returning user up again costs 3 writes. "
        "Hence an hour, not days. ID tokens issued longer ago than this are refused "
        "(token_too_old): the record of which token last set a user's groups goes with "
        "their objects, and a still-valid older ID token could otherwise bring back a group "
        "removed before the clean-up.")
    revocation_retention_seconds: int = _integer(
        30 * 86400, 3600, 366 * 86400,
        "How long `pinniped-concierge revoke-user` keeps refusing the user's ID tokens "
        "authenticated (`auth_time`, else `iat`) before the revocation; then its marker is "
        "deleted. Make it longer than the IdP's ID-token and refresh-token lifetimes: a "
        "refresh keeps `auth_time`, so tokens refreshed from a refresh token taken before the "
        "revocation stay refused until then.")
    max_concurrent_requests: int = _integer(
        200, 1, 100000, "Beyond this many requests in flight (probes included), new ones are "
                        "answered 503 at once. Open connections are capped separately at four "
                        "times this (at least 16): beyond that, the one waiting longest without "
                        "a request is closed.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="How much the concierge logs on standard error.")
    authenticators: tuple[JWTAuthenticatorConfig, ...] = Field(
        default=(), max_length=MAX_FILE_AUTHENTICATORS,
        description="The identity providers whose ID tokens are accepted. Names must be "
                    "unique, and prefixes must not overlap. May be empty when "
                    "`jwtAuthenticators.watch` is true: logins then use JWTAuthenticator "
                    "objects only (the concierge starts, is ready, and logs a warning). A "
                    "JWTAuthenticator object with the name of one of these is not used.")

    def public_endpoint(self) -> str:
        """`externalEndpoint`, or the listen address when it is omitted."""
        if self.external_endpoint is not None:
            return self.external_endpoint
        host = self.listen.host
        return f"https://{f'[{host}]' if ':' in host else host}:{self.listen.port}"

    def credential_issuer(self) -> str:
        return self.credential_issuer_name or self.namespace

    @model_validator(mode="after")
    def _someone_can_log_in(self) -> Config:
        if not self.authenticators and not self.jwt_authenticators.watch:
            raise _error_at(("authenticators",), "is empty and jwtAuthenticators.watch is "
                            "false, so no login could ever succeed; list an authenticator, "
                            "or set jwtAuthenticators.watch: true and apply JWTAuthenticator "
                            "objects")
        return self

    @model_validator(mode="after")
    def _metrics_port_is_free(self) -> Config:
        if self.metrics.port == self.listen.port:
            raise _error_at(("metrics", "port"), f"is listen.port ({self.listen.port}); omit "
                            "it to serve /metrics on the serving port, or pick another port")
        return self

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
    """Each authenticator must own its corner of the names (`prefixes.overlap`)."""
    for j, later in enumerate(authenticators):
        for earlier in authenticators[:j]:
            found = prefixes.overlap(earlier, later)
            if found is not None:
                raise _error_at((j, found.key), found.describe(later.name, earlier.name))


def _error_at(loc: tuple[int | str, ...], problem: str) -> ValidationError:
    """An error below the field being validated, e.g. at `[1].name` of `authenticators`."""
    return ValidationError.from_exception_data("Config", [InitErrorDetails(
        type="value_error", loc=loc, input=None, ctx={"error": problem})])


# --- errors in plain words ----------------------------------------------------------


def key_schemas() -> dict[str, dict[str, Any]]:
    """Every key's JSON schema by its path (`authenticators[].usernamePrefix`), in file order.

    Each schema has its `$ref`s inlined (`schema_without_refs`, as the CRDs do)
    and a `null` alternative dropped, and carries `required: True` when the key
    must be present.
    """
    schema = schema_without_refs(Config)

    def resolved(node: dict[str, Any]) -> dict[str, Any]:
        options = [o for o in node.get("anyOf", [node]) if o.get("type") != "null"]
        if "anyOf" not in node:
            return node
        option: dict[str, Any] = options[0]
        return {k: v for k, v in node.items() if k != "anyOf"} | option

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
    if kind == "literal_error" and error["loc"][-1:] == ("type",):
        return f"must be {ctx.get('expected')} (the only authenticator type)"
    return validation.problem(error)


_WORDS = {
    "extra_forbidden": UNKNOWN_KEY,
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "too_short": "must be a non-empty list",
}
