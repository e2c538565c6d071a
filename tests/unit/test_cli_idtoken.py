"""ID token verification errors: safe to print, and the kid rule the module documents."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from pinniped_cli.oidc import idtoken
from pinniped_cli.oidc.idtoken import IDTokenInvalid

ISSUER = "https://idp.test"
CLIENT = "pinniped-cli"
NOW = dt.datetime.now(dt.UTC)


def _key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"alg": "RS256"}, auto_kid=True)


def _token(key: RSAKey, header: dict[str, Any]) -> str:
    now = int(NOW.timestamp())
    return jwt.encode({"alg": "RS256", **header}, {
        "iss": ISSUER, "aud": CLIENT, "sub": "alice", "iat": now, "exp": now + 300}, key)


def _jwks(*keys: RSAKey) -> dict[str, Any]:
    return dict(KeySet(list(keys)).as_dict(private=False))


def _verify(raw: str, jwks: dict[str, Any]) -> idtoken.VerifiedIDToken:
    return idtoken.verify(raw, jwks, issuer=ISSUER, client_id=CLIENT, now=NOW)


def test_a_kid_chosen_by_whoever_made_the_token_cannot_drive_the_terminal() -> None:
    key = _key()
    raw = _token(key, {"kid": "\x1b]0;pwned\x07\x1b[2J"})
    with pytest.raises(IDTokenInvalid) as caught:
        _verify(raw, _jwks(key, _key()))
    message = str(caught.value)
    assert "signature does not verify" in message
    assert "?]0;pwned??[2J" in message  # shown, but with its control characters replaced
    assert "\x1b" not in message
    assert "\x07" not in message


def test_a_token_without_a_kid_verifies_only_against_a_single_key() -> None:
    key = _key()
    raw = _token(key, {})
    assert _verify(raw, _jwks(key)).claims["sub"] == "alice"
    with pytest.raises(IDTokenInvalid, match="No key for kid"):
        _verify(raw, _jwks(key, _key()))


# --- the clock-skew leeway, at its edges ----------------------------------------------------
#
# The leeway is 60 s, written out here on purpose: a test computing its cases from
# idtoken.LEEWAY_SECONDS would move with it, and pass whatever it was changed to.

STAMP = 1_900_000_000
AT = dt.datetime.fromtimestamp(STAMP, dt.UTC)


def _with_times(key: RSAKey, **times: int) -> str:
    claims = {"iss": ISSUER, "aud": CLIENT, "sub": "alice", "iat": STAMP - 10,
              "exp": STAMP + 300, **times}
    return jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key)


@pytest.mark.parametrize(("times", "refused"), [
    # exp: accepted until 60 s after it, refused from then on
    ({"exp": STAMP - 59, "iat": STAMP - 300}, None),
    ({"exp": STAMP - 60, "iat": STAMP - 300}, "expired"),
    ({"exp": STAMP - 61, "iat": STAMP - 300}, "expired"),
    # iat: up to 60 s in the future (a clock behind the IdP's), not one more
    ({"iat": STAMP + 60}, None),
    ({"iat": STAMP + 61}, "issue time"),
    # nbf: the same
    ({"nbf": STAMP + 60}, None),
    ({"nbf": STAMP + 61}, "not valid yet"),
])
def test_the_leeway_is_sixty_seconds_either_side(times: dict[str, int],
                                                 refused: str | None) -> None:
    key = _key()
    raw, jwks = _with_times(key, **times), _jwks(key)
    if refused is None:
        assert idtoken.verify(raw, jwks, issuer=ISSUER, client_id=CLIENT, now=AT).claims
    else:
        with pytest.raises(IDTokenInvalid, match=refused):
            idtoken.verify(raw, jwks, issuer=ISSUER, client_id=CLIENT, now=AT)
