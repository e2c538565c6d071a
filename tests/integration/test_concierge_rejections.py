"""Every way a login is refused, through the real concierge process.

Each case asserts what the client sees (only "authentication failed"), what
the audit log records (the precise reason), and that the token appears in no
log. Tokens the real IdP will not mint are signed by `minting_issuer`, whose
keys the tests hold; the shared concierge trusts it as the `minted`
authenticator (prefix minted:). The empty-prefix case (`minted-raw`) runs in
a concierge of its own: the concierge refuses an empty prefix next to any
other authenticator, since it would overlap every other prefix.
"""

from __future__ import annotations

import base64
import json
import ssl
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from joserfc.jwk import RSAKey

from localenv.concierge import LocalConcierge, MintingIssuer
from localenv.idp import LocalIdP
from localenv.logins import login
from pinniped_apis import wire

pytestmark = pytest.mark.integration


def send(concierge: LocalConcierge, token: str, authenticator: str,
         kind: str = wire.JWT_AUTHENTICATOR_KIND) -> httpx.Response:
    """POST a login with `token` as is, even one our own models would refuse to build."""
    body = wire.TokenCredentialRequest.create(token="placeholder", authenticator_name=authenticator,
                                              authenticator_kind=kind).to_wire()
    body["spec"]["token"] = token
    context = ssl.create_default_context(cafile=str(concierge.ca_file))
    with httpx.Client(verify=context, timeout=30) as http:
        return http.post(concierge.url + wire.TOKEN_CREDENTIAL_REQUEST_PATH, json=body)


def assert_refused(concierge: LocalConcierge, token: str, authenticator: str, reason: str,
                   kind: str = wire.JWT_AUTHENTICATOR_KIND) -> None:
    before = len(concierge.audit_lines())
    response = send(concierge, token, authenticator, kind)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == {"message": wire.AUTHENTICATION_FAILED}
    assert body["spec"]["token"] == ""
    lines = concierge.audit_lines()[before:]
    assert len(lines) == 1
    (line,) = lines
    assert (line["outcome"], line["reason"]) == ("failure", reason), line
    assert line["username"] is None  # nothing unproven is attributed to anyone
    assert line["tokenHash"].startswith("sha256:")
    logs = concierge.all_logs()
    for part in token.split("."):
        if len(part) > 8:
            assert part not in logs


def tamper(token: str, **claims: Any) -> str:
    """Change claims but keep the genuine signature."""
    head, payload, signature = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body.update(claims)
    new = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
    return f"{head}.{new}.{signature}"


def test_a_tampered_real_id_token_has_a_bad_signature(
        concierge: LocalConcierge, id_token_for: Callable[..., str]) -> None:
    forged = tamper(id_token_for("bob"), email="alice@example.com", groups=["devs", "admins"])
    assert_refused(concierge, forged, "corp", "bad_signature")


def test_a_token_signed_by_an_impostor_key_has_a_bad_signature(
        concierge: LocalConcierge, minting_issuer: MintingIssuer) -> None:
    token = minting_issuer.mint(key=minting_issuer.impostor_key())
    assert_refused(concierge, token, "minted", "bad_signature")


def test_a_real_token_for_another_client_has_the_wrong_audience(
        concierge: LocalConcierge, id_token_for: Callable[..., str],
        minting_issuer: MintingIssuer) -> None:
    from localenv.idp import ES256_CLIENT_ID
    assert_refused(concierge, id_token_for("bob", client_id=ES256_CLIENT_ID), "corp",
                   "wrong_audience")
    assert_refused(concierge, minting_issuer.mint({"aud": ["someone-else"]}), "minted",
                   "wrong_audience")


def test_a_real_token_sent_to_the_wrong_issuers_authenticator_is_refused(
        concierge: LocalConcierge, id_token_for: Callable[..., str]) -> None:
    # signed by the real IdP, whose keys the `minted` authenticator does not hold
    assert_refused(concierge, id_token_for("bob"), "minted", "unknown_key")


def test_wrong_issuer(concierge: LocalConcierge, minting_issuer: MintingIssuer) -> None:
    assert_refused(concierge, minting_issuer.mint({"iss": minting_issuer.issuer + "/"}),
                   "minted", "wrong_issuer")
    assert_refused(concierge, minting_issuer.mint({"iss": "https://evil.example"}), "minted",
                   "wrong_issuer")


def test_expired(concierge: LocalConcierge, minting_issuer: MintingIssuer) -> None:
    now = int(time.time())
    token = minting_issuer.mint({"iat": now - 900, "nbf": now - 900, "exp": now - 60})
    assert_refused(concierge, token, "minted", "expired")


def test_not_yet_valid(concierge: LocalConcierge, minting_issuer: MintingIssuer) -> None:
    now = int(time.time())
    assert_refused(concierge, minting_issuer.mint({"nbf": now + 120, "exp": now + 600}),
                   "minted", "not_yet_valid")
    assert_refused(concierge, minting_issuer.mint({"iat": now + 120, "exp": now + 600},
                                                  omit=["nbf"]),
                   "minted", "issued_in_future")


def test_alg_none(concierge: LocalConcierge, minting_issuer: MintingIssuer) -> None:
    assert_refused(concierge, minting_issuer.mint_unsigned(), "minted", "unsupported_algorithm")


def test_hs256_keyed_with_the_public_key(concierge: LocalConcierge,
                                         minting_issuer: MintingIssuer) -> None:
    assert_refused(concierge, minting_issuer.mint_hs256_with_public_key(), "minted",
                   "unsupported_algorithm")


def test_unknown_authenticator(concierge: LocalConcierge,
                               id_token_for: Callable[..., str]) -> None:
    token = id_token_for("alice")
    assert_refused(concierge, token, "no-such-authenticator", "unknown_authenticator")
    assert_refused(concierge, token, "corp", "unknown_authenticator",
                   kind="WebhookAuthenticator")


@pytest.mark.parametrize(("claims", "omit", "reason"), [
    ({"email": 42}, (), "bad_claim_type"),
    ({"email": ""}, (), "bad_claim_type"),
    ({"groups": "devs"}, (), "bad_claim_type"),
    ({"groups": ["devs", 7]}, (), "bad_claim_type"),
    ({"exp": "tomorrow"}, (), "bad_claim_type"),
    ({"aud": 12}, (), "bad_claim_type"),
    ({"email_verified": False}, (), "email_not_verified"),
    ({}, ("email",), "missing_claim"),
    ({}, ("exp",), "missing_claim"),
])
def test_unusable_claims(concierge: LocalConcierge, minting_issuer: MintingIssuer,
                         claims: dict[str, Any], omit: tuple[str, ...], reason: str) -> None:
    assert_refused(concierge, minting_issuer.mint(claims, omit=omit), "minted", reason)


@pytest.fixture
def raw_concierge(concierge_factory: Callable[..., LocalConcierge], idp: LocalIdP,
                  minting_issuer: MintingIssuer) -> LocalConcierge:
    """A concierge whose only authenticator is `minted-raw`: no prefixes at all."""
    return concierge_factory(idp, raw_issuer=minting_issuer)


def test_system_names_are_refused(raw_concierge: LocalConcierge,
                                  minting_issuer: MintingIssuer) -> None:
    cases: list[dict[str, Any]] = [
        {"email": "system:admin"},
        {"email": "system:serviceaccount:kube-system:default"},
        {"groups": ["devs", "system:masters"]},
        {"groups": ["System:Masters"]},
    ]
    for claims in cases:
        assert_refused(raw_concierge, minting_issuer.mint(claims), "minted-raw",
                       "reserved_name")
    # the control case: the same issuer's ordinary names pass unprefixed
    response = send(raw_concierge, minting_issuer.mint(), "minted-raw")
    assert wire.parse_credential_response(response.json()).identity == wire.Identity(
        "alice@example.com", ("devs",))


def test_several_audiences_need_azp_naming_us(concierge: LocalConcierge,
                                              minting_issuer: MintingIssuer) -> None:
    both = [minting_issuer.audience, "another-client"]
    assert_refused(concierge, minting_issuer.mint({"aud": both}), "minted", "missing_claim")
    assert_refused(concierge, minting_issuer.mint({"aud": both, "azp": "another-client"}),
                   "minted", "wrong_authorized_party")
    response = send(concierge, minting_issuer.mint({"aud": both,
                                                    "azp": minting_issuer.audience}), "minted")
    assert wire.parse_credential_response(response.json()).identity.username == \
        "minted:alice@example.com"


def test_oversized_tokens_and_claims(concierge: LocalConcierge,
                                     minting_issuer: MintingIssuer) -> None:
    big = minting_issuer.mint({"groups": [f"group-{i:04d}-" + "x" * 40 for i in range(250)]})
    assert 16 * 1024 < len(big) < wire.MAX_TOKEN_BYTES
    assert_refused(concierge, big, "minted", "token_too_large")
    too_many = minting_issuer.mint({"groups": [f"g{i}" for i in range(300)]})
    assert_refused(concierge, too_many, "minted", "claim_too_large")
    long_name = minting_issuer.mint({"email": "a" * 300 + "@example.com"})
    assert_refused(concierge, long_name, "minted", "claim_too_large")


def test_requests_beyond_the_wire_limits_are_not_logins(concierge: LocalConcierge) -> None:
    huge_token = "a" * (wire.MAX_TOKEN_BYTES + 1)
    response = send(concierge, huge_token, "minted")
    assert response.status_code == 400
    assert response.json()["message"].startswith("spec.token:")
    context = ssl.create_default_context(cafile=str(concierge.ca_file))
    with httpx.Client(verify=context, timeout=30) as http:
        response = http.post(concierge.url + wire.TOKEN_CREDENTIAL_REQUEST_PATH,
                             content=b"x" * (wire.MAX_REQUEST_BYTES + 1),
                             headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert concierge.audit_lines()[-1]["reason"] == "request_too_large"
    assert huge_token not in concierge.all_logs()


def test_unknown_kids_refresh_the_keys_at_most_once_a_second(
        concierge: LocalConcierge, minting_issuer: MintingIssuer) -> None:
    time.sleep(1.1)
    before = minting_issuer.jwks_fetches
    started = time.monotonic()
    for _ in range(8):
        stranger = RSAKey.generate_key(2048, parameters={"alg": "RS256"}, auto_kid=True)
        assert_refused(concierge, minting_issuer.mint(key=stranger), "minted", "unknown_key")
    elapsed = time.monotonic() - started
    fetches = minting_issuer.jwks_fetches - before
    assert 1 <= fetches <= int(elapsed) + 1


def test_the_minted_issuer_is_otherwise_accepted(concierge: LocalConcierge,
                                                 minting_issuer: MintingIssuer) -> None:
    """The control case: these tokens fail only for the reasons the tests above give them."""
    for alg in ("RS256", "ES256"):
        response = send(concierge, minting_issuer.mint(alg=alg), "minted")
        credential = wire.parse_credential_response(response.json())
        assert credential.identity == wire.Identity("minted:alice@example.com",
                                                    ("minted:devs",))


@pytest.mark.parametrize("pointer", ["jku", "x5u"])
def test_a_token_pointing_at_other_keys_is_refused(concierge: LocalConcierge,
                                                   minting_issuer: MintingIssuer,
                                                   pointer: str) -> None:
    """Signed with the issuer's real key, but carrying a key URL: refused (RFC 8725)."""
    token = minting_issuer.mint(header={pointer: "https://127.0.0.1:9/keys"})
    assert_refused(concierge, token, "minted", "unsupported_header")
    # The same key without the header logs in: the header alone made the difference.
    assert login(concierge, minting_issuer.mint(), "minted").identity.username.startswith(
        "minted:")
