"""Where two authenticators' names could meet, on either prefix, whatever the other shares."""

from __future__ import annotations

from typing import Any

from pinniped_apis.authentication import ClaimMappings, JWTAuthenticatorFields
from pinniped_concierge.prefixes import Overlap, overlap

ISSUER = "https://idp.example"


def fields(**overrides: Any) -> JWTAuthenticatorFields:
    values: dict[str, Any] = {"issuer": ISSUER, "audience": "cli", "username_prefix": "corp:",
                              "groups_prefix": "corp-groups:",
                              "claims": ClaimMappings(username="email", groups="groups")}
    return JWTAuthenticatorFields(**(values | overrides))


def test_a_shared_username_prefix_does_not_excuse_overlapping_group_prefixes() -> None:
    """Same issuer, claims and username prefix may share; their groups must still keep apart:
    with "g:" and "g:x", group "x:admins" of one IdP is group ":admins" of the other."""
    earlier = fields(groups_prefix="g:")
    later = fields(groups_prefix="g:x")
    assert overlap(earlier, later) == Overlap("groupsPrefix", "g:", "g:x")


def test_the_overlap_names_both_prefixes_in_order() -> None:
    """What the refusal tells the operator: which prefix of which authenticator."""
    found = overlap(fields(username_prefix="corp:"), fields(username_prefix="corp:x",
                                                            issuer="https://other.example"))
    assert found == Overlap("usernamePrefix", "corp:", "corp:x")
    message = found.describe("later-idp", "earlier-idp")
    assert "'corp:x' of authenticator 'later-idp'" in message
    assert "'corp:' of authenticator 'earlier-idp'" in message
    assert "Give each authenticator a prefix that neither starts nor is the start of " \
           "another's" in message


def test_identical_authenticators_may_share_both_prefixes() -> None:
    assert overlap(fields(), fields()) is None
    assert overlap(fields(), fields(), may_share=False) == Overlap(
        "usernamePrefix", "corp:", "corp:")
