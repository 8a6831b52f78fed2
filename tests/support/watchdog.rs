//! Time bounds on test bodies, and keeping apart the tests that must not
//! share the machine or the process.
//!
//! All the integration tests are one binary, so cargo's test threads run
//! tests of different files side by side. Most do not mind. A test that
//! times the host against a deadline, reads its CPU time or loads both
//! cores on purpose takes [`alone`]: while it runs no other [`bounded`]
//! body does, and it waits for those running to finish. A test that reads
//! something of the whole test process (its heap allocations) runs in a
//! process of its own: [`alone_in_process`].

use std::cell::{Cell, RefCell};
use std::process::Command;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use super::guests::is_building;
use super::process::{Signal, describe, run_bounded, signal_pid};

/// Shared by every [`bounded`] body, exclusive for an [`alone`] test. std's
/// `RwLock` on Linux lets no new reader in while a writer waits, so an
/// `alone` test waits for at most the bodies already running.
static TESTS: RwLock<()> = RwLock::new(());

thread_local! {
    /// The host processes started by the current test body, so the watchdog
    /// can kill them when the body hangs.
    static CHILDREN: RefCell<Option<Arc<Mutex<Vec<u32>>>>> = const { RefCell::new(None) };
    /// This thread runs under [`TESTS`] already (a test that holds
    /// [`alone`], or a [`bounded`] body): taking it again could deadlock
    /// behind a waiting writer.
    static HOLDS_TESTS: Cell<bool> = const { Cell::new(false) };
}

/// Held by a test that must not share the process with other tests (see
/// the module's docs); from [`alone`].
pub struct Alone {
    _exclusive: RwLockWriteGuard<'static, ()>,
}

impl Drop for Alone {
    fn drop(&mut self) {
        HOLDS_TESTS.with(|held| held.set(false));
    }
}

/// Waits until no other test body runs, and keeps it so until the guard is
/// dropped. Take it first thing in the test, before [`bounded`]. A test
/// that failed while holding it does not stop the others.
pub fn alone() -> Alone {
    let exclusive = TESTS.write().unwrap_or_else(|e| e.into_inner());
    HOLDS_TESTS.with(|held| held.set(true));
    Alone { _exclusive: exclusive }
}

/// [`TESTS`] shared, unless this thread holds it already.
fn shared() -> Option<RwLockReadGuard<'static, ()>> {
    if HOLDS_TESTS.with(Cell::get) {
        return None;
    }
    Some(TESTS.read().unwrap_or_else(|e| e.into_inner()))
}

/// Runs `body` on its own thread and fails the test if it does not finish
/// within `limit` (time spent building the guests, or waiting for a test
/// that runs [`alone`], is not counted). On timeout, the hosts the body
/// started are killed, which also unblocks any socket call the body is
/// stuck in. A panic in `body` fails the test with its own message.
pub fn bounded<F: FnOnce() + Send + 'static>(limit: Duration, body: F) {
    let _shared = shared();
    let children = Arc::new(Mutex::new(Vec::<u32>::new()));
    let registry = children.clone();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let name = thread::current().name().unwrap_or("test").to_string();
    let worker = thread::Builder::new()
        .name(name)
        .spawn(move || {
            HOLDS_TESTS.with(|held| held.set(true));
            CHILDREN.with(|c| *c.borrow_mut() = Some(registry));
            body();
            let _ = done_tx.send(());
        })
        .expect("cannot spawn the test thread");
    let slice = Duration::from_millis(50);
    let mut counted = Duration::ZERO;
    loop {
        let start = Instant::now();
        match done_rx.recv_timeout(slice) {
            Ok(()) => break,
            Err(mpsc::RecvTimeoutError::Disconnected) => break, // panicked
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if !is_building() {
                    counted += start.elapsed();
                }
                if counted >= limit {
                    let pids = children.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    for &pid in &pids {
                        signal_pid(pid, Signal::KILL);
                    }
                    panic!(
                        "watchdog: the test did not finish within {limit:?}; \
                         killed its host processes {pids:?}"
                    );
                }
            }
        }
    }
    if let Err(payload) = worker.join() {
        std::panic::resume_unwind(payload);
    }
}

/// Records a host process the current test body started, for the watchdog
/// to kill if the body hangs.
pub(super) fn started_child(pid: u32) {
    CHILDREN.with(|c| {
        if let Some(children) = &*c.borrow() {
            children.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
        }
    });
}

/// Forgets a host process that [`started_child`] recorded: it is gone.
pub(super) fn ended_child(pid: u32) {
    CHILDREN.with(|c| {
        if let Some(children) = &*c.borrow() {
            children.lock().unwrap_or_else(|e| e.into_inner()).retain(|&p| p != pid);
        }
    });
}

/// Names the one test that a child process of this binary runs, for
/// [`alone_in_process`].
const ALONE_IN_PROCESS: &str = "WASMLOOP_TEST_ALONE_IN_PROCESS";

/// For a test that reads something of the whole process, such as its heap
/// allocations, which other tests running beside it would add to. `test` is
/// the caller's full name as the test harness prints it
/// (`allocations::echoing_…`).
///
/// In a child process of this binary started for `test`, returns `true`:
/// the caller then runs its body. Anywhere else, runs this binary again for
/// `test` alone (`--exact`, one test thread), under [`bounded`] so that no
/// [`alone`] test runs meanwhile; fails if the test failed there or did not
/// run at all (a renamed test), with the child's output; and returns
/// `false`: the caller returns.
pub fn alone_in_process(test: &'static str, limit: Duration) -> bool {
    if std::env::var_os(ALONE_IN_PROCESS).is_some_and(|name| name == test) {
        return true;
    }
    bounded(limit, move || {
        let binary = std::env::current_exe().expect("the test binary's path");
        let mut cmd = Command::new(binary);
        cmd.args([test, "--exact", "--test-threads=1", "--nocapture"]).env(ALONE_IN_PROCESS, test);
        let out = run_bounded(cmd, limit).unwrap_or_else(|e| panic!("cannot run {test} in a process of its own: {e}"));
        assert!(
            out.status.success() && out.stdout.contains("test result: ok. 1 passed;"),
            "{test} in a process of its own: {}\n--- its stdout:\n{}\n--- its stderr:\n{}",
            describe(out.status),
            out.stdout,
            out.stderr
        );
    });
    false
}
