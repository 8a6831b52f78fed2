//! Signals as loop events: the handler only writes a byte to a socket pair
//! (signal-hook's self-pipe) and the loop reads it. SIGINT and SIGTERM share
//! one pair (stop); SIGHUP has its own (reload).

use std::io::{self, Read};
use std::os::unix::net::UnixStream;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::low_level::pipe;

pub(super) struct Signals {
    pub stop: UnixStream,
    pub reload: UnixStream,
}

impl Signals {
    pub fn install() -> io::Result<Signals> {
        let stop = watch(&[SIGINT, SIGTERM])?;
        let reload = watch(&[SIGHUP])?;
        Ok(Signals { stop, reload })
    }
}

/// A socket that becomes readable when one of `signals` arrives.
fn watch(signals: &[i32]) -> io::Result<UnixStream> {
    let (reader, writer) = UnixStream::pair()?;
    reader.set_nonblocking(true)?;
    writer.set_nonblocking(true)?;
    for &signal in signals {
        pipe::register(signal, writer.try_clone()?)?;
    }
    Ok(reader)
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
