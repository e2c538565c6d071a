"""ID token verification: every rejection has its own reason, keys are fetched carefully."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey

from localenv.hostile_tokens import CORPUS, HostileToken, offline_authenticators, unpinned
from pinniped_apis.authentication import ASYMMETRIC_ALGORITHMS
from pinniped_concierge.config import ClaimsConfig, JWTAuthenticatorConfig
from pinniped_concierge.errors import Reason, Rejected, Unavailable
from pinniped_concierge.jwt_authenticator import FetchError, HttpsFetcher, JWTAuthenticator

ISSUER = "https://idp.example"
AUDIENCE = "pinniped-cli"
NOW = 1_700_000_000.0


class FakeIdP:
    """Discovery and JWKS from memory, counting fetches."""

    def __init__(self) -> None:
        self.rsa = RSAKey.generate_key(2048, parameters={"alg": "RS256", "use": "sig"},
                                       auto_kid=True)
        self.ec = ECKey.generate_key("P-256", parameters={"alg": "ES256", "use": "sig"},
                                     auto_kid=True)
        self.published: list[Any] = [self.rsa, self.ec]
        self.extra: list[object] = []
        self.fetches: list[str] = []
        self.down = False
        self.discovery_issuer = ISSUER

    async def __call__(self, url: str) -> object:
        self.fetches.append(url)
        if self.down:
            raise FetchError(f"{url}: ConnectError")
        if url == f"{ISSUER}/.well-known/openid-configuration":
            return {"issuer": self.discovery_issuer, "jwks_uri": f"{ISSUER}/keys"}
        if url == f"{ISSUER}/keys":
            return {"keys": [k.as_dict(private=False) for k in self.published] + self.extra}
        raise FetchError(f"{url}: HTTP 404")

    def claims(self, **overrides: Any) -> dict[str, Any]:
        base = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "email": "alice@example.com",
                "groups": ["devs"], "iat": NOW, "nbf": NOW, "exp": NOW + 300}
        return {k: v for k, v in (base | overrides).items() if v is not None}

    def mint(self, key: Any = None, alg: str = "RS256", header: dict[str, Any] | None = None,
             **claims: Any) -> str:
        key = key or (self.ec if alg.startswith("ES") else self.rsa)
        head = {"alg": alg, "kid": key.kid} | (header or {})
        return jwt.encode(head, self.claims(**claims), key, algorithms=[alg])


def config(**overrides: Any) -> JWTAuthenticatorConfig:
    fields: dict[str, Any] = {
        "name": "corp", "issuer": ISSUER, "audience": AUDIENCE, "ca_file": None,
        "claims": ClaimsConfig(username="email", groups="groups"), "username_prefix": "corp:",
        "groups_prefix": "corp:", "allow_empty_prefixes": False,
        "algorithms": ASYMMETRIC_ALGORITHMS, "max_token_bytes": 16384,
    } | overrides
    return JWTAuthenticatorConfig(**fields)


class Clocks:
    def __init__(self) -> None:
        self.wall = NOW
        self.mono = 1000.0


@pytest.fixture
def idp() -> FakeIdP:
    return FakeIdP()


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


def make(idp: FakeIdP, clocks: Clocks, **overrides: Any) -> JWTAuthenticator:
    return JWTAuthenticator(config(**overrides), idp, clock_skew_seconds=30,
                            min_refresh_interval_seconds=10, clock=lambda: clocks.wall,
                            monotonic=lambda: clocks.mono)


def verify(auth: JWTAuthenticator, token: str) -> dict[str, object]:
    return asyncio.run(auth.verify(token))


def rejection(auth: JWTAuthenticator, token: str) -> Reason:
    with pytest.raises(Rejected) as info:
        verify(auth, token)
    if len(token) > 8:
        assert token not in str(info.value)
        assert token not in info.value.detail
    return info.value.reason


def test_valid_rs256_and_es256_tokens_verify(idp: FakeIdP, clocks: Clocks) -> None:
    auth = make(idp, clocks)
    assert verify(auth, idp.mint())["email"] == "alice@example.com"
    assert verify(auth, idp.mint(alg="ES256"))["groups"] == ["devs"]
    # one discovery and one JWKS fetch, then the cache serves
    assert len(idp.fetches) == 2


@pytest.mark.filterwarnings("ignore:EdDSA is deprecated")
def test_eddsa_and_ps256_verify_when_published(idp: FakeIdP, clocks: Clocks) -> None:
    ed = OKPKey.generate_key("Ed25519", parameters={"use": "sig"}, auto_kid=True)
    ps = RSAKey.generate_key(2048, auto_kid=True)
    idp.published += [ed, ps]
    auth = make(idp, clocks)
    assert verify(auth, idp.mint(key=ed, alg="EdDSA"))["sub"] == "alice"
    assert verify(auth, idp.mint(key=ps, alg="PS256"))["sub"] == "alice"


def test_audience_may_be_a_list(idp: FakeIdP, clocks: Clocks) -> None:
    auth = make(idp, clocks)
    assert verify(auth, idp.mint(aud=[AUDIENCE]))
    assert verify(auth, idp.mint(aud=["other", AUDIENCE], azp=AUDIENCE))


@pytest.mark.parametrize(("claims", "reason"), [
    ({"aud": ["other", AUDIENCE]}, Reason.MISSING_CLAIM),
    ({"aud": ["other", AUDIENCE], "azp": "other"}, Reason.WRONG_AUTHORIZED_PARTY),
    ({"aud": [AUDIENCE, "other"], "azp": ["pinniped-cli"]}, Reason.BAD_CLAIM_TYPE),
])
def test_several_audiences_need_azp_naming_us(idp: FakeIdP, clocks: Clocks,
                                              claims: dict[str, Any], reason: Reason) -> None:
    """OIDC Core 3.1.3.7: a token for another client that merely lists us is not ours."""
    assert rejection(make(idp, clocks), idp.mint(**claims)) == reason


def test_keys_too_long_unrefreshed_are_not_used(idp: FakeIdP, clocks: Clocks) -> None:
    auth = JWTAuthenticator(config(), idp, clock_skew_seconds=30,
                            min_refresh_interval_seconds=10, max_key_age_seconds=3600,
                            clock=lambda: clocks.wall, monotonic=lambda: clocks.mono)
    asyncio.run(auth.refresh_keys())
    idp.down = True
    clocks.mono += 3599
    assert verify(auth, idp.mint())["sub"] == "alice"  # still within the maximum age
    assert asyncio.run(auth.ready()) is True
    clocks.mono += 1
    with pytest.raises(Unavailable) as info:
        verify(auth, idp.mint())
    assert info.value.reason == Reason.ISSUER_KEYS_EXPIRED
    assert asyncio.run(auth.ready()) is False
    idp.down = False  # the IdP is back: the next attempt (rate limit passed) refreshes
    clocks.mono += 11
    assert verify(auth, idp.mint())["sub"] == "alice"
    assert asyncio.run(auth.ready()) is True


def test_skew_tolerates_small_clock_differences(idp: FakeIdP, clocks: Clocks) -> None:
    auth = make(idp, clocks)
    assert verify(auth, idp.mint(exp=NOW - 20))  # expired 20 s ago, skew 30 s
    assert verify(auth, idp.mint(nbf=NOW + 20, iat=NOW + 20))


@pytest.mark.parametrize(("claims", "reason"), [
    ({"iss": "https://idp.example/"}, Reason.WRONG_ISSUER),
    ({"iss": "https://evil.example"}, Reason.WRONG_ISSUER),
    ({"iss": None}, Reason.WRONG_ISSUER),
    ({"aud": "someone-else"}, Reason.WRONG_AUDIENCE),
    ({"aud": ["a", "b"]}, Reason.WRONG_AUDIENCE),
    ({"aud": None}, Reason.MISSING_CLAIM),
    ({"aud": 7}, Reason.BAD_CLAIM_TYPE),
    ({"aud": [AUDIENCE, 7]}, Reason.BAD_CLAIM_TYPE),
    ({"exp": NOW - 31}, Reason.EXPIRED),
    ({"exp": None}, Reason.MISSING_CLAIM),
    ({"exp": "tomorrow"}, Reason.BAD_CLAIM_TYPE),
    ({"exp": True}, Reason.BAD_CLAIM_TYPE),
    ({"nbf": NOW + 31}, Reason.NOT_YET_VALID),
    ({"nbf": "now"}, Reason.BAD_CLAIM_TYPE),
    ({"iat": NOW + 31}, Reason.ISSUED_IN_FUTURE),
])
def test_registered_claims_are_checked(idp: FakeIdP, clocks: Clocks, claims: dict[str, Any],
                                       reason: Reason) -> None:
    assert rejection(make(idp, clocks), idp.mint(**claims)) == reason


def test_symmetric_keys_in_the_jwks_are_ignored(idp: FakeIdP, clocks: Clocks) -> None:
    secret = OctKey.generate_key(256, parameters={"kid": "shared"})
    idp.extra.append(dict(secret.as_dict(private=True)))
    token = jwt.encode({"alg": "HS256", "kid": "shared"}, idp.claims(), secret,
                       algorithms=["HS256"])
    assert rejection(make(idp, clocks), token) == Reason.UNSUPPORTED_ALGORITHM


def test_an_alg_outside_the_configured_list_is_refused(idp: FakeIdP, clocks: Clocks) -> None:
    auth = make(idp, clocks, algorithms=("ES256",))
    assert rejection(auth, idp.mint()) == Reason.UNSUPPORTED_ALGORITHM
    assert verify(auth, idp.mint(alg="ES256"))


def test_oversized_tokens_are_refused_before_parsing(idp: FakeIdP, clocks: Clocks) -> None:
    auth = make(idp, clocks, max_token_bytes=2048)
    token = idp.mint(groups=["g" * 50] * 40)
    assert len(token) > 2048
    assert rejection(auth, token) == Reason.TOKEN_TOO_LARGE
    assert idp.fetches == []


def test_an_unknown_kid_refreshes_the_keys_once(idp: FakeIdP, clocks: Clocks) -> None:
    auth = make(idp, clocks)
    verify(auth, idp.mint())
    rotated = RSAKey.generate_key(2048, parameters={"alg": "RS256"}, auto_kid=True)
    idp.published.insert(0, rotated)
    clocks.mono += 11
    assert verify(auth, idp.mint(key=rotated))["sub"] == "alice"
    assert len(idp.fetches) == 4


def test_unknown_kid_refreshes_are_rate_limited(idp: FakeIdP, clocks: Clocks) -> None:
    auth = make(idp, clocks)
    verify(auth, idp.mint())
    stranger = RSAKey.generate_key(2048, auto_kid=True)
    for _ in range(20):
        assert rejection(auth, idp.mint(key=stranger)) == Reason.UNKNOWN_KEY
    assert len(idp.fetches) == 2  # the first fetch was under a second ago
    clocks.mono += 11
    assert rejection(auth, idp.mint(key=stranger)) == Reason.UNKNOWN_KEY
    assert len(idp.fetches) == 4


def test_no_keys_at_all_is_unavailable_not_a_rejection(idp: FakeIdP, clocks: Clocks) -> None:
    idp.down = True
    auth = make(idp, clocks)
    with pytest.raises(Unavailable) as info:
        verify(auth, idp.mint())
    assert info.value.reason == Reason.ISSUER_UNAVAILABLE
    assert asyncio.run(auth.ready()) is False


def test_cached_keys_keep_working_while_the_idp_is_down(idp: FakeIdP, clocks: Clocks) -> None:
    auth = make(idp, clocks)
    asyncio.run(auth.refresh_keys())
    idp.down = True
    clocks.mono += 100
    with pytest.raises(FetchError):
        asyncio.run(auth.refresh_keys())
    assert verify(auth, idp.mint())
    assert asyncio.run(auth.ready()) is True


def test_discovery_must_name_exactly_our_issuer(idp: FakeIdP, clocks: Clocks) -> None:
    idp.discovery_issuer = "https://evil.example"
    auth = make(idp, clocks)
    with pytest.raises(FetchError, match="issuer does not match"):
        asyncio.run(auth.refresh_keys())
    assert not auth.has_keys


@pytest.mark.filterwarnings("ignore:Key size should be")
def test_jwks_skips_unusable_keys(idp: FakeIdP, clocks: Clocks) -> None:
    weak = RSAKey.generate_key(1024, parameters={"kid": "weak"}, private=True)
    enc = RSAKey.generate_key(2048, parameters={"kid": "enc", "use": "enc"})
    private = RSAKey.generate_key(2048, parameters={"kid": "private"})
    idp.published = [idp.rsa]
    idp.extra = [dict(weak.as_dict(private=False)), dict(enc.as_dict(private=False)),
                 dict(private.as_dict(private=True)), {"kty": "RSA", "kid": "junk"}, "junk"]
    auth = make(idp, clocks)
    asyncio.run(auth.refresh_keys())
    for key in (weak, enc, private):
        token = idp.mint(key=unpinned(key), header={"kid": key.kid})
        assert rejection(auth, token) == Reason.UNKNOWN_KEY


def test_https_fetcher_refuses_plain_http(tmp_path: Path) -> None:
    async def go() -> None:
        fetcher = HttpsFetcher(None)
        try:
            with pytest.raises(FetchError, match="non-https"):
                await fetcher("http://127.0.0.1:1/keys")
        finally:
            await fetcher.aclose()

    asyncio.run(go())


def test_concurrent_unknown_kids_share_one_refresh(idp: FakeIdP, clocks: Clocks) -> None:
    auth = make(idp, clocks)
    stranger = RSAKey.generate_key(2048, auto_kid=True)
    tokens = [idp.mint(key=stranger) for _ in range(10)] + [idp.mint()]

    async def go() -> list[object]:
        return await asyncio.gather(*(auth.verify(t) for t in tokens), return_exceptions=True)

    results = asyncio.run(go())
    assert all(isinstance(r, Rejected) for r in results[:-1])
    assert isinstance(results[-1], dict)
    assert len(idp.fetches) == 2


def test_ca_file_replaces_the_system_trust_store(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """With caFile set, a certificate from any other CA fails, even one the system trusts."""
    from localenv import pki
    from localenv.concierge import MintingIssuer

    issuer_ca = pki.CA.create(tmp_path / "issuer-ca", "issuer")
    other_ca = pki.CA.create(tmp_path / "other-ca", "other")
    issuer = MintingIssuer.start(tmp_path / "issuer", issuer_ca)
    # Make the issuer's CA the "system" trust store (OpenSSL reads SSL_CERT_FILE).
    monkeypatch.setenv("SSL_CERT_FILE", str(issuer_ca.cert_path))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)

    async def fetch(ca_file: Path | None) -> dict[str, Any]:
        fetcher = HttpsFetcher(ca_file)
        try:
            document = await fetcher(issuer.issuer + "/jwks")
            assert isinstance(document, dict)
            return document
        finally:
            await fetcher.aclose()

    try:
        assert "keys" in asyncio.run(fetch(None))  # the system store trusts it
        assert "keys" in asyncio.run(fetch(issuer_ca.cert_path))
        with pytest.raises(FetchError, match="ConnectError"):
            asyncio.run(fetch(other_ca.cert_path))
    finally:
        issuer.stop()


# --- the hostile token corpus (localenv.hostile_tokens), against the verifier --------------

VERIFIER_CASES = [case for case in CORPUS if not case.mapped]


def test_the_corpus_covers_at_least_forty_tokens_under_distinct_names() -> None:
    assert len(CORPUS) >= 40
    assert len({case.id for case in CORPUS}) == len(CORPUS)


#: Decided from the token alone: no key may be fetched for these.
BEFORE_ANY_KEY = {Reason.TOKEN_TOO_LARGE, Reason.UNSUPPORTED_ALGORITHM, Reason.UNSUPPORTED_HEADER}


@pytest.mark.parametrize("case", VERIFIER_CASES, ids=[case.id for case in VERIFIER_CASES])
def test_a_hostile_token_is_refused_by_the_verifier_for_its_reason(case: HostileToken) -> None:
    """Every forged or broken token gets `Rejected` (never another exception, which would be
    a 5xx) with the case's reason, and the refusal quotes nothing of the token."""
    offline = offline_authenticators()
    token = case.make(offline.forge)
    fetched = len(offline.fetches)
    with pytest.raises(Rejected) as info:
        asyncio.run(offline.verifier(case.authenticator).verify(token))
    assert info.value.reason == case.reason, info.value.detail
    for part in token.split("."):
        if len(part) > 8:
            assert part[:16] not in str(info.value)
    if case.reason in BEFORE_ANY_KEY:
        assert len(offline.fetches) == fetched
