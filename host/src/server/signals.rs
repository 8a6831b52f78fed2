//! Signals as loop events: the handler only writes a byte to a socket pair
//! (signal-hook's self-pipe) and the loop reads it. SIGINT and SIGTERM share
//! one pair (stop); SIGHUP has its own (reload).
//!
//! SIGHUP's default action ends the process, and the loops handle it only
//! once their guests are loaded, which takes seconds for a big component:
//! so the host first records it ([`hold_early_sighup`]) and a loop that
//! starts handling signals after one arrived reloads, as asked.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::low_level::pipe;

/// Set by the first SIGHUP after [`hold_early_sighup`].
static EARLY_SIGHUP: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Keeps a SIGHUP from ending the process before the loops handle signals:
/// it is recorded, and replayed as a reload once the server installs its signal handlers. Call
/// it first thing (it opens no descriptor).
pub fn hold_early_sighup() -> io::Result<()> {
    let flag = EARLY_SIGHUP.get_or_init(Arc::default).clone();
    signal_hook::flag::register(SIGHUP, flag)?;
    Ok(())
}

pub(super) struct Signals {
    pub stop: UnixStream,
    pub reload: UnixStream,
}

impl Signals {
    pub fn install() -> io::Result<Signals> {
        let (stop, _) = watch(&[SIGINT, SIGTERM])?;
        let (reload, writer) = watch(&[SIGHUP])?;
        if EARLY_SIGHUP.get().is_some_and(|hup| hup.load(Ordering::SeqCst)) {
            // As the handler would have: the loop reloads when it runs.
            let _ = (&writer).write(&[1]);
        }
        Ok(Signals { stop, reload })
    }
}

/// A socket that becomes readable when one of `signals` arrives, and the
/// other end of it.
fn watch(signals: &[i32]) -> io::Result<(UnixStream, UnixStream)> {
    let (reader, writer) = UnixStream::pair()?;
    reader.set_nonblocking(true)?;
    writer.set_nonblocking(true)?;
    for &signal in signals {
        pipe::register(signal, writer.try_clone()?)?;
    }
    Ok((reader, writer))
}

/// Reads the pending bytes; true if a signal arrived.
pub(super) fn drain(reader: &UnixStream) -> bool {
    let mut buf = [0u8; 64];
    let mut got = false;
    while let Ok(n) = (&*reader).read(&mut buf) {
        if n == 0 {
            break;
        }
        got = true;
    }
    got
}
