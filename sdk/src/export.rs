//! The glue between the generated exports (`callbacks`, `outbound-callbacks`,
//! `datagram-callbacks`, `migration`, `http-callbacks`) and a [`Handler`].

use std::any::Any;
use std::cell::RefCell;
use std::marker::PhantomData;

use crate::bindings::exports::wasmloop::handler::callbacks::Guest;
use crate::bindings::exports::wasmloop::handler::{datagram_callbacks, http_callbacks, migration, outbound_callbacks};
use crate::bindings::wasmloop::handler::{http, outbound, types};
use crate::{Connection, Handler, Listener, Request, RequestHead, Timer, UdpSocket, WebSocket};

thread_local! {
    /// The guest's state, set by `init`. Wasm guests are single-threaded, so
    /// this is the one and only instance. `Any` because a `thread_local!`
    /// cannot be generic over the handler type.
    static HANDLER: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

/// Implements the generated `Guest` trait for handler `H`; named by [`export!`](crate::export).
pub struct Exports<H>(PhantomData<H>);

impl<H: Handler> Exports<H> {
    /// Runs one callback on the handler.
    fn with<R>(callback: impl FnOnce(&mut H) -> R) -> R {
        HANDLER.with(|slot| {
            // The host never calls into the guest while a callback runs, so
            // this borrow cannot clash; if it ever did, fail loudly rather
            // than hand out two `&mut` to the guest's state.
            let mut slot = slot.try_borrow_mut().expect("wasmloop-sdk: a callback started while another was running");
            let handler = slot
                .as_mut()
                .expect("wasmloop-sdk: callback before a successful init")
                .downcast_mut::<H>()
                .expect("wasmloop-sdk: handler type changed");
            callback(handler)
        })
    }
}

impl<H: Handler> Guest for Exports<H> {
    fn init(config: String, listeners: Vec<types::ListenerInfo>) -> Result<(), String> {
        let listeners: Vec<Listener> = listeners.iter().map(|info| Listener(info.handle)).collect();
        let handler = H::init(&config, &listeners)?;
        HANDLER.with(|slot| {
            *slot.try_borrow_mut().expect("wasmloop-sdk: init called during a callback") = Some(Box::new(handler));
        });
        Ok(())
    }

    fn on_accept(listener: u64, conn: u64) {
        Self::with(|h| h.on_accept(Listener(listener), Connection(conn)));
    }

    fn on_data(conn: u64, data: Vec<u8>) {
        Self::with(|h| h.on_data(Connection(conn), &data));
    }

    fn on_eof(conn: u64) -> types::EofAction {
        Self::with(|h| h.on_eof(Connection(conn))).into()
    }

    fn on_writable(conn: u64) {
        Self::with(|h| h.on_writable(Connection(conn)));
    }

    fn on_close(conn: u64, reason: types::CloseReason) {
        Self::with(|h| h.on_close(Connection(conn), reason.into()));
    }

    fn on_timer(timer: u64) {
        Self::with(|h| h.on_timer(Timer(timer)));
    }

    fn on_shutdown() {
        Self::with(|h| h.on_shutdown());
    }
}

impl<H: Handler> outbound_callbacks::Guest for Exports<H> {
    fn on_connect(conn: u64, outcome: Result<(), outbound::ConnectError>) {
        Self::with(|h| h.on_connect(Connection(conn), outcome.map_err(Into::into)));
    }
}

impl<H: Handler> migration::Guest for Exports<H> {
    fn snapshot() -> Option<Vec<u8>> {
        Self::with(|h| h.snapshot())
    }

    fn restore(config: String, listeners: Vec<types::ListenerInfo>, state: Vec<u8>) -> Result<(), String> {
        let listeners: Vec<Listener> = listeners.iter().map(|info| Listener(info.handle)).collect();
        let handler = H::restore(&config, &listeners, &state)?;
        HANDLER.with(|slot| {
            *slot.try_borrow_mut().expect("wasmloop-sdk: restore called during a callback") = Some(Box::new(handler));
        });
        Ok(())
    }
}

impl<H: Handler> datagram_callbacks::Guest for Exports<H> {
    fn on_datagram(socket: u64, peer: String, data: Vec<u8>) {
        Self::with(|h| h.on_datagram(UdpSocket(socket), &peer, &data));
    }
}

impl<H: Handler> http_callbacks::Guest for Exports<H> {
    fn on_request(req: u64, head: http::RequestHead, body: Vec<u8>, end: bool) {
        let head = RequestHead(head);
        Self::with(|h| h.on_request(Request(req), &head, &body, end));
    }

    fn on_request_body(req: u64, data: Vec<u8>, end: bool) {
        Self::with(|h| h.on_request_body(Request(req), &data, end));
    }

    fn on_response_writable(req: u64) {
        Self::with(|h| h.on_response_writable(Request(req)));
    }

    fn on_request_closed(req: u64) {
        Self::with(|h| h.on_request_closed(Request(req)));
    }

    fn on_websocket_message(ws: u64, message: http::MessageResult) {
        Self::with(|h| h.on_websocket_message(WebSocket(ws), (&message).into()));
    }

    fn on_websocket_writable(ws: u64) {
        Self::with(|h| h.on_websocket_writable(WebSocket(ws)));
    }

    fn on_websocket_close(ws: u64, code: u16, reason: String) {
        Self::with(|h| h.on_websocket_close(WebSocket(ws), code, &reason));
    }
}

/// Registers a [`Handler`] type as this component's guest.
///
/// Use it once, in the guest's crate root:
///
/// ```
/// # use wasmloop_sdk::{Handler, Listener};
/// struct Guest;
/// impl Handler for Guest {
///     fn init(_config: &str, _listeners: &[Listener]) -> Result<Self, String> {
///         Ok(Guest)
///     }
/// }
/// wasmloop_sdk::export!(Guest);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! export {
    ($handler:ty) => {
        const _: () = {
            // The generated export macro takes an identifier, not a type.
            type __WasmloopExports = $crate::Exports<$handler>;
    $crate::__export_handler_impl!(__WasmloopExports with_types_in $crate::bindings);
        };
    };
}
