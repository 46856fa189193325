#!/usr/bin/env bash
# Install the Go-built tools agent-pdp depends on into .tools/bin:
#   opa   — Open Policy Agent, the policy engine (pinned)
#   regal — the Rego linter (pinned; built from tools/regal/go.mod)
#   registry — CNCF distribution's OCI registry (pinned), for the bundle-publishing tests
#              only: they start it on 127.0.0.1 with a config of their own
#   ghz   — a compiled gRPC load generator (pinned), only with --bench: bench/frontdoors.py
#           drives the ext_authz gRPC door with it (the tests never need it)
# Idempotent: a matching binary already in .tools/bin is reused; for opa and regal also one
# on PATH (registry and ghz are always built into .tools/bin).
set -euo pipefail

OPA_VERSION="${OPA_VERSION:-1.22.3}"
REGISTRY_VERSION="${REGISTRY_VERSION:-3.1.2}"
GHZ_VERSION="${GHZ_VERSION:-0.121.0}"
REGAL_VERSION="$(awk '/open-policy-agent\/regal v/{print $NF}' "$(dirname "$0")/../tools/regal/go.mod")"

root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$root/.tools/bin"
mkdir -p "$bin"

need_go() {
  if ! command -v go >/dev/null 2>&1; then
    echo "error: Go is required to build $1 (install Go >= 1.26 (Regal's go.mod needs it)" \
         "or from your platform's packages), or put a '$1' binary of version $2 on PATH." >&2
    exit 1
  fi
}

have_version() { # name binary version -> 0 if the binary reports that version
  # Output captured first: `... | grep -q` under pipefail fails with SIGPIPE (141).
  local out
  out="$("$2" version 2>/dev/null)" || return 1
  grep -qE "^Version: v?$3\$" <<<"$out"
}

link_or_build_opa() {
  if [ -x "$bin/opa" ] && have_version opa "$bin/opa" "$OPA_VERSION"; then
    echo "opa $OPA_VERSION: $bin/opa"; return
  fi
  local onpath
  onpath="$(command -v opa || true)"
  if [ -n "$onpath" ] && [ "$onpath" != "$bin/opa" ] && have_version opa "$onpath" "$OPA_VERSION"; then
    ln -sf "$onpath" "$bin/opa"; echo "opa $OPA_VERSION: reusing $onpath"; return
  fi
  need_go opa "$OPA_VERSION"
  echo "building opa v$OPA_VERSION with go install (takes a few minutes the first time)..."
  GOBIN="$bin" go install "github.com/open-policy-agent/opa@v$OPA_VERSION"
  have_version opa "$bin/opa" "$OPA_VERSION"
}

link_or_build_regal() {
  # Built as a dependency, regal reports no version of its own: a stamp records it.
  if [ -x "$bin/regal" ] && [ "$(cat "$bin/.regal-version" 2>/dev/null)" = "$REGAL_VERSION" ]; then
    echo "regal $REGAL_VERSION: $bin/regal"; return
  fi
  local onpath
  onpath="$(command -v regal || true)"
  if [ -n "$onpath" ] && [ "$onpath" != "$bin/regal" ] && have_version regal "$onpath" "${REGAL_VERSION#v}"; then
    ln -sf "$onpath" "$bin/regal"; echo "regal $REGAL_VERSION: reusing $onpath"; return
  fi
  need_go regal "$REGAL_VERSION"
  echo "building regal $REGAL_VERSION with go install (takes a few minutes the first time)..."
  # Built from a pinned tools module (go.mod + go.sum committed) so the
  # dependency set is reproducible.
  (cd "$root/tools/regal" && GOBIN="$bin" go install github.com/open-policy-agent/regal)
  echo "$REGAL_VERSION" > "$bin/.regal-version"
}

link_or_build_registry() {
  # `registry --version` prints "registry github.com/distribution/distribution/v3 v3.1.2+unknown"
  local reported=""
  [ -x "$bin/registry" ] && reported="$("$bin/registry" --version 2>/dev/null || true)"
  if [[ "$reported" == *" v$REGISTRY_VERSION"* ]]; then
    echo "registry $REGISTRY_VERSION: $bin/registry"; return
  fi
  need_go registry "$REGISTRY_VERSION"
  echo "building registry v$REGISTRY_VERSION with go install..."
  GOBIN="$bin" go install "github.com/distribution/distribution/v3/cmd/registry@v$REGISTRY_VERSION"
  reported="$("$bin/registry" --version)"
  [[ "$reported" == *" v$REGISTRY_VERSION"* ]]
}

link_or_build_ghz() {
  # Built with `go install`, ghz reports "dev" as its version: a stamp records it.
  if [ -x "$bin/ghz" ] && [ "$(cat "$bin/.ghz-version" 2>/dev/null)" = "$GHZ_VERSION" ]; then
    echo "ghz $GHZ_VERSION: $bin/ghz"; return
  fi
  need_go ghz "$GHZ_VERSION"
  echo "building ghz v$GHZ_VERSION with go install..."
  GOBIN="$bin" go install "github.com/bojand/ghz/cmd/ghz@v$GHZ_VERSION"
  echo "$GHZ_VERSION" > "$bin/.ghz-version"
}

link_or_build_opa
link_or_build_regal
link_or_build_registry
if [ "${1:-}" = "--bench" ]; then
  link_or_build_ghz
fi
