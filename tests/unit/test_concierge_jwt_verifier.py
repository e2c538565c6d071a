"""The verifier's keys and its edges: what is trusted, fetched, and read.

A key set is read defensively: an odd entry is skipped, never a reason to
stop reading the rest (a rotation publishes the new key after the old ones),
and never trusted (a key whose `kid` is not a string, a key of another type
than the token's `alg` asks for). Refreshes are reported to the metrics, run
in the background, and are never spent on a token whose key is known.

Tokens at the edges: the size limit is exact, optional claims are optional,
and the strict reader refuses what it must without a crash while accepting
every canonical spelling.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import warnings
from collections.abc import Callable
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey

from pinniped_apis.authentication import ASYMMETRIC_ALGORITHMS
from pinniped_concierge.config import ClaimsConfig, JWTAuthenticatorConfig
from pinniped_concierge.errors import Reason, Rejected, Unavailable
from pinniped_concierge.jwt_authenticator import (
    FetchError,
    JWKSFetchError,
    JWKSURLError,
    JWTAuthenticator,
    discovery_url,
)

ISSUER = "https://keys.example"
JWKS_URI = f"{ISSUER}/jwks"
AUDIENCE = "cli"
NOW = 1_700_000_000.0


@functools.cache
def keys() -> dict[str, Any]:
    """Made once per run: RSA keys take a while."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the deliberately weak key
        return {
            "rsa": RSAKey.generate_key(2048, parameters={"kid": "rsa", "alg": "RS256"}),
            "rsa-no-kid": RSAKey.generate_key(2048),
            "rsa-odd-kid": RSAKey.generate_key(2048),
            "weak": RSAKey.generate_key(1024, parameters={"kid": "weak"}),
            "ec": ECKey.generate_key("P-256", parameters={"kid": "ec", "alg": "ES256"}),
            "es384": ECKey.generate_key("P-384", parameters={"kid": "es384"}),
            "ed": OKPKey.generate_key("Ed25519", parameters={"kid": "ed"}),
            "x25519": OKPKey.generate_key("X25519", parameters={"kid": "x25519"}),
            "oct": OctKey.generate_key(256, parameters={"kid": "oct"}),
        }


def public(name: str, **fields: Any) -> dict[str, Any]:
    return dict(keys()[name].as_dict(private=False)) | fields


class KeySet:
    """Discovery and a JWKS from memory; records what was fetched."""

    def __init__(self, published: list[Any], discovery: dict[str, Any] | None = None) -> None:
        self.published = published
        self.discovery = {"issuer": ISSUER, "jwks_uri": JWKS_URI} if discovery is None \
            else discovery
        self.fetches: list[str] = []
        self.failure: FetchError | None = None
        #: Served instead of `{"keys": published}` when set.
        self.document: object = None

    async def __call__(self, url: str) -> object:
        self.fetches.append(url)
        if url == discovery_url(ISSUER):
            return self.discovery
        if self.failure is not None:
            raise self.failure
        if url == JWKS_URI:
            return {"keys": self.published} if self.document is None else self.document
        raise FetchError(f"{url}: HTTP 404")


class Clocks:
    wall = NOW
    mono = 1000.0


def authenticator(key_set: KeySet, clocks: Clocks | None = None, *,
                  max_token_bytes: int = 16384) -> JWTAuthenticator:
    clocks = clocks or Clocks()
    settings = JWTAuthenticatorConfig(
        name="keys", issuer=ISSUER, audience=AUDIENCE, ca_file=None,
        claims=ClaimsConfig(username="email", groups="groups"), username_prefix="k:",
        groups_prefix="k:", allow_empty_prefixes=False, algorithms=ASYMMETRIC_ALGORITHMS,
        max_token_bytes=max_token_bytes)
    return JWTAuthenticator(settings, key_set, clock_skew_seconds=30,
                            min_refresh_interval_seconds=10, clock=lambda: clocks.wall,
                            monotonic=lambda: clocks.mono)


def token(key: str, alg: str = "RS256", **header: Any) -> str:
    claims = {"iss": ISSUER, "aud": AUDIENCE, "email": "a@example.com", "iat": NOW,
              "exp": NOW + 300}
    head = {"alg": alg, "kid": keys()[key].kid} | header
    head = {k: v for k, v in head.items() if v is not None}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return jwt.encode(head, claims, keys()[key], algorithms=[alg])


def verify(auth: JWTAuthenticator, jwt_token: str) -> dict[str, object]:
    return asyncio.run(auth.verify(jwt_token))


def rejection(auth: JWTAuthenticator, jwt_token: str) -> Reason:
    with pytest.raises(Rejected) as info:
        verify(auth, jwt_token)
    return info.value.reason


# --- which published keys count ------------------------------------------------------------


def test_a_usable_key_published_after_unusable_ones_is_still_used() -> None:
    """Odd entries first: each is skipped, and reading goes on to the key that signs."""
    key_set = KeySet([
        public("oct"),  # symmetric: never a verification key
        public("rsa-no-kid", kid="enc", use="enc"),  # for encryption
        public("rsa-odd-kid", kid=["odd"]),  # a kid that is not a string
        {"kty": "RSA", "kid": "junk"},  # not a key at all
        public("weak"),  # too short
        public("rsa"),
    ])
    assert verify(authenticator(key_set), token("rsa"))["email"] == "a@example.com"


def test_a_key_without_kid_verifies_tokens_without_kid() -> None:
    """An IdP with a single key need not name it."""
    key_set = KeySet([public("rsa-no-kid")])
    assert verify(authenticator(key_set), token("rsa-no-kid", kid=None))["iss"] == ISSUER


def test_a_key_whose_kid_is_not_a_string_is_not_trusted() -> None:
    """A token without kid is tried against every key: that one must not be among them."""
    key_set = KeySet([public("rsa-odd-kid", kid=42, alg="RS256"), public("rsa")])
    assert rejection(authenticator(key_set), token("rsa-odd-kid", kid=None)) == \
        Reason.BAD_SIGNATURE


def test_a_kid_naming_a_key_of_another_type_is_an_unknown_key() -> None:
    """RS256 asks for an RSA key; the EC key under that kid is not one (RFC 8725 3.1), even
    when the key set does not say which `alg` the key is for."""
    key_set = KeySet([public("rsa"), {k: v for k, v in public("ec").items() if k != "alg"}])
    assert rejection(authenticator(key_set), token("rsa", kid="ec")) == Reason.UNKNOWN_KEY


def test_a_key_exchange_key_under_the_kid_never_passes_a_signature() -> None:
    """X25519 is an OKP key like Ed25519 but signs nothing: verifying with it fails inside
    the library, and that failure is a bad signature, never a good one."""
    key_set = KeySet([public("x25519"), public("ed")])
    forged = token("ed", alg="EdDSA", kid="x25519")
    assert rejection(authenticator(key_set), forged) == Reason.BAD_SIGNATURE
    assert verify(authenticator(key_set), token("ed", alg="EdDSA"))["iss"] == ISSUER


# --- discovery and the key set --------------------------------------------------------------


@pytest.mark.parametrize("jwks_uri", ["http://keys.example/jwks", 42, None])
def test_discovery_must_name_an_https_key_set(jwks_uri: object) -> None:
    discovery = {"issuer": ISSUER} | ({"jwks_uri": jwks_uri} if jwks_uri is not None else {})
    key_set = KeySet([public("rsa")], discovery)
    with pytest.raises(JWKSURLError, match="no https jwks_uri"):
        asyncio.run(authenticator(key_set).refresh_keys())
    assert JWKS_URI not in key_set.fetches


@pytest.mark.parametrize("document", [{"nokeys": []}, ["not", "an", "object"],
                                      {"keys": {"rsa": "not a list"}}])
def test_a_key_set_that_is_not_a_jwks_document_is_a_fetch_error(document: Any) -> None:
    key_set = KeySet([])
    key_set.document = document
    with pytest.raises(JWKSFetchError, match="not a JWKS document"):
        asyncio.run(authenticator(key_set).refresh_keys())


def test_a_key_set_without_a_usable_key_says_so() -> None:
    key_set = KeySet([public("oct"), public("weak")])
    with pytest.raises(JWKSFetchError) as info:
        asyncio.run(authenticator(key_set).refresh_keys())
    assert str(info.value) == f"{JWKS_URI}: no usable signature keys"


@pytest.mark.parametrize(("failure", "expected"), [
    (f"{JWKS_URI}: HTTP 503", f"{JWKS_URI}: HTTP 503"),  # names the URL already: kept
    ("ConnectError: refused", f"{JWKS_URI}: ConnectError: refused"),  # the URL is added
])
def test_a_key_set_that_cannot_be_fetched_is_reported_with_its_url(failure: str,
                                                                    expected: str) -> None:
    """What the operator reads in the authenticator's status: which URL, and what failed."""
    key_set = KeySet([public("rsa")])
    key_set.failure = FetchError(failure)
    with pytest.raises(JWKSFetchError) as info:
        asyncio.run(authenticator(key_set).refresh_keys())
    assert str(info.value) == expected


@pytest.mark.parametrize(("issuer", "url"), [
    ("https://idp.example", "https://idp.example/.well-known/openid-configuration"),
    ("https://idp.example/", "https://idp.example/.well-known/openid-configuration"),
    ("https://idp.example/tenants/X", "https://idp.example/tenants/X/.well-known/"
                                      "openid-configuration"),
])
def test_discovery_is_read_below_the_issuer(issuer: str, url: str) -> None:
    assert discovery_url(issuer) == url


# --- refreshing -----------------------------------------------------------------------------


def test_readiness_fetches_the_keys_when_there_are_none_yet() -> None:
    key_set = KeySet([public("rsa")])
    auth = authenticator(key_set)
    assert asyncio.run(auth.ready()) is True
    assert auth.has_keys
    fetched = len(key_set.fetches)
    assert asyncio.run(auth.ready()) is True  # and not again while they are fresh
    assert len(key_set.fetches) == fetched


def test_each_refresh_reports_whether_it_worked() -> None:
    """The metrics count refreshes and failed refreshes from these reports."""
    key_set = KeySet([public("rsa")])
    auth = authenticator(key_set)
    reports: list[tuple[str, bool]] = []
    auth.on_refresh = lambda name, ok: reports.append((name, ok))
    asyncio.run(auth.refresh_keys())
    key_set.failure = FetchError(f"{JWKS_URI}: HTTP 500")
    with pytest.raises(FetchError):
        asyncio.run(auth.refresh_keys())
    assert reports == [("keys", True), ("keys", False)]


def test_the_background_refresh_keeps_fetching_until_stopped() -> None:
    key_set = KeySet([public("rsa")])
    auth = authenticator(key_set)

    async def run() -> None:
        loop = asyncio.create_task(auth.run_refresh_loop(0.01))
        try:
            async with asyncio.timeout(5):
                while key_set.fetches.count(JWKS_URI) < 3:
                    assert not loop.done(), "the refresh loop stopped"
                    await asyncio.sleep(0.01)
        finally:
            loop.cancel()

    asyncio.run(run())


def test_a_token_whose_key_is_known_costs_no_fetch() -> None:
    clocks = Clocks()
    key_set = KeySet([public("rsa")])
    auth = authenticator(key_set, clocks)
    asyncio.run(auth.refresh_keys())
    clocks.mono += 60  # a refresh would be allowed now: it must still not happen
    key_set.fetches.clear()
    verify(auth, token("rsa"))
    assert key_set.fetches == []


# --- tokens at the edges ----------------------------------------------------------------------


def rsa_authenticator(**options: Any) -> JWTAuthenticator:
    return authenticator(KeySet([public("rsa")]), **options)


def resigned(jwt_token: str, change: Callable[[dict[str, Any]], object]) -> str:
    """`jwt_token` with its claims changed by `change`, signed again with the same key."""
    header, payload, _ = jwt_token.split(".")
    claims = json.loads(unb64(payload))
    change(claims)
    head = json.loads(unb64(header))
    return jwt.encode(head, claims, keys()[head["kid"]], algorithms=[head["alg"]])


def unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def test_a_token_of_exactly_the_largest_size_is_accepted() -> None:
    jwt_token = resigned(token("rsa"), lambda claims: claims.update(padding="x" * 1200))
    size = len(jwt_token.encode())
    assert verify(rsa_authenticator(max_token_bytes=size), jwt_token)["iss"] == ISSUER
    assert rejection(rsa_authenticator(max_token_bytes=size - 1), jwt_token) == \
        Reason.TOKEN_TOO_LARGE


def test_a_token_without_iat_is_accepted() -> None:
    """OIDC asks IdPs for `iat`, but it is needed only to order group changes (where a token
    without one counts as the oldest): refusing such tokens would lock their users out."""
    jwt_token = resigned(token("rsa"), lambda claims: claims.pop("iat"))
    assert "iat" not in verify(rsa_authenticator(), jwt_token)


def test_an_unencoded_payload_header_is_refused() -> None:
    """`b64: false` (RFC 7797) makes the signature cover the raw payload: two readers would
    disagree on what was signed."""
    header = base64.urlsafe_b64encode(json.dumps(
        {"alg": "RS256", "kid": "rsa", "b64": False}).encode()).rstrip(b"=").decode()
    unencoded = ".".join([header, *token("rsa").split(".")[1:]])
    assert rejection(rsa_authenticator(), unencoded) == Reason.UNSUPPORTED_HEADER


@pytest.mark.parametrize("index", [0, 1, 2])
def test_a_segment_one_longer_than_a_multiple_of_four_is_malformed_not_a_crash(
        index: int) -> None:
    """No base64 spelling has such a length; the decoder would raise rather than refuse."""
    segments = token("rsa").split(".")
    segments[index] = "abcde"
    assert rejection(rsa_authenticator(), ".".join(segments)) == Reason.MALFORMED_TOKEN


def test_a_header_beyond_the_jose_librarys_limit_is_malformed() -> None:
    """joserfc reads at most 512 bytes of header; ours passes every check before that."""
    header = base64.urlsafe_b64encode(json.dumps(
        {"alg": "RS256", "kid": "k" * 600}).encode()).rstrip(b"=").decode()
    long_header = ".".join([header, *token("rsa").split(".")[1:]])
    assert rejection(rsa_authenticator(), long_header) == Reason.MALFORMED_TOKEN


@pytest.mark.parametrize("last", ["A", "X", "_", "-"])
def test_a_token_whose_signature_ends_in_any_character_is_read(last: str) -> None:
    """The canonical-spelling check compares a segment with its re-encoding; it must not trip
    over whichever character the segment ends with. An ES384 signature (96 bytes) can end in
    any of the 64 (JSON segments always end in "9", "Q" or "0", the spelling of a "}")."""
    auth = authenticator(KeySet([public("es384")]))
    signed = token("es384", alg="ES384")
    for nonce in range(10_000):
        jwt_token = resigned(signed, functools.partial(dict.update, nonce=nonce))
        if jwt_token.endswith(last):
            assert verify(auth, jwt_token)["nonce"] == nonce
            return
    raise AssertionError(f"no signature ended in {last!r}")


def test_without_keys_the_client_is_told_to_try_again() -> None:
    key_set = KeySet([public("rsa")])
    key_set.failure = FetchError(f"{JWKS_URI}: ConnectError")
    with pytest.raises(Unavailable) as info:
        verify(authenticator(key_set), token("rsa"))
    assert info.value.reason == Reason.ISSUER_UNAVAILABLE
    assert "try again" in info.value.message


def test_with_keys_too_old_the_client_is_told_to_try_again() -> None:
    clocks = Clocks()
    key_set = KeySet([public("rsa")])
    auth = authenticator(key_set, clocks)
    asyncio.run(auth.refresh_keys())
    clocks.mono += 86400  # the default maxKeyAgeSeconds
    key_set.failure = FetchError(f"{JWKS_URI}: ConnectError")
    with pytest.raises(Unavailable) as info:
        verify(auth, token("rsa"))
    assert info.value.reason == Reason.ISSUER_KEYS_EXPIRED
    assert "try again" in info.value.message
