# shellcheck shell=bash
# Sourced by ./orch and scripts/test: makes Node >= 22.12 and pnpm available on PATH and the
# workspace installed from its lockfile. Idempotent: a second run only checks stamps.
# Everything it installs lives under tools/*/node_modules and node_modules (both git-ignored).

ORCH_ROOT="${ORCH_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"

_orch_say() { if [ -z "${ORCH_QUIET_BOOTSTRAP:-}" ]; then echo "orch: $*" >&2; fi; }

# Install one tools/<name> package from its lockfile unless its stamp matches the lockfile.
_orch_tool() {
  local dir="$ORCH_ROOT/tools/$1" stamp
  stamp="$dir/node_modules/.orch-stamp"
  if [ -f "$stamp" ] && cmp -s "$stamp" "$dir/package-lock.json"; then return 0; fi
  if ! command -v npm >/dev/null 2>&1; then
    echo "orch: npm is required to install $1 (install Node.js and npm first)" >&2
    return 1
  fi
  _orch_say "installing $1 (one time) ..."
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) || {
    echo "orch: installing $1 failed (npm ci in tools/$1)" >&2
    return 1
  }
  cp "$dir/package-lock.json" "$stamp"
}

_orch_node_ok() {
  command -v node >/dev/null 2>&1 && node -e '
    const [a, b] = process.versions.node.split(".").map(Number);
    process.exit(a > 22 || (a === 22 && b >= 12) ? 0 : 1);' 2>/dev/null
}

orch_ensure_runtime() {
  if ! _orch_node_ok; then
    _orch_tool node || return 1
    export PATH="$ORCH_ROOT/tools/node/node_modules/.bin:$PATH"
  fi
  _orch_tool pnpm || return 1
  export PATH="$ORCH_ROOT/tools/pnpm/node_modules/.bin:$PATH"

  # Workspace dependencies, from pnpm-lock.yaml; skipped when the lockfile has not changed.
  local stamp="$ORCH_ROOT/node_modules/.orch-stamp"
  if [ -f "$stamp" ] && cmp -s "$stamp" "$ORCH_ROOT/pnpm-lock.yaml"; then return 0; fi
  _orch_say "installing workspace dependencies (pnpm install --frozen-lockfile) ..."
  (cd "$ORCH_ROOT" && pnpm install --frozen-lockfile --reporter=silent) || {
    echo "orch: pnpm install failed" >&2
    return 1
  }
  cp "$ORCH_ROOT/pnpm-lock.yaml" "$stamp"
}
