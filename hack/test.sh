#!/usr/bin/env bash
# The whole test suite: lint, types, unit and integration tests against a real
# local kube-apiserver, etcd, IdP and concierge. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/bootstrap.sh
echo "== ruff" >&2
.venv/bin/ruff check .
echo "== mypy" >&2
.venv/bin/mypy
echo "== pytest" >&2
exec .venv/bin/pytest "$@"
