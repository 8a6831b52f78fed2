//! The part of WASI 0.2 a guest's language runtime needs: clocks, random,
//! stdio (to the host log), an empty environment, exit, and a filesystem
//! with nothing in it. Not `wasi:sockets`: a guest's network is
//! `wasmloop:handler/connections`, and a component importing sockets fails
//! to load with a message naming the import.
//!
//! The linker matches imports by semver, so components built against any
//! WASI 0.2.x load.

use std::sync::Arc;

use wasmtime::component::{HasData, Linker, ResourceTable};
use wasmtime_wasi::cli::{WasiCli, WasiCliView};
use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView};
use wasmtime_wasi::p2::bindings::sync;
use wasmtime_wasi::p2::bindings::{cli, clocks, filesystem, random};
use wasmtime_wasi::random::WasiRandom;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiView};

use crate::guest_io::GuestLog;
use crate::runtime::state::GuestState;
use crate::runtime::stdio::GuestOutput;

struct IoTable;
impl HasData for IoTable {
    type Data<'a> = &'a mut ResourceTable;
}

pub fn add_to_linker(linker: &mut Linker<GuestState>) -> wasmtime::Result<()> {
    type T = GuestState;
    let l = linker;
    sync::io::error::add_to_linker::<T, IoTable>(l, |t| t.ctx().table)?;
    // poll and the monotonic clock never block the loop: runtime/poll.rs.
    crate::runtime::poll::add_to_linker(l)?;
    sync::io::streams::add_to_linker::<T, IoTable>(l, |t| t.ctx().table)?;
    clocks::wall_clock::add_to_linker::<T, WasiClocks>(l, T::clocks)?;
    random::random::add_to_linker::<T, WasiRandom>(l, |t| t.ctx().ctx.random())?;
    random::insecure::add_to_linker::<T, WasiRandom>(l, |t| t.ctx().ctx.random())?;
    random::insecure_seed::add_to_linker::<T, WasiRandom>(l, |t| t.ctx().ctx.random())?;
    cli::exit::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::environment::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_input::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_output::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
    filesystem::preopens::add_to_linker::<T, WasiFilesystem>(l, T::filesystem)?;
    sync::filesystem::types::add_to_linker::<T, WasiFilesystem>(l, T::filesystem)?;
    Ok(())
}

/// A WASI context with no preopened directories, no environment, no
/// arguments, no stdin, and stdout/stderr into the guest's `log`.
pub fn context(log: &Arc<GuestLog>) -> WasiCtx {
    WasiCtxBuilder::new()
        .stdout(GuestOutput::new(log.clone(), "stdout"))
        .stderr(GuestOutput::new(log.clone(), "stderr"))
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        // `get-random-bytes` allocates what is asked on the host first;
        // language runtimes ask for a few bytes (64 MiB by default).
        .max_random_size(1 << 20)
        .build()
}
