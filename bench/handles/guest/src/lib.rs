//! The guest half of `bench-handles`: each export calls the matching host
//! import with the same handle and the same bytes, as an echo guest would.

wit_bindgen::generate!({
    path: "../wit",
    world: "bench",
});

use exports::wasmloop::handle_bench::callbacks::Guest;
use wasmloop::handle_bench::host::{self, Conn};

struct Echo;

impl Guest for Echo {
    fn on_data_int(h: u64, data: Vec<u8>) {
        host::write_int(h, &data);
    }

    fn on_data_res(c: &Conn, data: Vec<u8>) {
        host::write_res(c, &data);
    }
}

export!(Echo);
