//! `embed-tokio`: wasmloop inside someone else's loop. A tokio
//! `current_thread` application serves its own HTTP endpoint, and on the
//! same thread runs wasmloop guests: the loop's epoll descriptor is one more
//! source for tokio (`AsyncFd`), its next timer one more `sleep`, and each
//! time either fires the application runs one non-blocking turn
//! (`Host::run_once`). No second thread, no locks: tokio's tasks and the
//! guests' callbacks take turns.
//!
//! `embed-tokio GUEST.wasm [--listen ADDR] [--http ADDR]` prints
//! `guest listening on ADDR` and `app listening on ADDR` to stderr. The
//! app answers every request with the thread it ran on and the thread the
//! last guest turn ran on, e.g. `app ThreadId(1) wasmloop ThreadId(1)`.

use std::cell::Cell;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt, unix::AsyncFd};
use tokio::net::TcpListener;
use wasmloop::config::{FaultPolicy, Policy, ReloadMode};
use wasmloop::embed::Host;
use wasmloop::server::{GuestSpec, ListenerSpec, Protocol, bind};

#[derive(Parser)]
struct Args {
    /// The guest component to run.
    guest: PathBuf,
    /// Where the guest accepts TCP connections.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Where the application serves its own HTTP endpoint.
    #[arg(long, default_value = "127.0.0.1:0")]
    http: SocketAddr,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    // The guest side: a wasmloop host with one guest.
    let mut host = Host::new()?;
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

    // The thread the last wasmloop turn ran on, for the app to report.
    let loop_thread = Rc::new(Cell::new(None));

    // The application's own endpoint, a plain tokio task.
    let app = TcpListener::bind(args.http).await?;
    eprintln!("app listening on {}", app.local_addr()?);
    let seen = loop_thread.clone();
    let local = tokio::task::LocalSet::new();
    local.spawn_local(async move {
        loop {
            let Ok((mut stream, _)) = app.accept().await else { continue };
            let seen = seen.clone();
            tokio::task::spawn_local(async move {
                let mut request = [0; 1024];
                let _ = stream.read(&mut request).await;
                let body = format!("app {:?} wasmloop {:?}\n", std::thread::current().id(), seen.get());
                let response =
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });

    // The wasmloop side: wait for its descriptor or its next timer, then
    // run one turn that does not block.
    // An `OwnedFd` (a dup of the epoll descriptor) meets what tokio 1.54
    // made `register` unsafe for: its number stays open and the same while
    // the `AsyncFd` owns it. So the deprecated safe constructor is sound here.
    #[allow(deprecated)]
    let backend = AsyncFd::new(host.backend_fd().try_clone_to_owned()?)?;
    local
        .run_until(async move {
            loop {
                let wait = host.next_timeout();
                tokio::select! {
                    ready = backend.readable() => ready?.clear_ready(),
                    _ = tokio::time::sleep(wait.unwrap_or(Duration::MAX)), if wait.is_some() => {}
                }
                loop_thread.set(Some(std::thread::current().id()));
                host.run_once(Some(Duration::ZERO))?;
                if host.is_stopping() {
                    return Ok(());
                }
            }
        })
        .await
}
