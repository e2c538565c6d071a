"""Claims to identity: prefixes always, `system:` never, types and sizes checked."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from localenv.hostile_tokens import (
    CONTROLS,
    CORPUS,
    Control,
    HostileToken,
    expected_identity,
    offline_authenticators,
)
from pinniped_apis import wire
from pinniped_apis.constants import MAX_GROUPS
from pinniped_concierge.errors import Reason, Rejected
from pinniped_concierge.identity import IdentityMapper

MAPPER = IdentityMapper("email", "groups", "corp:", "corp:")


def rejection(mapper: IdentityMapper, claims: dict[str, Any]) -> Reason:
    with pytest.raises(Rejected) as info:
        mapper.map(claims)
    return info.value.reason


def test_prefixes_are_applied_and_groups_deduplicated_in_order() -> None:
    identity = MAPPER.map({"email": "alice@example.com", "groups": ["devs", "readers", "devs"]})
    assert identity == wire.Identity("corp:alice@example.com", ("corp:devs", "corp:readers"))


def test_missing_groups_claim_means_no_groups() -> None:
    assert MAPPER.map({"email": "carol@example.com"}).groups == ()
    assert IdentityMapper("sub", None, "x:", "x:").map({"sub": "c", "groups": ["g"]}).groups == ()


def test_empty_prefixes_give_the_raw_names() -> None:
    mapper = IdentityMapper("preferred_username", "groups", "", "")
    assert mapper.map({"preferred_username": "alice", "groups": ["devs"]}) == \
        wire.Identity("alice", ("devs",))


@pytest.mark.parametrize(("claims", "reason"), [
    ({}, Reason.MISSING_CLAIM),
    ({"email": 42}, Reason.BAD_CLAIM_TYPE),
    ({"email": ""}, Reason.BAD_CLAIM_TYPE),
    ({"email": "   "}, Reason.BAD_CLAIM_TYPE),
    ({"email": ["alice@example.com"]}, Reason.BAD_CLAIM_TYPE),
    ({"email": "a@example.com", "groups": "devs"}, Reason.BAD_CLAIM_TYPE),
    ({"email": "a@example.com", "groups": ["devs", 7]}, Reason.BAD_CLAIM_TYPE),
    ({"email": "a@example.com", "groups": ["devs", ""]}, Reason.BAD_CLAIM_TYPE),
    ({"email": "a@example.com", "groups": {"devs": True}}, Reason.BAD_CLAIM_TYPE),
    ({"email": "a@example.com", "email_verified": False}, Reason.EMAIL_NOT_VERIFIED),
    ({"email": "a@example.com", "email_verified": "true"}, Reason.BAD_CLAIM_TYPE),
    ({"email": "a" * 300}, Reason.CLAIM_TOO_LARGE),
    ({"email": "a@example.com", "groups": ["g" * 260]}, Reason.CLAIM_TOO_LARGE),
    ({"email": "a@example.com", "groups": [f"g{i}" for i in range(MAX_GROUPS + 1)]},
     Reason.CLAIM_TOO_LARGE),
    ({"email": "alice\n@example.com"}, Reason.INVALID_NAME),
    ({"email": "a@example.com", "groups": ["devs\r\nImpersonate-Group: x"]},
     Reason.INVALID_NAME),
])
def test_unusable_claims_are_refused(claims: dict[str, Any], reason: Reason) -> None:
    assert rejection(MAPPER, claims) == reason


@pytest.mark.parametrize(("claims"), [
    {"email": "system:admin"},
    {"email": "System:Admin"},
    {"email": "a@example.com", "groups": ["devs", "system:masters"]},
    {"email": "system:serviceaccount:kube-system:default"},
])
def test_system_names_are_refused_without_prefix(claims: dict[str, Any]) -> None:
    assert rejection(IdentityMapper("email", "groups", "", ""), claims) == Reason.RESERVED_NAME


@pytest.mark.parametrize(("prefix", "claim"), [("system", ":admin"), ("sys", "tem:masters"),
                                               ("SYSTEM", ":nodes")])
def test_a_prefix_and_a_claim_may_not_add_up_to_a_system_name(prefix: str, claim: str) -> None:
    """A prefix without the colon is allowed; the name it makes with the claim is checked."""
    mapper = IdentityMapper("email", "groups", prefix, prefix)
    assert rejection(mapper, {"email": claim}) == Reason.RESERVED_NAME
    assert rejection(mapper, {"email": "alice", "groups": [claim]}) == Reason.RESERVED_NAME


def test_system_names_behind_a_prefix_are_harmless() -> None:
    identity = MAPPER.map({"email": "system:admin", "groups": ["system:masters"]})
    assert identity == wire.Identity("corp:system:admin", ("corp:system:masters",))


def test_email_verified_true_is_fine() -> None:
    assert MAPPER.map({"email": "a@example.com", "email_verified": True}).username == \
        "corp:a@example.com"


# --- the hostile token corpus (localenv.hostile_tokens): claims the verifier lets through --

MAPPED_CASES = [case for case in CORPUS if case.mapped]


@pytest.mark.parametrize("case", MAPPED_CASES, ids=[case.id for case in MAPPED_CASES])
def test_hostile_claims_are_refused_by_the_mapping_for_their_reason(case: HostileToken) -> None:
    """Validly signed, registered claims in order: only the identity mapping stands between
    these claims and a cluster identity."""
    offline = offline_authenticators()
    claims = asyncio.run(offline.verifier(case.authenticator).verify(case.make(offline.forge)))
    assert rejection(offline.mapper(case.authenticator), claims) == case.reason


@pytest.mark.parametrize("control", CONTROLS, ids=[control.id for control in CONTROLS])
def test_genuine_tokens_map_to_names_under_their_own_prefix(control: Control) -> None:
    """The corpus's controls: each authenticator accepts its own genuine tokens, and names
    that look like another authenticator's (corp:) or the cluster's (system:) stay under
    the prefix of the authenticator that verified them."""
    offline = offline_authenticators()
    token = control.make(offline.forge)
    claims = asyncio.run(offline.verifier(control.authenticator).verify(token))
    identity = offline.mapper(control.authenticator).map(claims)
    assert identity == expected_identity(control, token)
