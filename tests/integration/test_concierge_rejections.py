"""Logins refused for what they ask of the concierge rather than for their token's content.

What is wrong with a token itself (forged, broken, wrong claims, names that
would reach `system:`) is the hostile token corpus, run through the real
concierge in test_concierge_hostile_tokens.py. Here: an authenticator that
does not exist, and tokens that make the concierge go to the IdP for keys.
Each refusal must look like every other to the client, give its reason in
the audit log, and leave the token out of every log.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from joserfc.jwk import RSAKey

from localenv.concierge import LocalConcierge, MintingIssuer
from localenv.hostile_tokens import send_login, uniform_failure
from pinniped_apis import wire

pytestmark = pytest.mark.integration


def assert_refused(concierge: LocalConcierge, token: str, authenticator: str, reason: str,
                   kind: str = wire.JWT_AUTHENTICATOR_KIND) -> None:
    before = len(concierge.audit_lines())
    response = send_login(concierge, token, authenticator, kind)
    assert response.status_code == 200, response.text
    assert response.json() == uniform_failure(authenticator, kind)
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


def test_unknown_authenticator(concierge: LocalConcierge,
                               id_token_for: Callable[..., str]) -> None:
    token = id_token_for("alice")
    assert_refused(concierge, token, "no-such-authenticator", "unknown_authenticator")
    assert_refused(concierge, token, "corp", "unknown_authenticator",
                   kind="WebhookAuthenticator")


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
