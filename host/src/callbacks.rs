//! The guest callbacks, listed once.
//!
//! Every event the host delivers to a guest is one call of an export of
//! `wit/handler.wit`. `for_each_callback!` is the one Rust list of them
//! (the set used to be written out by hand in the metrics' enum and its
//! labels, in `runtime::Instance`, and in the wasm and the native guest,
//! each copy to be kept in step). It expands into
//!
//! - [`Callback`], here: the enum, [`Callback::ALL`] and the WIT names,
//!   which are the metrics' `event` label and index their counters;
//! - a method per callback on `runtime::Instance` (`runtime/instance.rs`),
//!   which calls a wasm guest or a native handler.
//!
//! What is particular to one callback stays hand-written where it belongs,
//! and the compiler holds it to the list: its wasm binding (the `Exports`
//! method of the same name, `runtime/guest.rs`), the native
//! [`Handler`](crate::native::Handler) method (public API), and the server
//! code that raises the event.
//!
//! This module is a leaf: it names no other layer. The argument types in the
//! list are only resolved where it becomes calls, in `runtime/instance.rs`,
//! which imports them.

/// Calls `$m!` with the list of guest callbacks, in the order of the
/// metrics. A row is
///
/// ```text
/// Variant "wit-name" [who implements it] fn method(args) -> output;
/// ```
///
/// `[wasm, native]`: every guest exports it (interface `callbacks`), and a
/// native `Handler` has a method of the same name. `[wasm]`: an optional
/// export of a wasm guest (a guest without it, or a native handler, gets
/// nothing and the call returns `Default::default()`). A row without `fn`
/// has no `Instance` method: `Guest::start` and `Guest::restore` call it,
/// with the longer deadline of `init`.
macro_rules! for_each_callback {
    ($m:ident) => {
        $m! {
            // `init`, and `migration`'s `restore` and `snapshot`.
            Init "init";
            Restore "restore";
            Snapshot "snapshot" [wasm] fn snapshot() -> Option<Vec<u8>>;
            // `callbacks`: every guest exports it.
            OnAccept "on-accept" [wasm, native] fn on_accept(listener: u64, conn: u64);
            OnData "on-data" [wasm, native] fn on_data(conn: u64, data: &[u8]);
            OnEof "on-eof" [wasm, native] fn on_eof(conn: u64) -> EofAction;
            OnWritable "on-writable" [wasm, native] fn on_writable(conn: u64);
            OnClose "on-close" [wasm, native] fn on_close(conn: u64, reason: &CloseReason);
            OnTimer "on-timer" [wasm, native] fn on_timer(timer: u64);
            OnShutdown "on-shutdown" [wasm, native] fn on_shutdown();
            // Optional: `outbound-callbacks`, `datagram-callbacks`, `http-callbacks`.
            OnConnect "on-connect" [wasm] fn on_connect(conn: u64, outcome: Result<(), ConnectError>);
            OnDatagram "on-datagram" [wasm] fn on_datagram(socket: u64, peer: &str, data: &[u8]);
            OnRequest "on-request" [wasm] fn on_request(req: u64, head: RequestHead<'_>, body: &[u8], end: bool);
            OnRequestBody "on-request-body" [wasm] fn on_request_body(req: u64, data: &[u8], end: bool);
            OnResponseWritable "on-response-writable" [wasm] fn on_response_writable(req: u64);
            OnRequestClosed "on-request-closed" [wasm] fn on_request_closed(req: u64);
            OnWebsocketMessage "on-websocket-message" [wasm] fn on_websocket_message(ws: u64, message: &Message);
            OnWebsocketWritable "on-websocket-writable" [wasm] fn on_websocket_writable(ws: u64);
            OnWebsocketClose "on-websocket-close" [wasm] fn on_websocket_close(ws: u64, code: u16, reason: &str);
        }
    };
}
pub(crate) use for_each_callback;

macro_rules! callback_enum {
    ($(
        $variant:ident $name:literal
        $([$($who:ident),+] fn $method:ident($($arg:ident: $type:ty),*) $(-> $output:ty)?)?;
    )*) => {
        /// The guest callbacks, by their WIT names: the `event` label.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Callback {
            $($variant,)*
        }

        impl Callback {
            pub const ALL: [Callback; [$(Callback::$variant),*].len()] = [$(Callback::$variant),*];

            pub fn name(self) -> &'static str {
                match self {
                    $(Callback::$variant => $name,)*
                }
            }
        }
    };
}
for_each_callback!(callback_enum);
