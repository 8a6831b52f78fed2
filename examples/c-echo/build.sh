#!/usr/bin/env bash
# Builds target/examples/c-echo.wasm from echo.c, installing the tools it
# needs first if they are missing (so a fresh machine needs only this):
#   - clang 19, wasm-ld 19, wasi-libc, compiler-rt for wasm32 (Debian)
#   - wit-bindgen-cli and wasm-tools (pinned in ../wit-tools.sh)
# Run it from anywhere; it is idempotent. Paths are relative to the
# workspace root (two levels up).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
tools="$root/target/lang-tools"
work="$root/target/example-build/c-echo"
out="$root/target/examples/c-echo.wasm"

LLVM=19
DEBIAN_PACKAGES=("clang-$LLVM" "lld-$LLVM" wasi-libc "libclang-rt-$LLVM-dev-wasm32")

sudo=()
if [[ $(id -u) -ne 0 ]]; then sudo=(sudo); fi

install_debian_packages() {
  local missing=()
  for package in "$@"; do
    if ! dpkg-query -W -f '${Status}' "$package" 2>/dev/null | grep -q 'ok installed'; then
      missing+=("$package")
    fi
  done
  [[ ${#missing[@]} -eq 0 ]] && return
  echo "build.sh: installing ${missing[*]}" >&2
  # Refresh the package lists only if apt does not know a package yet.
  for package in "${missing[@]}"; do
    if ! apt-cache show "$package" >/dev/null 2>&1; then
      "${sudo[@]}" apt-get update -q
      break
    fi
  done
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# wit-bindgen-cli and wasm-tools, shared with the other C-bindings example.
source "$here/../wit-tools.sh"

install_debian_packages "${DEBIAN_PACKAGES[@]}"

# Bindings for world `minimal` (all the echo needs): minimal.h, minimal.c and
# minimal_component_type.o, which carries the world into the core module so
# `component new` knows the types.
rm -rf "$work"
mkdir -p "$work" "$(dirname "$out")"
if ! log=$("$wit_bindgen" c --world minimal --out-dir "$work" "$root/wit/handler.wit" 2>&1); then
  echo "$log" >&2
  exit 1
fi

# A reactor: no main, the host calls the exports. Our code is held to
# -Wall -Wextra -Werror, the generated code is not. --strip-debug drops DWARF
# but keeps function names, so a trap's backtrace in the host log is readable.
cc=("clang-$LLVM" --target=wasm32-wasi -O2 -std=c11 -I "$work" -I "$here")
"${cc[@]}" -Wall -Wextra -Werror -c "$here/echo.c" -o "$work/echo.o"
"${cc[@]}" -Wall -Wextra -Werror -c "$here/wasmloop.c" -o "$work/wasmloop.o"
"${cc[@]}" -c "$work/minimal.c" -o "$work/minimal.o"
"${cc[@]}" -mexec-model=reactor "$work/echo.o" "$work/wasmloop.o" "$work/minimal.o" "$work/minimal_component_type.o" \
  -Wl,--strip-debug -o "$work/c-echo.core.wasm"

# The module imports nothing from WASI (no stdio, no files), so no preview1
# adapter is needed.
"$wasm_tools" component new "$work/c-echo.core.wasm" -o "$work/c-echo.wasm"
"$wasm_tools" validate "$work/c-echo.wasm"
mv "$work/c-echo.wasm" "$out"
echo "built $out ($(stat -c %s "$out") bytes)" >&2
