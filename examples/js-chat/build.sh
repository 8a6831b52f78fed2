#!/usr/bin/env bash
# Builds the JavaScript chat guest: examples/js-chat/chat.js (+ wasmloop.js)
# -> target/examples/js-chat.wasm, a component of the `minimal` world of
# wit/handler.wit, made with componentize-js (SpiderMonkey inside).
#
# Installs its toolchain first if missing: the exact versions pinned in
# package.json / package-lock.json, into examples/js-chat/node_modules (npm
# ci). Needs Node >= 18 and npm. Idempotent: reruns only what is out of date.
#
#   bash examples/js-chat/build.sh        (from anywhere)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$root/target/examples/js-chat.wasm"
wit="$root/wit/handler.wit"
cli="$here/node_modules/@bytecodealliance/componentize-js/src/cli.js"

for tool in node npm; do
    command -v "$tool" >/dev/null || { echo "build.sh: $tool not found; install Node.js 18 or later (with npm)" >&2; exit 1; }
done

# 1. The toolchain, if it is missing or not the pinned version.
wanted="$(node -p 'require(process.argv[1]).devDependencies["@bytecodealliance/componentize-js"]' "$here/package.json")"
installed=""
if [[ -f "$cli" ]]; then
    installed="$(node -p 'require(process.argv[1]).version' "$here/node_modules/@bytecodealliance/componentize-js/package.json")"
fi
if [[ "$installed" != "$wanted" ]]; then
    echo "build.sh: installing @bytecodealliance/componentize-js $wanted into $here/node_modules" >&2
    (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi

# 2. The component, unless it is newer than everything it is made from.
inputs=("$here/chat.js" "$here/wasmloop.js" "$here/package-lock.json" "$here/build.sh" "$wit")
fresh=1
if [[ -f "$out" ]]; then
    for input in "${inputs[@]}"; do
        [[ "$input" -nt "$out" ]] && fresh=0
    done
else
    fresh=0
fi
if [[ "$fresh" == 1 ]]; then
    echo "build.sh: $out is up to date" >&2
    exit 0
fi

mkdir -p "$(dirname "$out")"
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
# Run from this directory: componentize-js maps it to `/` inside the build,
# which is how `./wasmloop.js` is found. `-d http fetch-event` leaves out
# wasi:http, which the host does not provide; stdio (console.* and uncaught
# exceptions go to the host's log), random and clocks stay.
(cd "$here" && node "$cli" chat.js --wit "$wit" --world-name minimal -d http fetch-event -o "$tmp")
mv -f "$tmp" "$out"
echo "build.sh: wrote $out ($(wc -c < "$out") bytes)" >&2
