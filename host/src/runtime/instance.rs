//! What the server calls: a running guest, either a wasm instance
//! ([`Guest`]) or a native Rust handler ([`NativeGuest`]). Both have a
//! [`GuestIo`], so the server settles, times out and tears down either
//! alike; a callback costs one `match` more than calling the wasm guest.

use std::sync::Arc;

use wasmloop_io::CloseReason;

use crate::callbacks::{Callback, for_each_callback};
use crate::guest_io::GuestIo;
use crate::runtime::bindings::{ConnectError, EofAction, Message};
use crate::runtime::guest::{Fault, Guest, RequestHead};
use crate::runtime::native::NativeGuest;

#[allow(clippy::large_enum_variant, reason = "the wasm guest stays inline: every callback goes through it")]
pub enum Instance {
    Wasm(Guest),
    /// Boxed: its state is inline, while a wasm guest's is in its store.
    Native(Box<NativeGuest>),
}

impl Instance {
    pub fn name(&self) -> &Arc<str> {
        match self {
            Instance::Wasm(guest) => guest.name(),
            Instance::Native(native) => native.name(),
        }
    }

    #[inline]
    pub fn state(&self) -> &GuestIo {
        match self {
            Instance::Wasm(guest) => guest.state(),
            Instance::Native(native) => native.state(),
        }
    }

    #[inline]
    pub fn state_mut(&mut self) -> &mut GuestIo {
        match self {
            Instance::Wasm(guest) => guest.state_mut(),
            Instance::Native(native) => native.state_mut(),
        }
    }

    // A native handler has no outbound sockets, HTTP listeners or migration
    // state.

    pub fn has_datagrams(&self) -> bool {
        match self {
            Instance::Wasm(guest) => guest.has_datagrams(),
            Instance::Native(_) => false,
        }
    }
}

/// A method per callback of the list (`crate::callbacks`), which calls a
/// wasm guest's export through the `Exports` method of the same name
/// (`guest.rs`), or a native handler's `Handler` method of the same name.
macro_rules! callback_methods {
    ($(
        $variant:ident $name:literal
        $([$($who:ident),+] fn $method:ident($($arg:ident: $type:ty),*) $(-> $output:ty)?)?;
    )*) => {
        impl Instance {
            $($(
                #[doc = concat!("Calls `", $name, "`.")]
                #[inline]
                pub fn $method(&mut self, $($arg: $type),*) -> Result<output!($($output)?), Fault> {
                    dispatch!([$($who),+] self, Callback::$variant, $method($($arg),*))
                }
            )?)*
        }
    };
}

/// A callback's return type: `()` when its row has none.
macro_rules! output {
    () => {
        ()
    };
    ($output:ty) => {
        $output
    };
}

/// The body of a callback method: the wasm guest's call, and the native
/// handler's if the row says `[wasm, native]`.
macro_rules! dispatch {
    ([wasm, native] $self:ident, $callback:expr, $method:ident($($arg:ident),*)) => {
        match $self {
            Instance::Wasm(guest) => guest.call($callback, |exports, store| exports.$method(store, $($arg),*)),
            Instance::Native(native) => native.call($callback, |handler, cx| handler.$method(cx, $($arg),*)),
        }
    };
    ([wasm] $self:ident, $callback:expr, $method:ident($($arg:ident),*)) => {
        match $self {
            Instance::Wasm(guest) => guest.call($callback, |exports, store| exports.$method(store, $($arg),*)),
            // A native handler has no such export: the server never has
            // this event for it.
            Instance::Native(_) => Ok(Default::default()),
        }
    };
}

for_each_callback!(callback_methods);
