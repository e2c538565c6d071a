"""What `kubectl kustomize deploy/` renders is valid Kubernetes, hardened, and set in one place.

The schemas are the Kubernetes OpenAPI schemas that `kubernetes-validate` ships, used
strictly (an unknown or misspelt field fails, where the apiserver would only drop it or
warn). Custom objects are checked against the schema of our own generated CRD, also with
unknown fields refused, since the apiserver would silently prune them.
"""

from __future__ import annotations

import copy
import functools
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
#: The oldest Kubernetes we support (policy/v1 and the rest), and the newest the package knows.
SCHEMA_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
NS = "pinniped-concierge"


@functools.cache
def _rendered_text() -> str:
    result = subprocess.run(["kubectl", "kustomize", str(DEPLOY)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, f"kubectl kustomize deploy/ failed:\n{result.stderr}"
    return result.stdout


def rendered() -> list[dict[str, Any]]:
    """Every object of the kustomization, as kustomize hands them to kubectl apply."""
    return [d for d in yaml.safe_load_all(_rendered_text()) if d]


def the(kind: str) -> dict[str, Any]:
    (found,) = [d for d in rendered() if d["kind"] == kind]
    return found


def object_id(doc: dict[str, Any]) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def _schema_error(doc: dict[str, Any], version: str) -> str | None:
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        return str(error).splitlines()[0]
    return None


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_every_rendered_object_validates_strictly_against_the_kubernetes_schemas(
        version: str) -> None:
    docs = rendered()
    assert len(docs) >= 15
    errors = {object_id(d): _schema_error(d, version) for d in docs}
    assert {k: v for k, v in errors.items() if v} == {}


def test_the_strict_validation_catches_an_unknown_field() -> None:
    service = copy.deepcopy(the("Service"))
    service["spec"]["ports"][0]["protcol"] = "TCP"
    assert _schema_error(service, SCHEMA_VERSIONS[0]) is not None


def test_the_kustomization_holds_every_part_of_an_install() -> None:
    kinds = sorted(d["kind"] for d in rendered())
    for kind in ("CustomResourceDefinition", "Namespace", "ServiceAccount", "ClusterRole",
                 "ClusterRoleBinding", "Role", "RoleBinding", "ConfigMap", "ResourceQuota",
                 "Service", "PodDisruptionBudget", "NetworkPolicy", "Deployment"):
        assert kind in kinds, kind
    assert kinds.count("CustomResourceDefinition") == 4
    namespaced = [d for d in rendered() if d["kind"] not in (
        "Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding")]
    assert {d["metadata"].get("namespace") for d in namespaced} == {NS}


def test_the_namespace_and_crds_come_before_the_objects_that_need_them() -> None:
    kinds = [d["kind"] for d in rendered()]
    assert kinds[0] == "Namespace"
    last_crd = max(i for i, kind in enumerate(kinds) if kind == "CustomResourceDefinition")
    assert last_crd < kinds.index("Deployment")


def test_every_port_names_its_protocol_for_server_side_apply() -> None:
    for port in the("Service")["spec"]["ports"]:
        assert port.get("protocol") == "TCP", port
    for container in the("Deployment")["spec"]["template"]["spec"]["containers"]:
        for port in container["ports"]:
            assert port.get("protocol") == "TCP", port


def test_the_deployment_is_hardened_probed_and_bounded() -> None:
    deployment = the("Deployment")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    for kind in ("requests", "limits"):
        assert set(container["resources"][kind]) == {"cpu", "memory"}, kind
    probes = {name: container[name]["httpGet"] for name in ("livenessProbe", "readinessProbe")}
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert {p["scheme"] for p in probes.values()} == {"HTTPS"}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts["tmp"] == "/tmp"
    assert "emptyDir" in volumes["tmp"]


def test_the_pod_disruption_budget_and_network_policy_select_the_concierge() -> None:
    labels = the("Deployment")["spec"]["template"]["metadata"]["labels"]
    pdb = the("PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["minAvailable"] < the("Deployment")["spec"]["replicas"]
    policy = the("NetworkPolicy")["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    (ingress,) = policy["ingress"]
    container_port = the("Deployment")["spec"]["template"]["spec"]["containers"][0]["ports"][0]
    assert ingress["ports"] == [{"port": container_port["containerPort"], "protocol": "TCP"}]
    egress_ports = {(p["port"], p["protocol"]) for rule in policy["egress"]
                    for p in rule["ports"]}
    assert egress_ports == {(53, "UDP"), (53, "TCP"), (443, "TCP"), (6443, "TCP")}


def test_the_image_is_set_in_the_kustomization_alone() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    (image,) = kustomization["images"]
    container = the("Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"{image['newName']}:{image['newTag']}"
    assert image["name"] in (DEPLOY / "concierge.yaml").read_text()


def test_the_issuer_and_audience_sit_in_the_marked_admin_block() -> None:
    data = yaml.safe_load(the("ConfigMap")["data"]["config.yaml"])
    (authenticator,) = data["authenticators"]
    text = the("ConfigMap")["data"]["config.yaml"]
    for key in ("issuer", "audience"):
        (line,) = [line for line in text.splitlines() if line.strip().startswith(f"{key}:")]
        assert authenticator[key] in line, line
        assert ">>> ADMIN" in line, line


# --- custom objects against our own CRD -------------------------------------------


def _closed(schema: Any) -> Any:
    """`schema` with unknown properties refused wherever the apiserver would prune them."""
    if isinstance(schema, dict):
        out = {k: _closed(v) for k, v in schema.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    return schema


def crd_schema(kind: str) -> dict[str, Any]:
    (crd,) = [d for d in rendered() if d["kind"] == "CustomResourceDefinition"
              and d["spec"]["names"]["kind"] == kind]
    (version,) = [v for v in crd["spec"]["versions"] if v["served"] and v["storage"]]
    schema: dict[str, Any] = _closed(version["schema"]["openAPIV3Schema"])
    schema["properties"].pop("metadata", None)  # the apiserver validates metadata itself
    schema["properties"] |= {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                             "metadata": {"type": "object"}}
    return schema


EXAMPLE_AUTHENTICATOR = {
    "apiVersion": "authentication.concierge.pinniped.dev/v1alpha1",
    "kind": "JWTAuthenticator",
    "metadata": {"name": "corp"},
    "spec": {"issuer": "https://idp.example.com", "audience": "pinniped-cli",
             "claims": {"username": "email", "groups": "groups"},
             "usernamePrefix": "corp:", "groupsPrefix": "corp:"},
}


def test_the_readme_example_jwt_authenticator_validates_against_the_crd() -> None:
    readme = (DEPLOY / "README.md").read_text()
    for key, value in EXAMPLE_AUTHENTICATOR["spec"].items():  # type: ignore[attr-defined]
        if isinstance(value, str):
            assert f"{key}: {value}" in readme or f'{key}: "{value}"' in readme, key
    jsonschema.validate(EXAMPLE_AUTHENTICATOR, crd_schema("JWTAuthenticator"))


@pytest.mark.parametrize("change", ["unknown-field", "http-issuer", "wrong-type"])
def test_a_broken_jwt_authenticator_fails_the_crd_schema(change: str) -> None:
    broken = copy.deepcopy(EXAMPLE_AUTHENTICATOR)
    spec: dict[str, Any] = broken["spec"]  # type: ignore[assignment]
    if change == "unknown-field":
        spec["issuerr"] = "https://idp.example.com"
    elif change == "http-issuer":
        spec["issuer"] = "http://idp.example.com"
    else:
        spec["claims"] = "email"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, crd_schema("JWTAuthenticator"))
