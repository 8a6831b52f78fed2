//! How the server treats one guest when it faults or is reloaded: the
//! operator's choice, from the flags or the config file.

use serde::Deserialize;

/// What happens when a guest traps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum FaultPolicy {
    /// Start a fresh instance after a backoff; stop after a crash loop.
    #[default]
    Restart,
    /// Leave the guest stopped; the host keeps serving the others.
    Stop,
    /// Stop the whole host with a non-zero exit.
    Exit,
}

/// What a reload does with the old version's connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ReloadMode {
    /// New connections go to the new version; the old one keeps its
    /// connections until they close (or the drain deadline).
    #[default]
    Drain,
    /// The old version hands its state (`snapshot`) to the new one
    /// (`restore`), with its connections and timers; the old one is dropped
    /// at once. Falls back to drain for guests that cannot migrate.
    Migrate,
}

/// How the host treats one guest when it faults or is reloaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    pub on_fault: FaultPolicy,
    pub reload: ReloadMode,
}
