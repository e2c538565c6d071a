"""The concierge's configuration file: read strictly, refused loudly.

A typo in a security setting (say `usernamePrefx`) must not silently fall back
to a default, so unknown keys, duplicate keys, wrong types and out-of-range
values all stop the concierge at start with a message naming the key.
Relative file paths are resolved against the directory of the config file, so
a config and its certificates can be moved together.

Keys (camelCase, like Kubernetes):

    listen:                     {host: 127.0.0.1, port: 8443}
    tls:                        {certFile: FILE, keyFile: FILE}          # required
    kubernetes:                 {kubeconfig: FILE, requestTimeoutSeconds: 10}
                                # kubeconfig omitted: in-cluster service account
    namespace: NAME                                                      # required
    credentialTTLSeconds: 600   # lifetime of minted tokens; 600 (TokenRequest's minimum)..86400
    clockSkewSeconds: 30        # leeway for exp/nbf/iat; 0..300
    auditLog: FILE              # omitted or "-": standard output
    sessionSweepIntervalSeconds: 300   # how often expired session Secrets are deleted
    userCacheTTLSeconds: 300    # how long a returning user's objects may be trusted without
                                # reading them, while the watch shows them unchanged; 0: never
    keyRefreshIntervalSeconds: 300     # background refresh of every issuer's JWKS
    keyRefreshMinIntervalSeconds: 10   # rate limit for refreshes triggered by an unknown `kid`
    maxKeyAgeSeconds: 86400     # cached keys not refreshed for this long are no longer used
                                # (the IdP has been unreachable that long): not ready, and
                                # logins get 503 (issuer_keys_expired); > keyRefreshIntervalSeconds
    maxSessionsPerUser: 50      # a login beyond this ends the user's oldest sessions; 1..10000
    requestBodyTimeoutSeconds: 10      # a client must send its whole request body within this
    maxConcurrentRequests: 200  # beyond this uvicorn answers 503 at once; 1..100000
    logLevel: info              # debug, info, warning, error
    authenticators:             # at least one
      - name: corp              # what clients put in spec.authenticator.name
        type: jwt
        issuer: https://...     # exact `iss`; discovery at ISSUER/.well-known/openid-configuration
        audience: pinniped-cli  # must be in `aud`
        caFile: FILE            # optional; else the system trust store
        claims: {username: email, groups: groups}   # groups optional
        usernamePrefix: "corp:" # required; "" only with allowEmptyPrefixes: true
        groupsPrefix: "corp:"   # required; "" only with allowEmptyPrefixes: true
                                # Two authenticators' prefixes must not overlap (one a prefix
                                # of the other, equal or empty), or one IdP could mint the
                                # other's names; the only exception is two authenticators on
                                # the same issuer with the same claims and the same prefix
                                # (e.g. one per client/audience), which map a token alike.
        allowEmptyPrefixes: false
        algorithms: [RS256, ES256]   # asymmetric only; default: all asymmetric ones
        maxTokenBytes: 16384    # larger ID tokens are refused as authentication failures
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import yaml

from pinniped_apis import wire

#: Signature algorithms whose verification key is public. Symmetric (HS*) and
#: `none` are deliberately absent: with HS* the "public" JWKS would be the
#: signing secret, and `none` is no signature at all.
ASYMMETRIC_ALGORITHMS = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
    "ES256", "ES384", "ES512", "EdDSA",
)

MIN_CREDENTIAL_TTL = 600  # kube-apiserver refuses TokenRequest expirationSeconds below this
MAX_CREDENTIAL_TTL = 86400

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_CLAIM_NAME = re.compile(r"^[A-Za-z0-9_.:/-]{1,128}$")
_LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(ValueError):
    """The config file is unusable; `key` names the culprit, e.g. `authenticators[0].issuer`."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}" if key else problem)
        self.key = key
        self.problem = problem


@dataclass(frozen=True)
class ClaimsConfig:
    username: str
    groups: str | None


@dataclass(frozen=True)
class JWTAuthenticatorConfig:
    name: str
    issuer: str
    audience: str
    ca_file: Path | None
    claims: ClaimsConfig
    username_prefix: str
    groups_prefix: str
    allow_empty_prefixes: bool
    algorithms: tuple[str, ...]
    max_token_bytes: int


@dataclass(frozen=True)
class Config:
    listen_host: str
    listen_port: int
    tls_cert_file: Path
    tls_key_file: Path
    kubeconfig: Path | None
    kubernetes_timeout_seconds: float
    namespace: str
    credential_ttl_seconds: int
    clock_skew_seconds: int
    audit_log: Path | None
    session_sweep_interval_seconds: int
    user_cache_ttl_seconds: int
    key_refresh_interval_seconds: int
    key_refresh_min_interval_seconds: int
    max_key_age_seconds: int
    max_sessions_per_user: int
    request_body_timeout_seconds: int
    max_concurrent_requests: int
    log_level: str
    authenticators: tuple[JWTAuthenticatorConfig, ...]


def load(path: Path) -> Config:
    """Read and validate the config file at `path`."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read config file {path}: {exc.strerror}") from exc
    return parse(text, base_dir=path.resolve().parent)


def parse(text: str, base_dir: Path) -> Config:
    try:
        document = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError("", f"not valid YAML: {exc}") from exc
    return _Reader(document, "", base_dir).config()


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

T = TypeVar("T")


class _Reader:
    """Walks one mapping, remembering which keys were read so leftovers can be refused."""

    def __init__(self, value: object, where: str, base_dir: Path) -> None:
        if not isinstance(value, dict):
            raise ConfigError(where, "must be a mapping")
        for key in value:
            if not isinstance(key, str):
                raise ConfigError(where, f"keys must be strings, not {key!r}")
        self.data: dict[str, object] = value
        self.where = where
        self.base_dir = base_dir
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def raw(self, name: str) -> object:
        self.used.add(name)
        return self.data.get(name)

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise ConfigError(self.key(unknown[0]), "unknown key (check the spelling; "
                              "see the concierge.config module for the accepted keys)")

    def string(self, name: str, default: str | None = None, *, allow_empty: bool = False) -> str:
        value = self.raw(name)
        if value is None:
            if default is None:
                raise ConfigError(self.key(name), "is required")
            return default
        if not isinstance(value, str):
            raise ConfigError(self.key(name), "must be a string")
        if not value and not allow_empty:
            raise ConfigError(self.key(name), "must not be empty")
        return value

    def optional_string(self, name: str) -> str | None:
        return None if self.raw(name) is None else self.string(name)

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self.raw(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(self.key(name), "must be an integer")
        if not low <= value <= high:
            raise ConfigError(self.key(name), f"must be between {low} and {high}, not {value}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ConfigError(self.key(name), "must be true or false")
        return value

    def file(self, name: str, *, required: bool) -> Path | None:
        value = self.optional_string(name) if not required else self.string(name)
        if value is None:
            return None
        path = Path(value).expanduser()
        if not path.is_absolute():
            path = self.base_dir / path
        if not path.is_file():
            raise ConfigError(self.key(name), f"file {path} does not exist")
        return path

    def required_file(self, name: str) -> Path:
        path = self.file(name, required=True)
        assert path is not None
        return path

    def child(self, name: str, *, required: bool = False) -> _Reader:
        value = self.raw(name)
        if value is None:
            if required:
                raise ConfigError(self.key(name), "is required")
            value = {}
        return _Reader(value, self.key(name), self.base_dir)

    def items(self, name: str) -> list[_Reader]:
        value = self.raw(name)
        if not isinstance(value, list) or not value:
            raise ConfigError(self.key(name), "must be a non-empty list")
        return [_Reader(item, f"{self.key(name)}[{i}]", self.base_dir)
                for i, item in enumerate(value)]

    def checked(self, name: str, value: T, ok: Callable[[T], bool], problem: str) -> T:
        if not ok(value):
            raise ConfigError(self.key(name), problem)
        return value

    def config(self) -> Config:
        listen = self.child("listen")
        host = listen.string("host", "127.0.0.1")
        port = listen.integer("port", 8443, 1, 65535)
        listen.done()

        tls = self.child("tls", required=True)
        cert_file, key_file = tls.required_file("certFile"), tls.required_file("keyFile")
        tls.done()

        kube = self.child("kubernetes")
        kubeconfig = kube.file("kubeconfig", required=False)
        timeout = kube.integer("requestTimeoutSeconds", 10, 1, 120)
        kube.done()

        namespace = self.checked("namespace", self.string("namespace"),
                                 lambda v: bool(_DNS_LABEL.match(v)) and len(v) <= 63,
                                 "must be a DNS-1123 label (lower case letters, digits, '-')")
        ttl = self.integer("credentialTTLSeconds", MIN_CREDENTIAL_TTL,
                           MIN_CREDENTIAL_TTL, MAX_CREDENTIAL_TTL)
        skew = self.integer("clockSkewSeconds", 30, 0, 300)
        audit_raw = self.optional_string("auditLog")
        audit_log = None
        if audit_raw not in (None, "-"):
            assert audit_raw is not None
            audit_log = Path(audit_raw).expanduser()
            if not audit_log.is_absolute():
                audit_log = self.base_dir / audit_log
            if not audit_log.parent.is_dir():
                raise ConfigError("auditLog", f"directory {audit_log.parent} does not exist")
        sweep = self.integer("sessionSweepIntervalSeconds", 300, 5, 86400)
        cache_ttl = self.integer("userCacheTTLSeconds", 300, 0, 86400)
        refresh = self.integer("keyRefreshIntervalSeconds", 300, 10, 86400)
        min_refresh = self.integer("keyRefreshMinIntervalSeconds", 10, 1, 3600)
        max_key_age = self.checked(
            "maxKeyAgeSeconds", self.integer("maxKeyAgeSeconds", 86400, 60, 30 * 86400),
            lambda v: v > refresh, f"must be longer than keyRefreshIntervalSeconds ({refresh}), "
            "or every key would expire before its refresh")
        max_sessions = self.integer("maxSessionsPerUser", 50, 1, 10000)
        body_timeout = self.integer("requestBodyTimeoutSeconds", 10, 1, 300)
        max_concurrent = self.integer("maxConcurrentRequests", 200, 1, 100000)
        log_level = self.checked("logLevel", self.string("logLevel", "info"),
                                 lambda v: v in _LOG_LEVELS, f"must be one of {_LOG_LEVELS}")

        authenticators = tuple(_authenticator(item) for item in self.items("authenticators"))
        names = [a.name for a in authenticators]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ConfigError(f"authenticators[{i}].name", f"duplicate name {name!r}")
        _refuse_overlapping_prefixes(authenticators)
        self.done()
        return Config(
            listen_host=host, listen_port=port, tls_cert_file=cert_file, tls_key_file=key_file,
            kubeconfig=kubeconfig, kubernetes_timeout_seconds=float(timeout), namespace=namespace,
            credential_ttl_seconds=ttl, clock_skew_seconds=skew, audit_log=audit_log,
            session_sweep_interval_seconds=sweep, user_cache_ttl_seconds=cache_ttl,
            key_refresh_interval_seconds=refresh, key_refresh_min_interval_seconds=min_refresh,
            max_key_age_seconds=max_key_age, max_sessions_per_user=max_sessions,
            request_body_timeout_seconds=body_timeout, max_concurrent_requests=max_concurrent,
            log_level=log_level, authenticators=authenticators,
        )


def _authenticator(item: _Reader) -> JWTAuthenticatorConfig:
    name = item.checked("name", item.string("name"),
                        lambda v: bool(_DNS_LABEL.match(v)) and len(v) <= 63,
                        "must be a DNS-1123 label (lower case letters, digits, '-')")
    item.checked("type", item.string("type", "jwt"), lambda v: v == "jwt",
                 "must be 'jwt' (the only authenticator type)")
    issuer = item.checked("issuer", item.string("issuer"), _is_https_issuer,
                          "must be an https:// URL without query or fragment "
                          "(discovery and keys are only fetched over https)")
    audience = item.string("audience")
    ca_file = item.file("caFile", required=False)

    claims = item.child("claims")
    username_claim = claims.checked("username", claims.string("username", "email"),
                                    lambda v: bool(_CLAIM_NAME.match(v)), "is not a claim name")
    groups_claim = claims.optional_string("groups")
    if groups_claim is not None:
        claims.checked("groups", groups_claim, lambda v: bool(_CLAIM_NAME.match(v)),
                       "is not a claim name")
    claims.done()

    allow_empty = item.boolean("allowEmptyPrefixes", False)
    prefixes = []
    for key in ("usernamePrefix", "groupsPrefix"):
        prefix = item.string(key, allow_empty=True)
        if prefix == "" and not allow_empty:
            raise ConfigError(item.key(key), "is empty, so names from the IdP would collide with "
                              "names of other origins; set a prefix, or set "
                              "allowEmptyPrefixes: true if that is really intended")
        if prefix.lower().startswith("system:"):
            raise ConfigError(item.key(key),
                              "must not start with 'system:' (reserved by Kubernetes)")
        if len(prefix) > 64 or not prefix.isprintable():
            raise ConfigError(item.key(key), "must be at most 64 printable characters")
        prefixes.append(prefix)

    algorithms_raw = item.raw("algorithms")
    algorithms: tuple[str, ...] = ASYMMETRIC_ALGORITHMS
    if algorithms_raw is not None:
        if (not isinstance(algorithms_raw, list) or not algorithms_raw
                or not all(isinstance(a, str) for a in algorithms_raw)):
            raise ConfigError(item.key("algorithms"), "must be a non-empty list of strings")
        for alg in algorithms_raw:
            if alg not in ASYMMETRIC_ALGORITHMS:
                raise ConfigError(item.key("algorithms"), f"{alg!r} is not allowed; choose from "
                                  f"the asymmetric algorithms {', '.join(ASYMMETRIC_ALGORITHMS)}")
        algorithms = tuple(algorithms_raw)
    max_token = item.integer("maxTokenBytes", 16 * 1024, 1024, wire.MAX_TOKEN_BYTES)
    item.done()
    return JWTAuthenticatorConfig(
        name=name, issuer=issuer, audience=audience, ca_file=ca_file,
        claims=ClaimsConfig(username=username_claim, groups=groups_claim),
        username_prefix=prefixes[0], groups_prefix=prefixes[1],
        allow_empty_prefixes=allow_empty, algorithms=algorithms, max_token_bytes=max_token,
    )


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
                raise ConfigError(
                    f"authenticators[{j}].{key}",
                    f"{b!r} of authenticator {later.name!r} overlaps {a!r} of authenticator "
                    f"{earlier.name!r} ({key}): one identity provider could then mint names "
                    "of the other. Give each authenticator a prefix that neither starts nor "
                    "is the start of another's (only authenticators with the same issuer, "
                    "claims and prefix may share one)")


def _is_https_issuer(value: str) -> bool:
    parts = urlsplit(value)
    return (parts.scheme == "https" and bool(parts.hostname) and not parts.query
            and not parts.fragment and "@" not in parts.netloc)

