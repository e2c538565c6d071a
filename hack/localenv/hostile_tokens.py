"""Forged and broken ID tokens, each with the reason the concierge must refuse it for.

The corpus is one list, `CORPUS`, run twice: in unit tests against the
concierge's `JWTAuthenticator` and `IdentityMapper` on in-memory issuers
(`OfflineAuthenticators`), and against the real concierge process
(tests/integration/test_concierge_hostile_tokens.py). Each case says how to
make its token from a `Forge` (an issuer whose keys we hold, plus genuine
tokens of the IdP behind `corp`), which authenticator it is presented to, and
the `errors.Reason` the audit line must give. Both levels use the same cases,
so a token the unit fakes refuse for one reason cannot quietly pass, or fail
for another reason, in the real process.

The authenticators are those of the shared local concierge
(`localenv.concierge.LocalConcierge`): `minted` (the `MintingIssuer`, prefix
minted:), `corp` and `corp-es256` (the real IdP for two clients, prefix
corp:), and `minted-raw` (the `MintingIssuer` with no prefixes at all, in a
concierge of its own, for names that would reach `system:`).

`CONTROLS` are the genuine counterparts: tokens each authenticator accepts,
including names that merely look like another authenticator's or the
cluster's (they stay under their own prefix). Without them a corpus that
refused everything would prove nothing.
"""

from __future__ import annotations

import base64
import functools
import itertools
import json
import os
import ssl
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from localenv import leak_sentinel
from localenv.concierge import DEFAULT_PREFIX, MINTED_PREFIX, LocalConcierge, MintingIssuer
from localenv.idp import DEFAULT_CLIENT_ID, ES256_CLIENT_ID
from pinniped_apis import wire
from pinniped_concierge.errors import Reason

MINTED = "minted"
RAW = "minted-raw"
CORP = "corp"
CORP_ES256 = "corp-es256"
#: Each authenticator's username and groups prefix, as the local concierges configure them.
PREFIXES = {MINTED: MINTED_PREFIX, RAW: "", CORP: DEFAULT_PREFIX, CORP_ES256: DEFAULT_PREFIX}
#: Each authenticator's audience: the real IdP's two clients, and the minting issuer's.
AUDIENCES = {CORP: DEFAULT_CLIENT_ID, CORP_ES256: ES256_CLIENT_ID}

_B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def b64(data: bytes) -> str:
    """base64url without padding, as in a compact JWS (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _json(value: Mapping[str, Any] | bytes) -> bytes:
    return value if isinstance(value, bytes) else json.dumps(dict(value)).encode()


@dataclass(frozen=True)
class Forge:
    """What the cases are made from: an issuer whose private keys we hold (trusted as
    `minted` and `minted-raw`), and genuine ID tokens of the IdP behind `corp`."""

    minted: MintingIssuer
    #: client id -> a genuine ID token of the real IdP for that client.
    real_token: Callable[[str], str]

    def claims(self, **overrides: Any) -> dict[str, Any]:
        """The minting issuer's valid claims, `overrides` replacing (None: removing) some."""
        body = self.minted.claims() | overrides
        return {k: v for k, v in body.items() if v is not None}

    def mint(self, claims: Mapping[str, Any] | None = None, **options: Any) -> str:
        """A token signed by a published key (see `MintingIssuer.mint`)."""
        return self.minted.mint(claims, **options)

    def sign(self, header: Mapping[str, Any] | bytes, payload: Mapping[str, Any] | bytes) -> str:
        """Exactly these header and payload bytes, with a valid RS256 signature by the
        published RSA key: whatever the verifier then refuses, it refuses for what the
        bytes say, not for the signature."""
        signing_input = f"{b64(_json(header))}.{b64(_json(payload))}"
        private = self.minted.rsa_key.private_key
        assert private is not None
        signature = private.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{b64(signature)}"

    def header(self, **fields: Any) -> dict[str, Any]:
        """The header `mint` would write for the RSA key, `fields` replacing some."""
        return {"alg": "RS256", "kid": self.minted.rsa_key.kid, "typ": "JWT"} | fields

    def es256_der_signed(self) -> tuple[str, bytes]:
        """An ES256 signing input and its DER-encoded signature by the published EC key."""
        head = {"alg": "ES256", "kid": self.minted.ec_key.kid, "typ": "JWT"}
        signing_input = f"{b64(_json(head))}.{b64(_json(self.claims()))}"
        private = self.minted.ec_key.private_key
        assert private is not None
        return signing_input, private.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))


def stranger_key() -> RSAKey:
    """An RSA key nobody published, with a fresh kid of its own."""
    return RSAKey.generate_key(2048, parameters={"alg": "RS256", "use": "sig"}, auto_kid=True)


def unpinned(key: RSAKey) -> RSAKey:
    """The same key without `alg`/`use`, so that it signs with any algorithm of its type."""
    data = {k: v for k, v in key.as_dict(private=True).items() if k not in ("alg", "use")}
    return type(key).import_key(data)


def tamper(token: str, **claims: Any) -> str:
    """Change claims but keep the genuine signature."""
    head, payload, signature = token.split(".")
    body = json.loads(unb64(payload)) | claims
    return f"{head}.{b64(json.dumps(body).encode())}.{signature}"


def with_segment(token: str, index: int, segment: str) -> str:
    parts = token.split(".")
    parts[index] = segment
    return ".".join(parts)


@dataclass(frozen=True)
class WireRefusal:
    """Refused before it is a login at all: the HTTP status, the audit reason, and the
    field the Status names."""

    status: int
    reason: Reason
    field: str


@dataclass(frozen=True)
class HostileToken:
    id: str
    make: Callable[[Forge], str] = field(repr=False)
    #: What the verifier (or, when `mapped`, the identity mapping) refuses it for.
    reason: Reason
    #: The authenticator it is presented to.
    authenticator: str = MINTED
    #: Its signature and registered claims are fine; the identity mapping refuses it.
    mapped: bool = False
    #: Over HTTP it never reaches the verifier (too big for the request, say).
    wire: WireRefusal | None = None


def _case(id: str, reason: Reason, make: Callable[[Forge], str], **options: Any
          ) -> HostileToken:
    return HostileToken(id, make, reason, **options)


def _claims(id: str, reason: Reason, authenticator: str = MINTED, *,
            omit: tuple[str, ...] = (), **values: Any) -> HostileToken:
    """Signed by the published key, with these claims: refused by the identity mapping."""
    return HostileToken(id, lambda f: f.mint(values, omit=omit), reason, authenticator,
                        mapped=True)


def _registered(id: str, reason: Reason, **values: Any) -> HostileToken:
    """Signed by the published key, refused for a registered claim (iss, aud, exp...);
    a value None removes the claim, a `_FromIssuer` is computed from the issuer."""
    def make(f: Forge) -> str:
        resolved = {k: v.compute(f.minted) if isinstance(v, _FromIssuer) else v
                    for k, v in values.items()}
        return f.mint(resolved, omit=[k for k, v in resolved.items() if v is None])

    return HostileToken(id, make, reason)


def _pointing(name: str, value: object) -> HostileToken:
    """Signed by the published key, with a header parameter that names a key."""
    return HostileToken(f"header-{name}", lambda f: f.mint(header={name: value}),
                        Reason.UNSUPPORTED_HEADER)


def _now(f: Forge) -> int:
    return int(f.minted.claims()["iat"])


def _algorithms() -> Iterator[HostileToken]:
    """`alg`: checked before any key is looked at, which defeats `none` and HS256 keyed
    with the public key (the verifier would otherwise use the JWKS as an HMAC secret)."""
    yield _case("alg-none", Reason.UNSUPPORTED_ALGORITHM, lambda f: f.minted.mint_unsigned())
    yield _case("alg-none-with-a-signature", Reason.UNSUPPORTED_ALGORITHM,
                lambda f: f.sign(f.header(alg="none"), f.claims()))
    yield _case("alg-None-capitalised", Reason.UNSUPPORTED_ALGORITHM,
                lambda f: f.sign(f.header(alg="None"), f.claims()))
    yield _case("hs256-keyed-with-the-public-key", Reason.UNSUPPORTED_ALGORITHM,
                lambda f: f.minted.mint_hs256_with_public_key())
    yield _case("alg-lower-case", Reason.UNSUPPORTED_ALGORITHM,
                lambda f: f.sign(f.header(alg="rs256"), f.claims()))
    yield _case("alg-not-a-string", Reason.UNSUPPORTED_ALGORITHM,
                lambda f: f.sign(f.header(alg=["RS256"]), f.claims()))
    yield _case("alg-missing", Reason.MALFORMED_TOKEN,
                lambda f: f.sign({"kid": f.minted.rsa_key.kid}, f.claims()))


def _keys() -> Iterator[HostileToken]:
    """Keys: only the JWKS's, by `kid` and matching `alg`; a signature by any other key fails,
    whatever `kid` it claims."""
    yield _case("impostor-key-with-the-published-kid", Reason.BAD_SIGNATURE,
                lambda f: f.mint(key=f.minted.impostor_key()))
    yield _case("impostor-key-without-a-kid", Reason.BAD_SIGNATURE,
                lambda f: _without_kid(f, stranger_key()))
    yield _case("key-not-in-the-jwks", Reason.UNKNOWN_KEY, lambda f: f.mint(key=stranger_key()))
    yield _case("kid-pointing-nowhere", Reason.UNKNOWN_KEY,
                lambda f: f.mint(header={"kid": "no-such-key"}))
    yield _case("kid-path-traversal", Reason.UNKNOWN_KEY,
                lambda f: f.mint(header={"kid": "../../../../etc/passwd"}))
    yield _case("kid-not-a-string", Reason.MALFORMED_TOKEN,
                lambda f: f.sign(f.header(kid=42), f.claims()))
    yield _case("es256-header-naming-the-rsa-key", Reason.UNKNOWN_KEY,
                lambda f: f.mint(alg="ES256", header={"kid": f.minted.rsa_key.kid}))
    yield _case("ps256-under-a-key-published-for-rs256", Reason.UNKNOWN_KEY,
                lambda f: f.mint(alg="PS256", key=unpinned(f.minted.rsa_key),
                                header={"kid": f.minted.rsa_key.kid}))
    yield _case("real-idp-token-to-the-minted-issuer", Reason.UNKNOWN_KEY,
                lambda f: f.real_token(DEFAULT_CLIENT_ID))


def _headers() -> Iterator[HostileToken]:
    """Headers that point at keys (RFC 8725 3.10: never followed), that we would have to
    understand (`crit`, `b64`), or that say the JWT is not an ID token (`typ`)."""
    yield _pointing("jku", "https://127.0.0.1:9/jwks")
    yield _pointing("x5u", "https://127.0.0.1:9/cert.pem")
    yield _pointing("x5c", ["MIIBszCCAVmgAwIBAgIUQ"])
    yield _pointing("x5t", b64(b"\x01" * 20))
    yield _pointing("x5t#S256", b64(b"\x01" * 32))
    yield _case("header-jwk-embedding-the-signers-key", Reason.UNSUPPORTED_HEADER,
                _embedded_jwk)
    yield _case("header-crit", Reason.UNSUPPORTED_HEADER,
                lambda f: f.sign(f.header(crit=["exp"], exp=_now(f) + 60), f.claims()))
    yield _case("header-b64-false", Reason.UNSUPPORTED_HEADER,
                lambda f: f.sign(f.header(b64=False, crit=["b64"]), f.claims()))
    yield _case("typ-access-token", Reason.UNSUPPORTED_HEADER,
                lambda f: f.mint(header={"typ": "at+jwt"}))
    yield _case("typ-logout-token", Reason.UNSUPPORTED_HEADER,
                lambda f: f.mint(header={"typ": "logout+jwt"}))


def _duplicates() -> Iterator[HostileToken]:
    """Duplicate JSON names, validly signed: two readers may each take a different one, so
    the token must mean nothing rather than two things."""
    yield _case("duplicate-alg-in-the-header", Reason.MALFORMED_TOKEN, lambda f: f.sign(
        _duplicated(f.header(alg="HS256"), "alg", "RS256"), f.claims()))
    yield _case("duplicate-kid-in-the-header", Reason.MALFORMED_TOKEN, lambda f: f.sign(
        _duplicated(f.header(kid="no-such-key"), "kid", f.minted.rsa_key.kid), f.claims()))
    yield _case("duplicate-email-in-the-payload", Reason.MALFORMED_TOKEN, lambda f: f.sign(
        f.header(), _duplicated(f.claims(), "email", "root@example.com")))
    yield _case("duplicate-iss-in-the-payload", Reason.MALFORMED_TOKEN, lambda f: f.sign(
        f.header(), _duplicated(f.claims(iss="https://evil.example"), "iss", f.minted.issuer)))


def _tampering() -> Iterator[HostileToken]:
    """Changed after signing, or signed wrongly: the signature no longer matches."""
    yield _case("tampered-payload", Reason.BAD_SIGNATURE,
                lambda f: tamper(f.mint(), email="root@example.com", groups=["admins"]))
    yield _case("tampered-header", Reason.BAD_SIGNATURE, lambda f: with_segment(
        f.mint(), 0, b64(_json(f.header(cty="JWT")))))
    yield _case("tampered-real-idp-token", Reason.BAD_SIGNATURE, lambda f: tamper(
        f.real_token(DEFAULT_CLIENT_ID), email="alice@example.com", groups=["devs", "admins"]),
        authenticator=CORP)
    yield _case("signature-stripped", Reason.BAD_SIGNATURE,
                lambda f: with_segment(f.mint(), 2, ""))
    yield _case("signature-truncated", Reason.BAD_SIGNATURE, lambda f: with_segment(
        f.mint(), 2, b64(unb64(f.mint().split(".")[2])[:-16])))
    yield _case("signature-of-another-token", Reason.BAD_SIGNATURE, lambda f: with_segment(
        f.mint(), 2, f.mint({"email": "bob@example.com"}).split(".")[2]))
    yield _case("es256-signature-all-zero", Reason.BAD_SIGNATURE,
                lambda f: f"{f.es256_der_signed()[0]}.{b64(bytes(64))}")
    yield _case("es256-signature-der-encoded", Reason.BAD_SIGNATURE,
                lambda f: "{}.{}".format(*_der(f.es256_der_signed())))


def _registered_claims() -> Iterator[HostileToken]:
    """`iss`, `aud`/`azp`, `exp`, `nbf`, `iat`: validly signed, wrong for us (or now)."""
    yield _registered("iss-with-a-trailing-slash", Reason.WRONG_ISSUER,
                      iss=_FromIssuer(lambda i: i.issuer + "/"))
    yield _registered("iss-in-upper-case", Reason.WRONG_ISSUER,
                      iss=_FromIssuer(lambda i: i.issuer.upper()))
    yield _registered("iss-missing", Reason.WRONG_ISSUER, iss=None)
    yield _registered("iss-of-another-issuer", Reason.WRONG_ISSUER, iss="https://evil.example")
    yield _registered("iss-not-a-string", Reason.WRONG_ISSUER,
                      iss=_FromIssuer(lambda i: [i.issuer]))
    yield _registered("aud-missing", Reason.MISSING_CLAIM, aud=None)
    yield _registered("aud-of-another-client", Reason.WRONG_AUDIENCE, aud="another-client")
    yield _registered("aud-in-another-case", Reason.WRONG_AUDIENCE,
                      aud=_FromIssuer(lambda i: i.audience.upper()))
    yield _registered("aud-empty-list", Reason.WRONG_AUDIENCE, aud=[])
    yield _registered("aud-not-a-string", Reason.BAD_CLAIM_TYPE, aud=12)
    yield _registered("aud-several-without-azp", Reason.MISSING_CLAIM,
                      aud=_FromIssuer(lambda i: [i.audience, "another-client"]))
    yield _registered("aud-several-azp-another-client", Reason.WRONG_AUTHORIZED_PARTY,
                      aud=_FromIssuer(lambda i: [i.audience, "another-client"]),
                      azp="another-client")
    yield _case("expired", Reason.EXPIRED, lambda f: f.mint(
        {"iat": _now(f) - 900, "nbf": _now(f) - 900, "exp": _now(f) - 120}))
    yield _registered("exp-missing", Reason.MISSING_CLAIM, exp=None)
    yield _registered("exp-a-string", Reason.BAD_CLAIM_TYPE, exp="tomorrow")
    yield _registered("exp-a-boolean", Reason.BAD_CLAIM_TYPE, exp=True)
    yield _case("exp-too-big-for-a-float", Reason.BAD_CLAIM_TYPE,
                lambda f: f.sign(f.header(), _raw_number(f.claims(), "exp", "9" * 400)))
    yield _case("exp-nan", Reason.MALFORMED_TOKEN,
                lambda f: f.sign(f.header(), _raw_number(f.claims(), "exp", "NaN")))
    yield _case("nbf-in-the-future", Reason.NOT_YET_VALID,
                lambda f: f.mint({"nbf": _now(f) + 120, "exp": _now(f) + 600}))
    yield _case("iat-far-in-the-future", Reason.ISSUED_IN_FUTURE, lambda f: f.mint(
        {"iat": _now(f) + 10 * 365 * 86400, "exp": _now(f) + 11 * 365 * 86400}, omit=["nbf"]))
    yield _case("iat-too-big-for-a-float", Reason.BAD_CLAIM_TYPE,
                lambda f: f.sign(f.header(), _raw_number(f.claims(), "iat", "1" + "0" * 400)))


def _payloads() -> Iterator[HostileToken]:
    """A validly signed payload that is not one strict JSON object: the issuer signed it,
    yet it must not reach a 5xx, nor be read as another reader would not read it."""
    yield _case("payload-not-json", Reason.MALFORMED_TOKEN,
                lambda f: f.sign(f.header(), b"email=root@example.com"))
    yield _case("payload-a-json-array", Reason.MALFORMED_TOKEN,
                lambda f: f.sign(f.header(), json.dumps([f.claims()]).encode()))
    yield _case("payload-deeply-nested", Reason.MALFORMED_TOKEN, lambda f: f.sign(
        f.header(), json.dumps(f.claims()).encode()[:-1] + b', "x": '
        + b"[" * 5000 + b"]" * 5000 + b"}"))
    yield _case("payload-not-utf8", Reason.MALFORMED_TOKEN, lambda f: f.sign(
        f.header(), json.dumps(f.claims(), ensure_ascii=False).encode("latin-1")[:-1]
        + b', "x": "\xff"}'))
    yield _case("payload-utf16", Reason.MALFORMED_TOKEN,
                lambda f: f.sign(f.header(), json.dumps(f.claims()).encode("utf-16-le")))
    yield _case("payload-with-a-byte-order-mark", Reason.MALFORMED_TOKEN,
                lambda f: f.sign(f.header(), b"\xef\xbb\xbf" + json.dumps(f.claims()).encode()))


def _usernames() -> Iterator[HostileToken]:
    """The username claim: missing, of the wrong type, unverified, or not a name a person
    could read (controls, invisible and direction-changing characters, white space)."""
    yield _claims("username-missing", Reason.MISSING_CLAIM, omit=("email",))
    yield _claims("username-null", Reason.MISSING_CLAIM, email=None)
    yield _claims("username-a-number", Reason.BAD_CLAIM_TYPE, email=42)
    yield _claims("username-a-list", Reason.BAD_CLAIM_TYPE, email=["alice@example.com"])
    yield _claims("username-empty", Reason.BAD_CLAIM_TYPE, email="")
    yield _claims("username-blank", Reason.BAD_CLAIM_TYPE, email="   ")
    yield _claims("email-not-verified", Reason.EMAIL_NOT_VERIFIED, email_verified=False)
    yield _claims("email-verified-a-string", Reason.BAD_CLAIM_TYPE, email_verified="true")
    yield _claims("username-with-a-newline", Reason.INVALID_NAME, email="alice\n@example.com")
    yield _claims("username-with-a-nul", Reason.INVALID_NAME, email="alice@example.com\x00")
    yield _claims("username-with-a-right-to-left-override", Reason.INVALID_NAME,
                  email="alice\u202emoc.elpmaxe@")
    yield _claims("username-with-a-zero-width-space", Reason.INVALID_NAME,
                  email="ali\u200bce@example.com")
    yield HostileToken("username-with-a-lone-surrogate", lambda f: f.sign(
        f.header(), f.claims(email="alice\udc80@example.com")), Reason.INVALID_NAME,
        mapped=True)
    yield _claims("username-with-surrounding-space", Reason.INVALID_NAME,
                  email=" alice@example.com")
    yield _claims("username-over-long", Reason.CLAIM_TOO_LARGE,
                  email="a" * 300 + "@example.com")


def _groups() -> Iterator[HostileToken]:
    """The groups claim: not a list of names, a name that is not one, or too many."""
    yield _claims("groups-a-string", Reason.BAD_CLAIM_TYPE, groups="devs")
    yield _claims("groups-an-object", Reason.BAD_CLAIM_TYPE, groups={"devs": True})
    yield _claims("groups-holding-a-number", Reason.BAD_CLAIM_TYPE, groups=["devs", 7])
    yield _claims("groups-holding-null", Reason.BAD_CLAIM_TYPE, groups=["devs", None])
    yield _claims("groups-holding-a-list", Reason.BAD_CLAIM_TYPE, groups=[["devs"]])
    yield _claims("groups-holding-an-empty-name", Reason.BAD_CLAIM_TYPE, groups=["devs", ""])
    yield _claims("group-smuggling-a-header", Reason.INVALID_NAME,
                  groups=["devs\r\nImpersonate-Group: system:masters"])
    yield _claims("group-with-surrounding-space", Reason.INVALID_NAME, groups=[" devs"])
    yield _claims("group-over-long", Reason.CLAIM_TOO_LARGE, groups=["g" * 300])
    yield _claims("groups-too-many", Reason.CLAIM_TOO_LARGE,
                  groups=[f"g{i}" for i in range(300)])
    yield _case("groups-by-the-thousand", Reason.TOKEN_TOO_LARGE,
                lambda f: f.mint({"groups": [f"g{i}" for i in range(2000)]}))


def _system_names() -> Iterator[HostileToken]:
    """Names that would be the cluster's own, on the authenticator with no prefix to keep
    them apart (behind a prefix they are harmless: see `CONTROLS`)."""
    yield _claims("raw-username-system-admin", Reason.RESERVED_NAME, RAW, email="system:admin")
    yield _claims("raw-username-a-service-account", Reason.RESERVED_NAME, RAW,
                  email="system:serviceaccount:kube-system:default")
    yield _claims("raw-username-a-node", Reason.RESERVED_NAME, RAW, email="system:node:worker")
    yield _claims("raw-group-system-masters", Reason.RESERVED_NAME, RAW,
                  groups=["devs", "system:masters"])
    yield _claims("raw-group-system-masters-in-another-case", Reason.RESERVED_NAME, RAW,
                  groups=["System:Masters"])


def _envelopes() -> Iterator[HostileToken]:
    """The compact serialization itself: segments, base64url, the header's JSON, characters."""
    yield _case("empty", Reason.MALFORMED_TOKEN, lambda f: "",
                wire=WireRefusal(400, Reason.MALFORMED_REQUEST, "spec.token"))
    yield _case("one-segment", Reason.MALFORMED_TOKEN, lambda f: f.mint().split(".")[1])
    yield _case("two-segments", Reason.MALFORMED_TOKEN,
                lambda f: f.mint().rpartition(".")[0])
    yield _case("four-segments", Reason.MALFORMED_TOKEN, lambda f: f.mint() + "." + b64(b"x"))
    yield _case("five-segments-an-encrypted-jwt", Reason.MALFORMED_TOKEN, _jwe_shaped)
    yield _case("empty-header-segment", Reason.MALFORMED_TOKEN,
                lambda f: with_segment(f.mint(), 0, ""))
    yield _case("header-not-base64", Reason.MALFORMED_TOKEN,
                lambda f: with_segment(f.mint(), 0, "!!!!"))
    yield _case("signature-not-base64", Reason.MALFORMED_TOKEN,
                lambda f: with_segment(f.mint(), 2, "*" + f.mint().split(".")[2][1:]))
    yield _case("header-with-base64-padding", Reason.MALFORMED_TOKEN,
                lambda f: _padded(f.mint(), 0))
    yield _case("signature-with-base64-padding", Reason.MALFORMED_TOKEN,
                lambda f: _padded(f.mint(), 2))
    yield _case("signature-in-standard-base64", Reason.MALFORMED_TOKEN, _standard_alphabet)
    yield _case("signature-non-canonical-base64", Reason.MALFORMED_TOKEN, _non_canonical)
    yield _case("space-inside", Reason.MALFORMED_TOKEN,
                lambda f: f.mint()[:-20] + " " + f.mint()[-20:])
    yield _case("trailing-newline", Reason.MALFORMED_TOKEN, lambda f: f.mint() + "\n")
    yield _case("leading-space", Reason.MALFORMED_TOKEN, lambda f: " " + f.mint())
    yield _case("line-wrapped", Reason.MALFORMED_TOKEN, lambda f: _wrapped(f.mint(), 64))
    yield _case("header-not-json", Reason.MALFORMED_TOKEN,
                lambda f: f.sign(b"alg=RS256", f.claims()))
    yield _case("header-a-json-array", Reason.MALFORMED_TOKEN,
                lambda f: f.sign(json.dumps([f.header()]).encode(), f.claims()))
    yield _case("header-json-null", Reason.MALFORMED_TOKEN, lambda f: f.sign(b"null", f.claims()))
    yield _case("header-deeply-nested", Reason.MALFORMED_TOKEN,
                lambda f: f.sign(b"[" * 5000 + b"]" * 5000, f.claims()))
    yield _case("header-not-utf8", Reason.MALFORMED_TOKEN, lambda f: f.sign(
        json.dumps(f.header()).encode()[:-1] + b', "x": "\xff"}', f.claims()))
    yield _case("header-utf16", Reason.MALFORMED_TOKEN,
                lambda f: f.sign(json.dumps(f.header()).encode("utf-16-le"), f.claims()))
    yield _case("non-ascii-character", Reason.MALFORMED_TOKEN,
                lambda f: f.mint()[:-1] + "\u00e9")
    yield _case("nul-character", Reason.MALFORMED_TOKEN, lambda f: f.mint() + "\x00")
    yield _case("lone-surrogate-character", Reason.MALFORMED_TOKEN,
                lambda f: f.mint()[:-1] + "\udc80",
                wire=WireRefusal(400, Reason.MALFORMED_REQUEST, "spec.token"))


def _sizes() -> Iterator[HostileToken]:
    """Bigger than the authenticator takes, than a request may carry, or than both by far."""
    yield _case("over-the-wire-limit", Reason.TOKEN_TOO_LARGE,
                lambda f: _padded_to(f, wire.MAX_TOKEN_BYTES + 1024),
                wire=WireRefusal(400, Reason.MALFORMED_REQUEST, "spec.token"))
    yield _case("one-megabyte", Reason.TOKEN_TOO_LARGE, lambda f: _padded_to(f, 1024 * 1024),
                wire=WireRefusal(413, Reason.REQUEST_TOO_LARGE, "body"))


def _audiences() -> Iterator[HostileToken]:
    """One authenticator's token, presented to another with a different audience."""
    yield _case("corp-token-to-corp-es256", Reason.WRONG_AUDIENCE,
                lambda f: f.real_token(DEFAULT_CLIENT_ID), authenticator=CORP_ES256)
    yield _case("corp-es256-token-to-corp", Reason.WRONG_AUDIENCE,
                lambda f: f.real_token(ES256_CLIENT_ID), authenticator=CORP)


@dataclass(frozen=True)
class _FromIssuer:
    """A claim value computed from the forge's issuer (its URL or audience) when minted."""

    compute: Callable[[MintingIssuer], Any]


def _without_kid(f: Forge, key: RSAKey) -> str:
    """Signed by `key`, with no kid: the verifier must try the published keys, and fail."""
    return jwt.encode({"alg": "RS256", "typ": "JWT"}, f.claims(), key, algorithms=["RS256"])


def _embedded_jwk(f: Forge) -> str:
    """Signed by an attacker's key, which the header itself offers as the verification key."""
    attacker = stranger_key()
    header = {"jwk": dict(attacker.as_dict(private=False)), "kid": attacker.kid}
    return f.mint(key=attacker, header=header)


def _duplicated(body: Mapping[str, Any], key: str, second: Any) -> bytes:
    """`body` as JSON with `key` appearing a second time, holding `second`."""
    extra = f", {json.dumps(key)}: {json.dumps(second)}}}"
    return json.dumps(dict(body)).encode()[:-1] + extra.encode()


def _raw_number(body: Mapping[str, Any], key: str, literal: str) -> bytes:
    """`body` as JSON with `key` holding a number literal json.dumps would never write."""
    rest = {k: v for k, v in body.items() if k != key}
    return json.dumps(rest).encode()[:-1] + f', "{key}": {literal}}}'.encode()


def _der(signed: tuple[str, bytes]) -> tuple[str, str]:
    signing_input, der = signed
    decode_dss_signature(der)  # it is DER: the JOSE form would be r || s, 64 bytes
    return signing_input, b64(der)


def _jwe_shaped(f: Forge) -> str:
    header = b64(json.dumps({"alg": "RSA-OAEP", "enc": "A256GCM",
                             "kid": f.minted.rsa_key.kid}).encode())
    return ".".join([header, b64(os.urandom(256)), b64(os.urandom(12)),
                     b64(json.dumps(f.claims()).encode()), b64(os.urandom(16))])


def _padded(token: str, index: int) -> str:
    """A segment with the `=` padding RFC 7515 leaves out (four when its length needs none,
    which is no more valid)."""
    segment = token.split(".")[index]
    return with_segment(token, index, segment + "=" * (-len(segment) % 4 or 4))


def _standard_alphabet(f: Forge) -> str:
    """The signature in standard base64 (+ and /): the same bytes, another alphabet."""
    for _ in range(50):
        token = f.mint()
        signature = base64.b64encode(unb64(token.split(".")[2])).rstrip(b"=").decode()
        if "+" in signature or "/" in signature:
            return with_segment(token, 2, signature)
    raise AssertionError("no signature with + or / in 50 tries")


def _non_canonical(f: Forge) -> str:
    """The signature's last character with its unused low bits set: it decodes to the very
    same bytes, yet it is another string (another token hash for the same token)."""
    token = f.mint()
    signature = token.split(".")[2]
    assert len(signature) % 4 == 2  # 256 bytes: the last character carries 4 unused bits
    last = _B64URL[_B64URL.index(signature[-1]) | 0b1111]
    assert unb64(signature[:-1] + last) == unb64(signature)
    return with_segment(token, 2, signature[:-1] + last)


def _wrapped(token: str, width: int) -> str:
    return "\n".join(token[i:i + width] for i in range(0, len(token), width))


def _padded_to(f: Forge, size: int) -> str:
    """A well-formed, validly signed token of about `size` bytes."""
    token = f.mint({"padding": ""})
    return f.mint({"padding": "x" * int((size - len(token)) * 3 / 4)})


CORPUS: tuple[HostileToken, ...] = tuple(itertools.chain(
    _algorithms(), _keys(), _headers(), _duplicates(), _tampering(), _registered_claims(),
    _payloads(), _usernames(), _groups(), _system_names(), _envelopes(), _sizes(),
    _audiences()))


@dataclass(frozen=True)
class Control:
    """A genuine token that `authenticator` accepts, as `prefix + its email` in `prefix + its
    groups`: names that look like another authenticator's or the cluster's stay under it."""

    id: str
    make: Callable[[Forge], str] = field(repr=False)
    authenticator: str = MINTED


CONTROLS: tuple[Control, ...] = (
    Control("minted-rs256", lambda f: f.mint()),
    Control("minted-es256", lambda f: f.mint(alg="ES256")),
    Control("minted-without-typ",
            lambda f: f.sign({"alg": "RS256", "kid": f.minted.rsa_key.kid}, f.claims())),
    Control("minted-typ-application-jwt", lambda f: f.mint(header={"typ": "application/JWT"})),
    Control("minted-several-audiences-azp-us",
            lambda f: f.mint({"aud": [f.minted.audience, "another-client"],
                              "azp": f.minted.audience})),
    Control("minted-names-like-corp", lambda f: f.mint(
        {"email": "corp:alice@example.com", "groups": ["corp:admins", "corp:devs"]})),
    Control("minted-names-like-system", lambda f: f.mint(
        {"email": "system:admin", "groups": ["system:masters"]})),
    # Without email_verified the email counts as verified, as in Kubernetes' own OIDC
    # authenticator (`claims.?email_verified.orValue(true)`): many IdPs never send it.
    Control("minted-without-email-verified", lambda f: f.mint(omit=["email_verified"])),
    Control("raw", lambda f: f.mint(), RAW),
    Control("corp", lambda f: f.real_token(DEFAULT_CLIENT_ID), CORP),
    Control("corp-es256", lambda f: f.real_token(ES256_CLIENT_ID), CORP_ES256),
)


def expected_identity(control: Control, token: str) -> wire.Identity:
    """The identity a control token must map to (read from the token, not verified)."""
    claims = json.loads(unb64(token.split(".")[1]))
    prefix = PREFIXES[control.authenticator]
    groups = tuple(prefix + g for g in claims.get("groups") or ())
    return wire.Identity(prefix + claims["email"], groups)


# --- sending them ---------------------------------------------------------------------------


def login_request(authenticator: str,
                  kind: str = wire.JWT_AUTHENTICATOR_KIND) -> wire.TokenCredentialRequest:
    return wire.TokenCredentialRequest.create(token="placeholder",
                                              authenticator_name=authenticator,
                                              authenticator_kind=kind)


def send_login(concierge: LocalConcierge, token: str, authenticator: str,
               kind: str = wire.JWT_AUTHENTICATOR_KIND) -> httpx.Response:
    """POST a login with `token` exactly as given, even one our own models would refuse
    (JSON-escaped, so that a lone surrogate reaches the server as its JSON escape)."""
    leak_sentinel.register(leak_sentinel.HOSTILE_TOKEN, token)
    body = login_request(authenticator, kind).to_wire()
    body["spec"]["token"] = token
    context = ssl.create_default_context(cafile=str(concierge.ca_file))
    with httpx.Client(verify=context, timeout=30) as http:
        return http.post(concierge.url + wire.TOKEN_CREDENTIAL_REQUEST_PATH,
                         content=json.dumps(body).encode(),
                         headers={"Content-Type": "application/json"})


def uniform_failure(authenticator: str,
                    kind: str = wire.JWT_AUTHENTICATOR_KIND) -> dict[str, Any]:
    """The one answer to every refused login for `authenticator`, whatever the reason."""
    return wire.failure_response(login_request(authenticator, kind), wire.AUTHENTICATION_FAILED)


# --- in-memory issuers, for unit tests ---------------------------------------------------


def offline_issuer(issuer: str, audience: str) -> MintingIssuer:
    """A `MintingIssuer` with fresh keys and no server: its `documents` are served by
    `OfflineAuthenticators.fetch` instead."""
    return MintingIssuer(
        issuer=issuer, ca_file=Path(os.devnull), audience=audience,
        rsa_key=RSAKey.generate_key(2048, parameters={"alg": "RS256", "use": "sig"},
                                    auto_kid=True),
        ec_key=ECKey.generate_key("P-256", parameters={"alg": "ES256", "use": "sig"},
                                  auto_kid=True))


class OfflineAuthenticators:
    """The corpus's four authenticators on in-memory issuers, configured as the local
    concierge configures them: `minted` and `minted-raw` trust `minted`; `corp` and
    `corp-es256` trust `corp`, an issuer standing in for the real IdP."""

    def __init__(self) -> None:
        self.minted = offline_issuer("https://minted.example", "minted-audience")
        self.corp = offline_issuer("https://corp.example", DEFAULT_CLIENT_ID)
        self.forge = Forge(self.minted, self._real_token)
        self.fetches: list[str] = []

    def _real_token(self, client_id: str) -> str:
        alg = "ES256" if client_id == ES256_CLIENT_ID else "RS256"
        return self.corp.mint({"aud": client_id}, alg=alg,
                              email="bob@example.com")

    async def fetch(self, url: str) -> object:
        from pinniped_concierge.jwt_authenticator import FetchError

        self.fetches.append(url)
        for issuer in (self.minted, self.corp):
            if url.startswith(issuer.issuer + "/"):
                document = issuer.documents(url.removeprefix(issuer.issuer))
                if document is not None:
                    return document
        raise FetchError(f"{url}: HTTP 404")

    def issuer_of(self, authenticator: str) -> MintingIssuer:
        return self.minted if authenticator in (MINTED, RAW) else self.corp

    def settings(self, authenticator: str) -> Any:
        """The authenticator's config, as the local concierge's file gives it."""
        from pinniped_concierge.config import ClaimsConfig, JWTAuthenticatorConfig

        issuer = self.issuer_of(authenticator)
        prefix = PREFIXES[authenticator]
        return JWTAuthenticatorConfig(
            name=authenticator, issuer=issuer.issuer,
            audience=AUDIENCES.get(authenticator, issuer.audience), ca_file=None,
            claims=ClaimsConfig(username="email", groups="groups"), username_prefix=prefix,
            groups_prefix=prefix, allow_empty_prefixes=prefix == "")

    def verifier(self, authenticator: str) -> Any:
        from pinniped_concierge.jwt_authenticator import JWTAuthenticator

        return JWTAuthenticator(self.settings(authenticator), self.fetch, clock_skew_seconds=10,
                                min_refresh_interval_seconds=1)

    def mapper(self, authenticator: str) -> Any:
        from pinniped_concierge.identity import IdentityMapper

        return IdentityMapper.from_config(self.settings(authenticator))


@functools.cache
def offline_authenticators() -> OfflineAuthenticators:
    """One set of in-memory issuers for a whole test run: their keys take a while to make,
    and every test gets new verifiers (`verifier`), so none sees another's state."""
    return OfflineAuthenticators()
