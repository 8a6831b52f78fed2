#!/usr/bin/env bash
# Installs what the browser test of the status page (tests/status_page.rs)
# needs, once; a second run does nothing:
#
#   - Debian's `chromium` (/usr/bin/chromium), by apt-get, if it is missing;
#   - `playwright-core` at an exact version, by npm, into
#     <workspace>/target/lang-tools/playwright (no browser download: the
#     test drives the system chromium).
#
# Usage: tests/clients/install-browser.sh
# Prints the playwright directory (for NODE_PATH) as its last line.
set -euo pipefail

PLAYWRIGHT_VERSION=1.64.1
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
prefix="$root/target/lang-tools/playwright"

log() { echo "install-browser: $*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        log "need root (or sudo) to run: $*"
        exit 1
    fi
}

if [ ! -x /usr/bin/chromium ]; then
    command -v apt-get >/dev/null 2>&1 || { log "/usr/bin/chromium is missing and there is no apt-get"; exit 1; }
    export DEBIAN_FRONTEND=noninteractive
    # A fresh image has no package lists: fetch them only when needed.
    if ! apt-cache show chromium >/dev/null 2>&1; then
        log "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    fi
    log "apt-get install chromium"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >&2
    [ -x /usr/bin/chromium ] || { log "chromium was installed but /usr/bin/chromium does not exist"; exit 1; }
fi

installed=""
if [ -f "$prefix/node_modules/playwright-core/package.json" ]; then
    installed="$(node -p "require('$prefix/node_modules/playwright-core/package.json').version" 2>/dev/null || true)"
fi
if [ "$installed" != "$PLAYWRIGHT_VERSION" ]; then
    command -v npm >/dev/null 2>&1 || { log "npm is missing (Node.js 18+ is needed)"; exit 1; }
    log "npm install playwright-core@$PLAYWRIGHT_VERSION"
    mkdir -p "$prefix"
    # Never `npx playwright install`: that downloads a browser of its own.
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --prefix "$prefix" --no-audit --no-fund \
        --no-save --loglevel=error "playwright-core@$PLAYWRIGHT_VERSION" >&2
fi

echo "$prefix/node_modules"
