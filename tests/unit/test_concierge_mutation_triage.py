"""hack/mutation_triage: only a change inside a message is called cosmetic, nothing else.

The mutation report sets these survivors apart from those that need judgment; a
triage that called a changed reason or condition "cosmetic" would hide exactly
the survivors that matter.
"""

from __future__ import annotations

import textwrap

import mutation_triage
import pytest

ORIGINAL = '''
def x_check__mutmut_orig(claims):
    if claims.get("exp") is None:
        log.warning("token %s has no exp", claims.get("jti"))
        raise Rejected(Reason.MISSING_CLAIM, f"no {'exp'!r} claim")
    return claims
'''


def mutant_of(old: str, new: str) -> str:
    assert old in ORIGINAL
    return ORIGINAL.replace(old, new).replace("__mutmut_orig", "__mutmut_1")


@pytest.mark.parametrize(("old", "new", "kind"), [
    ("f\"no {'exp'!r} claim\"", "None", mutation_triage.AUDIT),
    ("f\"no {'exp'!r} claim\"", "f\"no {'XXexpXX'!r} claim\"", mutation_triage.AUDIT),
    (", f\"no {'exp'!r} claim\")", ")", mutation_triage.AUDIT),  # the detail left out
    ('"token %s has no exp"', '"XXtoken %s has no expXX"', mutation_triage.LOG),
    ('claims.get("jti"))', "None)", mutation_triage.LOG),
    ("Reason.MISSING_CLAIM", "None", None),  # the reason is what operators grep for
    ('claims.get("exp") is None', 'claims.get("exp") is not None', None),
    ("return claims", "return None", None),
])
def test_only_changes_inside_a_message_are_cosmetic(old: str, new: str,
                                                    kind: str | None) -> None:
    source = textwrap.dedent(ORIGINAL) + textwrap.dedent(mutant_of(old, new))
    defs = mutation_triage.functions(source)
    assert mutation_triage.triage(defs, "pinniped_concierge.m.x_check__mutmut_1") == kind
    assert new in mutation_triage.diff(source, defs, "pinniped_concierge.m.x_check__mutmut_1")
