//! `host run --config host.toml`: several guests on one loop, each with its
//! own listeners, grants and limits. `examples/host.toml` is the annotated
//! reference. Errors name the file, the key and the problem on one line.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::grants::{AllowRule, Allowlist, Grants};
use crate::runtime::GuestLimits;

// The policy types belong to the server, which acts on them; the config
// file and the flags only name them.
pub use crate::server::policy::{FaultPolicy, Policy, ReloadMode};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// On SIGINT/SIGTERM, how long to let output drain.
    #[serde(default = "default_shutdown_timeout_ms")]
    pub shutdown_timeout_ms: u64,
    /// After a reload (SIGHUP), how long old versions keep their connections.
    #[serde(default = "default_drain_timeout_ms")]
    pub drain_timeout_ms: u64,
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
    #[serde(default = "default_on_fault")]
    pub on_fault: FaultPolicy,
    #[serde(default = "default_reload")]
    pub reload: ReloadMode,
    #[serde(default)]
    pub limits: LimitsConfig,
}

/// Per-guest limits; anything left out keeps its default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub callback_deadline_ms: Option<u64>,
    pub init_deadline_ms: Option<u64>,
    pub max_memory_mib: Option<usize>,
    pub max_output: Option<usize>,
    pub max_output_total: Option<usize>,
    pub max_connections: Option<usize>,
    pub max_pending_connects: Option<usize>,
    pub max_timers: Option<usize>,
    pub max_input_total: Option<usize>,
    pub cpu_budget_ms: Option<u64>,
    pub cpu_overrun_ms: Option<u64>,
    pub max_callbacks_per_turn: Option<u32>,
    pub max_log_lines_per_sec: Option<u32>,
    pub http_max_body: Option<u64>,
    pub http_max_head: Option<usize>,
    pub ws_max_message: Option<usize>,
    pub http_header_timeout_ms: Option<u64>,
    pub http_idle_timeout_ms: Option<u64>,
}

impl LimitsConfig {
    pub fn apply(&self, mut limits: GuestLimits) -> GuestLimits {
        let ms = Duration::from_millis;
        if let Some(v) = self.callback_deadline_ms {
            limits.callback_deadline = ms(v);
        }
        if let Some(v) = self.init_deadline_ms {
            limits.init_deadline = ms(v);
        }
        if let Some(v) = self.max_memory_mib {
            // `HostConfig::load` refused values that overflow.
            limits.max_memory = memory_bytes(v).unwrap_or(usize::MAX);
        }
        let counts = [
            (self.max_output, &mut limits.max_output),
            (self.max_output_total, &mut limits.max_output_total),
            (self.max_connections, &mut limits.max_connections),
            (self.max_pending_connects, &mut limits.max_pending_connects),
            (self.max_timers, &mut limits.max_timers),
            (self.max_input_total, &mut limits.max_input_total),
        ];
        for (value, field) in counts {
            if let Some(v) = value {
                *field = v;
            }
        }
        if let Some(v) = self.cpu_budget_ms {
            // `HostConfig::load` refused values outside 1..=1000.
            limits.cpu_budget = ms(v);
        }
        if let Some(v) = self.cpu_overrun_ms {
            limits.cpu_overrun = ms(v);
        }
        if let Some(v) = self.max_callbacks_per_turn {
            limits.max_callbacks_per_turn = v;
        }
        if let Some(v) = self.max_log_lines_per_sec {
            limits.log_lines_per_sec = v;
        }
        let http = &mut limits.http;
        if let Some(v) = self.http_max_body {
            http.max_body = v;
        }
        if let Some(v) = self.http_max_head {
            http.max_head = v;
        }
        if let Some(v) = self.ws_max_message {
            http.max_message = v;
        }
        if let Some(v) = self.http_header_timeout_ms {
            http.header_timeout = ms(v);
        }
        if let Some(v) = self.http_idle_timeout_ms {
            http.idle_timeout = ms(v);
        }
        limits
    }
}

/// A callback or `init` deadline (`--callback-deadline-ms`,
/// `callback_deadline_ms`, `init_deadline_ms`): at least 1 ms, as a zero
/// deadline would stop every call as it starts.
pub fn deadline_ms(ms: u64) -> Result<Duration, String> {
    if ms == 0 {
        return Err("must be at least 1 (a zero deadline would stop every call as it starts)".into());
    }
    Ok(Duration::from_millis(ms))
}

/// A memory cap in MiB (`--max-memory-mib`, `max_memory_mib`) as bytes,
/// refused if that many bytes cannot be counted here (it would wrap to a
/// small cap, or to none).
pub fn memory_bytes(mib: usize) -> Result<usize, String> {
    mib.checked_mul(1 << 20)
        .ok_or_else(|| format!("{mib} MiB is more than this machine can address (at most {} MiB)", usize::MAX >> 20))
}

fn default_shutdown_timeout_ms() -> u64 {
    5_000
}

fn default_drain_timeout_ms() -> u64 {
    30_000
}

fn default_reload() -> ReloadMode {
    ReloadMode::Drain
}

fn default_on_fault() -> FaultPolicy {
    FaultPolicy::Restart
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
            let limits = &guest.limits;
            for (key, ms) in
                [("callback_deadline_ms", limits.callback_deadline_ms), ("init_deadline_ms", limits.init_deadline_ms)]
            {
                if let Some(ms) = ms {
                    deadline_ms(ms).map_err(|e| fail(format!("guest[{i}].limits.{key}: {e}")))?;
                }
            }
            if let Some(mib) = limits.max_memory_mib {
                memory_bytes(mib).map_err(|e| fail(format!("guest[{i}].limits.max_memory_mib: {e}")))?;
            }
            if let Some(budget) = limits.cpu_budget_ms
                && !(1..=1000).contains(&budget)
            {
                let why = "must be 1 to 1000 (milliseconds of callback time per second)";
                return Err(fail(format!("guest[{i}].limits.cpu_budget_ms: {why}")));
            }
            if limits.max_callbacks_per_turn == Some(0) {
                let why = "must be at least 1 (a guest with none would never run)";
                return Err(fail(format!("guest[{i}].limits.max_callbacks_per_turn: {why}")));
            }
        }
        Ok(config)
    }
}

impl GuestConfig {
    pub fn policy(&self) -> Policy {
        Policy { on_fault: self.on_fault, reload: self.reload }
    }

    /// The HTTP listeners, `true` where WebSocket upgrades are offered.
    pub fn http_listeners(&self) -> Vec<(SocketAddr, bool)> {
        self.listen_http.iter().map(|&a| (a, false)).chain(self.listen_ws.iter().map(|&a| (a, true))).collect()
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
