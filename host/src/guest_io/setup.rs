//! What a guest (or native handler) is started with: its name, listeners,
//! configuration, limits and grants. The same setup starts it again after
//! a fault or a reload.

use std::sync::Arc;
use std::time::Duration;

use wasmloop_io::http::HttpLimits;

use crate::grants::Grants;
use crate::limits::Limits;
use crate::metrics::GuestMetrics;

/// Everything needed to start (and restart) one guest.
#[derive(Clone, Debug)]
pub struct GuestSetup {
    pub name: Arc<str>,
    pub listeners: Vec<ListenerGrant>,
    /// The string handed to `init`.
    pub config: String,
    pub limits: GuestLimits,
    pub grants: Grants,
    /// Where the guest's metrics go (`--admin`); `None` records nothing.
    pub metrics: Option<Arc<GuestMetrics>>,
}

/// A listener granted to the guest. Its handle is [`listener_handle`] of
/// its index.
///
/// [`listener_handle`]: wasmloop_io::listener_handle
#[derive(Clone, Debug)]
pub struct ListenerGrant {
    pub address: String,
}

/// Limits that apply to one guest, as the runtime and server enforce them;
/// made from the operator's [`Limits`].
#[derive(Clone, Debug)]
pub struct GuestLimits {
    /// Longest a callback may run before the guest is stopped (epoch
    /// interruption).
    pub callback_deadline: Duration,
    /// Longest `init` may run (language runtimes start slowly).
    pub init_deadline: Duration,
    /// Bytes of linear memory plus table storage (8 bytes an element), over
    /// all of the guest's memories and tables together: one budget for its
    /// store, not one per memory (`runtime/limiter.rs`).
    pub max_memory: usize,
    /// Bytes the host buffers per connection beyond what the kernel takes.
    pub max_output: usize,
    /// Bytes buffered over all of the guest's connections.
    pub max_output_total: usize,
    /// Bytes of input the host holds over all of the guest's HTTP and
    /// WebSocket connections; a connection that needs more is refused
    /// (503, or WebSocket close 1013).
    pub max_input_total: usize,
    /// Open connections, inbound and outbound; excess inbound ones are
    /// accepted and closed at once.
    pub max_connections: usize,
    /// Outbound connects not yet finished.
    pub max_pending_connects: usize,
    pub max_timers: usize,
    /// Callback time the guest may use per second of the loop's time; past
    /// it its events wait (server/fairness.rs).
    pub cpu_budget: Duration,
    /// How long the guest may keep hitting its CPU budget before that is a
    /// fault.
    pub cpu_overrun: Duration,
    /// Callbacks the guest gets per loop turn before its other events wait
    /// for the next turn.
    pub max_callbacks_per_turn: u32,
    /// Lines the guest may log (`log`, stdout, stderr) per second; the rest
    /// are dropped and counted.
    pub log_lines_per_sec: u32,
    /// Limits and timeouts of the guest's HTTP listeners.
    pub http: HttpLimits,
}

/// The operator's limits resolved into durations and bytes; the checked
/// values (`DeadlineMs`, `MemoryMib`, ...) cannot overflow here.
impl From<&Limits> for GuestLimits {
    fn from(limits: &Limits) -> GuestLimits {
        GuestLimits {
            callback_deadline: limits.callback_deadline_ms.duration(),
            init_deadline: limits.init_deadline_ms.duration(),
            max_memory: limits.max_memory_mib.bytes(),
            max_output: limits.max_output,
            max_output_total: limits.max_output_total,
            max_input_total: limits.max_input_total,
            max_connections: limits.max_connections,
            max_pending_connects: limits.max_pending_connects,
            max_timers: limits.max_timers,
            cpu_budget: limits.cpu_budget_ms.duration(),
            cpu_overrun: Duration::from_millis(limits.cpu_overrun_ms),
            max_callbacks_per_turn: limits.max_callbacks_per_turn.get(),
            log_lines_per_sec: limits.max_log_lines_per_sec,
            http: limits.http(),
        }
    }
}
