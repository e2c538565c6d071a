"""ID token verification, done before the token is stored or sent anywhere.

The concierge checks the token again, but the CLI must not hand an
unverified token to anyone: a compromised network path or a confused IdP
would otherwise make us forward (and cache) a token we cannot vouch for.
Checks: the signature against the issuer's JWKS with an asymmetric-only alg
allow-list, iss, aud (and azp when there are several audiences), exp, nbf,
iat, and the nonce of this login when there is one.

The key is the JWKS entry named by the token's `kid`. A token without a kid
verifies only against a JWKS of exactly one key: against several, joserfc
does not try each in turn, so it fails (as "no key for kid 'None'"). IdPs
that publish several keys put a kid in their tokens.
"""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pinniped_cli.errors import LoginError
from pinniped_cli.redact import printable

#: Asymmetric algorithms only: never `none`, never HS* (the JWKS is public).
ALLOWED_ALGS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                "ES256", "ES384", "ES512", "EdDSA")
LEEWAY_SECONDS = 60


class IDTokenInvalid(LoginError):
    pass


@dataclass(frozen=True)
class VerifiedIDToken:
    raw: str = field(repr=False)
    claims: Mapping[str, Any]

    @property
    def expiry(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(int(self.claims["exp"]), dt.UTC)


def verify(raw: str, jwks: Mapping[str, Any], *, issuer: str, client_id: str,
           now: dt.datetime, nonce: str | None = None) -> VerifiedIDToken:
    """Verify `raw` or raise IDTokenInvalid saying which check failed (never the token)."""
    from joserfc import jwt
    from joserfc.errors import JoseError
    from joserfc.jwk import KeySet

    try:
        keys = KeySet.import_key_set(dict(jwks))  # type: ignore[arg-type]
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise IDTokenInvalid("the identity provider's JWKS is not usable "
                             f"({type(exc).__name__}); ask its administrator.") from exc
    try:
        token = jwt.decode(raw, keys, algorithms=list(ALLOWED_ALGS))
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise IDTokenInvalid(f"the ID token's signature does not verify ({_reason(exc)}); "
                             "log in again, and if it persists check --issuer.") from exc
    claims = dict(token.claims)
    _check_claims(claims, issuer=issuer, client_id=client_id, now=now, nonce=nonce)
    return VerifiedIDToken(raw=raw, claims=claims)


def _check_claims(claims: dict[str, Any], *, issuer: str, client_id: str, now: dt.datetime,
                  nonce: str | None) -> None:
    def bad(what: str) -> IDTokenInvalid:
        return IDTokenInvalid(f"the ID token was refused: {what}. Log in again; if it persists, "
                              "check --issuer and --client-id.")

    if claims.get("iss") != issuer:
        raise bad("its issuer (iss) is not --issuer")
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or client_id not in audiences:
        raise bad("its audience (aud) does not include --client-id")
    if len(audiences) > 1 and claims.get("azp") != client_id:
        raise bad("it has several audiences and its azp is not --client-id")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise bad("it has no subject (sub)")
    timestamp = now.timestamp()
    exp, iat, nbf = claims.get("exp"), claims.get("iat"), claims.get("nbf")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise bad("it has no expiry (exp)")
    if exp + LEEWAY_SECONDS <= timestamp:
        raise bad("it has expired (check this computer's clock if you just logged in)")
    if not isinstance(iat, int | float) or isinstance(iat, bool) \
            or iat - LEEWAY_SECONDS > timestamp:
        raise bad("its issue time (iat) is missing or in the future")
    if nbf is not None and (not isinstance(nbf, int | float) or isinstance(nbf, bool)
                            or nbf - LEEWAY_SECONDS > timestamp):
        raise bad("it is not valid yet (nbf)")
    if nonce is not None:
        got = claims.get("nonce")
        if not isinstance(got, str) or not hmac.compare_digest(got.encode(), nonce.encode()):
            raise bad("its nonce does not match this login (a replayed or mixed-up response)")


def _reason(exc: Exception) -> str:
    """The exception's class and short text, safe for a terminal.

    joserfc's messages never include the whole token, but may quote parts of
    its header (a kid, an alg), which the IdP or whoever forged the token chose.
    """
    text = printable(str(getattr(exc, "description", None) or exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
