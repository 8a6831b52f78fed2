//! `host`: the command line. It only wires the pieces together: parse flags,
//! set up logging, load the guest, bind listeners, run the loop.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use wasmloop::runtime::{GuestLimits, Runtime, RuntimeConfig};
use wasmloop::server::{GuestSpec, Server, ServerConfig, bind};
use wasmloop_reactor::EventLoop;

/// Runs sandboxed WebAssembly network handlers on one event loop.
#[derive(Parser)]
#[command(name = "host", version, about, long_about = None)]
#[command(subcommand_required = true, arg_required_else_help = false)]
struct Cli {
    /// More log output (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a guest component, serving the given listeners.
    Run(RunArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// The guest: a WebAssembly component implementing wasmloop:handler.
    module: PathBuf,

    /// Address to accept TCP connections on and hand to the guest
    /// (repeatable). Port 0 picks a free port; the log names it.
    #[arg(long = "listen", value_name = "ADDR", required = true)]
    listen: Vec<SocketAddr>,

    /// A string passed to the guest's `init`.
    #[arg(long, value_name = "STRING", default_value = "")]
    guest_config: String,

    /// Bytes buffered per connection beyond what the kernel takes.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    max_output: usize,

    /// Longest a single callback may run before the guest is stopped.
    #[arg(long, value_name = "MS", default_value_t = 50)]
    callback_deadline_ms: u64,

    /// On SIGINT/SIGTERM, how long to let output drain before closing.
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    shutdown_timeout_ms: u64,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{}", one_line(&e));
            return ExitCode::from(2);
        }
    };
    init_logging(cli.verbose);
    let result = match cli.command {
        Command::Run(args) => run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Clap's message as one line: its first paragraph (the problem and, for a
/// missing argument, which one), without the usage that follows; that is one
/// `--help` away.
fn one_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let paragraph: Vec<&str> = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let line = paragraph.join(" ");
    if line.is_empty() {
        "error: invalid arguments (see `host --help`)".into()
    } else {
        line
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let defaults = RuntimeConfig::default();
    let config = RuntimeConfig {
        callback_deadline: Duration::from_millis(args.callback_deadline_ms),
        limits: GuestLimits {
            max_output: args.max_output,
            ..defaults.limits.clone()
        },
        ..defaults
    };
    let runtime = Runtime::new(config).context("cannot start the WebAssembly runtime")?;
    let module = runtime.load(&args.module)?;
    let listeners = args
        .listen
        .iter()
        .map(|&a| bind(a))
        .collect::<Result<Vec<_>, _>>()?;
    let name = args
        .module
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "guest".into());

    let mut event_loop = EventLoop::new().context("cannot create the event loop")?;
    let server_config = ServerConfig {
        shutdown_timeout: Duration::from_millis(args.shutdown_timeout_ms),
        ..ServerConfig::default()
    };
    let mut server = Server::new(runtime, server_config);
    server
        .handle_signals(event_loop.reactor())
        .context("cannot install signal handlers")?;
    server.add_guest(
        event_loop.reactor(),
        GuestSpec {
            name,
            module,
            listeners,
            config: args.guest_config,
        },
    )?;
    tracing::info!("ready");
    wasmloop::runtime::on_loop_thread(|| event_loop.run(&mut server))
        .context("cannot set up the loop thread")?
        .context("event loop failed")?;
    Ok(())
}
