//! The guests the tests run: the first-party Rust guests, built from source
//! once per test process, and the examples in other languages, each built
//! by its own `build.sh`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use super::process::run_bounded;

/// How long building the guests may take (a cold build on 2 cores).
const BUILD_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// How many guest builds are under way in this process: while any is, the
/// watchdog counts no time against any test (the one that triggered the
/// build, or one waiting for it). A count, not a flag: the Rust guests'
/// build and an example's `build.sh` may overlap.
static BUILDING: AtomicUsize = AtomicUsize::new(0);

/// Whether a guest build is under way in this process.
pub(super) fn is_building() -> bool {
    BUILDING.load(Ordering::SeqCst) > 0
}

/// Counts as a build in progress while it lives.
struct Building;

impl Building {
    fn start() -> Building {
        BUILDING.fetch_add(1, Ordering::SeqCst);
        Building
    }
}

impl Drop for Building {
    fn drop(&mut self) {
        BUILDING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The workspace root (the host crate's parent).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the host crate lives inside the workspace").to_path_buf()
}

/// The path of a first-party guest component (`echo`, `chat`, `ticker`,
/// `faulty`, `hostile`, `relay`, `udp_echo`, `hello`, `broken_init`),
/// building all of them from source the first time it is called in this
/// process.
pub fn guest(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let _building = Building::start();
        build_guests()
    });
    let dir = match dir {
        Ok(dir) => dir,
        Err(e) => panic!("{e}"),
    };
    let path = dir.join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "guest build succeeded but {} does not exist (is the target directory elsewhere?)",
        path.display()
    );
    path
}

fn build_guests() -> Result<PathBuf, String> {
    let root = workspace_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&root).args([
        "build",
        "--profile",
        "guest",
        "--target",
        "wasm32-wasip2",
        "-p",
        "echo",
        "-p",
        "chat",
        "-p",
        "ticker",
        "-p",
        "faulty",
        "-p",
        "counter",
        "-p",
        "hostile",
        "-p",
        "relay",
        "-p",
        "udp-echo",
        "-p",
        "hello",
        "-p",
        "broken-init",
        "-p",
        "http-hello",
        "-p",
        "http-static-kv",
        "-p",
        "ws-chat",
    ]);
    let out = run_bounded(cmd, BUILD_TIMEOUT).map_err(|e| format!("cannot run {cargo:?} to build the guests: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building the guests failed ({}). Is the target installed? \
             Try `rustup target add wasm32-wasip2`.\ncargo's stderr:\n{}",
            out.status, out.stderr
        ));
    }
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        // `join` keeps an absolute path as it is; a relative one is relative
        // to where cargo ran, the workspace root.
        Some(dir) => root.join(dir),
        None => root.join("target"),
    };
    Ok(target.join("wasm32-wasip2").join("guest"))
}

/// A guest from `examples/<example>/` written in another language, built by
/// its `build.sh` (which installs its toolchain by package name if missing)
/// once per test process; returns `target/examples/<example>.wasm`.
pub fn example_guest(example: &str) -> PathBuf {
    static BUILT: Mutex<BTreeMap<String, Result<PathBuf, String>>> = Mutex::new(BTreeMap::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let result = built.entry(example.to_string()).or_insert_with(|| {
        let _building = Building::start();
        build_example(example)
    });
    match result {
        Ok(path) => path.clone(),
        Err(e) => panic!("{e}"),
    }
}

fn build_example(example: &str) -> Result<PathBuf, String> {
    let root = workspace_root();
    let script = root.join("examples").join(example).join("build.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(&script).current_dir(&root);
    let out = run_bounded(cmd, BUILD_TIMEOUT).map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!("{} failed ({}):\n{}\n{}", script.display(), out.status, out.stdout, out.stderr));
    }
    let path = root.join("target").join("examples").join(format!("{example}.wasm"));
    if !path.is_file() {
        return Err(format!("{} succeeded but did not produce {}", script.display(), path.display()));
    }
    Ok(path)
}
