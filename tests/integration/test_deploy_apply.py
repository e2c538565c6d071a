"""`kubectl apply -k deploy/`, client- and server-side, on an empty cluster: one go, then a no-op.

Each test starts its own empty cluster, since the point is an install from nothing.

One honest deviation: the tests' apiserver is 1.20, which serves PodDisruptionBudgets
only as policy/v1beta1, while deploy/ ships policy/v1 (Kubernetes 1.21+; users run 1.30+).
So the tests apply an overlay whose only change is that apiVersion, and
`test_the_overlay_changes_only_the_pdb_api_version` proves it changes nothing else.
deploy/ itself is never weakened for 1.20.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from localenv import pki
from localenv.cluster import LocalCluster

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def overlay_for_1_20(tmp_path: Path) -> Path:
    """A kustomization of deploy/ with the PodDisruptionBudget served as 1.20 knows it."""
    overlay = tmp_path / "deploy-on-1.20"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        # kustomize refuses absolute paths here
        "resources": [os.path.relpath(DEPLOY, overlay)],
        "patches": [{
            "target": {"group": "policy", "version": "v1", "kind": "PodDisruptionBudget"},
            "patch": json.dumps([{"op": "replace", "path": "/apiVersion",
                                  "value": "policy/v1beta1"}])}]}))
    return overlay


def kustomize(path: Path) -> list[dict[str, Any]]:
    result = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True, text=True,
                            timeout=60, check=True)
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def test_the_overlay_changes_only_the_pdb_api_version(tmp_path: Path) -> None:
    shipped, applied = kustomize(DEPLOY), kustomize(overlay_for_1_20(tmp_path))
    assert len(shipped) == len(applied)
    different = [(a, b) for a, b in zip(shipped, applied, strict=True) if a != b]
    ((original, patched),) = different
    assert original["kind"] == "PodDisruptionBudget"
    assert (original["apiVersion"], patched["apiVersion"]) == ("policy/v1", "policy/v1beta1")
    assert {**patched, "apiVersion": "policy/v1"} == original


def _versions(cluster: LocalCluster, docs: list[dict[str, Any]]) -> dict[str, tuple[str, Any]]:
    """resourceVersion and generation of every applied object, read back from the cluster."""
    found = {}
    for doc in docs:
        meta = doc["metadata"]
        group = doc["apiVersion"].rpartition("/")[0]
        resource = doc["kind"].lower() + (f".{group}" if group else "")
        args = ["get", resource, meta["name"], "-o", "json"]
        if "namespace" in meta:
            args += ["-n", meta["namespace"]]
        live = json.loads(cluster.kubectl(*args).stdout)["metadata"]
        found[f"{doc['kind']}/{meta['name']}"] = (live["resourceVersion"], live.get("generation"))
    return found


@pytest.fixture
def empty_cluster(tmp_path: Path, local_ca: pki.CA) -> Any:
    running = LocalCluster.start(tmp_path / "cluster", local_ca)
    try:
        yield running
    finally:
        running.stop()


@pytest.mark.parametrize("mode", ["client-side", "server-side"])
def test_one_apply_installs_everything_and_a_second_changes_nothing(
        mode: str, tmp_path: Path, empty_cluster: LocalCluster) -> None:
    overlay = overlay_for_1_20(tmp_path)
    docs = kustomize(overlay)
    flags = ["--server-side"] if mode == "server-side" else []
    first = empty_cluster.kubectl("apply", *flags, "-k", str(overlay), check=False)
    assert first.returncode == 0, first.stderr
    assert first.stderr.strip() == "", first.stderr  # no warning, no retry needed
    assert len(first.stdout.strip().splitlines()) == len(docs), first.stdout
    before = _versions(empty_cluster, docs)
    assert len(before) == len(docs)

    second = empty_cluster.kubectl("apply", *flags, "-k", str(overlay), check=False)
    assert second.returncode == 0, second.stderr
    outcomes = dict(line.rsplit(" ", 1) for line in second.stdout.strip().splitlines())
    word = "serverside-applied" if mode == "server-side" else "unchanged"
    assert set(outcomes.values()) == {word}, second.stdout
    assert _versions(empty_cluster, docs) == before  # nothing was written
    diff = empty_cluster.kubectl("diff", *flags, "-k", str(overlay), check=False)
    assert diff.returncode == 0, diff.stdout + diff.stderr
