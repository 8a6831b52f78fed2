//! Idle: how often an idle host wakes up, with no timers and with one 1 s
//! timer, from the host's context switches over a quiet window (/proc).

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::Ctx;
use crate::procs::{Server, Usage};
use crate::report::{Ratio, Section, Table, Target};

/// One thread's counters.
#[derive(Clone, Default)]
struct ThreadStat {
    tid: u32,
    name: String,
    cpu: Duration,
    /// The thread went to sleep (and, later, woke): one per wakeup.
    voluntary: u64,
    /// The thread was preempted while runnable: the machine is busy, not a
    /// wakeup.
    involuntary: u64,
}

impl ThreadStat {
    fn since(&self, earlier: Option<&ThreadStat>) -> ThreadStat {
        let Some(e) = earlier else { return self.clone() };
        ThreadStat {
            tid: self.tid,
            name: self.name.clone(),
            cpu: self.cpu.saturating_sub(e.cpu),
            voluntary: self.voluntary.saturating_sub(e.voluntary),
            involuntary: self.involuntary.saturating_sub(e.involuntary),
        }
    }
}

/// Per-thread counters of `pid`, loop thread first (its id is the pid).
fn threads(pid: u32) -> Vec<ThreadStat> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    let mut out: Vec<ThreadStat> = tasks
        .filter_map(Result::ok)
        .filter_map(|task| {
            let tid: u32 = task.file_name().to_str()?.parse().ok()?;
            thread_stat(pid, tid)
        })
        .collect();
    out.sort_by_key(|t| (t.tid != pid, t.tid));
    out
}

fn thread_stat(pid: u32, tid: u32) -> Option<ThreadStat> {
    let dir = format!("/proc/{pid}/task/{tid}");
    let name = std::fs::read_to_string(format!("{dir}/comm")).ok()?.trim().to_string();
    let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
    // Fields after the `(comm)`: utime is the 14th of the line, stime the 15th.
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0);
    let stime: u64 = fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
    let ticks = rustix::param::clock_ticks_per_second() as u64;
    let status = std::fs::read_to_string(format!("{dir}/status")).ok()?;
    let field =
        |key: &str| status.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok());
    Some(ThreadStat {
        tid,
        name,
        cpu: Duration::from_nanos((utime + stime) * 1_000_000_000 / ticks),
        voluntary: field("voluntary_ctxt_switches:")?,
        involuntary: field("nonvoluntary_ctxt_switches:")?,
    })
}

struct Case {
    name: &'static str,
    guest: &'static str,
    config: &'static str,
    /// Wakeups per second the target allows.
    target: f64,
}

struct Measured {
    window: Duration,
    /// Per thread, over the window; the loop thread first.
    threads: Vec<ThreadStat>,
    total: Usage,
}

impl Measured {
    fn rate(&self, count: u64) -> f64 {
        count as f64 / self.window.as_secs_f64()
    }

    fn wakeups(&self) -> u64 {
        self.threads.iter().map(|t| t.voluntary).sum()
    }

    fn preemptions(&self) -> u64 {
        self.threads.iter().map(|t| t.involuntary).sum()
    }

    fn loop_wakeups(&self) -> u64 {
        self.threads.first().map_or(0, |t| t.voluntary)
    }
}

pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<Section>> {
    let window = ctx.pick(Duration::from_secs(10), Duration::from_secs(1));
    let cases = [
        Case { name: "no timers (echo guest)", guest: "echo", config: "", target: 0.0 },
        Case { name: "one 1 s timer (ticker guest)", guest: "ticker", config: "1000", target: 1.1 },
    ];
    let results: Vec<Measured> = cases.iter().map(|case| measure(ctx, case, window)).collect::<anyhow::Result<_>>()?;

    let mut section = Section::new(
        "idle",
        &format!(
            "An idle host with no connections: the echo guest, which sets no timers, and the ticker guest \
             with `--guest-config 1000` (one repeating 1 s timer; with no client connected each tick is one \
             `on-timer` call that writes nothing). After `ready` the host is left until its context-switch \
             count stays unchanged for 100 ms (startup work winding down), then its threads' context \
             switches and CPU time are read from /proc/PID/task/*/ over a {} s window. A *wakeup* is a \
             voluntary context switch (the thread slept, then woke); involuntary ones (preempted while \
             runnable, which a busy machine causes) are listed apart.",
            window.as_secs()
        ),
    );
    let mut table = Table::new(&[
        "host",
        "window (s)",
        "wakeups",
        "wakeups/s",
        "loop thread wakeups/s",
        "preemptions",
        "CPU (ms)",
        "wakeups by thread",
    ]);
    for (case, m) in cases.iter().zip(&results) {
        let by_thread: Vec<String> = m.threads.iter().map(|t| format!("{}: {}", t.name, t.voluntary)).collect();
        table.row(vec![
            case.name.into(),
            format!("{:.1}", m.window.as_secs_f64()),
            m.wakeups().to_string(),
            format!("{:.2}", m.rate(m.wakeups())),
            format!("{:.2}", m.rate(m.loop_wakeups())),
            m.preemptions().to_string(),
            format!("{:.0}", m.total.cpu.as_secs_f64() * 1e3),
            by_thread.join(", "),
        ]);
    }
    section.tables.push(table);
    for (case, m) in cases.iter().zip(&results) {
        section.ratios.push(Ratio::new(
            &format!("wakeups/s, all threads, {}", case.name),
            m.rate(m.wakeups()),
            Target::AtMost(case.target),
        ));
    }
    for (case, m) in cases.iter().zip(&results) {
        section.ratios.push(Ratio::new(
            &format!("wakeups/s, loop thread, {}", case.name),
            m.rate(m.loop_wakeups()),
            Target::AtMost(case.target),
        ));
    }
    for (case, m) in cases.iter().zip(&results) {
        section.ratios.push(Ratio::new(
            &format!("host CPU ms over the window, {}", case.name),
            m.total.cpu.as_secs_f64() * 1e3,
            Target::None,
        ));
    }
    section.notes.push(format!(
        "Target for the 1 s timer: one wakeup per tick. A {} s window holds {} or {} ticks depending on \
         where it starts, hence ≤ 1.1/s. The first thread listed is the loop thread. The `epoch-ticker` \
         thread enforces the callback deadline: the loop arms its timer when a callback starts and \
         disarms it before blocking, so callbacks shorter than its 5 ms period never wake it.",
        window.as_secs(),
        window.as_secs(),
        window.as_secs() + 1,
    ));
    section.notes.push("CPU time comes from /proc in clock ticks (10 ms each), so small figures are coarse.".into());
    Ok(vec![section])
}

fn measure(ctx: &Ctx, case: &Case, window: Duration) -> anyhow::Result<Measured> {
    let mut cmd = Command::new(ctx.paths.bin("host"));
    cmd.arg("run")
        .arg(ctx.paths.guest(case.guest))
        .args(["--listen", "127.0.0.1:0", "--no-cache"])
        .args(["--guest-config", case.config]);
    let server = Server::spawn_logged(cmd, Some("ready"))?;
    let pid = server.pid();

    // Settle: until the host makes no switch for 100 ms (at most 5 s).
    let settle_deadline = Instant::now() + Duration::from_secs(5);
    let mut last = server.usage().switches;
    loop {
        thread::sleep(Duration::from_millis(100));
        let now = server.usage().switches;
        if now == last || Instant::now() > settle_deadline {
            break;
        }
        last = now;
    }

    let before = threads(pid);
    let usage_before = server.usage();
    let start = Instant::now();
    thread::sleep(window);
    let total = server.usage().since(&usage_before);
    let after = threads(pid);
    let window = start.elapsed();

    let threads = after.iter().map(|t| t.since(before.iter().find(|b| b.tid == t.tid))).collect();
    let lines = server.new_lines();
    if lines.iter().any(|l| l.contains("ERROR") || l.contains("WARN")) {
        bail!("the {} host logged problems:\n{}", case.guest, lines.join("\n"));
    }
    Ok(Measured { window, threads, total })
}
