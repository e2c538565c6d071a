"""The one rule for authenticators sharing the username and group namespaces.

Each authenticator must own its corner of both: with prefixes "corp:" and
"corp:x", user "x:alice" of the first IdP and user ":alice" of the second
both become "corp:x:alice"; with an empty prefix, an IdP can mint any other's
names. Only two authenticators that turn every token into the same identity
may share a prefix: same issuer, same claims mapping, and the very same
prefix (say one per OAuth client), both defined in the same place. Two
JWTAuthenticator objects must also trust the same CA (`spec.tls`): with
another CA, a second object could fetch another server's keys for that
issuer. A JWTAuthenticator object never shares a prefix with a file
authenticator: whoever can create objects must not get the file's names.

The config file refuses an overlap at start (`config`), and a JWTAuthenticator
object that overlaps a file authenticator or an older object is refused in
its status (`cluster_authenticators`); both ask `overlap` here.
"""

from __future__ import annotations

from dataclasses import dataclass

from pinniped_apis.authentication import JWTAuthenticatorFields

#: (camelCase key, attribute) of the two prefixes.
PREFIX_KEYS = (("usernamePrefix", "username_prefix"), ("groupsPrefix", "groups_prefix"))


#: Who may share a prefix, in the words of each place authenticators are defined.
FILE_RULE = "only authenticators with the same issuer, claims and prefix may share one"
OBJECT_RULE = ("only JWTAuthenticators with the same issuer, claims, spec.tls and prefix may "
               "share one")
NEVER_RULE = "a JWTAuthenticator never shares a prefix with the config file's authenticators"


@dataclass(frozen=True)
class Overlap:
    """Where two authenticators' names could meet."""

    key: str  # usernamePrefix or groupsPrefix
    earlier_prefix: str
    later_prefix: str

    def describe(self, later: str, earlier: str, rule: str = FILE_RULE) -> str:
        """Why `later` is refused, naming both authenticators and what to do; `rule` says
        who may share a prefix."""
        return (f"{self.later_prefix!r} of authenticator {later!r} overlaps "
                f"{self.earlier_prefix!r} of authenticator {earlier!r} ({self.key}): one "
                "identity provider could then mint names of the other. Give each "
                f"authenticator a prefix that neither starts nor is the start of another's "
                f"({rule})")


def overlap(earlier: JWTAuthenticatorFields, later: JWTAuthenticatorFields, *,
            may_share: bool = True) -> Overlap | None:
    """The first prefix on which `later` meets `earlier`, or None when they keep apart.

    `may_share` False: not even the same issuer, claims and prefix make room (the two
    are defined in different places, or trust different CAs).
    """
    for key, attribute in PREFIX_KEYS:
        a, b = getattr(earlier, attribute), getattr(later, attribute)
        if not (a.startswith(b) or b.startswith(a)):
            continue
        if may_share and a == b and (earlier.issuer, earlier.claims) == (
                later.issuer, later.claims):
            continue
        return Overlap(key, a, b)
    return None
