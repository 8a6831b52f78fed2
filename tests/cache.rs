//! The compiled-artifact cache on the real host: a restart or a reload of an
//! unchanged module loads its code instead of compiling it; a damaged entry
//! is noticed, deleted and rebuilt, never run; `--no-cache` keeps nothing;
//! an unusable cache directory is named in one line.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::{self, HOST, Host, Signal, bounded, describe, read_exactly, run_bounded};

const LOG_WAIT: Duration = Duration::from_secs(60);

/// An empty cache directory of this test's own.
fn cache_dir(test: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cache-tests").join(test);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Starts the echo guest with `args`, checks that it echoes.
fn echo_host(args: &[&str]) -> Host {
    let host = Host::command("echo").args(args.iter().copied()).spawn();
    let mut client = host.connect();
    client.write_all(b"cached?\n").unwrap();
    assert_eq!(read_exactly(&mut client, 8), b"cached?\n", "the guest echoes");
    host
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(dir) {
        Ok(list) => list.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

/// The one `.cwasm` entry in `dir` (and no leftover temporary files).
fn only_entry(dir: &Path) -> PathBuf {
    let all = entries(dir);
    assert_eq!(all.len(), 1, "exactly one cache entry expected in {}: {all:?}", dir.display());
    assert_eq!(all[0].extension().and_then(|e| e.to_str()), Some("cwasm"), "{all:?}");
    all[0].clone()
}

#[test]
fn a_restart_loads_the_unchanged_module_from_the_cache() {
    bounded(Duration::from_secs(120), || {
        let dir = cache_dir("restart");
        let flag = ["--cache-dir", dir.to_str().unwrap()];

        let cold = echo_host(&flag);
        let line = cold.wait_for_log("compiled in", LOG_WAIT);
        assert!(
            line.contains("echo.wasm") && line.contains("version "),
            "the compile line names module and version: {line}"
        );
        assert_eq!(cold.count_log("compiled cache"), 0, "an empty cache has nothing to load:\n{}", cold.logs());
        cold.assert_no_errors();
        drop(cold);
        let entry = only_entry(&dir);

        let warm = echo_host(&flag);
        warm.wait_for_log("loaded from the compiled cache in", LOG_WAIT);
        assert_eq!(warm.count_log("compiled in"), 0, "the warm start compiled anyway:\n{}", warm.logs());
        warm.assert_no_errors();
        assert_eq!(only_entry(&dir), entry, "the warm start reused the entry");
    });
}

#[test]
fn a_corrupt_entry_is_detected_deleted_and_rebuilt() {
    bounded(Duration::from_secs(180), || {
        let dir = cache_dir("corrupt");
        let flag = ["--cache-dir", dir.to_str().unwrap()];
        drop(echo_host(&flag));
        let entry = only_entry(&dir);

        // One flipped bit in the code, as a bad disk or a torn copy leaves.
        let mut bytes = std::fs::read(&entry).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x04;
        std::fs::write(&entry, &bytes).unwrap();

        let host = echo_host(&flag);
        let line = host.wait_for_log("compiled cache entry rejected", LOG_WAIT);
        assert!(line.contains("checksum does not match"), "the warning says why: {line}");
        assert!(line.contains(" WARN "), "a rejected entry is a warning: {line}");
        host.wait_for_log("compiled in", LOG_WAIT);
        drop(host);

        // Rebuilt: the next start loads it again.
        only_entry(&dir);
        let host = echo_host(&flag);
        host.wait_for_log("loaded from the compiled cache in", LOG_WAIT);
        host.assert_no_errors();

        // Garbage where an entry was: the same.
        std::fs::write(only_entry(&dir), b"not an entry at all").unwrap();
        drop(host);
        let host = echo_host(&flag);
        let line = host.wait_for_log("compiled cache entry rejected", LOG_WAIT);
        assert!(line.contains("truncated"), "the warning says why: {line}");
    });
}

#[test]
fn a_reload_of_an_unchanged_module_skips_compiling() {
    bounded(Duration::from_secs(120), || {
        let dir = cache_dir("reload");
        let host = echo_host(&["--cache-dir", dir.to_str().unwrap()]);
        host.wait_for_log("compiled in", LOG_WAIT);
        host.signal(Signal::HUP);
        let line = host.wait_for_log("reloaded", LOG_WAIT);
        assert!(line.contains("loaded from the compiled cache in"), "the reload used the cache: {line}");
        let mut client = host.connect();
        client.write_all(b"after\n").unwrap();
        assert_eq!(read_exactly(&mut client, 6), b"after\n");
        host.assert_no_errors();
    });
}

#[test]
fn the_default_cache_is_under_xdg_cache_home_and_no_cache_keeps_nothing() {
    bounded(Duration::from_secs(120), || {
        let home = cache_dir("xdg-home");
        let default_dir = home.join("wasmloop");
        let host = Host::command("echo").args(["--no-cache"]).env("XDG_CACHE_HOME", &home).spawn();
        host.wait_for_log("compiled in", LOG_WAIT);
        drop(host);
        assert!(entries(&default_dir).is_empty(), "--no-cache stored nothing: {:?}", entries(&default_dir));

        let host = Host::command("echo").env("XDG_CACHE_HOME", &home).spawn();
        host.wait_for_log("compiled in", LOG_WAIT);
        drop(host);
        only_entry(&default_dir);
    });
}

#[test]
fn a_cache_directory_others_can_write_is_refused_in_one_line() {
    bounded(Duration::from_secs(60), || {
        use std::os::unix::fs::PermissionsExt;
        let dir = cache_dir("world-writable");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let mut cmd = Command::new(HOST);
        cmd.args(["run", "--listen", "127.0.0.1:0", "--cache-dir"])
            .arg(&dir)
            .arg(support::guest("echo"))
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1");
        let out = run_bounded(cmd, Duration::from_secs(60)).expect("running host");
        let lines = out.stderr_lines();
        assert_eq!(lines.len(), 1, "one stderr line expected:\n{}", out.stderr);
        assert!(lines[0].contains(dir.to_str().unwrap()) && lines[0].contains("lets others write"), "{}", lines[0]);
        assert_eq!(out.status.code(), Some(1), "{}", describe(out.status));
    });
}
