//! SIGINT and SIGTERM as a loop event: the handler only writes a byte to a
//! socket pair (signal-hook's self-pipe), and the loop reads it.

use std::io::{self, Read};
use std::os::unix::net::UnixStream;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::low_level::pipe;

pub(super) struct Signals {
    reader: UnixStream,
}

impl Signals {
    pub fn install() -> io::Result<Signals> {
        let (reader, writer) = UnixStream::pair()?;
        reader.set_nonblocking(true)?;
        writer.set_nonblocking(true)?;
        pipe::register(SIGINT, writer.try_clone()?)?;
        pipe::register(SIGTERM, writer)?;
        Ok(Signals { reader })
    }

    pub fn fd(&self) -> &UnixStream {
        &self.reader
    }

    /// Reads the pending bytes; true if a signal arrived.
    pub fn drain(&self) -> bool {
        let mut buf = [0u8; 64];
        let mut got = false;
        while let Ok(n) = (&self.reader).read(&mut buf) {
            if n == 0 {
                break;
            }
            got = true;
        }
        got
    }
}
