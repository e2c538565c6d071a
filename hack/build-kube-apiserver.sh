#!/usr/bin/env bash
# Builds kube-apiserver from Debian's `kubernetes` source package and caches it
# outside the repo, keyed by version, so each machine builds it once.
#
# Why build at all: this machine reaches only the package registries, and Debian
# ships the apiserver only as source (1.20.2, with vendor/), which builds offline.
#
# Prints the path of the cached binary on stdout; progress goes to stderr.
set -euo pipefail

VERSION="${KUBE_VERSION:-1.20.2}"
CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/pinniped-py"
DEST="$CACHE_ROOT/kube-apiserver/$VERSION/kube-apiserver"

say() { printf '[build-kube-apiserver] %s\n' "$*" >&2; }

if [[ -x "$DEST" ]]; then
  echo "$DEST"
  exit 0
fi

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

# deb-src entries are derived from the machine's own apt sources, so no mirror
# host name is ever written into this repository.
ensure_deb_src() {
  local out=/etc/apt/sources.list.d/pinniped-py-deb-src.sources
  if [[ -f "$out" ]] || grep -rqsE '^(deb-src|Types:.*deb-src)' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    return
  fi
  say "adding deb-src entries derived from the existing apt sources"
  local tmp; tmp=$(mktemp)
  # deb822 files: copy each enabled stanza, with Types switched to deb-src.
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f "$f" ]] || continue
    awk 'BEGIN{RS=""; ORS="\n\n"} /(^|\n)Types:[^\n]*deb/ && !/(^|\n)Enabled: *no/ {sub(/Types:[^\n]*/, "Types: deb-src"); print}' "$f" >>"$tmp"
  done
  # one-line format: every "deb " line becomes a "deb-src " line.
  local legacy=/etc/apt/sources.list.d/pinniped-py-deb-src.list
  if [[ -f /etc/apt/sources.list ]] && grep -qE '^deb ' /etc/apt/sources.list; then
    sed -n 's/^deb /deb-src /p' /etc/apt/sources.list | as_root tee "$legacy" >/dev/null
  fi
  # Only Debian's own archives carry the source package; drop third-party stanzas.
  if [[ -s "$tmp" ]]; then
    awk 'BEGIN{RS=""; ORS="\n\n"} /debian/' "$tmp" | as_root tee "$out" >/dev/null
  fi
  rm -f "$tmp"
}

ensure_deb_src
say "apt-get update"
as_root apt-get update -qq >&2
say "installing build dependencies (golang-go, reflect2 1.0.2, dpkg-dev, rsync)"
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  golang-go golang-github-modern-go-reflect2-dev dpkg-dev rsync make >&2

WORK=$(mktemp -d "${TMPDIR:-/tmp}/kube-src.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
say "fetching the kubernetes source package into $WORK"
apt-get source -qq "kubernetes" >&2
SRC=$(find "$WORK" -maxdepth 1 -mindepth 1 -type d -name 'kubernetes-*' | head -n1)
[[ -n "$SRC" ]] || { say "apt-get source produced no kubernetes-* directory"; exit 1; }
cd "$SRC"
grep -q "v${VERSION}\b\|${VERSION}" debian/changelog || say "warning: changelog does not mention ${VERSION}"

# The vendored reflect2 1.0.1 crashes at run time with Go >= 1.18; Debian's 1.0.2 fixes it.
REFLECT2=/usr/share/gocode/src/github.com/modern-go/reflect2
say "replacing vendored modern-go/reflect2 with Debian's $(basename "$REFLECT2") 1.0.2"
rm -rf vendor/github.com/modern-go/reflect2
mkdir -p vendor/github.com/modern-go
cp -r "$REFLECT2" vendor/github.com/modern-go/reflect2

say "building cmd/kube-apiserver with $(go version) (about 8 minutes on 2 cores)"
start=$(date +%s)
( export CGO_ENABLED=0 GOFLAGS=-mod=vendor GO111MODULE=on KUBE_GIT_VERSION="v${VERSION}" KUBE_GIT_TREE_STATE=clean
  while sleep 60; do say "still compiling... $(( $(date +%s) - start ))s"; done &
  ticker=$!
  trap 'kill $ticker 2>/dev/null' EXIT
  make WHAT=cmd/kube-apiserver >&2 )
BIN=$(find _output -type f -name kube-apiserver -perm -u+x | head -n1)
[[ -n "$BIN" ]] || { say "build finished but no kube-apiserver binary was found"; exit 1; }
mkdir -p "$(dirname "$DEST")"
install -m 0755 "$BIN" "$DEST.tmp"
mv "$DEST.tmp" "$DEST"
say "built in $(( $(date +%s) - start ))s -> $DEST"
echo "$DEST"
