"""Objects like the concierge's own with one mark changed, for tests that it never touches them.

The concierge deletes only objects that carry every one of its marks
(`pinniped_concierge.user_ownership`, `revocations.read_marker`); a decoy is
one of its real objects with exactly one of them changed or removed.
"""

from __future__ import annotations

import copy
from typing import Any

from pinniped_concierge.kubeapi import Obj


def changed(obj: Obj, path: tuple[str, ...], value: Any) -> Obj:
    """A copy of `obj` with `metadata.<path>` set to `value` (None: removed)."""
    decoy = copy.deepcopy(obj)
    target = decoy["metadata"]
    for key in path[:-1]:
        target = target[key]
    if value is None:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return decoy
