//! A guest that loads fine but refuses to start: `init` always fails. The
//! reload tests deploy it to check that a version whose `init` fails is not
//! swapped in and the running version keeps serving.

use wasmloop_sdk::{Handler, Listener, export};

struct BrokenInit;

impl Handler for BrokenInit {
    fn init(_config: &str, _listeners: &[Listener]) -> Result<Self, String> {
        Err("this version refuses to start".into())
    }
}

export!(BrokenInit);
