//! `host run --workers N`: one event loop per thread, shared nothing.
//!
//! Each worker is a whole [`Host`] (`embed.rs`, what an embedder gets): its
//! own [`EventLoop`], its own [`Server`],
//! its own instance of every guest and its own listening sockets (bound with
//! `SO_REUSEPORT`, so the kernel spreads connections over the workers). What
//! they share is only what is read-only or thread-safe: the wasmtime engine,
//! the compiled modules (`InstancePre`), the compiled cache and the epoch
//! ticker thread. A guest's state (its memory, its connections, its timers)
//! is per worker: two connections that land on different workers see two
//! different instances. A trap restarts that worker's instance only.
//!
//! Signals reach every worker: each registers its own self-pipe for
//! SIGINT/SIGTERM and SIGHUP, and signal-hook runs every registered action
//! for a signal. So a graceful shutdown or a reload happens in every loop,
//! and the process exits when the last worker stopped; if one fails (a guest
//! with `on-fault = exit`, say) the others are stopped too and the process
//! exits non-zero.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::thread;

use anyhow::Context;
use tracing::info;
use wasmloop_reactor::EventLoop;

use crate::embed::{self, Host, HostHandle};
use crate::on_calloop;
use crate::runtime::{self, Runtime};
use crate::server::{GuestSpec, Server, ServerConfig, accepted_on_this_thread};

/// What one worker runs: everything in it is its own, except what the
/// runtime shares ([`Runtime::for_another_loop`]).
pub struct Worker {
    pub runtime: Runtime,
    pub config: ServerConfig,
    pub guests: Vec<GuestSpec>,
    /// Reload guests when their module files change (`--watch`).
    pub watch: bool,
    /// Which loop waits for events (`--event-loop`).
    pub event_loop: LoopBackend,
    /// A guest whose first start fails goes through its fault policy while
    /// the others serve (several guests, `--config`), instead of stopping
    /// the host; the host still stops if none starts.
    pub guests_may_fail: bool,
}

/// Which loop a worker's events come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LoopBackend {
    /// Our own reactor (epoll, kqueue).
    #[default]
    Native,
    /// A calloop loop owned by the worker, with our reactor on it through
    /// its foreign-loop backend (`wasmloop::on_calloop`): the same host on
    /// someone else's loop.
    Calloop,
}

/// A worker's host, set up on the thread that runs it.
struct Started {
    host: Host,
    /// With `--event-loop calloop`: the calloop loop underneath ours.
    calloop: Option<(calloop::EventLoop<'static, ()>, on_calloop::Link<Server>)>,
}

/// Runs the workers until all have stopped: logs `ready` once every one
/// has started its guests and listens. One worker runs on this thread (as a
/// host without workers would), more each on a thread of their own, their
/// log lines tagged `worker{id=N}`. The first worker that fails stops the
/// rest and its error is returned.
pub fn run(workers: Vec<Worker>) -> anyhow::Result<()> {
    match <[Worker; 1]>::try_from(workers) {
        Ok([worker]) => runtime::on_loop_thread(|| {
            let started = start(worker)?;
            info!("ready");
            serve(1, started)
        })
        .context("cannot set up the loop thread")?,
        Err(workers) => run_threads(workers),
    }
}

enum Report {
    Started(usize, anyhow::Result<HostHandle>),
    Stopped(usize, anyhow::Result<()>),
}

fn run_threads(workers: Vec<Worker>) -> anyhow::Result<()> {
    let count = workers.len();
    let (reports, inbox) = mpsc::channel();
    let mut go = Vec::new();
    let mut threads = Vec::new();
    for (index, worker) in workers.into_iter().enumerate() {
        let id = index + 1;
        let (go_tx, go_rx) = mpsc::channel::<bool>();
        go.push(go_tx);
        let reports = reports.clone();
        let thread = thread::Builder::new()
            .name(format!("worker-{id}"))
            .spawn(move || {
                let span = tracing::info_span!("worker", id);
                let _entered = span.enter();
                let stopped = catch_unwind(AssertUnwindSafe(|| {
                    runtime::on_loop_thread(|| worker_thread(id, worker, &reports, &go_rx))
                        .context("cannot set up the loop thread")?
                }))
                .unwrap_or_else(|_| Err(anyhow::anyhow!("worker {id} panicked")));
                let _ = reports.send(Report::Stopped(id, stopped));
            })
            .with_context(|| format!("cannot start worker {id}"))?;
        threads.push(thread);
    }
    drop(reports);

    // Every worker starts its guests; none serves until all have.
    let mut handles: Vec<Option<HostHandle>> = (0..count).map(|_| None).collect();
    let mut reported = vec![false; count];
    let mut failure: Option<anyhow::Error> = None;
    while reported.contains(&false) {
        let Ok(report) = inbox.recv() else { break };
        let (id, outcome) = match report {
            Report::Started(id, Ok(handle)) => {
                handles[id - 1] = Some(handle);
                (id, Ok(()))
            }
            Report::Started(id, Err(e)) => (id, Err(e)),
            // Stopped before it could say it started: it panicked.
            Report::Stopped(id, outcome) if !reported[id - 1] => (id, outcome),
            Report::Stopped(..) => continue,
        };
        reported[id - 1] = true;
        if let Err(e) = outcome {
            failure.get_or_insert(e);
        }
    }
    let all_started = failure.is_none();
    for tx in &go {
        let _ = tx.send(all_started);
    }
    if all_started {
        info!("ready");
    }

    // Serve until every worker has stopped; the first to fail stops the rest.
    while let Ok(report) = inbox.recv() {
        if let Report::Stopped(id, Err(e)) = report {
            if failure.is_none() {
                for (other, handle) in handles.iter().enumerate() {
                    if other + 1 != id
                        && let Some(handle) = handle
                    {
                        handle.stop();
                    }
                }
            }
            failure.get_or_insert(e);
        }
    }
    for thread in threads {
        let _ = thread.join();
    }
    failure.map_or(Ok(()), Err)
}

/// One worker's thread: start, report, wait for the others, serve.
fn worker_thread(
    id: usize,
    worker: Worker,
    reports: &mpsc::Sender<Report>,
    go: &mpsc::Receiver<bool>,
) -> anyhow::Result<()> {
    let started = match start(worker) {
        Ok(started) => started,
        Err(e) => {
            let _ = reports.send(Report::Started(id, Err(e)));
            return Ok(());
        }
    };
    let _ = reports.send(Report::Started(id, Ok(started.host.handle())));
    if go.recv() != Ok(true) {
        // Another worker could not start: the host exits with its error.
        return Ok(());
    }
    serve(id, started)
}

/// Sets up a worker's host: its loop, signals, guests (instantiate +
/// `init`, listen), file watching.
fn start(worker: Worker) -> anyhow::Result<Started> {
    let (event_loop, calloop) = match worker.event_loop {
        LoopBackend::Native => (EventLoop::new().context("cannot create the event loop")?, None),
        LoopBackend::Calloop => {
            let calloop = calloop::EventLoop::try_new().context("cannot create the calloop event loop")?;
            let (event_loop, link) =
                on_calloop::event_loop(&calloop.handle()).context("cannot put the event loop on calloop")?;
            (event_loop, Some((calloop, link)))
        }
    };
    let mut host = Host::with_event_loop(worker.runtime, worker.config, event_loop);
    host.handle_signals().context("cannot install signal handlers")?;
    let mut failures = Vec::new();
    let count = worker.guests.len();
    for spec in worker.guests {
        if !worker.guests_may_fail {
            host.add_guest(spec)?;
        } else if let Some(reason) = host.add_guest_or_apply_policy(spec)? {
            failures.push(reason);
        }
    }
    if count > 0 && failures.len() == count {
        anyhow::bail!("no guest could start; the first: {}", failures[0]);
    }
    if worker.watch {
        host.watch_modules().context("cannot watch the module files")?;
    }
    Ok(Started { host, calloop })
}

/// Runs a worker's loop until it stops; says how many connections it took.
fn serve(id: usize, started: Started) -> anyhow::Result<()> {
    let Started { mut host, calloop } = started;
    let result = match calloop {
        None => host.run_in_context(),
        Some((mut calloop, link)) => {
            let (event_loop, server) = host.into_parts();
            let attached = link.attach(event_loop, server);
            let signal = calloop.get_signal();
            let ran = calloop.run(None, &mut (), |_| {
                if attached.is_stopping() {
                    signal.stop();
                }
            });
            let server = attached.detach();
            ran.context("calloop event loop failed").and_then(|()| embed::exit_result(&server))
        }
    };
    info!("worker {id} accepted {} connections", accepted_on_this_thread());
    result
}
