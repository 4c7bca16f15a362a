#!/usr/bin/env bash
# Prepares the real-browser suite (tests/browser): Debian's Chromium and the pinned npm packages.
# Idempotent and quick when nothing changed: installs chromium only if /usr/bin/chromium is
# missing, and runs `npm ci` only when node_modules is missing or package-lock.json changed.
# Playwright's own browser download (`npx playwright install`) is never used.
set -euo pipefail
cd "$(dirname "$0")"

sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"

if [ ! -x /usr/bin/chromium ]; then
    echo "installing Debian's chromium" >&2
    $sudo apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "node and npm are required (Node.js 20.9 or newer)" >&2
    exit 1
fi
if ! node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 9) ? 0 : 1)'; then
    echo "Node.js $(node --version) is too old: Next 16 needs 20.9 or newer" >&2
    exit 1
fi

stamp="node_modules/.installed-$(sha256sum package-lock.json | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    echo "installing the browser suite's npm packages (npm ci)" >&2
    npm ci --no-audit --no-fund --loglevel=error
    touch "$stamp"
fi
