#!/usr/bin/env bash
# Builds the Python echo guest into target/examples/python-echo.wasm.
#
#   bash examples/python-echo/build.sh        (from anywhere)
#
# 1. Installs componentize-py (pinned, from PyPI) into
#    target/lang-tools/componentize-py-$VERSION if it is not there yet.
# 2. Writes Python stubs of wit/handler.wit (world `minimal`) to
#    target/examples/python-echo-bindings, for editors and type checkers
#    (componentize-py generates the real bindings itself while building).
# 3. componentize-py bundles CPython, app.py and wasmloop.py into one
#    component. --stub-wasi replaces the WASI imports CPython would make with
#    traps, so the component imports only wasmloop:handler interfaces.
#
# Idempotent: a second run with unchanged inputs does nothing (a stamp holds
# the SHA-256 of the inputs and the tool version).
set -euo pipefail

COMPONENTIZE_PY_VERSION=0.25.1
WORLD=minimal

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
tools="$root/target/lang-tools/componentize-py-$COMPONENTIZE_PY_VERSION"
out_dir="$root/target/examples"
out="$out_dir/python-echo.wasm"
stamp="$out_dir/python-echo.stamp"
bindings="$out_dir/python-echo-bindings"
wit="$root/wit/handler.wit"

python="${PYTHON:-python3}"
if ! command -v "$python" >/dev/null; then
    echo "build.sh: $python not found; componentize-py needs Python 3.10 or later to run" >&2
    exit 1
fi

componentize_py() {
    PYTHONPATH="$tools" "$python" -c \
        'import sys; from componentize_py import script; sys.argv[0] = "componentize-py"; script()' "$@"
}

# ---- 1. The toolchain ----------------------------------------------------------
if [ ! -f "$tools/.installed" ]; then
    echo "build.sh: installing componentize-py $COMPONENTIZE_PY_VERSION into ${tools#"$root"/}" >&2
    mkdir -p "$root/target/lang-tools"
    staging="$(mktemp -d "$root/target/lang-tools/.componentize-py.XXXXXX")"
    trap 'rm -rf "$staging"' EXIT
    PIP_ROOT_USER_ACTION=ignore "$python" -m pip install --disable-pip-version-check --no-input --quiet \
        --target "$staging" "componentize-py==$COMPONENTIZE_PY_VERSION"
    touch "$staging/.installed"
    rm -rf "$tools"
    mv "$staging" "$tools"
    trap - EXIT
fi

# ---- Up to date? ---------------------------------------------------------------
inputs_hash="$(
    {
        echo "componentize-py $COMPONENTIZE_PY_VERSION world $WORLD"
        cat "$here/build.sh" "$wit"
        for f in "$here"/*.py; do echo "$f"; cat "$f"; done
    } | sha256sum | cut -d' ' -f1
)"
if [ -f "$out" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$inputs_hash" ]; then
    echo "build.sh: ${out#"$root"/} is up to date" >&2
    exit 0
fi

mkdir -p "$out_dir"

# ---- 2. Bindings (stubs for editors) -------------------------------------------
rm -rf "$bindings"
componentize_py -q -d "$wit" -w "$WORLD" bindings "$bindings"

# ---- 3. The component ----------------------------------------------------------
# Run from a scratch copy of the sources, so only they are on the Python path.
src="$(mktemp -d "$out_dir/.python-echo-src.XXXXXX")"
trap 'rm -rf "$src"' EXIT
cp "$here"/*.py "$src"/
(
    cd "$src"
    unset VIRTUAL_ENV
    componentize_py -q -d "$wit" -w "$WORLD" componentize app --stub-wasi -p . -o "$src/out.wasm"
)
mv "$src/out.wasm" "$out"
echo "$inputs_hash" >"$stamp"
echo "build.sh: built ${out#"$root"/} ($(stat -c %s "$out") bytes)" >&2
