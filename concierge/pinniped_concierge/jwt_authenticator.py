"""Verify an ID token against one OIDC issuer, the way Pinniped's JWTAuthenticator does.

Order of checks, each with its own audit reason: size, shape (three base64url
segments in their one canonical spelling, a header that is one JSON object
naming no parameter twice), header (`alg` on the allow-list of asymmetric
algorithms, no `crit`/`b64`, no key-pointing parameters such as `jku`, and a
`typ`, if any, that says JWT), key by `kid`, signature, then the payload (one
strict JSON object, again no name twice) and the registered claims: exact
`iss`, `aud` containing our audience (and, when `aud` names several parties,
`azp` naming us: OIDC Core 3.1.3.7, so a token minted for another client that
merely lists us is not ours), `exp`/`nbf`/`iat` with a small clock-skew
leeway. The `alg` is checked before any key is touched, which is what
defeats `none` and the HS256-with-the-public-key trick.

Keys come from OIDC discovery (https only, `issuer` in the document must match
exactly) and are cached. A token signed with a `kid` we have not seen causes a
refresh, at most once per `keyRefreshMinIntervalSeconds`, so an attacker
spraying random `kid`s cannot make us hammer the IdP, yet a key rotation is
picked up at the first login that needs it. A background loop also refreshes
periodically, and cached keys keep working while the IdP is briefly down,
but not for ever: keys not refreshed for `maxKeyAgeSeconds` may have been
revoked at the IdP long ago, so after that the authenticator is not ready and
logins get 503 (`issuer_keys_expired`) until the IdP answers again.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import re
import ssl
import time
import warnings
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pinniped_concierge.errors import Reason, Rejected, Unavailable

log = logging.getLogger("concierge.jwt")

#: Discovery documents and key sets are small; anything bigger is refused.
MAX_DOCUMENT_BYTES = 512 * 1024
FETCH_TIMEOUT_SECONDS = 5.0

_KEY_TYPE_FOR_ALG = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
_EC_CURVE_FOR_ALG = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
_MIN_RSA_BITS = 2048

Fetcher = Callable[[str], Awaitable[object]]

#: Header parameters that say where to find the verification key (a URL, an embedded key or
#: certificate). Keys come only from the issuer's JWKS; a token carrying one of these was
#: made by someone probing for a verifier that follows them.
KEY_POINTING_HEADERS = frozenset(("jku", "jwk", "x5u", "x5c", "x5t", "x5t#S256"))
#: `typ` values that mean "a JWT" (RFC 7515 4.1.9: compared without case, "application/"
#: optional). An issuer signs other JWTs with the same keys, some with our client as their
#: audience: a logout token (logout+jwt) or an access token (at+jwt, RFC 9068) must not
#: pass for an ID token (RFC 8725 3.11). ID tokens carry `JWT` or no `typ` at all.
JWT_TYPES = frozenset(("jwt", "application/jwt"))
#: One compact JWS segment: base64url, no padding, no white space (RFC 7515 section 2).
_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")


class FetchError(Exception):
    """Discovery or JWKS could not be fetched; the message names the URL, never a secret."""


class DiscoveryError(FetchError):
    """The discovery document could not be fetched, or is not this issuer's."""


class JWKSURLError(FetchError):
    """The discovery document names no usable (https) `jwks_uri`."""


class JWKSFetchError(FetchError):
    """The key set could not be fetched, or holds no usable signature key."""


class VerifierSettings(Protocol):
    """What verification needs of an authenticator, wherever it is defined (the config
    file's `JWTAuthenticatorConfig`, or a JWTAuthenticator object)."""

    @property
    def name(self) -> str: ...

    @property
    def issuer(self) -> str: ...

    @property
    def audience(self) -> str: ...

    @property
    def algorithms(self) -> Sequence[str]: ...

    @property
    def max_token_bytes(self) -> int: ...


class HttpsFetcher:
    """GET a JSON document over https, bounded in size and time, trusting one CA bundle
    (a file, or PEM text from a JWTAuthenticator's `certificateAuthorityData`)."""

    def __init__(self, ca_file: Path | None, ca_pem: str | None = None) -> None:
        import httpx

        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None,
                                             cadata=ca_pem)
        self._client = httpx.AsyncClient(verify=context, follow_redirects=False,
                                         timeout=FETCH_TIMEOUT_SECONDS,
                                         headers={"Accept": "application/json"})

    async def __call__(self, url: str) -> object:

        if not url.startswith("https://"):
            raise FetchError(f"{url}: refusing a non-https URL")
        try:
            # A deadline for the whole fetch, not only httpx's per-read timeouts: an issuer
            # dripping its answer a byte at a time would otherwise hold the fetch (and the
            # authenticator's refresh) for as long as it liked.
            async with asyncio.timeout(FETCH_TIMEOUT_SECONDS):
                return await self._fetch(url)
        except TimeoutError:
            raise FetchError(f"{url}: no complete answer within {FETCH_TIMEOUT_SECONDS:g} s "
                             "(Timeout)") from None

    async def _fetch(self, url: str) -> object:
        import httpx

        try:
            async with self._client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise FetchError(f"{url}: HTTP {response.status_code}")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_DOCUMENT_BYTES:
                        raise FetchError(f"{url}: larger than {MAX_DOCUMENT_BYTES} bytes")
        except httpx.HTTPError as exc:
            raise FetchError(f"{url}: {type(exc).__name__}: {exc}") from None
        try:
            return json.loads(body)
        except ValueError:
            raise FetchError(f"{url}: not JSON") from None

    async def aclose(self) -> None:
        await self._client.aclose()


@dataclass(frozen=True)
class _VerificationKey:
    kid: str | None
    key: Any  # a joserfc RSAKey, ECKey or OKPKey
    key_type: str
    curve: str | None
    alg: str | None

    def fits(self, alg: str) -> bool:
        if self.alg is not None and self.alg != alg:
            return False
        if self.key_type != _KEY_TYPE_FOR_ALG.get(alg[:2]):
            return False
        return alg not in _EC_CURVE_FOR_ALG or self.curve == _EC_CURVE_FOR_ALG[alg]


class JWTAuthenticator:
    """One configured issuer: token in, verified claims out (or `Rejected`)."""

    def __init__(self, config: VerifierSettings, fetch: Fetcher, *,
                 clock_skew_seconds: int, min_refresh_interval_seconds: float,
                 max_key_age_seconds: float = 86400,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        from joserfc.jws import JWSRegistry

        self.config = config
        self._fetch = fetch
        self._skew = clock_skew_seconds
        self._min_refresh = min_refresh_interval_seconds
        self._max_key_age = max_key_age_seconds
        self._clock = clock
        self._monotonic = monotonic
        self._keys: tuple[_VerificationKey, ...] = ()
        self._keys_fetched_at: float | None = None
        self._last_attempt: float | None = None
        self._lock = asyncio.Lock()
        self._registry = JWSRegistry(algorithms=list(config.algorithms),
                                     strict_check_header=False)
        #: Told of every refresh attempt, `(name, succeeded)`: the metrics count them.
        self.on_refresh: Callable[[str, bool], None] | None = None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def has_keys(self) -> bool:
        return bool(self._keys)

    def _keys_expired(self) -> bool:
        """Keys were fetched once but not refreshed within `maxKeyAgeSeconds`."""
        return (self._keys_fetched_at is not None
                and self._monotonic() - self._keys_fetched_at >= self._max_key_age)

    def _usable(self) -> bool:
        return bool(self._keys) and not self._keys_expired()

    # --- keys ----------------------------------------------------------------

    async def refresh_keys(self) -> None:
        """Fetch discovery and JWKS now; on failure keep the cached keys and raise FetchError."""
        async with self._lock:
            await self._refresh_locked()

    async def _refresh_locked(self) -> None:
        self._last_attempt = self._monotonic()
        try:
            await self._fetch_keys_locked()
        except FetchError:
            self._report_refresh(ok=False)
            raise
        self._report_refresh(ok=True)

    def _report_refresh(self, *, ok: bool) -> None:
        if self.on_refresh is not None:
            self.on_refresh(self.name, ok)

    async def _fetch_keys_locked(self) -> None:
        issuer = self.config.issuer
        try:
            document = await self._fetch(discovery_url(issuer))
        except FetchError as exc:
            raise DiscoveryError(str(exc)) from None
        if not isinstance(document, dict) or document.get("issuer") != issuer:
            raise DiscoveryError(f"{issuer}: discovery document's issuer does not match exactly")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri.startswith("https://"):
            raise JWKSURLError(f"{issuer}: discovery document has no https jwks_uri")
        try:
            keys = _parse_jwks(await self._fetch(jwks_uri))
        except FetchError as exc:
            detail = str(exc)
            raise JWKSFetchError(detail if detail.startswith(jwks_uri)
                                 else f"{jwks_uri}: {detail}") from None
        if not keys:
            raise JWKSFetchError(f"{jwks_uri}: no usable signature keys")
        if {k.kid for k in keys} != {k.kid for k in self._keys}:
            log.info("authenticator %s: keys now %s", self.name,
                     sorted(str(k.kid) for k in keys))
        self._keys = keys
        self._keys_fetched_at = self._monotonic()

    async def _refresh_if_allowed(self) -> None:
        """Refresh unless one was attempted recently (rate limit for unknown `kid`s)."""
        async with self._lock:
            recent = (self._last_attempt is not None
                      and self._monotonic() - self._last_attempt < self._min_refresh)
            if recent:
                return
            try:
                await self._refresh_locked()
            except FetchError as exc:
                log.warning("authenticator %s: key refresh failed: %s", self.name, exc)

    async def ready(self) -> bool:
        """Keys are cached and not too old, or can be fetched now (rate-limited)."""
        if not self._usable():
            await self._refresh_if_allowed()
        return self._usable()

    async def run_refresh_loop(self, interval_seconds: float) -> None:
        while True:
            try:
                await self.refresh_keys()
            except FetchError as exc:
                log.warning("authenticator %s: key refresh failed (cached keys stay in use): %s",
                            self.name, exc)
            await asyncio.sleep(interval_seconds)

    def _candidates(self, kid: str | None, alg: str) -> list[_VerificationKey]:
        return [k for k in self._keys if (kid is None or k.kid == kid) and k.fits(alg)]

    # --- tokens --------------------------------------------------------------

    async def verify(self, token: str) -> dict[str, object]:
        """Return the token's claims if it is valid for this issuer; else raise `Rejected`."""
        from joserfc import jws
        from joserfc.errors import JoseError

        if len(token.encode("utf-8", "surrogatepass")) > self.config.max_token_bytes:
            raise Rejected(Reason.TOKEN_TOO_LARGE, f"over {self.config.max_token_bytes} bytes")
        header, payload = _read_compact(token)
        alg, kid = _checked_header(header, self.config.algorithms)
        try:
            compact = jws.extract_compact(token.encode("ascii"), registry=self._registry)
        except (JoseError, ValueError, TypeError, UnicodeError):
            raise Rejected(Reason.MALFORMED_TOKEN, "not a compact JWS") from None

        if self._keys_expired():
            await self._refresh_if_allowed()
            if self._keys_expired():
                raise Unavailable(Reason.ISSUER_KEYS_EXPIRED,
                                  "the identity provider's signing keys could not be refreshed "
                                  "for too long; try again shortly")
        candidates = self._candidates(kid, alg)
        if not candidates:
            await self._refresh_if_allowed()
            candidates = self._candidates(kid, alg)
        if not candidates:
            if not self._keys:
                raise Unavailable(Reason.ISSUER_UNAVAILABLE,
                                  "the identity provider's signing keys cannot be fetched; "
                                  "try again shortly")
            raise Rejected(Reason.UNKNOWN_KEY, "no key for this kid and alg")

        if not any(self._signature_ok(compact, c.key, alg) for c in candidates):
            raise Rejected(Reason.BAD_SIGNATURE, "signature does not verify")
        claims = _json_object(payload, "payload")
        self._check_registered_claims(claims)
        return claims

    def _signature_ok(self, compact: Any, key: Any, alg: str) -> bool:
        from joserfc import jws
        from joserfc.errors import JoseError, SecurityWarning

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SecurityWarning)  # EdDSA's "deprecated" note
                return bool(jws.validate_compact(compact, key, registry=self._registry))
        except (JoseError, ValueError, TypeError):
            return False

    def _check_registered_claims(self, claims: Mapping[str, object]) -> None:
        if claims.get("iss") != self.config.issuer:
            raise Rejected(Reason.WRONG_ISSUER, "iss is not the configured issuer")

        aud = claims.get("aud")
        if aud is None:
            raise Rejected(Reason.MISSING_CLAIM, "no aud claim")
        audiences = [aud] if isinstance(aud, str) else aud
        if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
            raise Rejected(Reason.BAD_CLAIM_TYPE, "aud is not a string or list of strings")
        if self.config.audience not in audiences:
            raise Rejected(Reason.WRONG_AUDIENCE, "aud does not contain the configured audience")
        if len(set(audiences)) > 1:
            azp = claims.get("azp")
            if azp is None:
                raise Rejected(Reason.MISSING_CLAIM, "aud has several entries but no azp")
            if not isinstance(azp, str):
                raise Rejected(Reason.BAD_CLAIM_TYPE, "azp is not a string")
            if azp != self.config.audience:
                raise Rejected(Reason.WRONG_AUTHORIZED_PARTY,
                               "aud has several entries and azp is not the configured audience")

        now = self._clock()
        exp = _numeric_date(claims, "exp", required=True)
        assert exp is not None
        if now >= exp + self._skew:
            raise Rejected(Reason.EXPIRED, f"expired {int(now - exp)}s ago")
        nbf = _numeric_date(claims, "nbf", required=False)
        if nbf is not None and now + self._skew < nbf:
            raise Rejected(Reason.NOT_YET_VALID, f"nbf is {int(nbf - now)}s in the future")
        iat = _numeric_date(claims, "iat", required=False)
        if iat is not None and now + self._skew < iat:
            raise Rejected(Reason.ISSUED_IN_FUTURE, f"iat is {int(iat - now)}s in the future")


def discovery_url(issuer: str) -> str:
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


def _numeric_date(claims: Mapping[str, object], name: str, *, required: bool) -> float | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise Rejected(Reason.MISSING_CLAIM, f"no {name} claim")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Rejected(Reason.BAD_CLAIM_TYPE, f"{name} is not a number")
    try:
        number = float(value)  # an integer of hundreds of digits is too big for a float
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise Rejected(Reason.BAD_CLAIM_TYPE, f"{name} is not a finite number")
    return number


def _read_compact(token: str) -> tuple[dict[str, object], bytes]:
    """The protected header and the payload bytes of a compact JWS, read strictly.

    Strict because lenient readers differ, and a token that two readers read
    differently is how checks get bypassed: each segment must be base64url in
    its one canonical spelling (no padding, white space, other alphabet or
    stray low bits, which would also give one token many spellings and audit
    hashes), and the header one JSON object with no name twice (one reader
    takes the first `alg`, another the last).
    """
    segments = token.split(".")
    if len(segments) != 3:
        raise Rejected(Reason.MALFORMED_TOKEN, f"{len(segments)} segments, a signed JWT has 3")
    decoded = []
    for which, segment in zip(("header", "payload", "signature"), segments, strict=True):
        data = _base64url(segment)
        if data is None:
            raise Rejected(Reason.MALFORMED_TOKEN, f"the {which} is not canonical base64url")
        decoded.append(data)
    return _json_object(decoded[0], "header"), decoded[1]


def _base64url(segment: str) -> bytes | None:
    if not _SEGMENT.fullmatch(segment) or len(segment) % 4 == 1:
        return None
    data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    if base64.urlsafe_b64encode(data).rstrip(b"=") != segment.encode("ascii"):
        return None  # the last character has bits set that no encoder writes
    return data


def _checked_header(header: Mapping[str, object], algorithms: Sequence[str]
                    ) -> tuple[str, str | None]:
    """The header's `alg` and `kid`, once the header asks for nothing we refuse to do."""
    if "alg" not in header:
        raise Rejected(Reason.MALFORMED_TOKEN, "no alg header parameter")
    alg = header["alg"]
    if not isinstance(alg, str) or alg not in algorithms:
        shown = alg[:16] if isinstance(alg, str) else type(alg).__name__
        raise Rejected(Reason.UNSUPPORTED_ALGORITHM, f"alg {shown!r} is not allowed")
    if "crit" in header or "b64" in header:
        raise Rejected(Reason.UNSUPPORTED_HEADER, "crit/b64 header parameters")
    pointers = sorted(KEY_POINTING_HEADERS.intersection(header))
    if pointers:  # RFC 8725 3.10: never act on them; a real IdP never sends them
        raise Rejected(Reason.UNSUPPORTED_HEADER,
                       f"key-pointing header parameters {', '.join(pointers)}")
    typ = header.get("typ")
    if typ is not None and (not isinstance(typ, str) or typ.lower() not in JWT_TYPES):
        shown = typ[:16] if isinstance(typ, str) else type(typ).__name__
        raise Rejected(Reason.UNSUPPORTED_HEADER, f"typ {shown!r} is not an ID token's")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise Rejected(Reason.MALFORMED_TOKEN, "kid is not a string")
    return alg, kid


def _json_object(data: bytes, what: str) -> dict[str, object]:
    """`data` as one JSON object, by RFC 8259 alone: UTF-8 without a byte order mark, no
    NaN or Infinity, no name twice (Python's own reader would take UTF-16, a BOM, NaN
    and the last of two names; other readers would not, or would take the first)."""
    try:
        value = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates,
                           parse_constant=_no_constant)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        raise Rejected(Reason.MALFORMED_TOKEN, f"the {what} is not a JSON object") from None
    if not isinstance(value, dict):
        raise Rejected(Reason.MALFORMED_TOKEN, f"the {what} is not a JSON object")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError("a name appears twice")
        result[key] = value
    return result


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _parse_jwks(document: object) -> tuple[_VerificationKey, ...]:
    """Public signature keys from a JWKS; anything odd is skipped rather than trusted."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    from joserfc.errors import JoseError
    from joserfc.jwk import JWKRegistry

    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise FetchError("key set is not a JWKS document")
    keys = []
    for raw in document["keys"]:
        if not isinstance(raw, dict) or raw.get("kty") not in ("RSA", "EC", "OKP"):
            continue
        if raw.get("use", "sig") != "sig" or "d" in raw:
            continue  # encryption keys, or private material that should never be published
        kid, alg = raw.get("kid"), raw.get("alg")
        if (kid is not None and not isinstance(kid, str)) or (
                alg is not None and not isinstance(alg, str)):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # weak keys are dropped just below
                key = JWKRegistry.import_key(raw)
        except (JoseError, ValueError, TypeError):
            continue
        public = key.public_key
        if isinstance(public, rsa.RSAPublicKey) and public.key_size < _MIN_RSA_BITS:
            continue
        curve = raw.get("crv") if isinstance(raw.get("crv"), str) else None
        keys.append(_VerificationKey(kid, key, raw["kty"], curve, alg))
    return tuple(keys)
