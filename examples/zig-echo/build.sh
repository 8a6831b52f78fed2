#!/usr/bin/env bash
# Builds target/examples/zig-echo.wasm from src/echo.zig, installing the tools
# it needs first if they are missing (so a fresh machine needs only this):
#   - Zig 0.17.0 (PyPI `ziglang`, into target/lang-tools/zig)
#   - wit-bindgen-cli and wasm-tools (pinned in ../wit-tools.sh)
# Zig compiles the generated C itself: no system C compiler is needed.
# Run it from anywhere; it is idempotent. Paths are relative to the
# workspace root (two levels up).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
tools="$root/target/lang-tools"
work="$root/target/example-build/zig-echo"
# Zig's compile cache (its wasi-libc build, ~1 min the first time), kept
# inside target/ rather than ~/.cache.
cache="$root/target/example-build/zig-cache"
out="$root/target/examples/zig-echo.wasm"

ZIG_VERSION=0.17.0

zig="$tools/zig/ziglang/zig"
if ! [[ -x $zig && $("$zig" version) == "$ZIG_VERSION" ]]; then
  echo "build.sh: installing Zig $ZIG_VERSION" >&2
  rm -rf "$tools/zig"
  python3 -m pip install --quiet --disable-pip-version-check --target "$tools/zig" "ziglang==$ZIG_VERSION"
fi

# wit-bindgen-cli and wasm-tools, shared with the other C-bindings example.
source "$here/../wit-tools.sh"

# Bindings for world `minimal` (all the echo needs), and the header
# translated to Zig: Zig 0.17 has no @cImport, `zig translate-c` replaces it.
rm -rf "$work"
mkdir -p "$work" "$(dirname "$out")"
if ! log=$("$wit_bindgen" c --world minimal --out-dir "$work" "$root/wit/handler.wit" 2>&1); then
  echo "$log" >&2
  exit 1
fi
"$zig" translate-c -target wasm32-wasi -lc "$work/minimal.h" >"$work/bindings.zig"

# A reactor: no main, the host calls the exports. Zig links wasi-libc for
# malloc (the bindings' cabi_realloc); the module imports nothing from WASI.
# The modules: root (echo.zig) imports wasmloop, which imports bindings.
"$zig" build-exe -target wasm32-wasi -mexec-model=reactor -fno-entry --name zig-echo \
  -O ReleaseFast -lc -I "$work" -cflags -O2 -- "$work/minimal.c" \
  --dep wasmloop -Mroot="$here/src/echo.zig" \
  --dep bindings -Mwasmloop="$here/src/wasmloop.zig" \
  -Mbindings="$work/bindings.zig" \
  "$work/minimal_component_type.o" \
  --cache-dir "$cache" --global-cache-dir "$cache" -femit-bin="$work/zig-echo.core.wasm"

# Drop DWARF (1 MB, mostly wasi-libc's) but keep function names, so a trap's
# backtrace in the host log is readable; -fstrip would drop the names too.
"$wasm_tools" strip "$work/zig-echo.core.wasm" -o "$work/zig-echo.stripped.wasm"
"$wasm_tools" component new "$work/zig-echo.stripped.wasm" -o "$work/zig-echo.wasm"
"$wasm_tools" validate "$work/zig-echo.wasm"
mv "$work/zig-echo.wasm" "$out"
echo "built $out ($(stat -c %s "$out") bytes)" >&2
