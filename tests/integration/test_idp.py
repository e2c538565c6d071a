"""The local IdP (real oidc-provider) with every grant the CLI uses, checked as the concierge will.

Each ID token is verified against the IdP's published JWKS with joserfc:
signature, alg, iss, aud, exp, and the email / groups / preferred_username
claims with their types.
"""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from joserfc import jws, jwt
from joserfc.errors import (
    BadSignatureError,
    InvalidClaimError,
    InvalidKeyIdError,
    UnsupportedAlgorithmError,
)
from joserfc.jwk import KeySet

import localenv.fake_browser
from localenv import procs
from localenv.idp import (
    DEFAULT_SCOPES,
    ES256_CLIENT_ID,
    LocalIdP,
    LoginRejected,
    TokenError,
    fingerprint,
    pkce_pair,
)

pytestmark = pytest.mark.integration
FAKE_BROWSER = Path(localenv.fake_browser.__file__)


def verify_id_token(idp: LocalIdP, token: str, *, client_id: str | None = None,
                    alg: str = "RS256", jwks: dict[str, Any] | None = None) -> dict[str, Any]:
    """Verify as a relying party would, and return the claims."""
    keys = KeySet.import_key_set(jwks if jwks is not None else idp.jwks())  # type: ignore[arg-type]
    decoded = jwt.decode(token, keys, algorithms=[alg])
    assert decoded.header["alg"] == alg
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": idp.issuer},
        aud={"essential": True, "value": client_id or idp.client_id},
        exp={"essential": True},
        iat={"essential": True},
        sub={"essential": True},
    ).validate(decoded.claims)
    return dict(decoded.claims)


def assert_identity(idp: LocalIdP, claims: dict[str, Any], username: str) -> None:
    user = idp.user(username)
    assert claims["sub"] == username
    assert claims["preferred_username"] == username
    assert isinstance(claims["email"], str)
    assert claims["email"] == user.email
    assert claims["email_verified"] is True
    assert isinstance(claims["groups"], list)
    assert all(isinstance(g, str) for g in claims["groups"])
    assert claims["groups"] == user.groups


def kid_of(token: str) -> str:
    return str(jws.extract_compact(token.encode()).protected["kid"])


def test_discovery_advertises_what_the_cli_needs(idp: LocalIdP) -> None:
    meta = idp.discovery
    assert meta["issuer"] == idp.issuer
    assert idp.issuer.startswith("https://127.0.0.1:")
    for grant in ("authorization_code", "refresh_token", "password",
                  "urn:ietf:params:oauth:grant-type:device_code"):
        assert grant in meta["grant_types_supported"]
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert set(DEFAULT_SCOPES) <= set(meta["scopes_supported"])
    assert {"email", "groups", "preferred_username"} <= set(meta["claims_supported"])
    assert {"RS256", "ES256"} <= set(meta["id_token_signing_alg_values_supported"])
    for endpoint in ("authorization_endpoint", "token_endpoint", "jwks_uri",
                     "device_authorization_endpoint"):
        assert meta[endpoint].startswith(idp.issuer + "/")
    published = {k["kid"]: k for k in idp.jwks()["keys"]}
    assert set(idp.signing_kids.values()) <= set(published)
    assert all("d" not in key for key in published.values()), "JWKS must hold public keys only"


def test_plain_http_is_not_served(idp: LocalIdP) -> None:
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{idp.port}/.well-known/openid-configuration", timeout=5)


def test_password_grant(idp: LocalIdP) -> None:
    tokens = idp.password_grant("alice")
    assert tokens["token_type"] == "Bearer"
    assert tokens["access_token"]
    assert tokens["refresh_token"]
    assert set(tokens["scope"].split()) == set(DEFAULT_SCOPES)
    claims = verify_id_token(idp, tokens["id_token"])
    assert_identity(idp, claims, "alice")
    assert claims["groups"] == ["devs", "readers"]
    assert kid_of(tokens["id_token"]) == idp.signing_kids["RS256"]


def test_user_without_groups_gets_an_empty_list(idp: LocalIdP) -> None:
    claims = verify_id_token(idp, idp.password_grant("carol")["id_token"])
    assert_identity(idp, claims, "carol")
    assert claims["groups"] == []


def test_no_refresh_token_without_offline_access(idp: LocalIdP) -> None:
    tokens = idp.password_grant("bob", scopes=("openid", "email", "groups", "profile"))
    assert "refresh_token" not in tokens
    assert_identity(idp, verify_id_token(idp, tokens["id_token"]), "bob")


def test_wrong_password_is_rejected(idp: LocalIdP) -> None:
    with pytest.raises(TokenError) as refused:
        idp.password_grant("alice", "not-alices-password")
    assert refused.value.error == "invalid_grant"
    assert refused.value.status == 400
    with pytest.raises(TokenError) as unknown:
        idp.password_grant("mallory", "whatever")
    assert unknown.value.error == "invalid_grant"
    # Another user's password is no better.
    with pytest.raises(TokenError):
        idp.password_grant("alice", idp.user("bob").password)
    assert "not-alices-password" not in str(refused.value)


def test_wrong_password_in_the_browser_shows_the_form_again(idp: LocalIdP) -> None:
    _, challenge = pkce_pair()
    url = idp.authorize_url(redirect_uri=f"http://127.0.0.1:{procs.free_port()}/callback",
                            code_challenge=challenge, state="s1")
    with pytest.raises(LoginRejected, match="Wrong username or password"):
        idp.browser_login(url, "alice", "not-alices-password")
    with pytest.raises(LoginRejected):
        idp.browser_login(url, "mallory", "whatever")


def _code_flow(idp: LocalIdP, username: str, *, port: int,
               client_id: str | None = None) -> tuple[str, dict[str, Any], str, str]:
    """Authorize in the 'browser' and return (callback URL, query, redirect_uri, verifier)."""
    redirect_uri = f"http://127.0.0.1:{port}/callback"
    verifier, challenge = pkce_pair()
    url = idp.authorize_url(redirect_uri=redirect_uri, code_challenge=challenge,
                            state=f"state-{port}", nonce=f"nonce-{port}", client_id=client_id)
    callback = idp.browser_login(url, username)
    query = {k: v[0] for k, v in parse_qs(urlsplit(callback).query).items()}
    return callback, query, redirect_uri, verifier


def test_authorization_code_with_pkce_on_any_loopback_port(idp: LocalIdP) -> None:
    for port in (procs.free_port(), procs.free_port()):
        callback, query, redirect_uri, verifier = _code_flow(idp, "alice", port=port)
        parts = urlsplit(callback)
        assert (parts.scheme, parts.hostname, parts.port, parts.path) == \
            ("http", "127.0.0.1", port, "/callback")
        assert query["state"] == f"state-{port}"
        assert query["iss"] == idp.issuer  # RFC 9207
        tokens = idp.exchange_code(query["code"], redirect_uri=redirect_uri,
                                   code_verifier=verifier)
        assert tokens["refresh_token"], "offline_access must give a refresh token without prompt"
        claims = verify_id_token(idp, tokens["id_token"])
        assert_identity(idp, claims, "alice")
        assert claims["nonce"] == f"nonce-{port}"

        with pytest.raises(TokenError) as reused:
            idp.exchange_code(query["code"], redirect_uri=redirect_uri, code_verifier=verifier)
        assert reused.value.error == "invalid_grant"


def test_code_exchange_needs_the_right_verifier(idp: LocalIdP) -> None:
    _, query, redirect_uri, _ = _code_flow(idp, "bob", port=procs.free_port())
    other_verifier, _ = pkce_pair()
    with pytest.raises(TokenError) as refused:
        idp.exchange_code(query["code"], redirect_uri=redirect_uri, code_verifier=other_verifier)
    assert refused.value.error == "invalid_grant"


def test_authorization_without_pkce_is_refused(idp: LocalIdP) -> None:
    port = procs.free_port()
    url = idp.authorize_url(redirect_uri=f"http://127.0.0.1:{port}/callback",
                            code_challenge="x" * 43, state="s2")
    url = url.replace("&code_challenge=" + "x" * 43, "").replace("&code_challenge_method=S256", "")
    assert "code_challenge" not in url
    callback = idp.browser_login(url, "alice")
    query = parse_qs(urlsplit(callback).query)
    assert urlsplit(callback).port == port
    assert query["error"] == ["invalid_request"]
    assert "code" not in query


def test_harness_authorization_code_login(idp: LocalIdP) -> None:
    tokens = idp.authorization_code_login("carol")
    assert_identity(idp, verify_id_token(idp, tokens["id_token"]), "carol")


def test_refresh_gives_a_new_verified_id_token_and_rotates(idp: LocalIdP) -> None:
    first = idp.authorization_code_login("bob")
    refreshed = idp.refresh(first["refresh_token"])
    claims = verify_id_token(idp, refreshed["id_token"])
    assert_identity(idp, claims, "bob")
    # Compared by fingerprint so a failure never prints a token.
    assert fingerprint(refreshed["refresh_token"]) != fingerprint(first["refresh_token"])
    # Rotation: the used refresh token is spent, and replaying it revokes the grant.
    with pytest.raises(TokenError) as replayed:
        idp.refresh(first["refresh_token"])
    assert replayed.value.error == "invalid_grant"
    with pytest.raises(TokenError):
        idp.refresh(refreshed["refresh_token"])


def test_refresh_after_password_grant(idp: LocalIdP) -> None:
    tokens = idp.password_grant("alice")
    refreshed = idp.refresh(tokens["refresh_token"])
    assert_identity(idp, verify_id_token(idp, refreshed["id_token"]), "alice")
    with pytest.raises(TokenError) as other_client:
        idp.refresh(refreshed["refresh_token"], client_id=ES256_CLIENT_ID)
    assert other_client.value.error == "invalid_grant"


@pytest.mark.parametrize("approve_with", ["user_code", "verification_uri_complete"])
def test_device_flow(idp: LocalIdP, approve_with: str) -> None:
    started = idp.device_authorization()
    assert started["interval"] == idp.device_poll_interval == 1
    assert started["verification_uri"] == f"{idp.issuer}/device"
    assert started["verification_uri_complete"].startswith(f"{idp.issuer}/device?user_code=")
    with pytest.raises(TokenError) as pending:
        idp.poll_device_token(started["device_code"])
    assert pending.value.error == "authorization_pending"

    idp.approve_device(started[approve_with], "bob")

    tokens = idp.poll_device_token(started["device_code"])
    assert tokens["refresh_token"]
    claims = verify_id_token(idp, tokens["id_token"])
    assert_identity(idp, claims, "bob")
    assert claims["groups"] == ["ops"]
    with pytest.raises(TokenError):
        idp.poll_device_token(started["device_code"])  # a device code is used once


def test_device_approval_with_a_wrong_password_is_refused(idp: LocalIdP) -> None:
    started = idp.device_authorization()
    with pytest.raises(LoginRejected):
        idp.approve_device(started["user_code"], "bob", "not-bobs-password")
    with pytest.raises(TokenError) as pending:
        idp.poll_device_token(started["device_code"])
    assert pending.value.error == "authorization_pending"


def test_harness_device_login(idp: LocalIdP) -> None:
    tokens = idp.device_login("alice")
    assert_identity(idp, verify_id_token(idp, tokens["id_token"]), "alice")


def test_es256_client_gets_es256_id_tokens(idp: LocalIdP) -> None:
    by_password = idp.password_grant("alice", client_id=ES256_CLIENT_ID)["id_token"]
    by_code = idp.authorization_code_login("alice", client_id=ES256_CLIENT_ID)["id_token"]
    for token in (by_password, by_code):
        claims = verify_id_token(idp, token, client_id=ES256_CLIENT_ID, alg="ES256")
        assert_identity(idp, claims, "alice")
        assert kid_of(token) == idp.signing_kids["ES256"]
        with pytest.raises(UnsupportedAlgorithmError):
            verify_id_token(idp, token, client_id=ES256_CLIENT_ID, alg="RS256")


def test_verification_catches_tampering_and_wrong_audience(idp: LocalIdP) -> None:
    token = idp.password_grant("bob")["id_token"]
    header, payload, signature = token.split(".")
    forged_payload = payload[:-4] + ("AAAA" if payload[-4:] != "AAAA" else "BBBB")
    with pytest.raises(BadSignatureError):
        verify_id_token(idp, f"{header}.{forged_payload}.{signature}")
    with pytest.raises(InvalidClaimError, match="aud"):
        verify_id_token(idp, token, client_id="someone-else")


def test_id_token_for_fixture(idp: LocalIdP, id_token_for: Callable[..., str]) -> None:
    assert_identity(idp, verify_id_token(idp, id_token_for("bob")), "bob")


def test_token_lifetimes_are_configurable(idp_factory: Callable[..., LocalIdP]) -> None:
    short = idp_factory(id_token_ttl=42, access_token_ttl=30)
    tokens = short.password_grant("alice")
    claims = verify_id_token(short, tokens["id_token"])
    assert claims["exp"] - claims["iat"] == 42
    assert tokens["expires_in"] == 30


def test_set_groups_takes_effect_at_the_next_login(idp_factory: Callable[..., LocalIdP]) -> None:
    private = idp_factory()
    before = private.password_grant("alice")
    assert verify_id_token(private, before["id_token"])["groups"] == ["devs", "readers"]

    private.set_groups("alice", ["platform-admins"])

    after = verify_id_token(private, private.password_grant("alice")["id_token"])
    assert after["groups"] == ["platform-admins"]
    by_browser = private.authorization_code_login("alice")
    assert verify_id_token(private, by_browser["id_token"])["groups"] == ["platform-admins"]
    # A refresh reads the user again too.
    refreshed = private.refresh(before["refresh_token"])
    assert verify_id_token(private, refreshed["id_token"])["groups"] == ["platform-admins"]


def test_key_rotation(idp_factory: Callable[..., LocalIdP]) -> None:
    private = idp_factory()
    old_token = private.password_grant("alice")["id_token"]
    old_kid = kid_of(old_token)
    port, issuer = private.port, private.issuer

    new_kid = private.rotate_keys("RS256")

    assert new_kid != old_kid
    assert (private.port, private.issuer) == (port, issuer)
    jwks = private.jwks()
    assert {old_kid, new_kid} <= {k["kid"] for k in jwks["keys"]}
    assert_identity(private, verify_id_token(private, old_token, jwks=jwks), "alice")
    new_token = private.password_grant("alice")["id_token"]
    assert kid_of(new_token) == new_kid
    assert_identity(private, verify_id_token(private, new_token, jwks=jwks), "alice")
    # Without the new key, the new token must not verify.
    old_only = {"keys": [k for k in jwks["keys"] if k["kid"] != new_kid]}
    with pytest.raises(InvalidKeyIdError):
        verify_id_token(private, new_token, jwks=old_only)

    es_kid = private.rotate_keys("ES256")
    es_token = private.password_grant("alice", client_id=ES256_CLIENT_ID)["id_token"]
    assert kid_of(es_token) == es_kid
    verify_id_token(private, es_token, client_id=ES256_CLIENT_ID, alg="ES256")
    verify_id_token(private, old_token)  # still published after a second restart


# --- the BROWSER stand-in ------------------------------------------------------------------------


class _Callback(http.server.BaseHTTPRequestHandler):
    hits: list[str]

    def do_GET(self) -> None:
        self.hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"you can close this window")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def loopback_listener() -> Iterator[tuple[int, list[str]]]:
    """A stand-in for the CLI's callback listener: (port, paths it was asked for)."""
    hits: list[str] = []
    handler = type("Handler", (_Callback,), {"hits": hits})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], hits
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


_OPEN_IN_BROWSER = "import sys, webbrowser; sys.exit(0 if webbrowser.open(sys.argv[1]) else 3)"


def _open_with_webbrowser(url: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """What the CLI does: webbrowser.open(url), with BROWSER pointing at the fake browser."""
    return subprocess.run(
        [sys.executable, "-c", _OPEN_IN_BROWSER, url],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=60, check=False)


def test_fake_browser_completes_a_login_through_webbrowser(
        idp: LocalIdP, loopback_listener: tuple[int, list[str]]) -> None:
    port, hits = loopback_listener
    verifier, challenge = pkce_pair()
    redirect_uri = f"http://127.0.0.1:{port}/callback"
    url = idp.authorize_url(redirect_uri=redirect_uri, code_challenge=challenge, state="fb-state")

    result = _open_with_webbrowser(url, idp.browser_env("alice"))

    assert result.returncode == 0, result.stderr
    assert len(hits) == 1
    query = {k: v[0] for k, v in parse_qs(urlsplit(hits[0]).query).items()}
    assert urlsplit(hits[0]).path == "/callback"
    assert query["state"] == "fb-state"
    tokens = idp.exchange_code(query["code"], redirect_uri=redirect_uri, code_verifier=verifier)
    assert_identity(idp, verify_id_token(idp, tokens["id_token"]), "alice")
    leaked = idp.user("alice").password in result.stderr
    assert not leaked


def test_fake_browser_fails_clearly_on_a_wrong_password(
        idp: LocalIdP, loopback_listener: tuple[int, list[str]]) -> None:
    port, hits = loopback_listener
    _, challenge = pkce_pair()
    url = idp.authorize_url(redirect_uri=f"http://127.0.0.1:{port}/callback",
                            code_challenge=challenge, state="fb-bad")
    env = {**os.environ, **idp.browser_env("alice", "not-alices-password")}
    result = subprocess.run([sys.executable, str(FAKE_BROWSER), url], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert "rejected the login for 'alice'" in result.stderr
    assert "not-alices-password" not in result.stderr
    assert hits == []


def test_fake_browser_approves_a_device(idp: LocalIdP) -> None:
    started = idp.device_authorization()
    env = {**os.environ, **idp.browser_env("carol")}
    result = subprocess.run(
        [sys.executable, str(FAKE_BROWSER), started["verification_uri_complete"]],
        env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    tokens = idp.poll_device_token(started["device_code"])
    assert_identity(idp, verify_id_token(idp, tokens["id_token"]), "carol")
