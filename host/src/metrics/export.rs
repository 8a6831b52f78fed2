//! The metrics as the admin listener serves them: `/status.json` (the
//! [`Status`] document, docs/admin.md) and `/metrics` (Prometheus text,
//! written by `prometheus-client` from the same reading).

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeCounterValue, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use serde::Serialize;
use serde::ser::{SerializeStruct, Serializer};

use super::histogram::Snapshot;
use super::{Callback, FaultKind, GuestMetrics, Metrics};

/// `/status.json`: one reading of every loop and guest.
#[derive(Debug, Serialize)]
pub struct Status {
    schema: u32,
    pid: u32,
    uptime_seconds: f64,
    workers: usize,
    /// Log lines dropped because the log writer's queue was full.
    log_lines_dropped: u64,
    loops: Vec<LoopStatus>,
    guests: Vec<GuestStatus>,
}

#[derive(Debug, Serialize)]
struct LoopStatus {
    worker: usize,
    wakeups: u64,
    events: u64,
    timers_armed: u64,
    busy_seconds: f64,
    waiting_seconds: f64,
    guest_seconds: f64,
    iteration: Hist,
    events_per_wakeup: Hist,
}

#[derive(Debug, Serialize)]
struct GuestStatus {
    name: String,
    version: String,
    up: bool,
    connections: Connections,
    bytes: Bytes,
    events: Named,
    latency: Hist,
    traps: Named,
    restarts: u64,
    reloads: u64,
    memory: Memory,
    fairness: Fairness,
    input: Input,
    /// Log lines dropped by the guest's rate limit.
    log_dropped: u64,
}

/// CPU fairness (server/fairness.rs).
#[derive(Debug, Default, Serialize)]
struct Fairness {
    /// Times the guest went over its CPU budget and was held.
    throttled: u64,
    throttled_seconds: f64,
    /// Events that waited for a later turn for the guest's share.
    deferred: u64,
}

/// Input the host holds for the guest's HTTP and WebSocket connections.
#[derive(Debug, Default, Serialize)]
struct Input {
    bytes: u64,
    /// Connections refused because it reached its cap.
    refused: u64,
}

#[derive(Debug, Default, Serialize)]
struct Connections {
    open: u64,
    accepted: u64,
    refused: u64,
}

#[derive(Debug, Default, Serialize)]
struct Bytes {
    #[serde(rename = "in")]
    received: u64,
    #[serde(rename = "out")]
    sent: u64,
}

#[derive(Debug, Default, Serialize)]
struct Memory {
    bytes: u64,
    high_water_bytes: u64,
    limit_bytes: u64,
}

/// Counts by name, in a fixed order, as a JSON object.
#[derive(Debug)]
struct Named(Vec<(&'static str, u64)>);

impl Serialize for Named {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().copied())
    }
}

/// A histogram reading; `scale` turns its values into the unit served
/// (1e-9 for nanoseconds to seconds, 1 for counts).
#[derive(Debug)]
struct Hist {
    raw: Snapshot,
    scale: f64,
}

impl Serialize for Hist {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let scaled = |v: u64| v as f64 * self.scale;
        let buckets: Vec<(f64, u64)> = self.raw.buckets().map(|(upper, count)| (scaled(upper), count)).collect();
        let mut h = s.serialize_struct("Histogram", 7)?;
        h.serialize_field("count", &self.raw.count())?;
        h.serialize_field("sum", &scaled(self.raw.sum))?;
        h.serialize_field("p50", &scaled(self.raw.quantile(0.50)))?;
        h.serialize_field("p90", &scaled(self.raw.quantile(0.90)))?;
        h.serialize_field("p99", &scaled(self.raw.quantile(0.99)))?;
        h.serialize_field("max", &scaled(self.raw.max))?;
        h.serialize_field("buckets", &buckets)?;
        h.end()
    }
}

const NANOS: f64 = 1e-9;

/// Reads every loop and guest; guests are summed over workers.
pub fn status(metrics: &Metrics) -> Status {
    let workers = metrics.workers();
    let mut loops = Vec::with_capacity(workers.len());
    let mut guests: Vec<(GuestStatus, Vec<u64>, Vec<u64>)> = Vec::new();
    for worker in &workers {
        let turns = &worker.turns;
        let mut guest_ns = 0;
        for g in worker.guests() {
            guest_ns += g.latency.snapshot().sum;
            let at = match guests.iter().position(|(s, ..)| s.name == *g.name) {
                Some(at) => at,
                None => {
                    guests.push((empty_guest(&g), vec![0; Callback::ALL.len()], vec![0; FaultKind::ALL.len()]));
                    guests.len() - 1
                }
            };
            add_guest(&mut guests[at], &g);
        }
        loops.push(LoopStatus {
            worker: worker.index,
            wakeups: turns.wakeups.get(),
            events: turns.events.get(),
            timers_armed: turns.timers_armed.get(),
            busy_seconds: turns.busy_ns.get() as f64 * NANOS,
            waiting_seconds: turns.waiting_ns.get() as f64 * NANOS,
            guest_seconds: guest_ns as f64 * NANOS,
            iteration: Hist { raw: turns.iteration.snapshot(), scale: NANOS },
            events_per_wakeup: Hist { raw: turns.events_per_wakeup.snapshot(), scale: 1.0 },
        });
    }
    let guests = guests
        .into_iter()
        .map(|(mut g, events, traps)| {
            g.events = Named(Callback::ALL.iter().map(|c| c.name()).zip(events).collect());
            g.traps = Named(FaultKind::ALL.iter().map(|k| k.name()).zip(traps).collect());
            g
        })
        .collect();
    Status {
        schema: 1,
        pid: std::process::id(),
        uptime_seconds: metrics.uptime().as_secs_f64(),
        workers: workers.len(),
        log_lines_dropped: super::log_lines_dropped(),
        loops,
        guests,
    }
}

fn empty_guest(g: &GuestMetrics) -> GuestStatus {
    GuestStatus {
        name: g.name.to_string(),
        version: String::new(),
        up: false,
        connections: Connections::default(),
        bytes: Bytes::default(),
        events: Named(Vec::new()),
        latency: Hist { raw: Snapshot::default(), scale: NANOS },
        traps: Named(Vec::new()),
        restarts: 0,
        reloads: 0,
        memory: Memory::default(),
        fairness: Fairness::default(),
        input: Input::default(),
        log_dropped: 0,
    }
}

fn add_guest((s, events, traps): &mut (GuestStatus, Vec<u64>, Vec<u64>), g: &GuestMetrics) {
    use std::sync::PoisonError;
    use std::sync::atomic::Ordering::Relaxed;
    let version = g.version.lock().unwrap_or_else(PoisonError::into_inner);
    if s.version.is_empty() {
        s.version = version.to_string();
    }
    s.up |= g.up.load(Relaxed);
    s.connections.open += g.connections_open.get();
    s.connections.accepted += g.accepted.get();
    s.connections.refused += g.refused.get();
    s.bytes.received += g.bytes_in.get();
    s.bytes.sent += g.bytes_out.get();
    for (sum, counter) in events.iter_mut().zip(&g.events) {
        *sum += counter.get();
    }
    for (sum, counter) in traps.iter_mut().zip(&g.traps) {
        *sum += counter.get();
    }
    s.latency.raw.add(&g.latency);
    s.restarts += g.restarts.get();
    s.reloads += g.reloads.get();
    // Summed over workers: each worker's instances have their own memory.
    s.memory.bytes += g.memory.get();
    s.memory.high_water_bytes += g.memory_high_water.get();
    s.memory.limit_bytes += g.memory_limit.get();
    s.fairness.throttled += g.throttled.get();
    s.fairness.throttled_seconds += g.throttled_ns.get() as f64 * NANOS;
    s.fairness.deferred += g.deferred.get();
    s.input.bytes += g.input_bytes.get();
    s.input.refused += g.input_refused.get();
    s.log_dropped += g.log_dropped.get();
}

/// `/metrics`: the reading in the Prometheus (OpenMetrics) text format.
pub fn encode_prometheus(status: Status) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(status));
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

type Rows<'a, V> = Vec<(Vec<(&'static str, &'a str)>, V)>;

fn family<V: EncodeCounterValue + Copy>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: Rows<'_, V>,
) -> fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in rows {
        m.encode_family(&labels)?.encode_counter::<NoLabelSet, V, u64>(&v, None)?;
    }
    Ok(())
}

fn gauges(e: &mut DescriptorEncoder, name: &str, help: &str, rows: Rows<'_, u64>) -> fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in rows {
        m.encode_family(&labels)?.encode_gauge(&v)?;
    }
    Ok(())
}

/// Time histograms are served with buckets at powers of two nanoseconds
/// from ~1 µs to ~17 s; count histograms at 0, 1, 3, 7, ... 4095 (whole
/// values below the next power of two).
fn histograms(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: Vec<(Vec<(&'static str, &str)>, &Hist)>,
) -> fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, h) in rows {
        let bounds: Vec<(u64, f64)> = if h.scale == 1.0 {
            (0..=12).map(|k| (1u64 << k, ((1u64 << k) - 1) as f64)).collect()
        } else {
            (10..=34).map(|k| (1u64 << k, (1u64 << k) as f64 * h.scale)).collect()
        };
        let mut buckets = Vec::with_capacity(bounds.len() + 1);
        let mut below = 0;
        for (bound, le) in bounds {
            let now = h.raw.below(bound);
            buckets.push((le, now - below));
            below = now;
        }
        let count = h.raw.count();
        buckets.push((f64::MAX, count - below));
        m.encode_family(&labels)?.encode_histogram::<NoLabelSet>(h.raw.sum as f64 * h.scale, count, &buckets, None)?;
    }
    Ok(())
}

impl Collector for Status {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let guests = &self.guests;
        let per_guest = |f: &dyn Fn(&GuestStatus) -> u64| -> Rows<'_, u64> {
            guests.iter().map(|g| (vec![("guest", g.name.as_str())], f(g))).collect()
        };
        let mut info = e.encode_descriptor("wasmloop_guest", "The version of each guest", None, MetricType::Info)?;
        for g in guests {
            let labels = [("guest", g.name.as_str()), ("version", g.version.as_str())];
            info.encode_info(&labels)?;
        }
        gauges(&mut e, "wasmloop_guest_up", "1 while the guest runs, 0 while it is stopped or restarting", {
            per_guest(&|g| g.up as u64)
        })?;
        gauges(&mut e, "wasmloop_guest_connections_open", "Connections open", per_guest(&|g| g.connections.open))?;
        family(&mut e, "wasmloop_guest_connections_accepted", "Connections accepted", {
            per_guest(&|g| g.connections.accepted)
        })?;
        family(
            &mut e,
            "wasmloop_guest_connections_refused",
            "Connections closed at once: the guest was down or at its connection limit",
            per_guest(&|g| g.connections.refused),
        )?;
        family(&mut e, "wasmloop_guest_received_bytes", "Bytes read from the guest's connections", {
            per_guest(&|g| g.bytes.received)
        })?;
        family(&mut e, "wasmloop_guest_sent_bytes", "Bytes written to the guest's connections", {
            per_guest(&|g| g.bytes.sent)
        })?;
        let by = |label: &'static str, named: fn(&GuestStatus) -> &Named| -> Rows<'_, u64> {
            guests
                .iter()
                .flat_map(|g| named(g).0.iter().map(|&(k, v)| (vec![("guest", g.name.as_str()), (label, k)], v)))
                .collect()
        };
        family(
            &mut e,
            "wasmloop_guest_events",
            "Callbacks into the guest, by WIT callback",
            by("event", |g| &g.events),
        )?;
        histograms(
            &mut e,
            "wasmloop_guest_callback_duration_seconds",
            "Time per callback; the sum is the guest's time on the loop thread",
            guests.iter().map(|g| (vec![("guest", g.name.as_str())], &g.latency)).collect(),
        )?;
        let cpu: Rows<'_, f64> =
            guests.iter().map(|g| (vec![("guest", g.name.as_str())], g.latency.raw.sum as f64 * NANOS)).collect();
        family(
            &mut e,
            "wasmloop_guest_cpu_seconds",
            "Time the guest's callbacks ran on the loop thread: its CPU time, unless the kernel preempted the thread",
            cpu,
        )?;
        family(&mut e, "wasmloop_guest_faults", "Traps and other faults, by kind", by("kind", |g| &g.traps))?;
        family(&mut e, "wasmloop_guest_restarts", "Restarts after a fault", per_guest(&|g| g.restarts))?;
        family(&mut e, "wasmloop_guest_reloads", "Successful reloads (a new version swapped in)", {
            per_guest(&|g| g.reloads)
        })?;
        gauges(&mut e, "wasmloop_guest_memory_bytes", "Linear memory of the guest's live instances", {
            per_guest(&|g| g.memory.bytes)
        })?;
        gauges(&mut e, "wasmloop_guest_memory_high_water_bytes", "The most linear memory the guest had", {
            per_guest(&|g| g.memory.high_water_bytes)
        })?;
        gauges(&mut e, "wasmloop_guest_memory_limit_bytes", "The guest's linear memory limit", {
            per_guest(&|g| g.memory.limit_bytes)
        })?;
        family(&mut e, "wasmloop_guest_throttled", "Times the guest went over its CPU budget and was held", {
            per_guest(&|g| g.fairness.throttled)
        })?;
        let throttled: Rows<'_, f64> =
            guests.iter().map(|g| (vec![("guest", g.name.as_str())], g.fairness.throttled_seconds)).collect();
        family(&mut e, "wasmloop_guest_throttled_seconds", "Time the guest's events were held for its CPU budget", {
            throttled
        })?;
        family(
            &mut e,
            "wasmloop_guest_deferred_events",
            "Events that waited for a later loop turn for the guest's CPU share",
            per_guest(&|g| g.fairness.deferred),
        )?;
        gauges(
            &mut e,
            "wasmloop_guest_input_bytes",
            "Input the host holds for the guest's HTTP and WebSocket connections",
            per_guest(&|g| g.input.bytes),
        )?;
        family(&mut e, "wasmloop_guest_input_refused", "Connections refused because held input reached its cap", {
            per_guest(&|g| g.input.refused)
        })?;
        family(&mut e, "wasmloop_guest_log_dropped_lines", "Guest log lines dropped by its rate limit", {
            per_guest(&|g| g.log_dropped)
        })?;
        let mut m = e.encode_descriptor(
            "wasmloop_log_lines_dropped",
            "Log lines dropped because the log writer's queue was full",
            None,
            MetricType::Counter,
        )?;
        m.encode_counter::<NoLabelSet, u64, u64>(&self.log_lines_dropped, None)?;

        let loops = &self.loops;
        let names: Vec<String> = loops.iter().map(|l| l.worker.to_string()).collect();
        let per_loop = |f: &dyn Fn(&LoopStatus) -> u64| -> Rows<'_, u64> {
            loops.iter().zip(&names).map(|(l, n)| (vec![("worker", n.as_str())], f(l))).collect()
        };
        let seconds = |f: &dyn Fn(&LoopStatus) -> f64| -> Rows<'_, f64> {
            loops.iter().zip(&names).map(|(l, n)| (vec![("worker", n.as_str())], f(l))).collect()
        };
        family(&mut e, "wasmloop_loop_wakeups", "Turns of the loop (returns from waiting)", per_loop(&|l| l.wakeups))?;
        family(&mut e, "wasmloop_loop_events", "IO events dispatched", per_loop(&|l| l.events))?;
        histograms(
            &mut e,
            "wasmloop_loop_events_per_wakeup",
            "IO events per turn of the loop",
            loops.iter().zip(&names).map(|(l, n)| (vec![("worker", n.as_str())], &l.events_per_wakeup)).collect(),
        )?;
        histograms(
            &mut e,
            "wasmloop_loop_iteration_seconds",
            "Time per turn of the loop, from waking to waiting again",
            loops.iter().zip(&names).map(|(l, n)| (vec![("worker", n.as_str())], &l.iteration)).collect(),
        )?;
        gauges(&mut e, "wasmloop_loop_timers_armed", "Timers armed on the loop (a guest's timers share one)", {
            per_loop(&|l| l.timers_armed)
        })?;
        family(&mut e, "wasmloop_loop_busy_seconds", "Time in turns of the loop", seconds(&|l| l.busy_seconds))?;
        family(&mut e, "wasmloop_loop_waiting_seconds", "Time blocked waiting for events", {
            seconds(&|l| l.waiting_seconds)
        })?;
        family(&mut e, "wasmloop_loop_guest_seconds", "Time inside guest callbacks", seconds(&|l| l.guest_seconds))?;
        Ok(())
    }
}
