"""The identity mapping's limits are exact: the largest allowed claim passes, one more does not.

A limit that is off by one refuses a real user whose IdP sends exactly as
many groups (or as long a name) as the documented maximum.
"""

from __future__ import annotations

import pytest

from pinniped_apis.constants import MAX_GROUPS, MAX_NAME_LENGTH
from pinniped_concierge.errors import Reason, Rejected
from pinniped_concierge.identity import IdentityMapper

MAPPER = IdentityMapper("email", "groups", "corp:", "corp:")


def test_exactly_the_most_groups_are_accepted_and_one_more_is_not() -> None:
    groups = [f"g{i}" for i in range(MAX_GROUPS)]
    identity = MAPPER.map({"email": "a@example.com", "groups": groups})
    assert len(identity.groups) == MAX_GROUPS
    with pytest.raises(Rejected) as info:
        MAPPER.map({"email": "a@example.com", "groups": [*groups, "one-more"]})
    assert info.value.reason == Reason.CLAIM_TOO_LARGE


@pytest.mark.parametrize("what", ["username", "group"])
def test_a_name_of_exactly_the_longest_length_is_accepted(what: str) -> None:
    """The length counts the prefix too: it is the name the cluster sees."""
    longest = "x" * (MAX_NAME_LENGTH - len("corp:"))

    def claims(value: str) -> dict[str, object]:
        return ({"email": value} if what == "username"
                else {"email": "a@example.com", "groups": [value]})

    identity = MAPPER.map(claims(longest))
    names = [identity.username] if what == "username" else list(identity.groups)
    assert names == [f"corp:{longest}"]
    assert len(names[0]) == MAX_NAME_LENGTH
    with pytest.raises(Rejected) as info:
        MAPPER.map(claims(longest + "x"))
    assert info.value.reason == Reason.CLAIM_TOO_LARGE

