//! `host run --config host.toml`: several guests on one loop, each with its
//! own listeners, grants and limits. `examples/host.toml` is the annotated
//! reference. Errors name the file, the key and the problem on one line.
//!
//! A guest's `[guest.limits]` table is [`Limits`], the struct the flags
//! read too, so a key and its flag take the same values and default alike.
//! Host-wide settings here (`shutdown_timeout_ms`, `admin`, ...) give way
//! to their flags; per-guest flags cannot be given with `--config` at all.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::grants::{AllowRule, Allowlist, Grants};
use crate::limits::Limits;
use crate::server::Protocol;

// The policy types belong to the server, which acts on them; the config
// file and the flags only name them.
pub use crate::server::policy::{FaultPolicy, Policy, ReloadMode};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// On SIGINT/SIGTERM, how long to let output drain (`--shutdown-timeout-ms`
    /// wins; left out: that flag's default).
    #[serde(default)]
    pub shutdown_timeout_ms: Option<u64>,
    /// After a reload (SIGHUP), how long old versions keep their connections
    /// (`--drain-timeout-ms` wins; left out: that flag's default).
    #[serde(default)]
    pub drain_timeout_ms: Option<u64>,
    /// Where compiled guest code is kept (`--cache-dir` wins; relative
    /// paths are relative to the config file).
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
    /// The admin listener (`--admin` wins): metrics, status page, JSON.
    #[serde(default)]
    pub admin: Option<SocketAddr>,
    /// Allow `admin` on a non-loopback address.
    #[serde(default)]
    pub admin_public: bool,
    #[serde(rename = "guest", default)]
    pub guests: Vec<GuestConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestConfig {
    pub name: String,
    /// Relative paths are relative to the config file.
    pub module: PathBuf,
    #[serde(default)]
    pub listen: Vec<SocketAddr>,
    /// HTTP/1.1 listeners (the host parses, the guest gets requests).
    #[serde(default)]
    pub listen_http: Vec<SocketAddr>,
    /// HTTP/1.1 listeners that also offer WebSocket upgrades.
    #[serde(default)]
    pub listen_ws: Vec<SocketAddr>,
    /// The string handed to the guest's `init`.
    #[serde(default)]
    pub config: String,
    /// Outbound allowlist (TCP connect and UDP send).
    #[serde(default)]
    pub connect: Vec<String>,
    /// Addresses the guest may bind UDP sockets on.
    #[serde(default)]
    pub udp: Vec<SocketAddr>,
    #[serde(default)]
    pub on_fault: FaultPolicy,
    #[serde(default)]
    pub reload: ReloadMode,
    /// Anything left out keeps its default (`Limits::DEFAULT`).
    #[serde(default)]
    pub limits: Limits,
}

/// A config problem, as one line: `host.toml: guest[1].limits.max_timers: invalid type ... (line 12)`.
#[derive(Debug, thiserror::Error)]
#[error("{}: {problem}", file.display())]
pub struct ConfigError {
    pub file: PathBuf,
    pub problem: String,
}

impl HostConfig {
    pub fn load(file: &Path) -> Result<HostConfig, ConfigError> {
        let fail = |problem: String| ConfigError { file: file.to_path_buf(), problem };
        let text = std::fs::read_to_string(file).map_err(|e| fail(crate::os_error::describe(&e)))?;
        let document = toml::de::Deserializer::parse(&text).map_err(|e| fail(toml_problem(&text, &e)))?;
        let mut config: HostConfig = serde_path_to_error::deserialize(document).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            fail(format!("{path}: {}", toml_problem(&text, &inner)))
        })?;
        if config.guests.is_empty() {
            return Err(fail("no [[guest]] entries".into()));
        }
        let base = file.parent().unwrap_or(Path::new("."));
        if let Some(dir) = config.cache_dir.as_mut().filter(|d| d.is_relative()) {
            *dir = base.join(&*dir);
        }
        let mut names = HashSet::new();
        for (i, guest) in config.guests.iter_mut().enumerate() {
            if guest.module.is_relative() {
                guest.module = base.join(&guest.module);
            }
            if !names.insert(guest.name.clone()) {
                return Err(fail(format!("guest[{i}].name: `{}` is used by another guest", guest.name)));
            }
            for rule in &guest.connect {
                rule.parse::<AllowRule>().map_err(|e| fail(format!("guest[{i}].connect: {e}")))?;
            }
        }
        Ok(config)
    }
}

impl GuestConfig {
    pub fn policy(&self) -> Policy {
        Policy { on_fault: self.on_fault, reload: self.reload }
    }

    /// The addresses to listen on, each with what the host speaks there:
    /// `listen`, then `listen_http`, then `listen_ws`, as the flags order them.
    pub fn listeners(&self) -> Vec<(SocketAddr, Protocol)> {
        let tcp = self.listen.iter().map(|&a| (a, Protocol::Tcp));
        let http = self.listen_http.iter().map(|&a| (a, Protocol::Http));
        tcp.chain(http).chain(self.listen_ws.iter().map(|&a| (a, Protocol::WebSocket))).collect()
    }

    pub fn grants(&self) -> Grants {
        let rules = self.connect.iter().filter_map(|r| r.parse().ok()).collect();
        Grants { connect: Allowlist::new(rules), udp: self.udp.clone() }
    }
}

/// The message of a TOML error, with the line it is on, without the
/// multi-line source excerpt the Display form carries.
fn toml_problem(text: &str, e: &toml::de::Error) -> String {
    let line = e.span().map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
    let message = e.message().trim_end_matches('\n').replace('\n', " ");
    match line {
        Some(line) => format!("{message} (line {line})"),
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use clap::{Args, FromArgMatches};

    use super::*;
    use crate::limits::{CallbacksPerTurn, CpuBudgetMs, DeadlineMs, MemoryMib};

    /// Every limit, none at its default, as `key = value`.
    const EVERY_LIMIT: &[(&str, &str)] = &[
        ("callback_deadline_ms", "51"),
        ("init_deadline_ms", "5001"),
        ("max_memory_mib", "65"),
        ("max_output", "1000001"),
        ("max_output_total", "1000002"),
        ("max_connections", "10001"),
        ("max_pending_connects", "65"),
        ("max_timers", "10002"),
        ("max_input_total", "1000003"),
        ("cpu_budget_ms", "801"),
        ("cpu_overrun_ms", "5001"),
        ("max_callbacks_per_turn", "257"),
        ("max_log_lines_per_sec", "101"),
        ("http_max_body", "1000004"),
        ("http_max_head", "16385"),
        ("ws_max_message", "1000005"),
        ("http_header_timeout_ms", "10001"),
        ("http_idle_timeout_ms", "60001"),
    ];

    fn load(toml: &str) -> Result<HostConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("host.toml");
        std::fs::write(&file, toml).unwrap();
        HostConfig::load(&file)
    }

    const GUEST: &str = "[[guest]]\nname = \"a\"\nmodule = \"a.wasm\"\n";

    #[test]
    fn the_config_file_and_the_flags_give_the_same_limits() {
        let table: String = EVERY_LIMIT.iter().map(|(key, value)| format!("{key} = {value}\n")).collect();
        let config = load(&format!("{GUEST}[guest.limits]\n{table}")).unwrap();
        let mut flags = vec!["host".to_string()];
        for (key, value) in EVERY_LIMIT {
            flags.extend([format!("--{}", key.replace('_', "-")), value.to_string()]);
        }
        let matches = Limits::augment_args(clap::Command::new("host")).try_get_matches_from(flags).unwrap();
        let from_flags = Limits::from_arg_matches(&matches).unwrap();
        let expected = Limits {
            callback_deadline_ms: DeadlineMs::try_from(51).unwrap(),
            init_deadline_ms: DeadlineMs::try_from(5001).unwrap(),
            max_memory_mib: MemoryMib::try_from(65).unwrap(),
            max_output: 1000001,
            max_output_total: 1000002,
            max_connections: 10001,
            max_pending_connects: 65,
            max_timers: 10002,
            max_input_total: 1000003,
            cpu_budget_ms: CpuBudgetMs::try_from(801).unwrap(),
            cpu_overrun_ms: 5001,
            max_callbacks_per_turn: CallbacksPerTurn::try_from(257).unwrap(),
            max_log_lines_per_sec: 101,
            http_max_body: 1000004,
            http_max_head: 16385,
            ws_max_message: 1000005,
            http_header_timeout_ms: 10001,
            http_idle_timeout_ms: 60001,
        };
        assert_eq!(config.guests[0].limits, expected);
        assert_eq!(from_flags, expected);
    }

    #[test]
    fn a_guest_without_limits_or_policy_gets_the_defaults() {
        let config = load(GUEST).unwrap();
        let guest = &config.guests[0];
        assert_eq!(guest.limits, Limits::DEFAULT);
        assert_eq!(guest.policy(), Policy::default());
        assert_eq!((config.shutdown_timeout_ms, config.drain_timeout_ms), (None, None));
    }

    #[test]
    fn the_annotated_example_loads_with_every_key_it_shows() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/host.toml");
        let config = HostConfig::load(&example).unwrap();
        let chat = config.guests.iter().find(|g| g.name == "chat").unwrap();
        assert_eq!(chat.limits.max_timers, 100);
        assert_eq!(chat.limits.max_memory_mib.bytes(), 32 << 20);
        let kv = config.guests.iter().find(|g| g.name == "kv").unwrap();
        assert_eq!(kv.listeners()[0].1, Protocol::Http);
        assert_eq!(config.shutdown_timeout_ms, Some(5000));
    }

    #[test]
    fn a_limit_out_of_range_names_file_key_rule_and_line() {
        let e = load(&format!("{GUEST}[guest.limits]\ncpu_budget_ms = 0\n")).unwrap_err().to_string();
        assert!(e.contains("host.toml: guest[0].limits.cpu_budget_ms: must be 1 to 1000"), "{e}");
        assert!(e.ends_with("(line 5)"), "{e}");
    }

    #[test]
    fn listeners_keep_the_order_of_their_keys_with_their_protocol() {
        let config = load(&format!(
            "{GUEST}listen_ws = [\"127.0.0.1:3\"]\nlisten_http = [\"127.0.0.1:2\"]\nlisten = [\"127.0.0.1:1\"]\n"
        ))
        .unwrap();
        let address = |port| SocketAddr::from(([127, 0, 0, 1], port));
        assert_eq!(
            config.guests[0].listeners(),
            [(address(1), Protocol::Tcp), (address(2), Protocol::Http), (address(3), Protocol::WebSocket)]
        );
    }
}
