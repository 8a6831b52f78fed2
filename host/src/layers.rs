//! Dependencies point down only: a module of the host library may use a
//! module of its own layer or a lower one, never a higher one. This test
//! reads the sources, so the rule stays true as the code changes; the
//! table is the one ARCHITECTURE.md shows. (The I/O core, HTTP and reactor
//! crates are below all of these by construction: they cannot name the
//! host library at all.)

use std::path::Path;

/// Each top-level module of `host/src`, lowest layer first.
const LAYERS: &[&[&str]] = &[
    // Leaves: no WebAssembly, no server.
    &["sys", "descriptors", "grants", "callbacks", "metrics", "limits", "os_error", "guest_io"],
    // wasmtime and the WIT contract.
    &["runtime"],
    // The reactor's handler: routes events to guests.
    &["server"],
    // Around the server: the admin listener, embedding, workers.
    &["admin", "embed", "on_calloop", "workers"],
    // What the binary reads: flags and the config file.
    &["config"],
];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// The `crate::x` paths a source file names outside comments.
fn uses(source: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in source.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            found.push(name);
        }
    }
    found
}

fn visit(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("host/src is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            visit(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// Every source file of the library under `src/`: its top-level module,
/// its path relative to `src/`, and its text.
fn sources() -> Vec<(String, std::path::PathBuf, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    visit(&src, &mut files);
    files
        .into_iter()
        .map(|file| {
            let relative = file.strip_prefix(&src).expect("under src").to_path_buf();
            let module = relative.components().next().and_then(|c| c.as_os_str().to_str()).unwrap_or("");
            let module = module.trim_end_matches(".rs").to_string();
            let source = std::fs::read_to_string(&file).expect("a source file");
            (module, relative, source)
        })
        .collect()
}

#[test]
fn no_module_uses_a_layer_above_its_own() {
    let mut wrong = Vec::new();
    let mut checked = 0;
    for (module, relative, source) in sources() {
        // The binary (main.rs, inspect.rs), the crate root and this test sit on top.
        if ["main", "inspect", "lib", "layers"].contains(&module.as_str()) {
            continue;
        }
        let own = layer(&module).unwrap_or_else(|| panic!("{module} is in no layer: add it to LAYERS"));
        for used in uses(&source) {
            checked += 1;
            let Some(theirs) = layer(&used) else { continue };
            if theirs > own {
                wrong.push(format!("{} uses crate::{used}", relative.display()));
            }
        }
    }
    assert!(checked > 50, "the scan found only {checked} uses: is it reading the sources?");
    assert!(wrong.is_empty(), "uses of a higher layer:\n{}", wrong.join("\n"));
}

/// The leaves hold no WebAssembly: wasmtime is named from the runtime up,
/// never in the I/O context a native handler shares with wasm guests.
#[test]
fn the_lowest_layer_names_no_wasmtime() {
    let mut wrong = Vec::new();
    for (module, relative, source) in sources() {
        if layer(&module) != Some(0) {
            continue;
        }
        for (number, line) in source.lines().enumerate() {
            if line.split("//").next().unwrap_or("").contains("wasmtime") {
                wrong.push(format!("{}:{}", relative.display(), number + 1));
            }
        }
    }
    assert!(wrong.is_empty(), "wasmtime named in the lowest layer:\n{}", wrong.join("\n"));
}
