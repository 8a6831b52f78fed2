//! Counts the lines it receives over all connections and answers each with
//! the running total: `count N`. Its state survives a hot reload in migrate
//! mode: `snapshot` hands the total to the next version, which `restore`s
//! it, and the connections carry on without noticing.

use std::collections::HashMap;

use wasmloop_sdk::{CloseReason, Connection, Handler, Listener, export, info};

#[derive(Default)]
struct Counter {
    total: u64,
    /// A line not yet ended by `\n`, per connection.
    partial: HashMap<Connection, usize>,
}

impl Handler for Counter {
    fn init(_config: &str, _listeners: &[Listener]) -> Result<Self, String> {
        Ok(Counter::default())
    }

    fn on_data(&mut self, conn: Connection, data: &[u8]) {
        for &byte in data {
            if byte != b'\n' {
                *self.partial.entry(conn).or_default() += 1;
                continue;
            }
            self.partial.remove(&conn);
            self.total += 1;
            let _ = conn.write(format!("count {}\n", self.total).as_bytes());
        }
    }

    fn on_close(&mut self, conn: Connection, _reason: CloseReason) {
        self.partial.remove(&conn);
    }

    fn snapshot(&mut self) -> Option<Vec<u8>> {
        // Partial lines are part of the state too: a line split across the
        // reload must still count once.
        let mut state = self.total.to_le_bytes().to_vec();
        for (conn, len) in &self.partial {
            state.extend(conn.raw().to_le_bytes());
            state.extend((*len as u64).to_le_bytes());
        }
        Some(state)
    }

    fn restore(_config: &str, _listeners: &[Listener], state: &[u8]) -> Result<Self, String> {
        let mut words = state.chunks_exact(8).map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes")));
        let total = words.next().ok_or("empty snapshot")?;
        let mut partial = HashMap::new();
        while let (Some(conn), Some(len)) = (words.next(), words.next()) {
            partial.insert(Connection::from_raw(conn), len as usize);
        }
        info!("restored: {total} lines counted so far");
        Ok(Counter { total, partial })
    }
}

export!(Counter);
