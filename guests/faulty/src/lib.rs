//! A guest that misbehaves on request, to show the host contains it. Each
//! line a client sends is a command:
//!
//! - `panic`: the guest panics (a wasm trap: `unreachable`).
//! - `spin`: the callback never returns (stopped by the callback deadline).
//! - `grow`: allocates until the memory limit stops it.
//! - `print TEXT`: writes TEXT to stdout (the host logs it).
//! - anything else is echoed back.

use wasmloop_sdk::{Connection, Handler, Listener, export};

struct Faulty {
    hoard: Vec<Vec<u8>>,
}

impl Handler for Faulty {
    fn init(_config: &str, _listeners: &[Listener]) -> Result<Self, String> {
        Ok(Faulty { hoard: Vec::new() })
    }

    fn on_data(&mut self, conn: Connection, data: &[u8]) {
        for line in data.split_inclusive(|&b| b == b'\n') {
            match line.trim_ascii_end() {
                b"panic" => panic!("asked to panic"),
                b"spin" => spin(),
                // Reserve without touching: memory grows as fast as the
                // allocator can ask, so the cap is hit before any deadline.
                b"grow" => loop {
                    self.hoard.push(Vec::with_capacity(4 << 20));
                },
                text if text.starts_with(b"print ") => {
                    println!("{}", String::from_utf8_lossy(&text[6..]));
                }
                _ => {
                    let _ = conn.write(line);
                }
            }
        }
    }
}

/// Loops forever without the optimiser noticing.
fn spin() {
    let mut x: u64 = 1;
    loop {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}

export!(Faulty);
