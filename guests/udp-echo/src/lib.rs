//! UDP echo: binds the address given as the guest config (the operator must
//! grant it with `--udp`) and sends every datagram back to its sender.
//!
//! The host delivers datagrams only from peers on the guest's allowlist
//! (`--connect`), which is also where replies may go. A reply the kernel
//! cannot take at once (`would-block`) is dropped, as UDP allows.

use wasmloop_sdk::{Handler, Listener, UdpSocket, debug, export, info, warn};

struct UdpEcho {
    _socket: UdpSocket,
}

impl Handler for UdpEcho {
    fn init(config: &str, _listeners: &[Listener]) -> Result<Self, String> {
        let address = config.trim();
        let socket = UdpSocket::bind(address).map_err(|e| format!("cannot bind UDP {address:?}: {e}"))?;
        let bound = socket.local_address().map_err(|e| format!("cannot read the bound address: {e}"))?;
        info!("udp-echo bound to {bound}");
        Ok(UdpEcho { _socket: socket })
    }

    fn on_datagram(&mut self, socket: UdpSocket, peer: &str, data: &[u8]) {
        debug!("echoing {} bytes to {peer}", data.len());
        if let Err(e) = socket.send_to(peer, data) {
            warn!("cannot echo to {peer}: {e}");
        }
    }
}

export!(UdpEcho);
