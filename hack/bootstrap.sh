#!/usr/bin/env bash
# Everything a fresh Debian machine (Python 3.11, Node 20, kubectl, root) needs
# before the demo or the tests can run. Each step is skipped when already done,
# so a second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
say() { printf '[bootstrap] %s\n' "$*" >&2; }
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

# Debian packages, each only when its command is missing: etcd for the cluster, a
# Secret Service (a session bus and gnome-keyring) for the tests of the real OS keyring,
# the shells whose completion scripts the tests load, and podman (with runc, catatonit
# for --init, and mmdebstrap for a base image without a registry) for the image test.
missing=()
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v dbus-daemon >/dev/null 2>&1 || missing+=(dbus-daemon dbus-bin)
command -v gnome-keyring-daemon >/dev/null 2>&1 || missing+=(gnome-keyring)
command -v zsh >/dev/null 2>&1 || missing+=(zsh)
command -v fish >/dev/null 2>&1 || missing+=(fish)
for tool in podman buildah mmdebstrap runc catatonit; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if (( ${#missing[@]} )); then
  say "installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
for tool in node npm kubectl; do
  command -v "$tool" >/dev/null 2>&1 || { say "missing $tool: this project expects it on the machine"; exit 1; }
done

# kube-apiserver: built once per machine and cached outside the repo, keyed by version.
if [[ -z "${KUBE_APISERVER:-}" ]] && ! command -v kube-apiserver >/dev/null 2>&1; then
  KUBE_APISERVER=$(bash hack/build-kube-apiserver.sh)
  say "kube-apiserver: $KUBE_APISERVER"
fi

PY=${PYTHON:-python3}
stamp() { sha256sum "$@" | sha256sum | cut -c1-16; }
if [[ ! -x .venv/bin/python ]]; then
  say "creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
want=$(stamp pyproject.toml)
if [[ "$(cat .venv/.installed 2>/dev/null)" != "$want" ]]; then
  say "installing the project and its dev tools into .venv"
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]' >&2
  echo "$want" > .venv/.installed
fi

want=$(stamp hack/idp/package.json hack/idp/package-lock.json)
if [[ "$(cat hack/idp/node_modules/.installed 2>/dev/null)" != "$want" ]]; then
  say "installing the test IdP (npm ci, oidc-provider pinned by the lockfile)"
  (cd hack/idp && npm ci --no-audit --no-fund --loglevel=error >&2)
  echo "$want" > hack/idp/node_modules/.installed
fi
say "ready ($ROOT)"
