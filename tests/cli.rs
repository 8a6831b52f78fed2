//! The command line: misuse is reported in exactly one stderr line that
//! names the problem, with exit code 2 for bad arguments and 1 for anything
//! else; help is on stdout with exit code 0.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use clap::{Args, FromArgMatches};
use wasmloop::limits::Limits;

use crate::support::{self, HOST, Output, bounded, describe, guest, run_bounded};

/// Runs `host ARGS` to completion (bounded).
fn host(args: &[&str]) -> Output {
    let mut cmd = Command::new(HOST);
    cmd.args(args).env("XDG_CACHE_HOME", support::shared_cache_home()).env_remove("RUST_LOG").env("NO_COLOR", "1");
    run_bounded(cmd, Duration::from_secs(60)).expect("running host")
}

/// Asserts that the host failed with `code` and exactly one stderr line
/// containing every one of `words`; returns that line.
fn assert_one_line_error(out: &Output, code: i32, words: &[&str]) -> String {
    let lines = out.stderr_lines();
    assert_eq!(lines.len(), 1, "expected exactly one stderr line, got:\n{}", out.stderr);
    let line = lines[0];
    for word in words {
        assert!(line.contains(word), "{line:?} does not mention {word:?}");
    }
    assert_eq!(out.status.code(), Some(code), "host ended with {}, stderr: {line}", describe(out.status));
    assert!(out.stdout.is_empty(), "nothing on stdout expected, got {:?}", out.stdout);
    line.to_string()
}

/// A file in this test's scratch directory with `contents`.
fn scratch_file(name: &str, contents: &[u8]) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

fn run_module(path: &Path) -> Output {
    host(&["run", path.to_str().unwrap(), "--listen", "127.0.0.1:0"])
}

#[test]
fn a_missing_module_file_is_named() {
    bounded(Duration::from_secs(90), || {
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli/no-such-guest.wasm");
        let out = run_module(&path);
        assert_one_line_error(&out, 1, &[path.to_str().unwrap(), "cannot read"]);
    });
}

#[test]
fn a_text_file_is_not_a_webassembly_file() {
    bounded(Duration::from_secs(90), || {
        let path = scratch_file("notes.wasm", b"this is just text\n");
        let out = run_module(&path);
        assert_one_line_error(&out, 1, &[path.to_str().unwrap(), "not a WebAssembly file"]);
    });
}

#[test]
fn a_core_module_is_not_a_component() {
    bounded(Duration::from_secs(90), || {
        let path = scratch_file("core.wasm", b"\0asm\x01\0\0\0");
        let out = run_module(&path);
        assert_one_line_error(&out, 1, &[path.to_str().unwrap(), "core WebAssembly module"]);
    });
}

#[test]
fn a_component_without_the_callbacks_export_does_not_implement_the_world() {
    bounded(Duration::from_secs(90), || {
        let wasm = wat::parse_str("(component)").expect("an empty component");
        let path = scratch_file("empty-component.wasm", &wasm);
        let out = run_module(&path);
        assert_one_line_error(&out, 1, &[path.to_str().unwrap(), "does not implement", "wasmloop:handler/callbacks"]);
    });
}

#[test]
fn a_component_importing_an_interface_the_host_lacks_names_the_import() {
    bounded(Duration::from_secs(90), || {
        // The import needs something from the interface: an import of an
        // empty instance is satisfied by nothing at all.
        let wasm = wat::parse_str(
            r#"(component
                (import "wasi:sockets/tcp@0.2.0" (instance (export "start-bind" (func)))))"#,
        )
        .expect("a component importing wasi:sockets/tcp");
        let path = scratch_file("imports-sockets.wasm", &wasm);
        let out = run_module(&path);
        assert_one_line_error(&out, 1, &[path.to_str().unwrap(), "wasi:sockets/tcp@0.2.0"]);
    });
}

#[test]
fn an_address_in_use_is_named() {
    bounded(Duration::from_secs(90), || {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let echo = guest("echo");
        let out = host(&["run", echo.to_str().unwrap(), "--listen", &addr]);
        assert_one_line_error(&out, 1, &[&addr, "in use"]);
    });
}

#[test]
fn a_guest_that_refuses_to_start_is_reported() {
    bounded(Duration::from_secs(90), || {
        let ticker = guest("ticker");
        let out = host(&["run", ticker.to_str().unwrap(), "--listen", "127.0.0.1:0", "--guest-config", "soon"]);
        // The guest's own message, naming the bad value.
        assert_one_line_error(&out, 1, &["ticker", "bad interval", "soon"]);
    });
}

#[test]
fn a_bad_listen_address_is_an_argument_error() {
    bounded(Duration::from_secs(60), || {
        let out = host(&["run", "guest.wasm", "--listen", "nonsense"]);
        assert_one_line_error(&out, 2, &["nonsense", "--listen"]);
    });
}

#[test]
fn an_unknown_flag_is_an_argument_error() {
    bounded(Duration::from_secs(60), || {
        let out = host(&["run", "guest.wasm", "--listen", "127.0.0.1:0", "--frobnicate"]);
        assert_one_line_error(&out, 2, &["--frobnicate"]);
    });
}

#[test]
fn a_misspelt_flag_keeps_clap_s_tip_naming_the_right_one() {
    bounded(Duration::from_secs(60), || {
        let out = host(&["run", "guest.wasm", "--lisen", "127.0.0.1:0"]);
        assert_one_line_error(&out, 2, &["--lisen", "tip: a similar argument exists: '--listen'"]);
    });
}

#[test]
fn a_missing_listen_flag_is_an_argument_error() {
    bounded(Duration::from_secs(60), || {
        let out = host(&["run", "guest.wasm"]);
        assert_one_line_error(&out, 2, &["--listen"]);
    });
}

#[test]
fn no_command_at_all_is_an_argument_error_that_says_what_is_missing() {
    bounded(Duration::from_secs(60), || {
        let out = host(&[]);
        let line = assert_one_line_error(&out, 2, &[]);
        assert!(
            line.contains("subcommand") || line.contains("Usage"),
            "{line:?} does not say that a command is missing"
        );
    });
}

#[test]
fn help_lists_the_run_command_and_exits_0() {
    bounded(Duration::from_secs(60), || {
        let out = host(&["--help"]);
        assert!(out.status.success(), "host --help: {}", describe(out.status));
        assert!(out.stdout.contains("run"), "help:\n{}", out.stdout);
        assert!(out.stderr.is_empty(), "stderr: {}", out.stderr);
    });
}

#[test]
fn run_help_documents_the_options_and_exits_0() {
    bounded(Duration::from_secs(60), || {
        let out = host(&["run", "--help"]);
        assert!(out.status.success(), "host run --help: {}", describe(out.status));
        for option in ["--listen", "--guest-config", "--max-output", "--callback-deadline-ms", "--shutdown-timeout-ms"]
        {
            assert!(out.stdout.contains(option), "`host run --help` does not mention {option}:\n{}", out.stdout);
        }
        assert!(out.stderr.is_empty(), "stderr: {}", out.stderr);
    });
}

#[test]
fn a_zero_callback_deadline_is_an_argument_error() {
    bounded(Duration::from_secs(60), || {
        let out = host(&["run", "x.wasm", "--listen", "127.0.0.1:0", "--callback-deadline-ms", "0"]);
        assert_one_line_error(&out, 2, &["--callback-deadline-ms", "'0'", "at least 1"]);
    });
}

#[test]
fn a_cpu_budget_outside_a_second_and_zero_callbacks_per_turn_are_argument_errors() {
    bounded(Duration::from_secs(60), || {
        for (flag, value) in [("--cpu-budget-ms", "0"), ("--cpu-budget-ms", "1001"), ("--max-callbacks-per-turn", "0")]
        {
            let out = host(&["run", "x.wasm", "--listen", "127.0.0.1:0", flag, value]);
            assert_one_line_error(&out, 2, &[flag, value]);
        }
    });
}

#[test]
fn a_memory_cap_whose_bytes_overflow_is_an_argument_error_not_a_wrap() {
    bounded(Duration::from_secs(90), || {
        // A real guest: a cap that wrapped would start it under some other cap.
        let echo = guest("echo");
        for mib in [u64::MAX.to_string(), (1u64 << 44).to_string()] {
            let out = host(&["run", echo.to_str().unwrap(), "--listen", "127.0.0.1:0", "--max-memory-mib", &mib]);
            assert_one_line_error(&out, 2, &["--max-memory-mib", &mib, "more than this machine can address"]);
        }
    });
}

// ---- `--config FILE`: several guests, errors naming file, key and problem.

fn run_config(name: &str, toml: &str) -> Output {
    let path = scratch_file(name, toml.as_bytes());
    host(&["run", "--config", path.to_str().unwrap()])
}

#[test]
fn a_config_value_of_the_wrong_type_names_file_key_and_line() {
    let out = run_config(
        "wrong-type.toml",
        "[[guest]]\nname = \"a\"\nmodule = \"a.wasm\"\n[guest.limits]\nmax_timers = \"lots\"\n",
    );
    assert_one_line_error(&out, 1, &["wrong-type.toml", "guest[0].limits.max_timers", "invalid type", "line 5"]);
}

#[test]
fn an_unknown_config_key_is_named_with_the_keys_that_exist() {
    let out = run_config("unknown-key.toml", "[[guest]]\nname = \"a\"\nmodul = \"a.wasm\"\n");
    assert_one_line_error(&out, 1, &["unknown-key.toml", "guest[0].modul", "unknown field", "`module`", "line 3"]);
}

#[test]
fn a_bad_allowlist_rule_in_the_config_is_named() {
    let out = run_config("bad-rule.toml", "[[guest]]\nname = \"a\"\nmodule = \"a.wasm\"\nconnect = [\"nope\"]\n");
    assert_one_line_error(&out, 1, &["bad-rule.toml", "guest[0].connect", "`nope`", "no port"]);
}

#[test]
fn two_guests_with_one_name_are_refused() {
    let out = run_config(
        "same-name.toml",
        "[[guest]]\nname = \"a\"\nmodule = \"a.wasm\"\n[[guest]]\nname = \"a\"\nmodule = \"b.wasm\"\n",
    );
    assert_one_line_error(&out, 1, &["same-name.toml", "guest[1].name", "used by another guest"]);
}

#[test]
fn zero_deadlines_and_overflowing_memory_caps_in_the_config_are_named() {
    bounded(Duration::from_secs(90), || {
        let echo = guest("echo");
        let guest =
            format!("[[guest]]\nname = \"a\"\nmodule = {:?}\nlisten = [\"127.0.0.1:0\"]\n", echo.to_str().unwrap());
        for (key, value, words) in [
            ("callback_deadline_ms", "0", &["guest[0].limits.callback_deadline_ms", "at least 1"][..]),
            ("init_deadline_ms", "0", &["guest[0].limits.init_deadline_ms", "at least 1"]),
            (
                "max_memory_mib",
                "17592186044416",
                &["guest[0].limits.max_memory_mib", "more than this machine can address"],
            ),
            ("max_memory_mib", "9223372036854775807", &["guest[0].limits.max_memory_mib", "more than this machine"]),
            ("max_memory_mib", "18446744073709551615", &["guest[0].limits.max_memory_mib", "more than this machine"]),
            ("cpu_budget_ms", "0", &["guest[0].limits.cpu_budget_ms", "1 to 1000"]),
            ("cpu_budget_ms", "1001", &["guest[0].limits.cpu_budget_ms", "1 to 1000"]),
            ("max_callbacks_per_turn", "0", &["guest[0].limits.max_callbacks_per_turn", "at least 1"]),
        ] {
            let file = format!("limit-{key}-{value}.toml");
            let out = run_config(&file, &format!("{guest}[guest.limits]\n{key} = {value}\n"));
            let mut words = words.to_vec();
            words.push(&file);
            assert_one_line_error(&out, 1, &words);
        }
    });
}

#[test]
fn a_config_whose_guests_all_fail_to_start_stops_the_host() {
    bounded(Duration::from_secs(90), || {
        let broken = guest("broken_init");
        let mut toml = String::new();
        for name in ["a", "b"] {
            toml.push_str(&format!("[[guest]]\nname = \"{name}\"\nmodule = {:?}\n\n", broken.to_str().unwrap()));
        }
        let out = run_config("all-broken.toml", &toml);
        assert_eq!(out.status.code(), Some(1), "{}\n{}", describe(out.status), out.stderr);
        let lines = out.stderr_lines();
        let last = lines.last().copied().unwrap_or_default();
        assert!(last.starts_with("error: no guest could start"), "{}", out.stderr);
        assert!(last.contains("guest `a`") && last.contains("init"), "{last}");
        assert_eq!(lines.iter().filter(|l| l.starts_with("error")).count(), 1, "{}", out.stderr);
    });
}

#[test]
fn watch_refuses_a_module_that_group_or_others_can_write() {
    use std::os::unix::fs::PermissionsExt;
    bounded(Duration::from_secs(90), || {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli/watched");
        std::fs::create_dir_all(&dir).unwrap();
        let module = dir.join("echo.wasm");
        std::fs::copy(guest("echo"), &module).unwrap();
        let mode =
            |path: &Path, mode: u32| std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        let run = || host(&["run", module.to_str().unwrap(), "--listen", "127.0.0.1:0", "--watch"]);
        mode(&module, 0o644);
        for (dir_mode, who) in [(0o777, "others"), (0o775, "its group")] {
            mode(&dir, dir_mode);
            assert_one_line_error(&run(), 1, &["--watch", dir.to_str().unwrap(), who]);
        }
        mode(&dir, 0o755);
        mode(&module, 0o666);
        assert_one_line_error(&run(), 1, &["--watch", module.to_str().unwrap(), "others"]);
        mode(&module, 0o644);
    });
}

#[test]
fn a_config_and_a_module_together_are_an_argument_error() {
    let path = scratch_file("both.toml", b"");
    let out = host(&["run", "x.wasm", "--config", path.to_str().unwrap()]);
    assert_one_line_error(&out, 2, &["--config"]);
}

/// Every per-guest flag, with a value it would take without `--config`.
fn per_guest_flags() -> Vec<(String, String)> {
    let mut flags: Vec<(String, String)> = [
        ("--listen", "127.0.0.1:0"),
        ("--listen-http", "127.0.0.1:0"),
        ("--listen-ws", "127.0.0.1:0"),
        ("--listen-fd", "3"),
        ("--guest-config", "hello"),
        ("--connect", "127.0.0.1:6379"),
        ("--udp", "127.0.0.1:0"),
        ("--on-fault", "stop"),
        ("--reload-mode", "migrate"),
    ]
    .iter()
    .map(|(flag, value)| (flag.to_string(), value.to_string()))
    .collect();
    // Every limit, at its default: typed, it is refused all the same.
    for arg in Limits::augment_args(clap::Command::new("limits")).get_arguments() {
        let default = arg.get_default_values()[0].to_str().unwrap().to_string();
        flags.push((format!("--{}", arg.get_long().unwrap()), default));
    }
    flags
}

#[test]
fn each_per_guest_flag_given_with_a_config_is_refused_in_one_line_naming_it() {
    bounded(Duration::from_secs(300), || {
        let path = scratch_file("refused-flags.toml", b"");
        for (flag, value) in per_guest_flags() {
            let out = host(&["run", "--config", path.to_str().unwrap(), &flag, &value]);
            let line = assert_one_line_error(&out, 2, &[&flag, "cannot be used with --config", "config file"]);
            assert!(line.starts_with(&format!("error: {flag} ")), "{line}");
        }
    });
}

#[test]
fn several_per_guest_flags_with_a_config_get_one_line_each() {
    let path = scratch_file("refused-two.toml", b"");
    let out = host(&["run", "--config", path.to_str().unwrap(), "--max-timers", "5", "--listen", "127.0.0.1:0"]);
    let lines = out.stderr_lines();
    assert_eq!(lines.len(), 2, "{}", out.stderr);
    assert!(lines.iter().any(|l| l.contains("--max-timers cannot be used with --config")), "{}", out.stderr);
    assert!(lines.iter().any(|l| l.contains("--listen cannot be used with --config")), "{}", out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}", describe(out.status));
}

#[test]
fn host_wide_flags_may_be_given_with_a_config() {
    // The file has no guests: the host gets as far as reading it, so the
    // flags were taken.
    let path = scratch_file("host-wide.toml", b"shutdown_timeout_ms = 100\n");
    let out = host(&[
        "run",
        "--config",
        path.to_str().unwrap(),
        "--workers",
        "2",
        "--shutdown-timeout-ms",
        "5",
        "--drain-timeout-ms",
        "5",
        "--no-cache",
        "--event-loop",
        "native",
    ]);
    assert_one_line_error(&out, 1, &["host-wide.toml", "no [[guest]] entries"]);
}

#[test]
fn run_help_shows_every_limit_with_its_one_default() {
    bounded(Duration::from_secs(60), || {
        let out = host(&["run", "--help"]);
        assert!(out.status.success(), "host run --help: {}", describe(out.status));
        // Each limit's flag and the default its help shows, read back as flags.
        let mut args = vec!["limits".to_string()];
        for arg in Limits::augment_args(clap::Command::new("limits")).get_arguments() {
            let flag = format!("--{} <", arg.get_long().unwrap());
            let (_, help) = out.stdout.split_once(&flag).unwrap_or_else(|| panic!("no {flag} in:\n{}", out.stdout));
            // Its help ends where the next option starts; clap may wrap it.
            let help = help.split("\n  -").next().unwrap().split_whitespace().collect::<Vec<_>>().join(" ");
            let (_, default) = help.split_once("[default: ").unwrap_or_else(|| panic!("{flag}: no default in {help}"));
            let default = default.split(']').next().unwrap();
            args.extend([format!("--{}", arg.get_long().unwrap()), default.to_string()]);
        }
        let command = Limits::augment_args(clap::Command::new("limits"));
        let shown = Limits::from_arg_matches(&command.try_get_matches_from(args).unwrap()).unwrap();
        assert_eq!(shown, Limits::DEFAULT);
    });
}

#[test]
fn a_bad_allowlist_flag_is_an_argument_error() {
    let out = host(&["run", "x.wasm", "--listen", "127.0.0.1:0", "--connect", "10.0.0.0/8"]);
    assert_one_line_error(&out, 2, &["--connect", "no port"]);
}

// ---- host check -------------------------------------------------------------

fn check(path: &Path) -> Output {
    host(&["check", path.to_str().unwrap()])
}

#[test]
fn check_says_a_real_guest_fits_and_lists_its_imports_and_exports() {
    bounded(Duration::from_secs(90), || {
        let out = check(&guest("echo"));
        assert!(out.status.success(), "host check echo.wasm: {}\n{}", describe(out.status), out.stderr);
        for expected in [
            "imports:",
            "ok      wasmloop:handler/connections@",
            "exports:",
            "wasmloop:handler/callbacks@0.1.0  (required",
            "fits the wasmloop:handler world",
        ] {
            assert!(out.stdout.contains(expected), "{expected:?} missing from:\n{}", out.stdout);
        }
        assert!(!out.stdout.contains("MISSING"), "{}", out.stdout);
    });
}

#[test]
fn check_says_what_the_host_does_with_http_callbacks() {
    bounded(Duration::from_secs(90), || {
        let out = check(&guest("http_hello"));
        assert!(out.status.success(), "host check http_hello.wasm: {}\n{}", describe(out.status), out.stderr);
        let line = out
            .stdout
            .lines()
            .find(|l| l.contains("wasmloop:handler/http-callbacks@"))
            .unwrap_or_else(|| panic!("no http-callbacks export listed:\n{}", out.stdout));
        assert!(line.contains("optional: HTTP requests and WebSockets"), "{line}");
        assert!(!out.stdout.contains("not used by this host"), "{}", out.stdout);
    });
}

#[test]
fn check_refuses_a_core_module_in_one_line() {
    bounded(Duration::from_secs(90), || {
        let path = scratch_file("check-core.wasm", b"\0asm\x01\0\0\0");
        let out = check(&path);
        assert_one_line_error(
            &out,
            1,
            &[path.to_str().unwrap(), "core WebAssembly module", "wasm-tools component new"],
        );
    });
}

#[test]
fn check_names_the_missing_callbacks_export() {
    bounded(Duration::from_secs(90), || {
        let wasm = wat::parse_str("(component)").expect("an empty component");
        let path = scratch_file("check-empty.wasm", &wasm);
        let out = check(&path);
        assert_eq!(out.status.code(), Some(1), "{}", describe(out.status));
        assert!(out.stdout.contains("does not fit"), "{}", out.stdout);
        assert!(out.stdout.contains("wasmloop:handler/callbacks"), "names the missing export:\n{}", out.stdout);
    });
}

#[test]
fn check_names_every_import_the_host_does_not_provide() {
    bounded(Duration::from_secs(90), || {
        let wasm = wat::parse_str(
            r#"(component
                (import "wasi:sockets/tcp@0.2.0" (instance (export "start-bind" (func))))
                (import "wasi:clocks/monotonic-clock@0.2.0" (instance (export "now" (func (result u64)))))
                (import "example:kv/store@1.0.0" (instance (export "get" (func (param "k" string) (result string))))))"#,
        )
        .expect("a component importing what the host lacks");
        let path = scratch_file("check-imports.wasm", &wasm);
        let out = check(&path);
        assert_eq!(out.status.code(), Some(1), "{}", describe(out.status));
        for line in [
            "MISSING wasi:sockets/tcp@0.2.0",
            "MISSING example:kv/store@1.0.0",
            "ok      wasi:clocks/monotonic-clock@0.2.0",
            "imports `wasi:sockets/tcp@0.2.0`, which this host does not provide",
            "imports `example:kv/store@1.0.0`, which this host does not provide",
        ] {
            assert!(out.stdout.contains(line), "{line:?} missing from:\n{}", out.stdout);
        }
    });
}

#[test]
fn check_accepts_wasi_imports_from_any_0_2_release() {
    bounded(Duration::from_secs(90), || {
        // Guests built by different toolchains import WASI 0.2.x of
        // different patch releases; the host matches them by semver.
        let wasm = wat::parse_str(
            r#"(component
                (import "wasi:clocks/monotonic-clock@0.2.12" (instance (export "now" (func (result u64)))))
                (import "wasi:random/random@0.2.9" (instance (export "get-random-u64" (func (result u64)))))
                (import "wasi:cli/environment@0.2.0" (instance (export "get-arguments" (func (result (list string)))))))"#,
        )
        .expect("a component importing several WASI 0.2 releases");
        let path = scratch_file("check-wasi-versions.wasm", &wasm);
        let out = check(&path);
        for line in [
            "ok      wasi:clocks/monotonic-clock@0.2.12",
            "ok      wasi:random/random@0.2.9",
            "ok      wasi:cli/environment@0.2.0",
        ] {
            assert!(out.stdout.contains(line), "{line:?} missing from:\n{}", out.stdout);
        }
        assert!(!out.stdout.contains("MISSING"), "{}", out.stdout);
    });
}

#[test]
fn log_format_json_writes_one_json_object_per_line() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    bounded(Duration::from_secs(300), || {
        let mut host = Command::new(HOST)
            .arg("run")
            .arg(guest("echo"))
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .env("XDG_CACHE_HOME", support::shared_cache_home())
            .env_remove("RUST_LOG")
            .stderr(Stdio::piped())
            .spawn()
            .expect("start host");
        let mut lines = Vec::new();
        for line in BufReader::new(host.stderr.take().unwrap()).lines() {
            let line = line.expect("stderr");
            let object: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
            let ready = object["fields"]["message"] == "ready";
            lines.push(object);
            if ready {
                break;
            }
        }
        let _ = host.kill();
        let _ = host.wait();
        assert!(lines.iter().all(|l| l["level"].is_string() && l["timestamp"].is_string()), "{lines:?}");
        let started = lines.iter().find(|l| l["fields"]["message"].as_str().is_some_and(|m| m.starts_with("started")));
        assert_eq!(started.expect("a `started` line")["fields"]["guest"], "echo", "guest lines carry the guest's name");
        assert!(lines.iter().any(|l| l["fields"]["message"] == "ready"), "{lines:?}");
    });
}
