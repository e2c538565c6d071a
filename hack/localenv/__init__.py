"""Local development environment: etcd, kube-apiserver, a test IdP and the concierge on loopback."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
#: The folders that hold the import packages, for running from a source tree.
SOURCE_DIRS = tuple(REPO_ROOT / name for name in ("cli", "concierge", "apis"))
#: PYTHONPATH that makes `pinniped_cli`, `pinniped_concierge` and `pinniped_apis` importable.
SOURCE_PATH = os.pathsep.join(map(str, SOURCE_DIRS))
