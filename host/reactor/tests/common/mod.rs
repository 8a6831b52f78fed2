//! Shared by the reactor's test modules.

use std::sync::{Mutex, MutexGuard, PoisonError, mpsc};
use std::thread;
use std::time::Duration;

/// One test at a time in this process: the descriptor-leak test counts the
/// whole process's descriptors, so a loop another test opens meanwhile
/// (an epoll descriptor, an eventfd, sockets) would read as a leak. A failed
/// test must not stop the others, hence the poison is ignored.
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `f` on its own thread and fails the test if it takes longer than
/// `limit` (a hung loop must fail, not block the suite). Holds [`serial`].
pub fn bounded<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let _serial = serial();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).expect("test exceeded its time bound")
}
