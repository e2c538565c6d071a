"""The config file's reference in Markdown, rendered from the models in `config`.

Written from the models' JSON schema, so that each key's type, default, range
and description are stated once, where they are enforced. The output is
committed as deploy/concierge-config.md (a unit test says when it is stale)
and printed by `pinniped-concierge --config-reference` for installs without
the source tree.
"""

from __future__ import annotations

import textwrap
from typing import Any

from pinniped_apis.authentication import PATTERN_WORDS
from pinniped_concierge.config import key_schemas

REGENERATE = ".venv/bin/pinniped-concierge --config-reference > deploy/concierge-config.md"

_INTRO = f"""\
# The concierge's config file

<!-- Generated from concierge/pinniped_concierge/config.py; do not edit. Regenerate with:
     {REGENERATE} -->

`pinniped-concierge --config FILE` reads one YAML file, strictly: an unknown
key, a duplicate key, a value of the wrong type (`"600"` is not `600`) or out
of range stops the concierge at start with a message naming the key, for
example `authenticators[0].usernamePrefix: is required`. A typo in a security
setting never falls back to a default.

- Keys are camelCase, as in Kubernetes. A key set to `null` counts as omitted.
- Relative file paths are resolved against the directory of the config file,
  so a config and its certificates can move together.
- Quote prefixes that end in a colon (`"corp:"`), or YAML reads them otherwise.

## A minimal file

```yaml
tls: {{certFile: tls.crt, keyFile: tls.key}}
namespace: pinniped-concierge
authenticators:
  - name: corp
    issuer: https://idp.example.com
    audience: pinniped-cli
    usernamePrefix: "corp:"
    groupsPrefix: "corp:"
```

## Keys

Each key by its path; `authenticators[].name` is the `name` of every entry of
the `authenticators` list."""

_PLURALS = {"string": "strings", "integer": "integers", "mapping": "mappings"}


def render() -> str:
    """The whole reference, as committed in deploy/concierge-config.md."""
    keys = [_key(path, schema) for path, schema in key_schemas().items()]
    return "\n\n".join([_INTRO, *keys]) + "\n"


def _key(path: str, schema: dict[str, Any]) -> str:
    facts = " · ".join([_type(schema), _presence(schema), *_allowed(schema)])
    description = textwrap.fill(schema.get("description", ""), width=80,
                                break_long_words=False, break_on_hyphens=False)
    return f"### `{path}`\n\n{facts}\n\n{description}".rstrip()


def _type(schema: dict[str, Any]) -> str:
    kind = schema.get("type", "object")
    if kind == "array":
        item = _type(schema.get("items", {}))
        return f"list of {_PLURALS.get(item, item)}"
    if kind == "object":
        return "mapping"
    if schema.get("format") == "path":
        return "file path"
    return str(kind)


def _presence(schema: dict[str, Any]) -> str:
    if schema["required"]:
        return "**required**"
    default = schema.get("default")
    if default is None:
        return "optional"
    if default == schema.get("items", {}).get("enum"):
        return "default: all of them"
    if default == "":
        return "default: empty"
    return f"default `{_yaml(default)}`"


def _allowed(schema: dict[str, Any]) -> list[str]:
    allowed = []
    if "minimum" in schema:
        allowed.append(f"{schema['minimum']} to {schema['maximum']}")
    if "const" in schema:
        allowed.append(f"only `{schema['const']}`")
    for values, words in ((schema.get("enum"), "one of"),
                          (schema.get("items", {}).get("enum"), "each one of")):
        if values:
            allowed.append(f"{words} " + ", ".join(f"`{v}`" for v in values))
    if "pattern" in schema:
        allowed.append(PATTERN_WORDS.get(schema["pattern"], f"matching `{schema['pattern']}`"))
    if "maxLength" in schema:
        allowed.append(f"at most {schema['maxLength']} characters")
    if schema.get("minLength") == 1:
        allowed.append("not empty")
    if schema.get("minItems") == 1:
        allowed.append("at least one")
    if "maxItems" in schema:
        allowed.append(f"at most {schema['maxItems']}")
    return allowed


def _yaml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


if __name__ == "__main__":
    print(render(), end="")
