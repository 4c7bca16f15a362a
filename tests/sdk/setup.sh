#!/usr/bin/env bash
# Installs what the SDK tests need: Node and npm if missing, and tests/sdk/node/node_modules
# (@blaxel/core, pinned by package-lock.json). Idempotent: `npm ci` runs only when node_modules
# is missing or the lockfile changed since the last install. Safe to run from any directory.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "installing nodejs and npm (for the @blaxel/core SDK tests)" >&2
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi

cd "$here/node"
stamp="node_modules/.installed-$(sha256sum package-lock.json | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    echo "installing the TypeScript SDK for the SDK tests (npm ci in tests/sdk/node)" >&2
    npm ci --no-audit --no-fund --loglevel=error >/dev/null
    rm -f node_modules/.installed-*
    touch "$stamp"
fi
