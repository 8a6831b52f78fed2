//! A guest that loads fine but cannot start: its `init` traps (a panic),
//! or, with the config `refuse`, returns an error. The reload tests deploy
//! it to check that such a version is never swapped in and the running
//! version keeps serving.

use wasmloop_sdk::{Handler, Listener, export};

struct BrokenInit;

impl Handler for BrokenInit {
    fn init(config: &str, _listeners: &[Listener]) -> Result<Self, String> {
        if config == "refuse" {
            return Err("this version refuses to start".into());
        }
        panic!("this version traps in init");
    }
}

export!(BrokenInit);
