//! The `outbound` and `datagrams` imports: each is one call of the
//! `GuestIo` method that does the work (`guest_io/sockets.rs`), its error
//! converted to the contract's.

use rustix::io::Errno;

use crate::runtime::bindings::wasmloop::handler::{datagrams, outbound};
use crate::runtime::bindings::{ConnectError, DatagramError};
use crate::runtime::state::GuestState;

impl outbound::Host for GuestState {
    fn connect(&mut self, address: String) -> Result<u64, ConnectError> {
        Ok(self.io.connect(&address)?)
    }
}

/// How a failed connect (its `SO_ERROR`) is reported to the guest.
pub fn connect_error(errno: Errno) -> ConnectError {
    crate::guest_io::sockets::connect_error(errno).into()
}

impl datagrams::Host for GuestState {
    fn bind(&mut self, address: String) -> Result<u64, DatagramError> {
        Ok(self.io.udp_bind(&address)?)
    }

    fn send_to(&mut self, s: u64, peer: String, data: Vec<u8>) -> Result<(), DatagramError> {
        Ok(self.io.udp_send_to(s, &peer, &data)?)
    }

    fn local_address(&mut self, s: u64) -> Result<String, DatagramError> {
        Ok(self.io.udp_local_address(s)?.to_string())
    }

    fn close(&mut self, s: u64) -> Result<(), DatagramError> {
        Ok(self.io.udp_close(s)?)
    }
}
