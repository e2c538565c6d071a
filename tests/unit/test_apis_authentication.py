"""JWTAuthenticator and CredentialIssuer: the models, and the CRDs generated from them."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from localenv import pki
from pinniped_apis import crds
from pinniped_apis.authentication import (
    JWTAuthenticatorFields,
    JWTAuthenticatorSpec,
    condition,
    schema_without_refs,
)
from pinniped_concierge.config import JWTAuthenticatorConfig

COMMITTED = Path(__file__).resolve().parents[2] / "deploy" / "crds.yaml"
GOOD = {"issuer": "https://idp.example.com", "audience": "pinniped-cli",
        "claims": {"username": "email", "groups": "groups"},
        "usernamePrefix": "corp:", "groupsPrefix": "corp:"}


def spec_schema(crd_kind: str) -> dict[str, Any]:
    (crd,) = [c for c in crds.definitions() if c["spec"]["names"]["kind"] == crd_kind]
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_the_committed_crds_are_what_the_models_generate() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == crds.render(), (
        f"deploy/{COMMITTED.name} is stale; regenerate it with: {crds.REGENERATE}")


def test_the_crd_and_the_config_file_share_every_common_rule() -> None:
    """The file's authenticators and JWTAuthenticator objects are one model: no drift."""
    crd_spec = spec_schema("JWTAuthenticator")["properties"]["spec"]["properties"]
    file_entry = crds.structural(schema_without_refs(JWTAuthenticatorConfig))["properties"]
    shared = crds.structural(schema_without_refs(JWTAuthenticatorFields))["properties"]
    assert set(shared) <= set(crd_spec) & set(file_entry)
    for key in ("issuer", "audience", "claims", "algorithms"):
        assert crd_spec[key] == file_entry[key] == shared[key], key
    for key in ("usernamePrefix", "groupsPrefix"):  # the CRD adds: never empty
        assert crd_spec[key] == shared[key] | {"minLength": 1,
                                               "description": crd_spec[key]["description"]}
    assert issubclass(JWTAuthenticatorConfig, JWTAuthenticatorFields)
    assert issubclass(JWTAuthenticatorSpec, JWTAuthenticatorFields)


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, child in node.items():
            found += _walk(child, f"{path}.{key}")
    elif isinstance(node, list):
        for i, child in enumerate(node):
            found += _walk(child, f"{path}[{i}]")
    return found


@pytest.mark.parametrize("kind", ["JWTAuthenticator", "CredentialIssuer"])
def test_the_crd_schemas_are_structural(kind: str) -> None:
    """What the apiserver refuses in a CRD: refs, anyOf, const, titles, additionalProperties
    beside properties, and schema nodes without a type."""
    schema = spec_schema(kind)
    for path, node in _walk(schema):
        for forbidden in ("$ref", "anyOf", "const", "title", "$defs"):
            assert forbidden not in node, f"{kind}{path} has {forbidden}"
        if "properties" in node and not path.endswith(".properties"):
            assert "additionalProperties" not in node, f"{kind}{path}"
            assert node.get("type") == "object", f"{kind}{path} has no type"


def test_a_good_spec_reads_and_defaults() -> None:
    spec = JWTAuthenticatorSpec.model_validate(GOOD, by_alias=True, by_name=False)
    assert spec.username_prefix == "corp:"
    assert "RS256" in spec.algorithms
    assert spec.tls is None


@pytest.mark.parametrize(("change", "where"), [
    ({"issuer": "http://idp.example.com"}, "issuer"),
    ({"issuer": "https://idp.example.com?x=1"}, "issuer"),
    ({"usernamePrefix": ""}, "usernamePrefix"),
    ({"groupsPrefix": "system:masters"}, "groupsPrefix"),
    ({"algorithms": ["HS256"]}, "algorithms"),
    ({"tls": {"certificateAuthorityData": "not base64!"}}, "tls.certificateAuthorityData"),
    ({"tls": {"certificateAuthorityData": base64.b64encode(b"hello").decode()}},
     "tls.certificateAuthorityData"),
    ({"audiences": ["x"]}, "audiences"),
    ({"audience": 5}, "audience"),
])
def test_a_bad_spec_is_refused_naming_the_field(change: dict[str, Any], where: str) -> None:
    with pytest.raises(ValidationError) as caught:
        JWTAuthenticatorSpec.model_validate(GOOD | change, by_alias=True, by_name=False)
    locs = {".".join(str(p) for p in e["loc"]) for e in caught.value.errors()}
    assert where in locs


def test_a_real_ca_bundle_is_accepted(tmp_path: Path) -> None:
    ca = pki.CA.create(tmp_path, "test-ca")
    data = base64.b64encode(ca.cert_path.read_bytes()).decode()
    spec = JWTAuthenticatorSpec.model_validate(GOOD | {"tls": {"certificateAuthorityData": data}},
                                               by_alias=True, by_name=False)
    assert spec.tls is not None
    assert spec.tls.certificate_authority_data == data


def test_a_condition_keeps_its_transition_time_until_its_status_changes() -> None:
    first = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    later = first + dt.timedelta(minutes=5)
    ready = condition("Ready", True, reason="Success", message="ok", generation=1, now=first)
    again = condition("Ready", True, reason="Success", message="ok", generation=2, now=later,
                      previous=(ready,))
    flipped = condition("Ready", False, reason="Broken", message="x", generation=3, now=later,
                        previous=(again,))
    assert again.last_transition_time == "2030-01-01T00:00:00Z"
    assert flipped.last_transition_time == "2030-01-01T00:05:00Z"
    assert flipped.status == "False"


def test_the_crds_parse_as_four_yaml_documents() -> None:
    documents = [d for d in yaml.safe_load_all(COMMITTED.read_text()) if d]
    assert [d["metadata"]["name"] for d in documents] == [
        "jwtauthenticators.authentication.concierge.pinniped.dev",
        "credentialissuers.config.concierge.pinniped.dev",
        "elevationpolicies.elevation.concierge.pinniped.dev",
        "elevationrequests.elevation.concierge.pinniped.dev"]
    # Only the requests live in a namespace (the concierge's); users get no RBAC on them.
    assert [d["spec"]["scope"] for d in documents] == [
        "Cluster", "Cluster", "Cluster", "Namespaced"]
