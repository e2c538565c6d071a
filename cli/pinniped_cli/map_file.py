"""The JSON document both cache files are: one map of values by slot, named by its kind.

The sealed files (`pinniped_cli.sealed_file`) and the runtime-directory
credential cache (`pinniped_cli.runtime_cache`) share this one format and
reading of it. Only `json` is imported: the credential cache is read on every
kubectl call.

Format::

    {"apiVersion": "cli.pinniped.dev/v1", "kind": "<kind>", "<field>": {"<slot>": <value>}}
"""

from __future__ import annotations

import json

API_VERSION = "cli.pinniped.dev/v1"


def load(raw: bytes, kind: str, field: str) -> dict[str, object] | None:
    """The map in `raw`, or None when it is not such a document of `kind` (corrupt, or other)."""
    try:
        doc = json.loads(raw)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None
    if (not isinstance(doc, dict) or doc.get("apiVersion") != API_VERSION
            or doc.get("kind") != kind or not isinstance(doc.get(field), dict)):
        return None
    values: dict[str, object] = doc[field]
    return values


def dump(kind: str, field: str, values: dict[str, object]) -> bytes:
    return json.dumps({"apiVersion": API_VERSION, "kind": kind, field: values},
                      indent=1).encode()
