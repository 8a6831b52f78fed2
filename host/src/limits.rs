//! A guest's limits as the operator writes them: one struct, [`Limits`],
//! read from the flags (`host run --max-timers 100`, clap) and from the
//! config file (`[guest.limits] max_timers = 100`, serde), with one set of
//! defaults, [`Limits::DEFAULT`]: the flags' defaults, what the config file
//! leaves out and what an embedder gets from `Limits::default()`.
//!
//! Values with a rule (a deadline of at least 1 ms, a memory cap whose bytes
//! can be counted, ...) are small types that check it wherever they are
//! read, so a flag and a config key refuse the same values with the same
//! words. The runtime takes the limits resolved into durations and bytes
//! (`runtime::GuestLimits`, built from these), the HTTP layer as
//! [`HttpLimits`] ([`Limits::http`]).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use wasmloop_io::http::HttpLimits;

/// Header lines an HTTP request may carry; more get 431. Not configurable:
/// the parser keeps them in a fixed array.
pub const HTTP_MAX_HEADERS: usize = 64;

/// Limits that apply to one guest. The field names are the flags (with
/// dashes) and the keys of a guest's `[guest.limits]` table; a key left out
/// of the table keeps its default.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Longest a single callback may run before the guest is stopped.
    #[arg(long, value_name = "MS", default_value_t = Limits::DEFAULT.callback_deadline_ms)]
    pub callback_deadline_ms: DeadlineMs,

    /// Longest the guest's `init` may run (language runtimes start slowly).
    #[arg(long, value_name = "MS", default_value_t = Limits::DEFAULT.init_deadline_ms)]
    pub init_deadline_ms: DeadlineMs,

    /// Cap on the guest's linear memories and tables, all together.
    #[arg(long, value_name = "MIB", default_value_t = Limits::DEFAULT.max_memory_mib)]
    pub max_memory_mib: MemoryMib,

    /// Bytes buffered per connection beyond what the kernel takes.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::DEFAULT.max_output)]
    pub max_output: usize,

    /// Bytes buffered over all of the guest's connections together.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::DEFAULT.max_output_total)]
    pub max_output_total: usize,

    /// Open connections; more are accepted and closed at once.
    #[arg(long, value_name = "N", default_value_t = Limits::DEFAULT.max_connections)]
    pub max_connections: usize,

    /// Outbound connects not yet finished.
    #[arg(long, value_name = "N", default_value_t = Limits::DEFAULT.max_pending_connects)]
    pub max_pending_connects: usize,

    /// Timers the guest may have at once.
    #[arg(long, value_name = "N", default_value_t = Limits::DEFAULT.max_timers)]
    pub max_timers: usize,

    /// Input the host may hold for the guest's HTTP and WebSocket
    /// connections together (partial requests and frames, messages being
    /// reassembled); a connection that needs more is refused.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::DEFAULT.max_input_total)]
    pub max_input_total: usize,

    /// Callback time the guest may use per second; past it, its events
    /// wait while other guests run (CPU fairness).
    #[arg(long, value_name = "MS", default_value_t = Limits::DEFAULT.cpu_budget_ms)]
    pub cpu_budget_ms: CpuBudgetMs,

    /// How long the guest may keep hitting its CPU budget before that is a
    /// fault (its --on-fault policy applies).
    #[arg(long, value_name = "MS", default_value_t = Limits::DEFAULT.cpu_overrun_ms)]
    pub cpu_overrun_ms: u64,

    /// Callbacks the guest gets per loop turn; its other events wait for
    /// the next turn.
    #[arg(long, value_name = "N", default_value_t = Limits::DEFAULT.max_callbacks_per_turn)]
    pub max_callbacks_per_turn: CallbacksPerTurn,

    /// Log lines the guest may write per second (`log`, stdout, stderr);
    /// the rest are dropped and counted.
    #[arg(long, value_name = "N", default_value_t = Limits::DEFAULT.max_log_lines_per_sec)]
    pub max_log_lines_per_sec: u32,

    /// Largest HTTP request body; a bigger one is refused with 413.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::DEFAULT.http_max_body)]
    pub http_max_body: u64,

    /// Longest HTTP request head (request line and headers); 431 above.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::DEFAULT.http_max_head)]
    pub http_max_head: usize,

    /// Longest WebSocket message, reassembled; closed with 1009 above.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::DEFAULT.ws_max_message)]
    pub ws_max_message: usize,

    /// Time a client has to send a request head, and between reads of its
    /// body; then 408.
    #[arg(long, value_name = "MS", default_value_t = Limits::DEFAULT.http_header_timeout_ms)]
    pub http_header_timeout_ms: u64,

    /// How long an idle keep-alive HTTP connection is kept.
    #[arg(long, value_name = "MS", default_value_t = Limits::DEFAULT.http_idle_timeout_ms)]
    pub http_idle_timeout_ms: u64,
}

impl Limits {
    /// The defaults: safe for an untrusted guest beside others.
    pub const DEFAULT: Limits = Limits {
        callback_deadline_ms: DeadlineMs(50),
        init_deadline_ms: DeadlineMs(5_000),
        max_memory_mib: MemoryMib(64),
        max_output: 1 << 20,
        max_output_total: 64 << 20,
        max_connections: 10_000,
        max_pending_connects: 64,
        max_timers: 10_000,
        max_input_total: 64 << 20,
        cpu_budget_ms: CpuBudgetMs(800),
        cpu_overrun_ms: 5_000,
        max_callbacks_per_turn: CallbacksPerTurn(256),
        max_log_lines_per_sec: 100,
        http_max_body: 1 << 20,
        http_max_head: 16 * 1024,
        ws_max_message: 1 << 20,
        http_header_timeout_ms: 10_000,
        http_idle_timeout_ms: 60_000,
    };

    /// The limits of the guest's HTTP listeners, as the HTTP layer takes them.
    pub fn http(&self) -> HttpLimits {
        HttpLimits {
            max_head: self.http_max_head,
            max_headers: HTTP_MAX_HEADERS,
            max_body: self.http_max_body,
            max_message: self.ws_max_message,
            header_timeout: Duration::from_millis(self.http_header_timeout_ms),
            idle_timeout: Duration::from_millis(self.http_idle_timeout_ms),
        }
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::DEFAULT
    }
}

/// A number with a rule: checked when it is made from a flag (`FromStr`,
/// which clap calls), a config value (`Deserialize`) or code (`TryFrom`),
/// each time with the rule's own words; `Display` writes it back as a flag
/// value (clap shows the default with it).
macro_rules! checked_number {
    ($(#[$doc:meta])* $name:ident($inner:ty), $check:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct $name($inner);

        impl $name {
            pub fn get(self) -> $inner {
                self.0
            }
        }

        impl TryFrom<$inner> for $name {
            type Error = String;

            fn try_from(value: $inner) -> Result<$name, String> {
                let check: fn($inner) -> Result<(), String> = $check;
                check(value)?;
                Ok($name(value))
            }
        }

        impl FromStr for $name {
            type Err = String;

            fn from_str(text: &str) -> Result<$name, String> {
                text.parse::<$inner>().map_err(|e| e.to_string())?.try_into()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<$name, D::Error> {
                <$inner>::deserialize(deserializer)?.try_into().map_err(serde::de::Error::custom)
            }
        }
    };
}

checked_number!(
    /// A callback or `init` deadline in milliseconds (`--callback-deadline-ms`,
    /// `init_deadline_ms`): at least 1, as a zero deadline would stop every
    /// call as it starts.
    DeadlineMs(u64),
    |ms| match ms {
        0 => Err("must be at least 1 (a zero deadline would stop every call as it starts)".into()),
        _ => Ok(()),
    }
);

checked_number!(
    /// A memory cap in MiB (`--max-memory-mib`): refused if that many bytes
    /// cannot be counted here, as it would wrap to a small cap, or to none.
    MemoryMib(usize),
    |mib| match mib.checked_mul(1 << 20) {
        Some(_) => Ok(()),
        None => Err(format!("{mib} MiB is more than this machine can address (at most {} MiB)", usize::MAX >> 20)),
    }
);

checked_number!(
    /// Callback time per second in milliseconds (`--cpu-budget-ms`): 1 to
    /// 1000, as no guest can use more than the whole second.
    CpuBudgetMs(u64),
    |ms| match ms {
        1..=1000 => Ok(()),
        _ => Err("must be 1 to 1000 (milliseconds of callback time per second)".into()),
    }
);

checked_number!(
    /// Callbacks per loop turn (`--max-callbacks-per-turn`): at least 1.
    CallbacksPerTurn(u32),
    |n| match n {
        0 => Err("must be at least 1 (a guest with none would never run)".into()),
        _ => Ok(()),
    }
);

impl DeadlineMs {
    pub fn duration(self) -> Duration {
        Duration::from_millis(self.0)
    }
}

impl MemoryMib {
    /// The cap in bytes; it cannot overflow (checked when made).
    pub fn bytes(self) -> usize {
        self.0 << 20
    }
}

impl CpuBudgetMs {
    pub fn duration(self) -> Duration {
        Duration::from_millis(self.0)
    }
}

#[cfg(test)]
mod tests {
    use clap::{Args, FromArgMatches};

    use super::*;

    /// `Limits` read from these flags alone, as `host run` reads them.
    fn from_flags(flags: &[&str]) -> Result<Limits, clap::Error> {
        let command = Limits::augment_args(clap::Command::new("host"));
        let matches = command.try_get_matches_from(std::iter::once("host").chain(flags.iter().copied()))?;
        Limits::from_arg_matches(&matches)
    }

    fn from_toml(text: &str) -> Result<Limits, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn no_flags_and_an_empty_table_both_give_the_defaults() {
        assert_eq!(from_flags(&[]).unwrap(), Limits::DEFAULT);
        assert_eq!(from_toml("").unwrap(), Limits::DEFAULT);
        assert_eq!(Limits::default(), Limits::DEFAULT);
    }

    #[test]
    fn a_key_left_out_of_the_table_keeps_its_default() {
        let limits = from_toml("max_timers = 7").unwrap();
        assert_eq!(limits, Limits { max_timers: 7, ..Limits::DEFAULT });
    }

    #[test]
    fn an_unknown_key_is_refused() {
        let e = from_toml("max_timer = 7").unwrap_err();
        assert!(e.message().contains("unknown field `max_timer`"), "{e}");
    }

    #[test]
    fn a_flag_and_a_key_refuse_the_same_values_in_the_same_words() {
        for (key, value, words) in [
            ("callback_deadline_ms", "0", "at least 1"),
            ("init_deadline_ms", "0", "at least 1"),
            ("max_memory_mib", "17592186044416", "more than this machine can address"),
            ("cpu_budget_ms", "0", "1 to 1000"),
            ("cpu_budget_ms", "1001", "1 to 1000"),
            ("max_callbacks_per_turn", "0", "at least 1"),
        ] {
            let flag = format!("--{}", key.replace('_', "-"));
            let by_flag = from_flags(&[&flag, value]).unwrap_err().to_string();
            assert!(by_flag.contains(words) && by_flag.contains(&flag), "{flag} {value}: {by_flag}");
            let by_key = from_toml(&format!("{key} = {value}")).unwrap_err();
            assert!(by_key.message().contains(words), "{key} = {value}: {by_key}");
        }
    }

    #[test]
    fn checked_values_convert_to_durations_and_bytes() {
        assert_eq!(Limits::DEFAULT.callback_deadline_ms.duration(), Duration::from_millis(50));
        assert_eq!(Limits::DEFAULT.max_memory_mib.bytes(), 64 << 20);
        assert_eq!("1000".parse::<CpuBudgetMs>().unwrap().duration(), Duration::from_secs(1));
        assert_eq!(CallbacksPerTurn::try_from(3).unwrap().get(), 3);
        assert!(MemoryMib::try_from(usize::MAX >> 20).is_ok());
        assert!(MemoryMib::try_from((usize::MAX >> 20) + 1).is_err());
    }

    #[test]
    fn the_http_limits_come_from_the_http_keys() {
        let limits = Limits {
            http_max_body: 1,
            http_max_head: 2,
            ws_max_message: 3,
            http_header_timeout_ms: 4,
            http_idle_timeout_ms: 5,
            ..Limits::DEFAULT
        };
        let http = limits.http();
        assert_eq!((http.max_body, http.max_head, http.max_message), (1, 2, 3));
        assert_eq!((http.header_timeout, http.idle_timeout), (Duration::from_millis(4), Duration::from_millis(5)));
        assert_eq!(http.max_headers, HTTP_MAX_HEADERS);
    }
}
