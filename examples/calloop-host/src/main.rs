//! `calloop-host`: wasmloop as a guest on someone else's loop. A calloop
//! application owns its loop and its own timer (a line every
//! `--tick-ms`); wasmloop's reactor runs on that loop through its
//! foreign-loop backend (`wasmloop::on_calloop`): each guest socket, the
//! reactor's one timer and its waker are calloop sources. After
//! `--serve-ms` the application detaches wasmloop, which removes every one
//! of those sources, and its loop goes on with its own timer alone for
//! `--ticks-after` more ticks.
//!
//! `calloop-host GUEST.wasm [--listen ADDR]` prints to stderr:
//! `guest listening on ADDR`, `app tick N` lines, `wasmloop detached`,
//! more ticks, `app done`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use calloop::timer::{TimeoutAction, Timer};
use clap::Parser;
use wasmloop::config::{FaultPolicy, Policy, ReloadMode};
use wasmloop::embed::Host;
use wasmloop::on_calloop::{self, Attached};
use wasmloop::runtime::Runtime;
use wasmloop::server::{GuestSpec, ListenerSpec, Protocol, Server, ServerConfig, bind};

#[derive(Parser)]
struct Args {
    /// The guest component to run.
    guest: PathBuf,
    /// Where the guest accepts TCP connections.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// How long wasmloop runs on the application's loop before it is detached.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    serve_ms: u64,
    /// The application's own timer interval.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    tick_ms: u64,
    /// Ticks the application's loop makes alone after detaching, then exits.
    #[arg(long, value_name = "N", default_value_t = 3)]
    ticks_after: u32,
}

/// The application's state, which calloop hands to every callback.
struct App {
    ticks: u32,
    /// wasmloop, while it is attached to our loop.
    wasmloop: Option<Attached<Server>>,
    ticks_after_detach: Option<u32>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut calloop = calloop::EventLoop::<App>::try_new()?;
    let signal = calloop.get_signal();

    // wasmloop's reactor, with calloop underneath, and one guest on it.
    let (event_loop, link) = on_calloop::event_loop(&calloop.handle())?;
    let mut host = Host::with_event_loop(Runtime::new()?, ServerConfig::default(), event_loop);
    let module = host.load(&args.guest)?;
    let listener = bind(args.listen)?;
    eprintln!("guest listening on {}", listener.local_addr()?);
    host.add_guest(GuestSpec {
        name: "guest".into(),
        module,
        listeners: vec![ListenerSpec { socket: listener, protocol: Protocol::Tcp }],
        config: String::new(),
        limits: Default::default(),
        grants: Default::default(),
        policy: Policy { on_fault: FaultPolicy::Restart, reload: ReloadMode::Drain },
    })?;
    let (event_loop, server) = host.into_parts();
    let mut app = App { ticks: 0, wasmloop: Some(link.attach(event_loop, server)), ticks_after_detach: None };

    // The application's own timer: it prints, detaches wasmloop when its
    // time is up, and ends the loop a few ticks later.
    let detach_at = Instant::now() + Duration::from_millis(args.serve_ms);
    let tick = Duration::from_millis(args.tick_ms);
    let ticks_after = args.ticks_after;
    calloop
        .handle()
        .insert_source(Timer::from_duration(tick), move |_, _, app: &mut App| {
            app.ticks += 1;
            eprintln!("app tick {}", app.ticks);
            if Instant::now() >= detach_at
                && let Some(attached) = app.wasmloop.take()
            {
                drop(attached.detach());
                app.ticks_after_detach = Some(0);
                eprintln!("wasmloop detached");
            } else if let Some(after) = &mut app.ticks_after_detach {
                *after += 1;
                if *after >= ticks_after {
                    signal.stop();
                }
            }
            TimeoutAction::ToDuration(tick)
        })
        .map_err(|e| e.error)?;

    // Guests' WASI calls want a current-thread tokio context on this thread.
    wasmloop::runtime::on_loop_thread(|| calloop.run(None, &mut app, |_| {}))??;
    eprintln!("app done");
    Ok(())
}
