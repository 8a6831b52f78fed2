//! Shared by the reactor's test files.

use std::sync::{Mutex, PoisonError, mpsc};
use std::thread;
use std::time::Duration;

/// Runs `f` on its own thread and fails the test if it takes longer than
/// `limit` (a hung loop must fail, not block the suite). Tests run one at a
/// time: the descriptor-leak test counts the whole process's descriptors.
pub fn bounded<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    static SERIAL: Mutex<()> = Mutex::new(());
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).expect("test exceeded its time bound")
}
