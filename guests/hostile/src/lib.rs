//! A guest that attacks the loop it runs on, one way per run, chosen by the
//! configuration string. `tests/sandbox.rs` runs it beside `echo` and checks
//! that echo's clients never notice. The modes:
//!
//! - `spin-init`, `spin-data`, `spin-timer`: a callback that never returns
//!   (`init`; `on_data`; `on_timer` of a 20 ms timer set in `init`). The
//!   latter two log `spinning in <callback>` first.
//! - `memory-bomb`: `on_data` reserves memory until the cap traps it.
//! - `panic-accept`, `panic-data`, `panic-eof`, `panic-writable`,
//!   `panic-close`, `panic-timer`, `panic-shutdown`: a panic (a wasm trap) in
//!   that callback. `panic-writable` first fills the connection's output
//!   buffer and asks for `on_writable`; `panic-timer` sets a 10 ms timer on
//!   accept.
//! - `forge-handles`: calls every connection, timer and listener function
//!   with handles it was never given (0, `u64::MAX`, random numbers, a
//!   closed connection, a fired and a cancelled timer, near misses of live
//!   handles) and checks each is refused with `invalid-handle` (or `closed`
//!   where the WIT says so). Replies `ok`, or `bad <what went wrong>`. The
//!   first connection(s) only collect a closed handle: they get `again` and
//!   are closed.
//! - `timer-flood`: on accept, starts timers until `limit-reached`, replies
//!   `timers <n>`, and cancels them all.
//! - `write-flood`: on accept, writes until the output buffer is full, logs
//!   `full <taken> buffered <bytes>`, and keeps writing on every tick of a
//!   20 ms timer and on every `on_writable`; a larger buffered count is
//!   logged as `buffered <bytes>`. A line `stop` from the client ends it:
//!   the guest logs `flood total <taken>` and closes the connection. Byte
//!   `k` of the stream is `k % 251`.
//! - `crash-loop`: a 10 ms timer set in `init` panics in `on_timer`, so every
//!   restart traps again.
//! - `sleep`: `on_data` logs `sleeping in on_data` and calls
//!   `std::thread::sleep` for 10 s (a `wasi:io/poll` wait).
//! - `timer-storm`: `init` sets 2,000 timers due together 20 ms later; each
//!   `on_timer` busy-waits 40 ms (under the 50 ms deadline) and logs
//!   `storm <n>` every 10th.
//! - `busy-echo`: `on_accept` and `on_data` each busy-wait 40 ms, then
//!   `on_data` echoes (connections opened in a burst).
//! - `log-flood`: `on_accept` logs 5,000 lines through `log` and 5,000 to
//!   stdout, the first of each with a forged host log line after a newline
//!   and a terminal escape, then replies `logged`.
//! - `cross-kind`: calls every import that takes a handle with a live handle
//!   of every other kind (connection, listener, request, WebSocket, timer,
//!   UDP socket) and with dead handles of every kind (a closed connection,
//!   a finished request, a closed WebSocket, a fired and a cancelled timer,
//!   a closed UDP socket), expecting `invalid-handle` from each. It needs a
//!   raw TCP listener, a WebSocket listener and a UDP grant of
//!   `127.0.0.1:0`; `init` binds two UDP sockets (closing one) and sets its
//!   timers. The client then: connects to the raw listener (the live
//!   connection, answered `conn`); sends `GET /hold` (the live request, held
//!   unanswered), `GET /done` (answered `done`: a finished request),
//!   upgrades `/ws-live` (the live WebSocket) and `/ws-dead` (then drops it:
//!   a closed WebSocket) on the WebSocket listener; connects to the raw
//!   listener again (closed at once: a closed connection). The guest logs
//!   `cross-kind: have <what>` for each handle that comes in a callback. On
//!   `check` from the live connection it makes the calls, then uses each
//!   live handle for real (the held request gets `200 held`, the WebSocket
//!   the text `still here`) and replies `ok <calls>` or `bad <what went
//!   wrong>`.
//!
//! Unless the mode says otherwise, a new connection is greeted with `hi`.

use std::fmt::Debug;
use std::time::Duration;

use wasmloop_sdk::{
    CloseReason, Connection, DatagramError, EofAction, Error, Handler, Instant, Listener, Request, RequestHead, Timer,
    UdpSocket, WebSocket, export, info,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    SpinInit,
    SpinData,
    SpinTimer,
    MemoryBomb,
    PanicAccept,
    PanicData,
    PanicEof,
    PanicWritable,
    PanicClose,
    PanicTimer,
    PanicShutdown,
    ForgeHandles,
    TimerFlood,
    WriteFlood,
    CrashLoop,
    Sleep,
    TimerStorm,
    BusyEcho,
    LogFlood,
    CrossKind,
}

impl Mode {
    fn parse(text: &str) -> Option<Mode> {
        Some(match text.trim() {
            "spin-init" => Mode::SpinInit,
            "spin-data" => Mode::SpinData,
            "spin-timer" => Mode::SpinTimer,
            "memory-bomb" => Mode::MemoryBomb,
            "panic-accept" => Mode::PanicAccept,
            "panic-data" => Mode::PanicData,
            "panic-eof" => Mode::PanicEof,
            "panic-writable" => Mode::PanicWritable,
            "panic-close" => Mode::PanicClose,
            "panic-timer" => Mode::PanicTimer,
            "panic-shutdown" => Mode::PanicShutdown,
            "forge-handles" => Mode::ForgeHandles,
            "timer-flood" => Mode::TimerFlood,
            "write-flood" => Mode::WriteFlood,
            "crash-loop" => Mode::CrashLoop,
            "sleep" => Mode::Sleep,
            "timer-storm" => Mode::TimerStorm,
            "busy-echo" => Mode::BusyEcho,
            "log-flood" => Mode::LogFlood,
            "cross-kind" => Mode::CrossKind,
            _ => return None,
        })
    }

    /// Whether a new connection gets `hi\n` (the modes that reply otherwise
    /// do not).
    fn greets(self) -> bool {
        !matches!(
            self,
            Mode::PanicAccept
                | Mode::ForgeHandles
                | Mode::TimerFlood
                | Mode::WriteFlood
                | Mode::BusyEcho
                | Mode::LogFlood
                | Mode::CrossKind
        )
    }
}

/// Bytes per `write` when flooding.
const CHUNK: usize = 64 * 1024;
/// The flood's byte pattern repeats every this many bytes (a prime, so it
/// never lines up with chunk sizes).
const PERIOD: usize = 251;
const HOUR: Duration = Duration::from_secs(3600);
/// `timer-storm`: how many timers fire together.
const STORM: usize = 2000;
/// How long `timer-storm` and `busy-echo` callbacks spin: under the 50 ms
/// deadline, so no single callback is a fault.
const BUSY: Duration = Duration::from_millis(40);
/// `log-flood`: lines per channel.
const FLOOD_LINES: usize = 5_000;

struct Hostile {
    mode: Mode,
    /// Memory reserved by `memory-bomb`.
    hoard: Vec<Vec<u8>>,
    forge: Forge,
    cross: Cross,
    flood: Option<Flood>,
    /// `CHUNK + PERIOD` bytes of the flood pattern: any chunk of the stream
    /// is a slice of it.
    pattern: Vec<u8>,
    /// `timer-storm`: timers fired so far.
    storm: u32,
}

/// What `forge-handles` collects before its checks.
#[derive(Default)]
struct Forge {
    /// The 1 ms timer set by `init`, until it fires.
    firing: Option<Timer>,
    /// That timer once it fired: a dead handle.
    fired: Option<Timer>,
    /// A timer cancelled in `init`: a dead handle.
    cancelled: Option<Timer>,
    /// A live timer (an hour away) to forge near misses of.
    live_timer: Option<Timer>,
    /// A connection after its `on_close`: a dead handle.
    closed: Option<Connection>,
    /// Problems found while closing the warm-up connection.
    problems: Vec<String>,
    rng: u64,
}

/// The handles `cross-kind` collects: one live handle of each kind, and one
/// dead handle of each kind that has generations.
#[derive(Default)]
struct Cross {
    listeners: Vec<Listener>,
    conn: Option<Connection>,
    request: Option<Request>,
    websocket: Option<WebSocket>,
    /// An hour away, so it is live during the checks.
    timer: Option<Timer>,
    udp: Option<UdpSocket>,
    closed_conn: Option<Connection>,
    finished_request: Option<Request>,
    closed_websocket: Option<WebSocket>,
    /// The 1 ms timer set by `init`, until it fires; then `fired`.
    firing: Option<Timer>,
    fired: Option<Timer>,
    cancelled: Option<Timer>,
    closed_udp: Option<UdpSocket>,
}

struct Flood {
    conn: Connection,
    /// Bytes the host took so far.
    taken: usize,
    /// The largest `buffered()` seen.
    max_buffered: usize,
    ticker: Timer,
}

impl Handler for Hostile {
    fn init(config: &str, listeners: &[Listener]) -> Result<Self, String> {
        let mode = Mode::parse(config).ok_or_else(|| format!("hostile: unknown mode {config:?}"))?;
        let timer = |delay| Timer::after(delay).map_err(|e| format!("hostile: cannot set a timer: {e}"));
        let mut forge = Forge { rng: Instant::now().as_nanos() | 1, ..Forge::default() };
        match mode {
            Mode::SpinInit => spin(),
            Mode::SpinTimer => {
                timer(Duration::from_millis(20))?;
            }
            Mode::CrashLoop => {
                timer(Duration::from_millis(10))?;
            }
            Mode::TimerStorm => {
                for _ in 0..STORM {
                    timer(Duration::from_millis(20))?;
                }
            }
            Mode::ForgeHandles => {
                forge.firing = Some(timer(Duration::from_millis(1))?);
                let cancelled = timer(HOUR)?;
                cancelled.cancel().map_err(|e| format!("hostile: cannot cancel a timer: {e}"))?;
                forge.cancelled = Some(cancelled);
                forge.live_timer = Some(timer(HOUR)?);
            }
            _ => {}
        }
        let mut cross = Cross::default();
        if mode == Mode::CrossKind {
            let bind = || {
                UdpSocket::bind("127.0.0.1:0")
                    .map_err(|e| format!("hostile: cross-kind needs a UDP grant of 127.0.0.1:0: {e}"))
            };
            cross.listeners = listeners.to_vec();
            cross.timer = Some(timer(HOUR)?);
            cross.firing = Some(timer(Duration::from_millis(1))?);
            let cancelled = timer(HOUR)?;
            cancelled.cancel().map_err(|e| format!("hostile: cannot cancel a timer: {e}"))?;
            cross.cancelled = Some(cancelled);
            cross.udp = Some(bind()?);
            let closed = bind()?;
            closed.close().map_err(|e| format!("hostile: cannot close a UDP socket: {e}"))?;
            cross.closed_udp = Some(closed);
        }
        let pattern = (0..CHUNK + PERIOD).map(|k| (k % PERIOD) as u8).collect();
        Ok(Hostile { mode, hoard: Vec::new(), forge, cross, flood: None, pattern, storm: 0 })
    }

    fn on_accept(&mut self, listener: Listener, conn: Connection) {
        if self.mode.greets() {
            let _ = conn.write(b"hi\n");
        }
        match self.mode {
            Mode::PanicAccept => panic!("hostile: panic in on_accept"),
            Mode::PanicWritable => {
                // Fill the output buffer, so `on_writable` waits for the
                // client to read.
                while conn.write(&self.pattern[..CHUNK]) == Ok(CHUNK) {}
                let _ = conn.notify_writable();
            }
            Mode::PanicTimer => {
                let _ = Timer::after(Duration::from_millis(10));
            }
            Mode::ForgeHandles => {
                if self.forge.closed.is_none() || self.forge.fired.is_none() {
                    self.warm_up(conn);
                    return;
                }
                let problems = self.forge_checks(listener, conn);
                let reply =
                    if problems.is_empty() { "ok\n".to_string() } else { format!("bad {}\n", problems.join("; ")) };
                let _ = conn.write(reply.as_bytes());
                let _ = conn.close();
            }
            Mode::BusyEcho => busy(BUSY),
            Mode::LogFlood => {
                info!("forged\nINFO wasmloop::server: host line forged by a guest \x1b[31m");
                println!("forged\nINFO wasmloop::server: stdout line forged by a guest \x1b[31m");
                for i in 0..FLOOD_LINES {
                    info!("flood {i}");
                    println!("flood {i}");
                }
                let _ = conn.write(b"logged\n");
            }
            Mode::CrossKind => {
                if self.cross.conn.is_none() {
                    self.cross.conn = Some(conn);
                    let _ = conn.write(b"conn\n");
                } else {
                    // The second connection only leaves a dead handle.
                    let _ = conn.close();
                }
            }
            Mode::TimerFlood => {
                let reply = timer_flood();
                let _ = conn.write(reply.as_bytes());
            }
            Mode::WriteFlood => {
                if self.flood.is_some() {
                    let _ = conn.write(b"busy\n");
                    let _ = conn.close();
                    return;
                }
                let Ok(ticker) = Timer::every(Duration::from_millis(20)) else {
                    let _ = conn.write(b"bad: no timer\n");
                    return;
                };
                let mut flood = Flood { conn, taken: 0, max_buffered: 0, ticker };
                self.fill(&mut flood);
                info!("full {} buffered {}", flood.taken, flood.max_buffered);
                self.flood = Some(flood);
            }
            _ => {}
        }
    }

    fn on_data(&mut self, conn: Connection, data: &[u8]) {
        match self.mode {
            Mode::SpinData => {
                info!("spinning in on_data");
                spin()
            }
            Mode::PanicData => panic!("hostile: panic in on_data"),
            Mode::Sleep => {
                info!("sleeping in on_data");
                std::thread::sleep(Duration::from_secs(10));
                info!("woke up");
            }
            Mode::BusyEcho => {
                busy(BUSY);
                let _ = conn.write(data);
            }
            // Reserve without touching: memory grows as fast as the
            // allocator can ask, so the cap is hit before any deadline.
            Mode::MemoryBomb => loop {
                self.hoard.push(Vec::with_capacity(4 << 20));
            },
            Mode::CrossKind if Some(conn) == self.cross.conn && data.trim_ascii() == b"check" => {
                let reply = match self.cross_checks() {
                    Ok(calls) => format!("ok {calls}\n"),
                    Err(problems) => {
                        // Enough to see what went wrong, in one line.
                        let shown: Vec<&str> = problems.iter().take(20).map(String::as_str).collect();
                        format!("bad ({} problems) {}\n", problems.len(), shown.join("; "))
                    }
                };
                let _ = conn.write(reply.as_bytes());
            }
            Mode::WriteFlood if data.trim_ascii() == b"stop" => {
                if let Some(flood) = self.flood.take().filter(|f| f.conn == conn) {
                    let _ = flood.ticker.cancel();
                    info!("flood total {}", flood.taken);
                    let _ = conn.close();
                }
            }
            _ => {}
        }
    }

    fn on_eof(&mut self, _conn: Connection) -> EofAction {
        if self.mode == Mode::PanicEof {
            panic!("hostile: panic in on_eof");
        }
        EofAction::Close
    }

    fn on_writable(&mut self, conn: Connection) {
        match self.mode {
            Mode::PanicWritable => panic!("hostile: panic in on_writable"),
            Mode::WriteFlood => {
                if let Some(mut flood) = self.flood.take() {
                    if flood.conn == conn {
                        self.fill(&mut flood);
                    }
                    self.flood = Some(flood);
                }
            }
            _ => {}
        }
    }

    fn on_close(&mut self, conn: Connection, _reason: CloseReason) {
        match self.mode {
            Mode::PanicClose => panic!("hostile: panic in on_close"),
            Mode::ForgeHandles => self.forge.closed = Some(conn),
            Mode::CrossKind if Some(conn) != self.cross.conn => {
                self.cross.closed_conn = Some(conn);
                info!("cross-kind: have a closed connection");
            }
            Mode::WriteFlood if self.flood.as_ref().is_some_and(|f| f.conn == conn) => {
                if let Some(flood) = self.flood.take() {
                    let _ = flood.ticker.cancel();
                }
            }
            _ => {}
        }
    }

    fn on_timer(&mut self, timer: Timer) {
        match self.mode {
            Mode::SpinTimer => {
                info!("spinning in on_timer");
                spin()
            }
            Mode::PanicTimer => panic!("hostile: panic in on_timer"),
            Mode::CrashLoop => panic!("hostile: panic in on_timer, again after every restart"),
            Mode::TimerStorm => {
                busy(BUSY);
                self.storm += 1;
                if self.storm.is_multiple_of(10) {
                    info!("storm {}", self.storm);
                }
            }
            Mode::ForgeHandles if self.forge.firing == Some(timer) => {
                self.forge.fired = self.forge.firing.take();
            }
            Mode::CrossKind if self.cross.firing == Some(timer) => {
                self.cross.fired = self.cross.firing.take();
                info!("cross-kind: have a fired timer");
            }
            Mode::WriteFlood => {
                if let Some(mut flood) = self.flood.take() {
                    self.fill(&mut flood);
                    self.flood = Some(flood);
                }
            }
            _ => {}
        }
    }

    fn on_shutdown(&mut self) {
        if self.mode == Mode::PanicShutdown {
            panic!("hostile: panic in on_shutdown");
        }
    }

    fn on_request(&mut self, req: Request, head: &RequestHead, _body: &[u8], _end: bool) {
        if self.mode != Mode::CrossKind {
            let _ = req.respond(501, &[], b"");
            return;
        }
        let cross = &mut self.cross;
        match head.path() {
            "/hold" if cross.request.is_none() => {
                cross.request = Some(req);
                info!("cross-kind: have a live request");
            }
            // Dead once this callback returns: the response is done.
            "/done" => {
                let _ = req.respond(200, &[], b"done");
                cross.finished_request = Some(req);
            }
            "/ws-live" | "/ws-dead" if head.is_websocket() => match req.accept_websocket(None) {
                Ok(ws) if head.path() == "/ws-live" => cross.websocket = Some(ws),
                Ok(_) => {}
                Err(e) => info!("cross-kind: cannot accept a WebSocket: {e}"),
            },
            _ => {
                let _ = req.respond(404, &[], b"");
            }
        }
    }

    fn on_websocket_close(&mut self, ws: WebSocket, _code: u16, _reason: &str) {
        if self.mode == Mode::CrossKind && Some(ws) != self.cross.websocket {
            self.cross.closed_websocket = Some(ws);
            info!("cross-kind: have a closed websocket");
        }
    }
}

impl Hostile {
    /// Writes until the host takes less than offered (its buffer for the
    /// connection is full), then asks to hear when it drains. Logs a larger
    /// buffered count than seen before.
    fn fill(&self, flood: &mut Flood) {
        // Bounded, in case a fast reader drains as fast as we write.
        for _ in 0..1024 {
            let start = flood.taken % PERIOD;
            match flood.conn.write(&self.pattern[start..start + CHUNK]) {
                Ok(n) => {
                    flood.taken += n;
                    if n < CHUNK {
                        break;
                    }
                }
                Err(_) => return,
            }
        }
        let buffered = flood.conn.buffered().unwrap_or(0);
        if buffered > flood.max_buffered {
            if flood.max_buffered > 0 {
                info!("buffered {buffered}");
            }
            flood.max_buffered = buffered;
        }
        let _ = flood.conn.notify_writable();
    }

    /// A connection that only serves to leave a dead handle behind: checks
    /// the `closed` answers on the way (they are reported on the connection
    /// that gets the verdict).
    fn warm_up(&mut self, conn: Connection) {
        let p = &mut self.forge.problems;
        expect_ok(p, "write on a new connection", conn.write(b"again\n"));
        expect_ok(p, "shutdown_write", conn.shutdown_write());
        expect_err(p, "write after shutdown_write", conn.write(b"x"), Error::Closed);
        expect_ok(p, "close after shutdown_write", conn.close());
        expect_err(p, "write after close", conn.write(b"x"), Error::Closed);
        // Until `on_close`, the handle is live.
        expect_ok(p, "buffered while closing", conn.buffered());
    }

    /// Every function with handles this guest was never given, or no longer
    /// has. Returns what was not refused as it should be.
    fn forge_checks(&mut self, listener: Listener, live: Connection) -> Vec<String> {
        let mut p = std::mem::take(&mut self.forge.problems);
        let random: Vec<u64> = (0..4).map(|_| self.next_random()).collect();
        let forge = &self.forge;
        let (Some(closed), Some(fired), Some(cancelled), Some(live_timer)) =
            (forge.closed, forge.fired, forge.cancelled, forge.live_timer)
        else {
            p.push("setup incomplete".into());
            return p;
        };
        let generation = 1u64 << 32;

        // Connections.
        let mut conns = vec![
            ("0".to_string(), 0),
            ("1".to_string(), 1),
            ("u64::MAX".to_string(), u64::MAX),
            ("1<<32".to_string(), generation),
            ("a closed connection".to_string(), closed.raw()),
            ("the next slot".to_string(), live.raw().wrapping_add(1)),
            ("the live slot, a later generation".to_string(), live.raw().wrapping_add(2 * generation)),
            ("the live slot, an earlier generation".to_string(), live.raw().wrapping_sub(2 * generation)),
            ("the live slot, an even generation".to_string(), live.raw() ^ generation),
            ("the listener's handle".to_string(), listener.raw()),
        ];
        conns.extend(random.iter().map(|&r| (format!("random {r:#x}"), r)));
        for (name, raw) in &conns {
            if *raw == live.raw() {
                continue;
            }
            let c = Connection::from_raw(*raw);
            let before = p.len();
            let invalid = Error::InvalidHandle;
            expect_err(&mut p, format!("write({name})"), c.write(b"forged"), invalid);
            expect_err(&mut p, format!("buffered({name})"), c.buffered(), invalid);
            expect_err(&mut p, format!("peer_address({name})"), c.peer_address(), invalid);
            expect_err(&mut p, format!("local_address({name})"), c.local_address(), invalid);
            expect_err(&mut p, format!("notify_writable({name})"), c.notify_writable(), invalid);
            expect_err(&mut p, format!("pause_reading({name})"), c.pause_reading(), invalid);
            expect_err(&mut p, format!("resume_reading({name})"), c.resume_reading(), invalid);
            if p.len() > before {
                // It reached a live connection: closing it would lose the
                // verdict.
                continue;
            }
            expect_err(&mut p, format!("shutdown_write({name})"), c.shutdown_write(), invalid);
            expect_err(&mut p, format!("close({name})"), c.close(), invalid);
            expect_err(&mut p, format!("abort({name})"), c.abort(), invalid);
        }

        // Timers.
        let mut timers = vec![
            ("0".to_string(), 0),
            ("1".to_string(), 1),
            ("u64::MAX".to_string(), u64::MAX),
            ("a fired timer".to_string(), fired.raw()),
            ("a cancelled timer".to_string(), cancelled.raw()),
            ("the next slot".to_string(), live_timer.raw().wrapping_add(1)),
            ("the live slot, a later generation".to_string(), live_timer.raw().wrapping_add(2 * generation)),
            ("the live slot, an even generation".to_string(), live_timer.raw() ^ generation),
        ];
        timers.extend(random.iter().map(|&r| (format!("random {r:#x}"), r)));
        for (name, raw) in &timers {
            if *raw != live_timer.raw() {
                expect_err(
                    &mut p,
                    format!("cancel(timer {name})"),
                    Timer::from_raw(*raw).cancel(),
                    Error::InvalidHandle,
                );
            }
        }
        let argument = Error::InvalidArgument;
        expect_err(&mut p, "every(0)", Timer::every(Duration::ZERO), argument);
        expect_err(&mut p, "every(1 µs)", Timer::every(Duration::from_micros(1)), argument);
        match Timer::after(Duration::MAX) {
            Ok(t) => expect_ok(&mut p, "cancel(after(Duration::MAX))", t.cancel()),
            Err(e) => expect_err(&mut p, "after(Duration::MAX)", Err::<(), _>(e), argument),
        }
        expect_ok(&mut p, "cancel(the live timer)", live_timer.cancel());
        expect_err(&mut p, "cancel(the live timer) twice", live_timer.cancel(), Error::InvalidHandle);

        // Listeners: handles are 1..=granted, no generations.
        let mut listeners = vec![
            ("0".to_string(), 0),
            ("2".to_string(), 2),
            ("u64::MAX".to_string(), u64::MAX),
            ("the live listener, a later generation".to_string(), listener.raw() + 2 * generation),
            ("a connection's handle".to_string(), live.raw()),
        ];
        listeners.extend(random.iter().map(|&r| (format!("random {r:#x}"), r)));
        for (name, raw) in &listeners {
            if *raw != listener.raw() {
                let forged = Listener::from_raw(*raw).address();
                expect_err(&mut p, format!("listener address({name})"), forged, Error::InvalidHandle);
            }
        }

        // The real handles still work.
        expect_ok(&mut p, "the live listener's address", listener.address());
        expect_ok(&mut p, "the live connection's peer address", live.peer_address());
        match live.buffered() {
            Ok(0) => {}
            other => p.push(format!("buffered(live): {other:?}, want Ok(0): a forged write reached it")),
        }
        p
    }

    /// `cross-kind`: every import that takes a handle, with every handle of
    /// another kind and every dead handle. Returns the number of calls made,
    /// or what was not refused as it should be.
    fn cross_checks(&mut self) -> Result<usize, Vec<String>> {
        let c = &self.cross;
        let mut p = Vec::new();
        let (
            Some(conn),
            Some(request),
            Some(websocket),
            Some(timer),
            Some(udp),
            Some(closed_conn),
            Some(finished_request),
            Some(closed_websocket),
            Some(fired),
            Some(cancelled),
            Some(closed_udp),
            &[first, second],
        ) = (
            c.conn,
            c.request,
            c.websocket,
            c.timer,
            c.udp,
            c.closed_conn,
            c.finished_request,
            c.closed_websocket,
            c.fired,
            c.cancelled,
            c.closed_udp,
            &c.listeners[..],
        )
        else {
            return Err(vec!["setup incomplete: a handle is missing, or not two listeners".into()]);
        };
        // (name, kind, the integer, live)
        let handles = [
            ("the live connection", Kind::Conn, conn.raw(), true),
            ("the first listener", Kind::Listener, first.raw(), true),
            ("the second listener", Kind::Listener, second.raw(), true),
            ("the live request", Kind::Request, request.raw(), true),
            ("the live websocket", Kind::WebSocket, websocket.raw(), true),
            ("the live timer", Kind::Timer, timer.raw(), true),
            ("the live UDP socket", Kind::Udp, udp.raw(), true),
            ("a closed connection", Kind::Conn, closed_conn.raw(), false),
            ("a finished request", Kind::Request, finished_request.raw(), false),
            ("a closed websocket", Kind::WebSocket, closed_websocket.raw(), false),
            ("a fired timer", Kind::Timer, fired.raw(), false),
            ("a cancelled timer", Kind::Timer, cancelled.raw(), false),
            ("a closed UDP socket", Kind::Udp, closed_udp.raw(), false),
        ];
        let mut calls = 0;
        for (name, kind, raw, live) in handles {
            let before = p.len();
            // Harmless calls first: if one reached a live object, the
            // destructive ones would destroy it (perhaps the connection the
            // verdict goes out on), so they are skipped for this handle.
            for destructive in [false, true] {
                if destructive && p.len() > before {
                    break;
                }
                for (import, of, harms, call) in IMPORTS {
                    if *harms != destructive || (*of == kind && live) {
                        continue;
                    }
                    calls += 1;
                    if let Err(got) = call(raw) {
                        p.push(format!("{import}({name} {raw:#x}): {got}, want invalid-handle"));
                    }
                }
            }
        }

        // The live handles still work, each for its own kind.
        match conn.buffered() {
            Ok(0) => {}
            other => p.push(format!("buffered(the live connection): {other:?}, want Ok(0): a forged write reached it")),
        }
        expect_ok(&mut p, "the first listener's address", first.address());
        expect_ok(&mut p, "the second listener's address", second.address());
        if let Err(e) = udp.local_address() {
            p.push(format!("the live UDP socket's address: {e:?}"));
        }
        expect_ok(&mut p, "cancel(the live timer)", timer.cancel());
        expect_ok(&mut p, "send on the live websocket", websocket.send_text("still here"));
        expect_ok(&mut p, "respond to the live request", request.respond(200, &[], b"held"));
        if p.is_empty() { Ok(calls) } else { Err(p) }
    }

    fn next_random(&mut self) -> u64 {
        let x = &mut self.forge.rng;
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }
}

/// The kinds of handle, for `cross-kind`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Conn,
    Listener,
    Request,
    WebSocket,
    Timer,
    Udp,
}

/// `Ok` if the call was refused as invalid-handle, else what came back.
type Refused = Result<(), String>;

fn refused<T: Debug>(got: Result<T, Error>) -> Refused {
    match got {
        Err(Error::InvalidHandle) => Ok(()),
        other => Err(format!("{other:?}")),
    }
}

fn refused_udp<T: Debug>(got: Result<T, DatagramError>) -> Refused {
    match got {
        Err(DatagramError::InvalidHandle) => Ok(()),
        other => Err(format!("{other:?}")),
    }
}

/// An import that takes a handle: its WIT name, the kind of handle it takes,
/// whether it destroys what a handle names, and a call of it.
type Import = (&'static str, Kind, bool, fn(u64) -> Refused);

/// Every import that takes a handle.
const IMPORTS: &[Import] = &[
    ("connections.write", Kind::Conn, false, |h| refused(Connection::from_raw(h).write(b"forged"))),
    ("connections.buffered", Kind::Conn, false, |h| refused(Connection::from_raw(h).buffered())),
    ("connections.peer-address", Kind::Conn, false, |h| refused(Connection::from_raw(h).peer_address())),
    ("connections.local-address", Kind::Conn, false, |h| refused(Connection::from_raw(h).local_address())),
    ("connections.notify-writable", Kind::Conn, false, |h| refused(Connection::from_raw(h).notify_writable())),
    ("connections.pause-reading", Kind::Conn, false, |h| refused(Connection::from_raw(h).pause_reading())),
    ("connections.resume-reading", Kind::Conn, false, |h| refused(Connection::from_raw(h).resume_reading())),
    ("connections.shutdown-write", Kind::Conn, true, |h| refused(Connection::from_raw(h).shutdown_write())),
    ("connections.close", Kind::Conn, true, |h| refused(Connection::from_raw(h).close())),
    ("connections.abort", Kind::Conn, true, |h| refused(Connection::from_raw(h).abort())),
    ("connections.listener-address", Kind::Listener, false, |h| refused(Listener::from_raw(h).address())),
    ("timers.cancel", Kind::Timer, true, |h| refused(Timer::from_raw(h).cancel())),
    ("datagrams.local-address", Kind::Udp, false, |h| refused_udp(UdpSocket::from_raw(h).local_address())),
    ("datagrams.send-to", Kind::Udp, false, |h| refused_udp(UdpSocket::from_raw(h).send_to("127.0.0.1:9", b"forged"))),
    ("datagrams.close", Kind::Udp, true, |h| refused_udp(UdpSocket::from_raw(h).close())),
    ("http.peer-address", Kind::Request, false, |h| refused(Request::from_raw(h).peer_address())),
    ("http.notify-writable", Kind::Request, false, |h| refused(Request::from_raw(h).notify_writable())),
    ("http.respond-write", Kind::Request, false, |h| refused(Request::from_raw(h).write(b"forged"))),
    ("http.respond", Kind::Request, true, |h| refused(Request::from_raw(h).respond(200, &[], b"forged"))),
    ("http.respond-start", Kind::Request, true, |h| refused(Request::from_raw(h).start(200, &[]))),
    ("http.respond-finish", Kind::Request, true, |h| refused(Request::from_raw(h).finish())),
    ("http.accept-websocket", Kind::Request, true, |h| refused(Request::from_raw(h).accept_websocket(None))),
    ("http.send", Kind::WebSocket, false, |h| refused(WebSocket::from_raw(h).send_text("forged"))),
    ("http.websocket-notify-writable", Kind::WebSocket, false, |h| refused(WebSocket::from_raw(h).notify_writable())),
    ("http.close-websocket", Kind::WebSocket, true, |h| refused(WebSocket::from_raw(h).close(1000, "forged"))),
];

/// Starts hour-long timers until the host says `limit-reached`; cancels
/// them all and checks the limit was released. The reply for the client.
fn timer_flood() -> String {
    let mut timers = Vec::new();
    let refusal = loop {
        match Timer::after(HOUR) {
            Ok(t) => timers.push(t),
            Err(e) => break e,
        }
        if timers.len() > 10_000_000 {
            return "bad: no limit after 10,000,000 timers\n".into();
        }
    };
    if refusal != Error::LimitReached {
        return format!("bad: after {} timers: {refusal:?}\n", timers.len());
    }
    let count = timers.len();
    if let Some(e) = timers.iter().find_map(|t| t.cancel().err()) {
        return format!("bad: cancel failed: {e:?}\n");
    }
    match Timer::after(HOUR) {
        Ok(t) => {
            let _ = t.cancel();
        }
        Err(e) => return format!("bad: no timer after cancelling all: {e:?}\n"),
    }
    format!("timers {count}\n")
}

fn expect_ok<T: Debug>(problems: &mut Vec<String>, what: impl Into<String>, got: Result<T, Error>) {
    if let Err(e) = got {
        problems.push(format!("{}: {e:?}, want Ok", what.into()));
    }
}

fn expect_err<T: Debug>(problems: &mut Vec<String>, what: impl Into<String>, got: Result<T, Error>, want: Error) {
    match got {
        Err(e) if e == want => {}
        other => problems.push(format!("{}: {other:?}, want Err({want:?})", what.into())),
    }
}

/// Spins for `d` by the host's clock.
fn busy(d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        std::hint::spin_loop();
    }
}

/// Loops forever without the optimiser noticing.
fn spin() -> ! {
    let mut x: u64 = 1;
    loop {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}

export!(Hostile);
