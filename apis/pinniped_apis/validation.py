"""pydantic's validation errors, as messages that name the field and never quote the input.

`str(ValidationError)` includes the offending value, and for a token that
value is the secret itself, so no error from a model is ever shown as is.
Each error becomes `<field path>: <what is accepted>`, where the path is
written the way a person reads a JSON document (`spec.authenticator.name`,
`authenticators[0].usernamePrefix`) and the problem says what to send instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError
    from pydantic_core import ErrorDetails


#: A string that is not valid Unicode text (an unpaired UTF-16 surrogate, which JSON's
#: `\uXXXX` escapes can carry), in the words a person can act on.
NOT_UNICODE = "must be valid Unicode text (it holds an unpaired UTF-16 surrogate)"


class WireError(ValueError):
    """A document that does not have the expected shape; `field` names the culprit."""

    def __init__(self, field_path: str, problem: str) -> None:
        super().__init__(f"{field_path}: {problem}")
        self.field = field_path
        self.problem = problem


def field_path(loc: Sequence[int | str], root: str = "body") -> str:
    """`("spec", "groups", 0)` as `spec.groups[0]`; the empty path is `root`."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or root


def problem(error: ErrorDetails) -> str:
    """What is wrong with one field, in words that say what would be accepted."""
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind in _FIXED:
        return _FIXED[kind]
    if kind == "literal_error":
        return f"must be {ctx.get('expected', 'one of the documented values')}"
    if kind in ("string_too_short", "too_short") and ctx.get("min_length") == 1:
        return "must not be empty"
    if kind in ("string_too_short", "too_short"):
        return f"must have at least {ctx.get('min_length')} {_unit(kind)}"
    if kind in ("string_too_long", "too_long"):
        return f"must have at most {ctx.get('max_length')} {_unit(kind)}"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        return f"must be {_COMPARISONS[kind]} {next(iter(ctx.values()), '')}"
    if kind == "string_pattern_mismatch":
        return f"must match the pattern {ctx.get('pattern')}"
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", "is not valid"))
    return str(error["msg"]).lower()  # pydantic's own words; they never quote the input


def first_error(exc: ValidationError) -> tuple[str, str]:
    """The first error's field path and problem: what a person fixes first."""
    error = exc.errors(include_input=False, include_url=False)[0]
    return field_path(error["loc"]), problem(error)


def _unit(kind: str) -> str:
    return "characters" if kind.startswith("string") else "items"


_FIXED: dict[str, str] = {
    "missing": "is required",
    "extra_forbidden": "is not a known field (check the spelling)",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "bool_type": "must be true or false",
    "float_type": "must be a number",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "json_invalid": "must be valid JSON",
    "string_unicode": NOT_UNICODE,
    "url_scheme": "must be an https:// URL",
}
_COMPARISONS: dict[str, Any] = {
    "greater_than_equal": "at least", "less_than_equal": "at most",
    "greater_than": "more than", "less_than": "less than",
}
