"""The one rule for authenticators sharing the username and group namespaces.

Each authenticator must own its corner of both: with prefixes "corp:" and
"corp:x", user "x:alice" of the first IdP and user ":alice" of the second
both become "corp:x:alice"; with an empty prefix, an IdP can mint any other's
names. Only two authenticators that turn every token into the same identity
may share a prefix: same issuer, same claims mapping, and the very same
prefix (say one per OAuth client).

The config file refuses an overlap at start (`config`), and a JWTAuthenticator
object that overlaps a file authenticator or an older object is refused in
its status (`cluster_authenticators`); both ask `overlap` here.
"""

from __future__ import annotations

from dataclasses import dataclass

from pinniped_apis.authentication import JWTAuthenticatorFields

#: (camelCase key, attribute) of the two prefixes.
PREFIX_KEYS = (("usernamePrefix", "username_prefix"), ("groupsPrefix", "groups_prefix"))


@dataclass(frozen=True)
class Overlap:
    """Where two authenticators' names could meet."""

    key: str  # usernamePrefix or groupsPrefix
    earlier_prefix: str
    later_prefix: str

    def describe(self, later: str, earlier: str) -> str:
        """Why `later` is refused, naming both authenticators and what to do."""
        return (f"{self.later_prefix!r} of authenticator {later!r} overlaps "
                f"{self.earlier_prefix!r} of authenticator {earlier!r} ({self.key}): one "
                "identity provider could then mint names of the other. Give each "
                "authenticator a prefix that neither starts nor is the start of another's "
                "(only authenticators with the same issuer, claims and prefix may share one)")


def overlap(earlier: JWTAuthenticatorFields, later: JWTAuthenticatorFields) -> Overlap | None:
    """The first prefix on which `later` meets `earlier`, or None when they keep apart."""
    for key, attribute in PREFIX_KEYS:
        a, b = getattr(earlier, attribute), getattr(later, attribute)
        if not (a.startswith(b) or b.startswith(a)):
            continue
        if a == b and (earlier.issuer, earlier.claims) == (later.issuer, later.claims):
            continue
        return Overlap(key, a, b)
    return None
