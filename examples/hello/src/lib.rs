//! The README's first guest: greets each connection, then closes it.

use wasmloop_sdk::{Connection, Handler, Listener, export, info};

struct Hello;

impl Handler for Hello {
    fn init(config: &str, listeners: &[Listener]) -> Result<Self, String> {
        info!("hello guest on {} listener(s), config {config:?}", listeners.len());
        Ok(Hello)
    }

    fn on_accept(&mut self, _listener: Listener, conn: Connection) {
        let _ = conn.write(b"hello\n");
        let _ = conn.close();
    }
}

export!(Hello);
