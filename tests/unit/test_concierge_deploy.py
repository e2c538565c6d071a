"""deploy/ stays in step with the code: its config loads, its RBAC has no wildcards."""

from __future__ import annotations

from pathlib import Path

import yaml

from concierge import config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_the_example_config_in_the_configmap_is_valid(tmp_path: Path) -> None:
    docs = list(yaml.safe_load_all((DEPLOY / "concierge.yaml").read_text()))
    (configmap,) = [d for d in docs if d["kind"] == "ConfigMap"]
    text = configmap["data"]["config.yaml"].replace("/etc/pinniped", str(tmp_path))
    for name in ("tls/tls.crt", "tls/tls.key", "idp-ca/ca.pem"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("x")
    cfg = config.parse(text, tmp_path)
    assert cfg.kubeconfig is None  # in-cluster
    assert cfg.namespace == configmap["metadata"]["namespace"]
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "pinniped-concierge"


def test_the_rbac_has_no_wildcards_and_no_secret_access_outside_the_namespace() -> None:
    docs = list(yaml.safe_load_all((DEPLOY / "rbac.yaml").read_text()))
    kinds = [d["kind"] for d in docs]
    assert kinds == ["Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                     "Role", "RoleBinding"]
    for doc in docs:
        for rule in doc.get("rules", []):
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[key]
    (cluster_role,) = [d for d in docs if d["kind"] == "ClusterRole"]
    cluster_resources = {r for rule in cluster_role["rules"] for r in rule["resources"]}
    assert cluster_resources == {"users", "groups", "clusterroles", "clusterrolebindings",
                                 "tokenreviews"}
    assert not any("escalate" in rule["verbs"] or "bind" in rule["verbs"]
                   for rule in cluster_role["rules"])
