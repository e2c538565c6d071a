#!/usr/bin/env bash
# Every speed and scale figure of docs/performance.md, in one command:
#
#   bash hack/bench.sh [--quick] [--json PATH] [--plot PATH] [--only PARTS] [--keep]
#
# Measures a regular (non-editable) install of the checkout in a venv of its own,
# against a local etcd + kube-apiserver, IdP and concierge it starts and stops.
# Needs what hack/bootstrap.sh sets up (.venv, kube-apiserver, etcd, node, kubectl).
# Opt-in: `--only ...,clients` adds the floor of the concierge's ratio (the HTTP layer
# alone, and other Kubernetes API clients); it installs kubernetes_asyncio and lightkube
# into a venv of its own under ~/.cache/pinniped-py/bench-clients-venvs (not the product's).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ! -x .venv/bin/python ]]; then
  echo "hack/bench.sh: no .venv here; run hack/bootstrap.sh first" >&2
  exit 1
fi
# Nothing from the caller's PYTHONPATH may reach what is measured.
unset PYTHONPATH
exec .venv/bin/python -m tests.benchmark "$@"
