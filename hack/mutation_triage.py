"""Tell which surviving mutants change nothing but a message nobody acts on.

Most of what survives a mutation run of the concierge's core is a changed
text: the detail of a `Rejected` (written only to the audit log's `detail`;
the client sees the uniform "authentication failed" whatever it says) or a
log line. Those are cosmetic by construction, and listing them among the
survivors that need a person's judgment would bury the few that matter. So
each survivor's function is compared with the original, node by node, and a
mutant is called cosmetic only when the one place they differ lies inside
such a message. Anything else, including messages a person reads to know what
to do next (a 503's `Unavailable` text, a `ServerError`, a fetch error shown
in an authenticator's status), is left for judgment.
"""

from __future__ import annotations

import ast
import copy
import difflib
import re
from collections.abc import Iterator

#: Calls whose arguments from this position on are a message only the audit log keeps.
AUDIT_DETAIL = {"Rejected": 1}
#: Logger methods: every argument is a log line's text or its values.
LOG_METHODS = frozenset(("debug", "info", "warning", "error", "exception", "critical"))

AUDIT = "audit-log detail"
LOG = "log line"

#: One step from a node towards the difference: (node, field name, list index or None).
Step = tuple[ast.AST, str, int | None]


def functions(source: str) -> dict[str, ast.AST]:
    """Every function and method of a module mutmut wrote, by its (trampoline) name."""
    return {node.name: node for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}


def triage(defs: dict[str, ast.AST], mutant: str) -> str | None:
    """`AUDIT` or `LOG` when `mutant` (as mutmut names it) changes only such a message."""
    match = re.fullmatch(r"(?:\w+\.)*?(x\S+?)__mutmut_(\d+)", mutant)
    if match is None:
        return None
    original = defs.get(f"{match.group(1)}__mutmut_orig")
    mutated = defs.get(f"{match.group(1)}__mutmut_{match.group(2)}")
    if not isinstance(original, ast.FunctionDef | ast.AsyncFunctionDef) or not isinstance(
            mutated, ast.FunctionDef | ast.AsyncFunctionDef):
        return None
    mutated = copy.copy(mutated)
    mutated.name = original.name  # the one difference that is not the mutation
    path = _path_to_difference(original, mutated)
    if path is None:
        return None
    for depth, (node, field, index) in enumerate(path):
        kind = _message_call(node)
        if kind is None:
            continue
        name, first = kind
        if field == "keywords":
            return name
        if field == "args" and index is not None and index >= first:
            return name
        if field == "args" and index is None and depth == len(path) - 1:
            # Arguments added or removed: a message if those before `first` are unchanged.
            other = _node_at(mutated, path[:depth])
            if isinstance(node, ast.Call) and isinstance(other, ast.Call) and all(
                    ast.dump(a) == ast.dump(b)
                    for a, b in zip(node.args[:first], other.args[:first], strict=False)) and (
                    min(len(node.args), len(other.args)) >= first):
                return name
    return None


def _message_call(node: ast.AST) -> tuple[str, int] | None:
    """(kind, index of the first message argument) if `node` is a call that only words."""
    if not isinstance(node, ast.Call):
        return None
    func = node.func
    if isinstance(func, ast.Name) and func.id in AUDIT_DETAIL:
        return AUDIT, AUDIT_DETAIL[func.id]
    if (isinstance(func, ast.Attribute) and func.attr in LOG_METHODS
            and isinstance(func.value, ast.Name) and func.value.id in ("log", "logger")):
        return LOG, 0
    return None


def _path_to_difference(a: ast.AST, b: ast.AST) -> list[Step] | None:
    """The steps from `a` to the one node where `b` differs; None if they differ in several
    places (then the mutant is not one small change of a message)."""
    path: list[Step] = []
    while True:
        if type(a) is not type(b):  # the last step leads to the node that differs
            return path or None
        differing = list(_differing_fields(a, b))
        if not differing:
            return None  # identical: nothing to say
        if len(differing) > 1:
            return [*path, (a, differing[0][0], None)]
        field, index, child_a, child_b = differing[0]
        if child_a is None or child_b is None:
            return [*path, (a, field, index)]
        path.append((a, field, index))
        a, b = child_a, child_b


def _differing_fields(a: ast.AST, b: ast.AST
                      ) -> Iterator[tuple[str, int | None, ast.AST | None, ast.AST | None]]:
    """(field, index, child of a, child of b) for each field in which the two differ; the
    children are None when the difference is not one AST child (a value, or a list whose
    length changed)."""
    for field in a._fields:
        va, vb = getattr(a, field, None), getattr(b, field, None)
        if isinstance(va, list) and isinstance(vb, list):
            if len(va) != len(vb):
                yield field, None, None, None
                continue
            for i, (x, y) in enumerate(zip(va, vb, strict=True)):
                if _dump(x) != _dump(y):
                    yield (field, i, x, y) if isinstance(x, ast.AST) and isinstance(
                        y, ast.AST) else (field, i, None, None)
        elif isinstance(va, ast.AST) and isinstance(vb, ast.AST):
            if ast.dump(va) != ast.dump(vb):
                yield field, None, va, vb
        elif _dump(va) != _dump(vb):
            yield field, None, None, None


def _dump(value: object) -> str:
    return ast.dump(value) if isinstance(value, ast.AST) else repr(value)


def _node_at(root: ast.AST, path: list[Step]) -> ast.AST:
    """Follow the same steps in another tree (to the node at the end of `path`)."""
    node = root
    for _, field, index in path:
        child = getattr(node, field)
        node = child[index] if index is not None else child
    return node


def diff(source: str, defs: dict[str, ast.AST], mutant: str) -> str:
    """The mutant's change as a unified diff of its function (what `mutmut show` prints,
    without starting a process per mutant)."""
    match = re.fullmatch(r"(?:\w+\.)*?(x\S+?)__mutmut_(\d+)", mutant)
    if match is None:
        return ""
    texts = []
    for suffix in ("orig", match.group(2)):
        node = defs.get(f"{match.group(1)}__mutmut_{suffix}")
        segment = ast.get_source_segment(source, node) if node is not None else None
        if segment is None:
            return ""
        lines = segment.splitlines()[1:]  # the def line names the mutant
        texts.append([f"{line}\n" for line in lines])
    return "".join(difflib.unified_diff(texts[0], texts[1], "original", mutant, n=2))
