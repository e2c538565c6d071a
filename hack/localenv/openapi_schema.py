"""Checking JSON documents against the schemas in the concierge's /openapi.json."""

from __future__ import annotations

from typing import Any

import jsonschema


def component_validator(document: dict[str, Any],
                        schema_name: str) -> jsonschema.Draft202012Validator:
    """A validator for one of the document's component schemas, its `$ref`s resolved.

    OpenAPI 3.1's schemas are JSON Schema 2020-12, so the document's own
    components can serve as the root a `$ref` points into.
    """
    if not str(document.get("openapi", "")).startswith("3.1"):
        raise ValueError(f"expected an OpenAPI 3.1 document, got {document.get('openapi')!r}")
    if schema_name not in document.get("components", {}).get("schemas", {}):
        raise KeyError(f"the document has no schema {schema_name!r}")
    root = {"$ref": f"#/components/schemas/{schema_name}", "components": document["components"]}
    return jsonschema.Draft202012Validator(root)
