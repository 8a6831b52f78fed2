//! `wasmloop:handler/http`, by hand like `connections` so bodies and
//! messages go from guest memory to the socket without a copy. Here the
//! arguments are lifted; each import is one call of the `GuestIo` method
//! that checks the handle and does the work (`guest_io/http.rs`).

use std::borrow::Cow;

use wasmloop_http::ws;
use wasmtime::StoreContextMut;
use wasmtime::component::{ComponentType, Lift, Linker, WasmList, WasmStr};

use wasmloop_io::ErrorCode;

use crate::runtime::imports::{Reply, address, reply};
use crate::runtime::state::GuestState;

type Headers = WasmList<(WasmStr, WasmStr)>;

/// `http.message` as lifted from guest memory, without copying.
#[derive(ComponentType, Lift)]
#[component(variant)]
enum Message {
    #[component(name = "text")]
    Text(WasmStr),
    #[component(name = "binary")]
    Binary(WasmList<u8>),
}

/// Runs `f` with the guest's headers as `&str` pairs, borrowed from guest
/// memory. The list is kept in the guest state between calls (emptied,
/// capacity kept; `recycle` changes only its element lifetime), so a
/// response allocates nothing. A string that is not valid UTF-8 traps, as
/// the component model's lifting does.
fn with_headers<R>(
    mut store: StoreContextMut<'_, GuestState>,
    headers: &Headers,
    f: impl FnOnce(&StoreContextMut<'_, GuestState>, &[(&str, &str)]) -> Result<R, ErrorCode>,
) -> Reply<R> {
    let mut pairs = store.data().header_pairs.take();
    pairs.clear();
    for pair in headers.iter(&mut store)? {
        pairs.push(pair?);
    }
    let store = &store;
    let mut list = recycle(store.data().io.header_scratch.take());
    // Strings of a guest that keeps them as UTF-16 are transcoded: copies.
    let mut transcoded = Vec::new();
    for (name, value) in &pairs {
        match (name.to_str(store)?, value.to_str(store)?) {
            (Cow::Borrowed(n), Cow::Borrowed(v)) => list.push((n, v)),
            (n, v) => transcoded.push((n.into_owned(), v.into_owned())),
        }
    }
    let out = if transcoded.is_empty() {
        f(store, &list)
    } else {
        let mut all = Vec::with_capacity(pairs.len());
        for (name, value) in &pairs {
            all.push((name.to_str(store)?.into_owned(), value.to_str(store)?.into_owned()));
        }
        f(store, &all.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect::<Vec<_>>())
    };
    store.data().io.header_scratch.replace(recycle(list));
    store.data().header_pairs.replace(pairs);
    reply(out)
}

/// An emptied vector of string pairs with another lifetime, in the same
/// allocation (std collects in place when the element layout is the same).
pub fn recycle<'a, 'b>(mut list: Vec<(&'a str, &'a str)>) -> Vec<(&'b str, &'b str)> {
    list.clear();
    list.into_iter().map(|_| ("", "")).collect()
}

pub fn add_http(linker: &mut Linker<GuestState>) -> wasmtime::Result<()> {
    let mut i = linker.instance("wasmloop:handler/http@0.1.0")?;
    i.func_wrap(
        "respond",
        |store: StoreContextMut<'_, GuestState>, (req, status, headers, body): (u64, u16, Headers, WasmList<u8>)| {
            with_headers(store, &headers, |store, headers| {
                store.data().io.respond(req, status, headers, body.as_le_slice(store))
            })
        },
    )?;
    i.func_wrap(
        "respond-start",
        |store: StoreContextMut<'_, GuestState>, (req, status, headers): (u64, u16, Headers)| {
            with_headers(store, &headers, |store, headers| store.data().io.respond_start(req, status, headers))
        },
    )?;
    i.func_wrap(
        "respond-write",
        |store: StoreContextMut<'_, GuestState>, (req, data): (u64, WasmList<u8>)| -> Reply<u32> {
            reply(store.data().io.respond_write(req, data.as_le_slice(&store)))
        },
    )?;
    i.func_wrap("respond-finish", |store: StoreContextMut<'_, GuestState>, (req,): (u64,)| -> Reply<()> {
        reply(store.data().io.respond_finish(req))
    })?;
    i.func_wrap("notify-writable", |store: StoreContextMut<'_, GuestState>, (req,): (u64,)| -> Reply<()> {
        reply(store.data().io.notify_response_writable(req))
    })?;
    i.func_wrap("peer-address", |store: StoreContextMut<'_, GuestState>, (req,): (u64,)| -> Reply<String> {
        reply(store.data().io.request_peer_address(req).map(address))
    })?;
    i.func_wrap(
        "accept-websocket",
        |store: StoreContextMut<'_, GuestState>, (req, protocol): (u64, Option<WasmStr>)| -> Reply<u64> {
            let io = &store.data().io;
            let protocol = match protocol.as_ref().map(|p| p.to_str(&store)).transpose() {
                Ok(protocol) => protocol,
                // Not UTF-8: refused, but only after the handle was checked.
                Err(_) => return reply(io.request(req).and(Err(ErrorCode::InvalidArgument))),
            };
            reply(io.accept_websocket(req, protocol.as_deref()))
        },
    )?;
    i.func_wrap("send", |store: StoreContextMut<'_, GuestState>, (h, message): (u64, Message)| -> Reply<()> {
        let io = &store.data().io;
        reply(match &message {
            Message::Text(text) => match text.to_str(&store) {
                Ok(text) => io.send(h, ws::Opcode::Text, text.as_bytes()),
                // Not UTF-8: refused, but only after the handle was checked.
                Err(_) => io.websocket(h).and_then(|conn| conn.http()).and(Err(ErrorCode::InvalidArgument)),
            },
            Message::Binary(data) => io.send(h, ws::Opcode::Binary, data.as_le_slice(&store)),
        })
    })?;
    i.func_wrap("websocket-notify-writable", |store: StoreContextMut<'_, GuestState>, (h,): (u64,)| -> Reply<()> {
        reply(store.data().io.notify_websocket_writable(h))
    })?;
    i.func_wrap(
        "close-websocket",
        |store: StoreContextMut<'_, GuestState>, (h, code, reason): (u64, u16, WasmStr)| -> Reply<()> {
            let io = &store.data().io;
            reply(match reason.to_str(&store) {
                Ok(reason) => io.close_websocket(h, code, &reason),
                // Not UTF-8: refused, but only after the handle was checked.
                Err(_) => io.websocket(h).and(Err(ErrorCode::InvalidArgument)),
            })
        },
    )?;
    Ok(())
}
