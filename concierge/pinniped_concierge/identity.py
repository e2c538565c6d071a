"""From verified ID token claims to the Kubernetes identity a user may impersonate.

This is where "never let a user impersonate a name they did not prove" is
enforced for names: the username and groups come only from signed claims,
get the authenticator's prefixes (so an IdP cannot mint names that collide
with other origins), and anything that would start with `system:` is refused
outright, since those names carry the cluster's own privileges
(system:masters, system:serviceaccount:..., system:node:...).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pinniped_apis import wire
from pinniped_apis.authentication import JWTAuthenticatorFields
from pinniped_apis.constants import MAX_GROUPS
from pinniped_concierge.errors import Reason, Rejected

RESERVED_PREFIX = "system:"


@dataclass(frozen=True)
class IdentityMapper:
    username_claim: str
    groups_claim: str | None
    username_prefix: str
    groups_prefix: str

    @classmethod
    def from_config(cls, config: JWTAuthenticatorFields) -> IdentityMapper:
        """From a file authenticator or a JWTAuthenticator object's spec."""
        return cls(config.claims.username, config.claims.groups,
                   config.username_prefix, config.groups_prefix)

    def map(self, claims: Mapping[str, object]) -> wire.Identity:
        """Build the identity, or raise `Rejected` naming which rule the claims broke."""
        raw_username = claims.get(self.username_claim)
        if raw_username is None:
            raise Rejected(Reason.MISSING_CLAIM, f"no {self.username_claim!r} claim")
        if not isinstance(raw_username, str) or not raw_username.strip():
            raise Rejected(Reason.BAD_CLAIM_TYPE,
                           f"claim {self.username_claim!r} is not a non-empty string")
        if self.username_claim == "email":
            verified = claims.get("email_verified", True)
            if not isinstance(verified, bool):
                raise Rejected(Reason.BAD_CLAIM_TYPE, "claim 'email_verified' is not a boolean")
            if not verified:
                raise Rejected(Reason.EMAIL_NOT_VERIFIED, "email_verified is false")
        username = _checked_name(self.username_prefix, raw_username, "username")
        return wire.Identity(username=username, groups=self._groups(claims))

    def _groups(self, claims: Mapping[str, object]) -> tuple[str, ...]:
        if self.groups_claim is None:
            return ()
        raw = claims.get(self.groups_claim)
        if raw is None:
            return ()
        if not isinstance(raw, list) or not all(isinstance(g, str) and g for g in raw):
            raise Rejected(Reason.BAD_CLAIM_TYPE,
                           f"claim {self.groups_claim!r} is not a list of non-empty strings")
        if len(raw) > MAX_GROUPS:
            raise Rejected(Reason.CLAIM_TOO_LARGE, f"{len(raw)} groups, at most {MAX_GROUPS}")
        groups = (_checked_name(self.groups_prefix, g, "group") for g in raw)
        return tuple(dict.fromkeys(groups))  # de-duplicated, order kept


def _checked_name(prefix: str, value: str, what: str) -> str:
    """`prefix + value`, if it is a name a person could read and type.

    White space is looked for around the claim's own value: behind a prefix,
    " alice" would pass for a name without any (`corp: alice`), yet to a
    reader it is alice's.
    """
    name = prefix + value
    if len(name) > wire.MAX_NAME_LENGTH:
        raise Rejected(Reason.CLAIM_TOO_LARGE,
                       f"{what} longer than {wire.MAX_NAME_LENGTH} characters")
    if not name.isprintable() or value != value.strip():
        raise Rejected(Reason.INVALID_NAME,
                       f"{what} has control characters or surrounding white space")
    if name.lower().startswith(RESERVED_PREFIX):
        raise Rejected(Reason.RESERVED_NAME, f"{what} would start with {RESERVED_PREFIX!r}")
    return name
