//! Integer handles vs WIT resource handles, on the echo hot path.
//!
//! The host calls a guest export with a connection handle and 64 bytes; the
//! guest calls the host import `write` with the same handle and bytes. Two
//! variants of that round trip run side by side in one process:
//!
//! - **integer**: the handle is a `u64` slot-map key, looked up by the host in
//!   a `SlotMap` (what the product does, see docs/internals.md, "Handles");
//! - **resource**: the handle is a `borrow<conn>`, looked up by the host in
//!   the store's `ResourceTable`.
//!
//! Usage: `bench-handles [GUEST.wasm]`; prints a markdown table.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use slotmap::{Key, KeyData, SlotMap, new_key_type};
use wasmtime::component::{Component, HasSelf, Linker, Resource, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

wasmtime::component::bindgen!({
    path: "wit",
    world: "bench",
    with: {
        "wasmloop:handle-bench/host.conn": Conn,
    },
});

use wasmloop::handle_bench::host::{Host, HostConn};

/// Built by `cargo build --profile guest --target wasm32-wasip2 -p handle-bench-guest`.
const DEFAULT_GUEST: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/wasm32-wasip2/guest/handle_bench_guest.wasm");
/// Calls per variant per round.
const CALLS: u32 = 200_000;
const ROUNDS: usize = 5;
const WARMUP_CALLS: u32 = 20_000;
/// The payload of each call, as in an echo of a small message.
const PAYLOAD: usize = 64;

new_key_type! {
    /// The integer handle: slot + generation, as in the product.
    struct ConnKey;
}

/// What a handle leads to. Both variants find the same struct and do the
/// same work with it (count the bytes), so only the lookup differs.
pub struct Conn {
    written: u64,
}

struct State {
    conns: SlotMap<ConnKey, Conn>,
    table: ResourceTable,
    wasi: WasiCtx,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl Host for State {
    fn write_int(&mut self, h: u64, data: Vec<u8>) -> u32 {
        match self.conns.get_mut(KeyData::from_ffi(h).into()) {
            Some(conn) => {
                conn.written += data.len() as u64;
                data.len() as u32
            }
            None => 0,
        }
    }

    fn write_res(&mut self, c: Resource<Conn>, data: Vec<u8>) -> u32 {
        match self.table.get_mut(&c) {
            Ok(conn) => {
                conn.written += data.len() as u64;
                data.len() as u32
            }
            Err(_) => 0,
        }
    }
}

impl HostConn for State {
    fn drop(&mut self, c: Resource<Conn>) -> wasmtime::Result<()> {
        self.table.delete(c)?;
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum Variant {
    Integer,
    Resource,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Integer => "integer",
            Variant::Resource => "resource",
        }
    }
}

/// One store, one guest instance, one connection known under both handles.
struct Harness {
    store: Store<State>,
    guest: Bench,
    key: ConnKey,
    /// The `ResourceTable` index of the same connection, for the resource
    /// variant. Owned by the host; lent to the guest on each call.
    rep: u32,
    data: Vec<u8>,
}

impl Harness {
    /// Runs `calls` calls of `variant`; returns the total time.
    fn run(&mut self, variant: Variant, calls: u32) -> anyhow::Result<Duration> {
        let callbacks = self.guest.wasmloop_handle_bench_callbacks();
        let handle = self.key.data().as_ffi();
        let start = Instant::now();
        match variant {
            Variant::Integer => {
                for _ in 0..calls {
                    callbacks.call_on_data_int(&mut self.store, handle, &self.data)?;
                }
            }
            Variant::Resource => {
                for _ in 0..calls {
                    // A borrow, not the owned handle: an owned handle passed
                    // as a borrow leaks one store handle per call.
                    let c = Resource::new_borrow(self.rep);
                    callbacks.call_on_data_res(&mut self.store, c, &self.data)?;
                }
            }
        }
        Ok(start.elapsed())
    }

    fn written(&self, variant: Variant) -> anyhow::Result<u64> {
        let state = self.store.data();
        Ok(match variant {
            Variant::Integer => state.conns[self.key].written,
            Variant::Resource => state.table.get(&Resource::<Conn>::new_borrow(self.rep))?.written,
        })
    }
}

fn setup(wasm: &str) -> anyhow::Result<Harness> {
    // The product's engine settings that bear on call cost
    // (host/src/runtime/load.rs).
    let mut config = Config::new();
    config.concurrency_support(false);
    config.epoch_interruption(true);
    let engine = Engine::new(&config)?;
    let component = Component::from_file(&engine, wasm)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("cannot load {wasm} (build it first, see bench/README.md)"))?;
    let mut linker = Linker::new(&engine);
    // A std Rust guest imports WASI even if it never uses it.
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    Bench::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;

    let mut state = State { conns: SlotMap::with_key(), table: ResourceTable::new(), wasi: WasiCtx::builder().build() };
    // Some churn first, so neither lookup hits a pristine first slot.
    for _ in 0..3 {
        let k = state.conns.insert(Conn { written: 0 });
        state.conns.remove(k);
        let r = state.table.push(Conn { written: 0 })?;
        state.table.delete(r)?;
    }
    let key = state.conns.insert(Conn { written: 0 });
    let rep = state.table.push(Conn { written: 0 })?.rep();

    let mut store = Store::new(&engine, state);
    // Epoch interruption is on, as in the product; nothing ticks here.
    store.set_epoch_deadline(u64::MAX / 2);
    let guest = Bench::instantiate(&mut store, &component, &linker)?;
    Ok(Harness { store, guest, key, rep, data: (0..PAYLOAD as u8).collect() })
}

fn ns_per_call(d: Duration, calls: u32) -> f64 {
    d.as_nanos() as f64 / f64::from(calls)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn command_output(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() -> std::process::ExitCode {
    // `{:#}`: one line of causes, without the backtrace RUST_BACKTRACE=1 adds.
    match bench() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-handles: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn bench() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let wasm = args.next().unwrap_or_else(|| DEFAULT_GUEST.to_string());
    if args.next().is_some() {
        bail!("usage: bench-handles [GUEST.wasm]");
    }
    let mut bench = setup(&wasm)?;

    let variants = [Variant::Integer, Variant::Resource];
    for v in variants {
        bench.run(v, WARMUP_CALLS)?;
    }
    let mut samples: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..ROUNDS {
        // Alternate which variant goes first, so drift favours neither.
        let order = if round % 2 == 0 { variants } else { [Variant::Resource, Variant::Integer] };
        for v in order {
            let d = bench.run(v, CALLS)?;
            samples[v as usize].push(ns_per_call(d, CALLS));
        }
    }

    // Every call reached the host and found its connection. (And no store
    // handle leaked: over 100,000 leaked handles would have trapped.)
    let expected = (u64::from(WARMUP_CALLS) + u64::from(CALLS) * ROUNDS as u64) * PAYLOAD as u64;
    for v in variants {
        let written = bench.written(v)?;
        ensure!(written == expected, "{} variant: host saw {written} bytes, expected {expected}", v.name());
    }

    let [int, res] = &samples;
    let nproc = command_output("nproc", &[])
        .unwrap_or_else(|| std::thread::available_parallelism().map_or("?".into(), |n| n.get().to_string()));
    let kernel = command_output("uname", &["-r"]).unwrap_or_else(|| "?".into());
    println!("| handle (host → guest `on-data-*` → host `write-*`, {PAYLOAD} B) | min ns/call | median ns/call |");
    println!("|---|---:|---:|");
    println!("| integer: `u64` slot-map key, `SlotMap` lookup | {:.0} | {:.0} |", min(int), median(int));
    println!("| resource: `borrow<conn>`, `ResourceTable` lookup | {:.0} | {:.0} |", min(res), median(res));
    println!("| ratio resource / integer | {:.2} | {:.2} |", min(res) / min(int), median(res) / median(int));
    println!();
    println!(
        "{ROUNDS} alternating rounds of {CALLS} calls per variant after {WARMUP_CALLS} warm-up calls; \
         nproc {nproc}, kernel {kernel}."
    );
    Ok(())
}
