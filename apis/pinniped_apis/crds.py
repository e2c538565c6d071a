"""The CustomResourceDefinitions in deploy/, generated from the API models.

Kubernetes wants a structural OpenAPI v3 schema: no `$ref`, no `anyOf` with
null, `enum` instead of `const`, and no `additionalProperties` beside
`properties` (the apiserver prunes unknown fields itself). kube-apiserver
1.20 also refuses `default: ""` (its conversion reads the empty string as
null, "in body must be of type string"), so empty-string defaults are left
out: an omitted field reads as "" in the models anyway. This module turns
each model's JSON schema into that, so the cluster validates an object with
the same rules the concierge does, and a test fails when the committed YAML
is stale. Regenerate with the command in `REGENERATE`.
"""

from __future__ import annotations

from typing import Any

import yaml

from pinniped_apis import constants
from pinniped_apis.authentication import (
    JWTAuthenticatorSpec,
    JWTAuthenticatorStatus,
    SpecModel,
    schema_without_refs,
)
from pinniped_apis.credential_issuer import CredentialIssuerSpec, CredentialIssuerStatus
from pinniped_apis.elevation import (
    ElevationPolicySpec,
    ElevationPolicyStatus,
    ElevationRequestSpec,
    ElevationRequestStatus,
)

REGENERATE = ".venv/bin/python -m pinniped_apis.crds > deploy/crds.yaml"
_DROPPED = ("title", "additionalProperties")


def structural(node: Any) -> Any:
    """A JSON schema node as Kubernetes accepts it in a CRD."""
    if isinstance(node, list):
        return [structural(item) for item in node]
    if not isinstance(node, dict):
        return node
    options = node.get("anyOf")
    if options is not None:  # `X | None`: optional fields are simply not required
        kept = [o for o in options if o.get("type") != "null"]
        if len(kept) != 1:
            raise ValueError(f"a CRD schema cannot say 'one of' {kept}")
        node = {k: v for k, v in node.items() if k != "anyOf"} | kept[0]
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED or (key == "default" and value in (None, "")):
            continue
        if key == "const":
            out["enum"] = [value]
        elif key == "properties":
            if value:  # an empty one is dropped when stored: every apply would rewrite it
                out[key] = {name: structural(child) for name, child in value.items()}
        else:
            out[key] = structural(value)
    return out


def _object_schema(spec: type[SpecModel], status: type[SpecModel],
                   spec_required: bool) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": structural(schema_without_refs(spec)),
            "status": structural(schema_without_refs(status)),
        },
    }
    if spec_required:
        schema["required"] = ["spec"]
    return schema


def _crd(group: str, kind: str, plural: str, *, spec: type[SpecModel], status: type[SpecModel],
         columns: list[dict[str, Any]], spec_required: bool, scope: str = "Cluster",
         status_subresource: bool = True) -> dict[str, Any]:
    """One CRD. `status_subresource` False: the status is written with the object, in one
    call (ElevationRequests, which only the concierge ever writes)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}",
                     "labels": {"app.kubernetes.io/name": "pinniped-concierge"}},
        "spec": {
            "group": group,
            "scope": scope,
            "names": {"kind": kind, "plural": plural, "singular": kind.lower(),
                      "listKind": f"{kind}List", "categories": ["pinniped"]},
            "versions": [{
                "name": constants.VERSION, "served": True, "storage": True,
                **({"subresources": {"status": {}}} if status_subresource else {}),
                "additionalPrinterColumns": columns,
                "schema": {"openAPIV3Schema": _object_schema(spec, status, spec_required)},
            }],
        },
    }


def _column(name: str, path: str, kind: str = "string") -> dict[str, Any]:
    return {"name": name, "type": kind, "jsonPath": path}


def definitions() -> list[dict[str, Any]]:
    """Every CRD the concierge needs, in the order to apply them."""
    return [
        _crd(constants.AUTHENTICATOR_GROUP, constants.JWT_AUTHENTICATOR_KIND,
             constants.JWT_AUTHENTICATOR_PLURAL, spec=JWTAuthenticatorSpec,
             status=JWTAuthenticatorStatus,
             columns=[_column("Issuer", ".spec.issuer"), _column("Audience", ".spec.audience"),
              _column("Phase", ".status.phase"),
              _column("Age", ".metadata.creationTimestamp", "date")],
             spec_required=True),
        _crd(constants.CONFIG_GROUP, constants.CREDENTIAL_ISSUER_KIND,
             constants.CREDENTIAL_ISSUER_PLURAL, spec=CredentialIssuerSpec,
             status=CredentialIssuerStatus,
             columns=[_column("Endpoint",
                      ".status.strategies[0].frontend.tokenCredentialRequestInfo.server"),
              _column("Age", ".metadata.creationTimestamp", "date")],
             spec_required=False),
        _crd(constants.ELEVATION_GROUP, constants.ELEVATION_POLICY_KIND,
             constants.ELEVATION_POLICY_PLURAL, spec=ElevationPolicySpec,
             status=ElevationPolicyStatus,
             columns=[_column("Group", ".spec.group"),
              _column("Approvals", ".spec.approvalsRequired", "integer"),
              _column("Max-Duration", ".spec.maxDurationSeconds", "integer"),
              _column("Age", ".metadata.creationTimestamp", "date")],
             spec_required=True, status_subresource=False),
        _crd(constants.ELEVATION_GROUP, constants.ELEVATION_REQUEST_KIND,
             constants.ELEVATION_REQUEST_PLURAL, spec=ElevationRequestSpec,
             status=ElevationRequestStatus,
             columns=[_column("Group", ".spec.group"),
              _column("Requester", ".spec.requester.username"),
              _column("Phase", ".status.phase"), _column("Expires", ".status.expiresAt"),
              _column("Age", ".metadata.creationTimestamp", "date")],
             spec_required=True, scope="Namespaced", status_subresource=False),
    ]


def render() -> str:
    header = ("# Generated from apis/pinniped_apis (authentication.py, credential_issuer.py, "
              "elevation.py); "
              f"do not edit.\n# Regenerate with: {REGENERATE}\n")
    return header + yaml.safe_dump_all(definitions(), sort_keys=False, width=100)


if __name__ == "__main__":
    print(render(), end="")
