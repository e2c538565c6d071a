"""deploy/README.md's elevated-access examples are what the real apiserver and concierge accept.

An administrator copies the ElevationPolicy example and the audit policy rule
from the README; a copy that the CRD refuses, that the concierge would read
as invalid (and so govern its group without anyone able to get it), or a rule
that differs from the one the tests' apiserver runs, would mislead them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from localenv.cluster import AUDIT_POLICY, LocalCluster
from pinniped_apis import constants
from pinniped_apis.elevation import ElevationPolicySpec

pytestmark = pytest.mark.integration

DEPLOY_README = Path(__file__).resolve().parents[2] / "deploy" / "README.md"


def _elevation_section() -> str:
    text = DEPLOY_README.read_text()
    start = text.index("## Elevated access")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def _yaml_blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", _elevation_section(), flags=re.DOTALL)


def _example_policy() -> dict[str, Any]:
    (policy,) = [doc for block in _yaml_blocks() if "kind: ElevationPolicy" in block
                 for doc in [yaml.safe_load(block)]]
    assert isinstance(policy, dict)
    return policy


def test_the_example_policy_is_valid_for_the_crd_and_the_concierge(
        cluster: LocalCluster) -> None:
    policy = _example_policy()
    assert policy["apiVersion"] == constants.ELEVATION_API_VERSION
    spec = ElevationPolicySpec.model_validate(policy["spec"])
    assert spec.group == "corp:prod-admins"
    assert spec.approvals_required == 1
    applied = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(policy))
    assert "created (server dry run)" in applied.stdout, applied.stdout


def test_the_audit_rule_is_the_one_the_test_apiserver_runs() -> None:
    (rule_block,) = [block for block in _yaml_blocks() if "level: RequestResponse" in block]
    documented = yaml.safe_load(rule_block)
    running = yaml.safe_load(AUDIT_POLICY)["rules"]
    assert documented == running[:1]
    assert running[-1] == {"level": "Metadata"}
