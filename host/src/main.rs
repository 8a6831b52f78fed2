//! `host`: the command line. It only wires the pieces together: parse flags,
//! set up logging, load the guest, bind listeners, run the loops.

#![forbid(unsafe_code)]

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use wasmloop::config::{FaultPolicy, HostConfig, Policy, ReloadMode};
use wasmloop::descriptors::{self, Needs};
use wasmloop::grants::{AllowRule, Allowlist, Grants};
use wasmloop::limits::Limits;
use wasmloop::metrics::Metrics;
use wasmloop::runtime::Runtime;
use wasmloop::server::{GuestSpec, ListenFd, ListenerSpec, Protocol, ServerConfig, bind_group, inherit_listeners};
use wasmloop::workers::{self, LoopBackend, Worker};

mod inspect;

/// Runs sandboxed WebAssembly network handlers on one event loop.
#[derive(Parser)]
#[command(name = "host", version, about, long_about = None)]
#[command(subcommand_required = true, arg_required_else_help = false)]
struct Cli {
    /// More log output (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    /// Log lines as text, or as one JSON object per line (for log
    /// collectors): timestamp, level, target, fields (guest, worker, ...).
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a guest component, serving the given listeners.
    Run(Box<RunArgs>),
    /// Check whether a component fits the wasmloop:handler world: list what
    /// it imports and exports and name what is missing. Exit 0 if it fits.
    Check(CheckArgs),
    /// Show what a running host is doing: reads its admin listener
    /// (`host run --admin ADDR`) and prints a table per guest and per loop.
    Inspect(inspect::InspectArgs),
}

#[derive(clap::Args)]
struct CheckArgs {
    /// The component to check.
    module: PathBuf,

    /// Compile afresh and keep nothing on disk (as for `run`).
    #[arg(long)]
    no_cache: bool,
}

#[derive(clap::Args)]
struct RunArgs {
    /// The guest: a WebAssembly component implementing wasmloop:handler.
    #[arg(required_unless_present = "config", conflicts_with = "config")]
    module: Option<PathBuf>,

    /// Run the guests described in a TOML file instead (see
    /// examples/host.toml). The per-guest options below cannot be given
    /// with it (set them in the file); the host-wide ones may, and then win
    /// over the file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Event loops to run, one per thread, each with its own instance of
    /// every guest (guest state is per worker) and its own listening socket
    /// per address (SO_REUSEPORT: the kernel spreads connections). One per
    /// core is the most that helps.
    #[arg(long, value_name = "N", default_value = "1")]
    workers: NonZeroUsize,

    /// The loop that waits for events: our own reactor (epoll, kqueue), or
    /// a calloop loop with the reactor running on it as a guest (each
    /// worker then owns one calloop loop).
    #[arg(long, value_enum, value_name = "LOOP", default_value = "native")]
    event_loop: LoopBackend,

    /// On SIGINT/SIGTERM, how long to let output drain before closing.
    #[arg(long, value_name = "MS", default_value_t = millis(ServerConfig::default().shutdown_timeout))]
    shutdown_timeout_ms: u64,

    /// Reload a guest whenever its module file changes (as SIGHUP does).
    #[arg(long)]
    watch: bool,

    /// After a reload (SIGHUP), how long the old version keeps serving its
    /// open connections before they are closed.
    #[arg(long, value_name = "MS", default_value_t = millis(ServerConfig::default().drain_timeout))]
    drain_timeout_ms: u64,

    /// Keep compiled guest code in DIR, so restarts and reloads of an
    /// unchanged module skip compiling [default: $XDG_CACHE_HOME/wasmloop,
    /// else ~/.cache/wasmloop].
    #[arg(long, value_name = "DIR", conflicts_with = "no_cache")]
    cache_dir: Option<PathBuf>,

    /// Compile every module afresh and keep nothing on disk.
    #[arg(long)]
    no_cache: bool,

    /// Serve metrics (Prometheus, `/metrics`), a live status page (`/`) and
    /// its JSON (`/status.json`) on ADDR; `host inspect` reads it. Loopback
    /// addresses only, unless --admin-public. Port 0 picks a free port.
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,

    /// Allow --admin on a non-loopback address (anyone who can reach it
    /// sees the metrics).
    #[arg(long, requires = "admin")]
    admin_public: bool,

    // Last: its help headings hold to the end of the list.
    #[command(flatten)]
    guest: GuestFlags,
}

/// The one guest the flags describe. With `--config` the file describes
/// the guests, and any of these given on the command line is an error
/// ([`refuse_guest_flags`]).
#[derive(clap::Args)]
#[command(next_help_heading = "Guest options (not with --config: set them in the file)")]
struct GuestFlags {
    /// Address to accept TCP connections on and hand to the guest
    /// (repeatable). Port 0 picks a free port; the log names it.
    #[arg(
        long = "listen",
        value_name = "ADDR",
        required_unless_present_any = ["config", "listen_http", "listen_ws", "listen_fd"]
    )]
    listen: Vec<SocketAddr>,

    /// Address to serve HTTP/1.1 on (repeatable): the host parses requests
    /// and the guest answers them (`http-callbacks`).
    #[arg(long = "listen-http", value_name = "ADDR")]
    listen_http: Vec<SocketAddr>,

    /// Like --listen-http, and WebSocket upgrades are offered to the guest.
    #[arg(long = "listen-ws", value_name = "ADDR")]
    listen_ws: Vec<SocketAddr>,

    /// Serve a listening socket the process inherited, by descriptor number
    /// (repeatable): `3` for raw TCP, `3:http` or `3:ws` as --listen-http and
    /// --listen-ws do. `systemd` (or `systemd:http`, `systemd:ws`) takes the
    /// sockets of systemd socket activation (LISTEN_FDS, from descriptor 3).
    #[arg(long = "listen-fd", value_name = "FD[:http|:ws]")]
    listen_fd: Vec<ListenFd>,

    /// A string passed to the guest's `init`.
    #[arg(long, value_name = "STRING", default_value = "")]
    guest_config: String,

    /// Allow outbound TCP connects and UDP sends to RULE (repeatable):
    /// `127.0.0.1:6379`, `10.0.0.0/8:5432`, `[::1]:8000-8100`, `[::1]:*`.
    #[arg(long = "connect", value_name = "RULE")]
    connect: Vec<AllowRule>,

    /// Allow the guest to bind a UDP socket on ADDR (repeatable).
    #[arg(long = "udp", value_name = "ADDR")]
    udp: Vec<SocketAddr>,

    /// What to do when the guest traps.
    #[arg(long, value_enum, default_value_t = FaultPolicy::default())]
    on_fault: FaultPolicy,

    /// What a reload does with open connections: drain them on the old
    /// version, or migrate them (and the guest's state) to the new one.
    #[arg(long, value_enum, default_value_t = ReloadMode::default())]
    reload_mode: ReloadMode,

    #[command(flatten, next_help_heading = "Guest limits (not with --config: set them in [guest.limits])")]
    limits: Limits,
}

/// A default duration as a flag's milliseconds.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn main() -> ExitCode {
    let parsed = Cli::command().try_get_matches().and_then(|matches| Ok((Cli::from_arg_matches(&matches)?, matches)));
    let (cli, matches) = match parsed {
        Ok(parsed) => parsed,
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
    let run_flags = matches.subcommand_matches("run");
    if let Some(run_flags) = run_flags {
        let refused = refuse_guest_flags(run_flags);
        if !refused.is_empty() {
            for line in refused {
                let _ = writeln!(std::io::stderr(), "{line}");
            }
            return ExitCode::from(2);
        }
    }
    let logs = init_logging(cli.verbose, cli.log_format);
    let result = match cli.command {
        Command::Run(args) => run(*args, run_flags.expect("`run` was parsed from its matches")),
        Command::Check(args) => check(args),
        Command::Inspect(args) => inspect::run(args),
    };
    // Queued log lines first, then the error.
    drop(logs);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Not `eprintln!`: it panics when stderr is a closed pipe.
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Clap's message as one line: its first paragraph (the problem and, for a
/// missing argument, which one) and its tips ("a similar argument exists:
/// '--listen'"), without the usage that follows; that is one `--help` away.
fn one_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let paragraph: Vec<&str> = text.lines().take_while(|l| !l.trim().is_empty()).map(str::trim).collect();
    let tips = text.lines().map(str::trim).filter(|l| l.starts_with("tip:"));
    let line = paragraph.into_iter().chain(tips).collect::<Vec<_>>().join("; ");
    if line.is_empty() { "error: invalid arguments (see `host --help`)".into() } else { line }
}

/// With `--config`, one line for each per-guest flag given on the command
/// line: the file describes the guests, and a flag that would be silently
/// ignored is a mistake to point out. (Their defaults do not count: only
/// what was typed.)
fn refuse_guest_flags(run: &clap::ArgMatches) -> Vec<String> {
    if run.get_one::<PathBuf>("config").is_none() {
        return Vec::new();
    }
    let flags = GuestFlags::augment_args(clap::Command::new("run"));
    flags
        .get_arguments()
        .filter(|arg| run.value_source(arg.get_id().as_str()) == Some(clap::parser::ValueSource::CommandLine))
        .map(|arg| {
            let name = arg.get_long().map_or_else(|| arg.get_id().to_string(), |long| format!("--{long}"));
            format!("error: {name} cannot be used with --config: set it in the config file")
        })
        .collect()
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Log lines queued for the writer thread before new ones are dropped (and
/// counted: `wasmloop_log_lines_dropped_total`).
/// Guest lines are at most 4 KiB (`guest_io::log::MAX_LINE`), so the
/// queue holds at most ~32 MiB.
const LOG_QUEUE_LINES: usize = 8 * 1024;

/// Sets up logging to stderr through a bounded queue and a writer thread:
/// the loop never waits for the log's reader (a full pipe, a slow
/// terminal), and a reader that went away costs nothing. The returned guard
/// flushes what is queued when dropped.
fn init_logging(verbose: u8, format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name("log-writer")
        .finish(Stderr);
    wasmloop::metrics::count_dropped_log_lines(writer.error_counter());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().init(),
    }
    guard
}

/// Stderr for the log writer thread, which ignores write errors: with the
/// log's reader gone (`EPIPE`) the host keeps serving; there is nowhere
/// left to say so.
struct Stderr;

impl std::io::Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

/// One guest to start: what the flags or the config file say.
struct Planned {
    name: String,
    module: PathBuf,
    /// Addresses to listen on, with what the host speaks on each.
    listen: Vec<(SocketAddr, Protocol)>,
    /// Listening sockets handed over by a supervisor (`--listen-fd`).
    inherited: Vec<ListenerSpec>,
    config: String,
    grants: Grants,
    limits: Limits,
    policy: Policy,
}

/// `host run`; `given` says which flags were typed, not defaulted.
fn run(args: RunArgs, given: &clap::ArgMatches) -> anyhow::Result<()> {
    // First: a SIGHUP (reload) while the guests load must not end the host.
    wasmloop::server::hold_early_sighup().context("cannot handle SIGHUP")?;
    // Every connection is a descriptor: take all the kernel allows, then
    // fit the connection limits to it (below).
    let fd_limit = descriptors::raise_limit();
    // Before anything opens a descriptor: the numbers must still name what
    // the supervisor passed (see `take_inherited`).
    let inherited = inherit_listeners(&args.guest.listen_fd)?;
    let mut cache_dir = args.cache_dir.clone();
    let (mut admin, mut admin_public) = (args.admin, args.admin_public);
    let (mut shutdown_timeout_ms, mut drain_timeout_ms) = (args.shutdown_timeout_ms, args.drain_timeout_ms);
    let mut planned = match &args.config {
        Some(file) => {
            let config = HostConfig::load(file)?;
            // Host-wide settings: a flag given wins over the file, the file
            // over the flag's default.
            cache_dir = cache_dir.or(config.cache_dir.clone());
            if admin.is_none() {
                (admin, admin_public) = (config.admin, config.admin_public);
            }
            let typed = |id: &str| given.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
            if !typed("shutdown_timeout_ms") {
                shutdown_timeout_ms = config.shutdown_timeout_ms.unwrap_or(shutdown_timeout_ms);
            }
            if !typed("drain_timeout_ms") {
                drain_timeout_ms = config.drain_timeout_ms.unwrap_or(drain_timeout_ms);
            }
            config
                .guests
                .iter()
                .map(|g| Planned {
                    name: g.name.clone(),
                    module: g.module.clone(),
                    listen: g.listeners(),
                    inherited: Vec::new(),
                    config: g.config.clone(),
                    grants: g.grants(),
                    limits: g.limits.clone(),
                    policy: g.policy(),
                })
                .collect()
        }
        None => vec![planned_from_flags(args.module.clone().unwrap_or_default(), &args.guest, inherited)],
    };

    if args.watch {
        // Before loading anything: --watch would load whatever lands there.
        for guest in &planned {
            wasmloop::server::check_watchable(&guest.module).context("--watch")?;
        }
    }
    let count = args.workers.get();
    if let Some(limit) = fd_limit {
        fit_connections(&mut planned, limit, count, admin.is_some(), args.config.is_some())?;
    }

    // Before any guest loads, so a mistake in it is reported at once.
    let metrics = match admin {
        Some(addr) => {
            let metrics = Metrics::new();
            wasmloop::admin::start(addr, admin_public, metrics.clone())?;
            Some(metrics)
        }
        None => None,
    };

    let mut runtime = Runtime::new().context("cannot start the WebAssembly runtime")?;
    if !args.no_cache {
        use_cache(&mut runtime, cache_dir)?;
    }
    // Among several guests, one that cannot start must not take the others
    // down; a guest alone stops the host, as there is nothing else to serve.
    let guests_may_fail = planned.len() > 1;
    let server_config = ServerConfig {
        shutdown_timeout: Duration::from_millis(shutdown_timeout_ms),
        drain_timeout: Duration::from_millis(drain_timeout_ms),
        ..ServerConfig::default()
    };
    // Each worker gets every guest, with its own listeners; the module is
    // compiled once and shared.
    let mut workers: Vec<Worker> = (0..count)
        .map(|_| Worker {
            runtime: runtime.for_another_loop(),
            config: ServerConfig { metrics: metrics.as_ref().map(|m| m.add_worker()), ..server_config.clone() },
            guests: Vec::new(),
            watch: args.watch,
            event_loop: args.event_loop,
            guests_may_fail,
        })
        .collect();
    for guest in planned {
        let module = runtime.load(&guest.module)?;
        let mut specs: Vec<GuestSpec> = (0..count)
            .map(|_| GuestSpec {
                name: guest.name.clone(),
                module: module.clone(),
                listeners: Vec::new(),
                config: guest.config.clone(),
                limits: guest.limits.clone(),
                grants: guest.grants.clone(),
                policy: guest.policy,
            })
            .collect();
        for &(address, protocol) in &guest.listen {
            for (spec, socket) in specs.iter_mut().zip(bind_group(address, count)?) {
                spec.listeners.push(ListenerSpec { socket, protocol });
            }
        }
        // An inherited socket is one socket (and one accept queue): every
        // worker watches a duplicate of it and whichever loop wakes first
        // accepts.
        for inherited in &guest.inherited {
            for spec in &mut specs {
                let socket = inherited.socket.try_clone().context("cannot duplicate an inherited listener")?;
                spec.listeners.push(ListenerSpec { socket, protocol: inherited.protocol });
            }
        }
        for (worker, mut spec) in workers.iter_mut().zip(specs) {
            // Raw TCP listeners first, then the HTTP ones, each in the
            // order given: the guest's listener handles follow this order.
            spec.listeners.sort_by_key(|l| l.protocol != Protocol::Tcp);
            worker.guests.push(spec);
        }
    }
    drop(runtime);
    workers::run(workers)
}

/// Lowers the guests' connection limits where, over all workers, they would
/// not fit in `limit` descriptors beside what the host keeps for itself (see
/// `wasmloop::descriptors`), saying so in one warning line.
fn fit_connections(
    planned: &mut [Planned],
    limit: u64,
    workers: usize,
    admin: bool,
    from_config: bool,
) -> anyhow::Result<()> {
    let needs = Needs {
        workers,
        guests: planned.len(),
        listeners: planned.iter().map(|g| g.listen.len() + g.inherited.len()).sum(),
        udp: planned.iter().map(|g| g.grants.udp.len()).sum(),
        admin_clients: if admin { wasmloop::admin::MAX_CLIENTS } else { 0 },
    };
    let reserve = descriptors::reserve(needs);
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let wanted: Vec<usize> = planned.iter().map(|g| g.limits.max_connections).collect();
    let fitted = descriptors::fit(limit.saturating_sub(reserve), workers, &wanted);
    let of_workers = if workers > 1 { format!(", shared by {workers} workers") } else { String::new() };
    if fitted.iter().zip(&wanted).any(|(&new, &old)| new == 0 && old > 0) {
        anyhow::bail!(
            "the descriptor limit ({limit} open files) leaves no room for connections: the host keeps {reserve} \
             for itself{of_workers}; raise it (ulimit -n)"
        );
    }
    let lowered: Vec<(&str, usize, usize)> = planned
        .iter()
        .zip(&fitted)
        .filter(|(g, new)| g.limits.max_connections != **new)
        .map(|(g, &new)| (g.name.as_str(), g.limits.max_connections, new))
        .collect();
    let why =
        format!("does not fit the descriptor limit ({limit} open files, {reserve} kept for the host{of_workers})");
    match lowered.as_slice() {
        [] => {}
        [(_, old, new)] if !from_config => tracing::warn!("--max-connections {old} {why}: lowered to {new}"),
        lowered => {
            let each: Vec<String> = lowered.iter().map(|(name, old, new)| format!("`{name}` {old} -> {new}")).collect();
            tracing::warn!("max_connections {why}: lowered for {}", each.join(", "));
        }
    }
    for (guest, new) in planned.iter_mut().zip(fitted) {
        guest.limits.max_connections = new;
    }
    Ok(())
}

/// `host check`: the report on stdout; it fits (exit 0) or not (exit 1).
fn check(args: CheckArgs) -> anyhow::Result<()> {
    let mut runtime = Runtime::new().context("cannot start the WebAssembly runtime")?;
    if !args.no_cache {
        use_cache(&mut runtime, None)?;
    }
    let report = wasmloop::runtime::check(&runtime, &args.module)?;
    println!("{report}");
    match report.verdict {
        Ok(()) => Ok(()),
        Err(_) => std::process::exit(1),
    }
}

/// Turns on the compiled cache: in `dir` if one was named (and then failing
/// to use it is an error), else in the user's cache directory if it can be
/// used (else we only warn: compiling works without it).
fn use_cache(runtime: &mut Runtime, dir: Option<PathBuf>) -> anyhow::Result<()> {
    if let Some(dir) = dir {
        return Ok(runtime.use_cache(&dir)?);
    }
    let default = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|d| !d.is_empty()).map(|h| PathBuf::from(h).join(".cache")));
    match default {
        Some(dir) => {
            if let Err(e) = runtime.use_cache(&dir.join("wasmloop")) {
                tracing::warn!("{e}; compiling without a cache");
            }
        }
        None => tracing::warn!("neither XDG_CACHE_HOME nor HOME is set; compiling without a cache"),
    }
    Ok(())
}

fn planned_from_flags(module: PathBuf, flags: &GuestFlags, inherited: Vec<ListenerSpec>) -> Planned {
    let name = module.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "guest".into());
    let tcp = flags.listen.iter().map(|&a| (a, Protocol::Tcp));
    let http = flags.listen_http.iter().map(|&a| (a, Protocol::Http));
    let websocket = flags.listen_ws.iter().map(|&a| (a, Protocol::WebSocket));
    Planned {
        name,
        module,
        listen: tcp.chain(http).chain(websocket).collect(),
        inherited,
        config: flags.guest_config.clone(),
        grants: Grants { connect: Allowlist::new(flags.connect.clone()), udp: flags.udp.clone() },
        limits: flags.limits.clone(),
        policy: Policy { on_fault: flags.on_fault, reload: flags.reload_mode },
    }
}
