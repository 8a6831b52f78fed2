//! `wasmloop:handler/http`, by hand like `connections` so bodies and
//! messages go from guest memory to the socket without a copy. The protocol
//! work is in `http_conn.rs`; here handles are checked and arguments lifted.

use std::borrow::Cow;

use wasmloop_http::ws;
use wasmtime::StoreContextMut;
use wasmtime::component::{ComponentType, Lift, Linker, WasmList, WasmStr};

use crate::runtime::Handle;
use crate::runtime::bindings::ErrorCode;
use crate::runtime::state::GuestState;

type Reply<T> = wasmtime::Result<(Result<T, ErrorCode>,)>;
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
) -> wasmtime::Result<Result<R, ErrorCode>> {
    let mut pairs = store.data().header_pairs.take();
    pairs.clear();
    for pair in headers.iter(&mut store)? {
        pairs.push(pair?);
    }
    let store = &store;
    let mut list = recycle(store.data().header_scratch.take());
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
    store.data().header_scratch.replace(recycle(list));
    store.data().header_pairs.replace(pairs);
    Ok(out)
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
            let reply = with_headers(store, &headers, |store, headers| {
                let state = store.data();
                let (_, conn) = state.request(req)?;
                let body = body.as_le_slice(store);
                conn.respond(status, headers.iter().copied(), body, &state.output, &mut state.scratch.borrow_mut())
            })?;
            Ok((reply,))
        },
    )?;
    i.func_wrap(
        "respond-start",
        |store: StoreContextMut<'_, GuestState>, (req, status, headers): (u64, u16, Headers)| {
            let reply = with_headers(store, &headers, |store, headers| {
                let state = store.data();
                let (_, conn) = state.request(req)?;
                conn.respond_start(status, headers.iter().copied(), &state.output, &mut state.scratch.borrow_mut())
            })?;
            Ok((reply,))
        },
    )?;
    i.func_wrap(
        "respond-write",
        |store: StoreContextMut<'_, GuestState>, (req, data): (u64, WasmList<u8>)| -> Reply<u32> {
            let state = store.data();
            Ok((state.request(req).and_then(|(_, conn)| conn.respond_write(data.as_le_slice(&store), &state.output)),))
        },
    )?;
    i.func_wrap("respond-finish", |store: StoreContextMut<'_, GuestState>, (req,): (u64,)| -> Reply<()> {
        let state = store.data();
        Ok((state.request(req).and_then(|(_, conn)| conn.respond_finish(&state.output)),))
    })?;
    i.func_wrap("notify-writable", |store: StoreContextMut<'_, GuestState>, (req,): (u64,)| -> Reply<()> {
        Ok((store.data().request(req).and_then(|(_, conn)| {
            let state = conn.http.as_deref().ok_or(ErrorCode::InvalidHandle)?;
            let mut exchange = state.exchange.borrow_mut();
            exchange.as_mut().ok_or(ErrorCode::InvalidHandle)?.notify_writable = true;
            Ok(())
        }),))
    })?;
    i.func_wrap("peer-address", |store: StoreContextMut<'_, GuestState>, (req,): (u64,)| -> Reply<String> {
        Ok((store
            .data()
            .request(req)
            .map(|(_, conn)| conn.socket.peer_addr().map(|a| a.to_string()).unwrap_or_default()),))
    })?;
    i.func_wrap(
        "accept-websocket",
        |store: StoreContextMut<'_, GuestState>, (req, protocol): (u64, Option<WasmStr>)| -> Reply<u64> {
            let state = store.data();
            let (key, conn) = match state.request(req) {
                Ok(found) => found,
                Err(e) => return Ok((Err(e),)),
            };
            let protocol = match &protocol {
                Some(p) => match p.to_str(&store) {
                    Ok(p) => Some(p),
                    Err(_) => return Ok((Err(ErrorCode::InvalidArgument),)),
                },
                None => None,
            };
            if let Err(e) = conn.accept_websocket(protocol.as_deref(), &state.output, &mut state.scratch.borrow_mut()) {
                return Ok((Err(e),));
            }
            // The request handle dies; the WebSocket's is born.
            state.requests.borrow_mut().remove(crate::runtime::ReqKey::from_handle(req));
            let ws = state.websockets.borrow_mut().insert(key).handle();
            let http = conn.http.as_deref().expect("accept_websocket checked the connection speaks HTTP");
            if let Some(ex) = http.exchange.borrow_mut().as_mut() {
                ex.request = None;
                ex.upgraded = Some(ws);
            }
            *http.websocket.borrow_mut() = Some(crate::http_conn::WebSocket { handle: ws, ..Default::default() });
            Ok((Ok(ws),))
        },
    )?;
    i.func_wrap("send", |store: StoreContextMut<'_, GuestState>, (h, message): (u64, Message)| -> Reply<()> {
        let state = store.data();
        let conn = match state.websocket(h) {
            Ok(conn) => conn,
            Err(e) => return Ok((Err(e),)),
        };
        let reply = match &message {
            Message::Text(text) => match text.to_str(&store) {
                Ok(text) => conn.ws_send(ws::Opcode::Text, text.as_bytes(), &state.output),
                Err(_) => Err(ErrorCode::InvalidArgument),
            },
            Message::Binary(data) => conn.ws_send(ws::Opcode::Binary, data.as_le_slice(&store), &state.output),
        };
        Ok((reply,))
    })?;
    i.func_wrap("websocket-notify-writable", |store: StoreContextMut<'_, GuestState>, (h,): (u64,)| -> Reply<()> {
        Ok((store.data().websocket(h).and_then(|conn| {
            let state = conn.http.as_deref().ok_or(ErrorCode::InvalidHandle)?;
            let mut ws = state.websocket.borrow_mut();
            ws.as_mut().ok_or(ErrorCode::InvalidHandle)?.notify_writable = true;
            Ok(())
        }),))
    })?;
    i.func_wrap(
        "close-websocket",
        |store: StoreContextMut<'_, GuestState>, (h, code, reason): (u64, u16, WasmStr)| -> Reply<()> {
            let state = store.data();
            let reply = state.websocket(h).and_then(|conn| {
                let reason = reason.to_str(&store).map_err(|_| ErrorCode::InvalidArgument)?;
                conn.ws_close(code, &reason)
            });
            Ok((reply,))
        },
    )?;
    Ok(())
}
