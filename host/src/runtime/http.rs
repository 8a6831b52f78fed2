//! `wasmloop:handler/http`, by hand like `connections` so bodies and
//! messages go from guest memory to the socket without a copy. The protocol
//! work is in `http_conn.rs`; here handles are checked and arguments lifted.

use std::borrow::Cow;

use wasmloop_http::ws;
use wasmtime::StoreContextMut;
use wasmtime::component::{ComponentType, Lift, Linker, WasmList, WasmStr};

use wasmloop_io::http::HttpConn;
use wasmloop_io::{Handle, Out, ReqKey};

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

/// Runs `f` on the HTTP state of request `req`, with the guest's headers,
/// the connection's output and the reused response-head buffer.
fn answer(
    store: StoreContextMut<'_, GuestState>,
    req: u64,
    headers: &Headers,
    f: impl FnOnce(
        &StoreContextMut<'_, GuestState>,
        &HttpConn,
        &[(&str, &str)],
        &Out<'_>,
        &mut Vec<u8>,
    ) -> Result<(), wasmloop_io::ErrorCode>,
) -> Reply<()> {
    let reply = with_headers(store, headers, |store, headers| {
        let state = store.data();
        let (_, conn) = state.request(req)?;
        Ok(f(store, conn.http()?, headers, &conn.out(&state.output), &mut state.scratch.borrow_mut())?)
    })?;
    Ok((reply,))
}

pub fn add_http(linker: &mut Linker<GuestState>) -> wasmtime::Result<()> {
    let mut i = linker.instance("wasmloop:handler/http@0.1.0")?;
    i.func_wrap(
        "respond",
        |store: StoreContextMut<'_, GuestState>, (req, status, headers, body): (u64, u16, Headers, WasmList<u8>)| {
            answer(store, req, &headers, |store, http, headers, out, scratch| {
                http.respond(status, headers.iter().copied(), body.as_le_slice(store), out, scratch)
            })
        },
    )?;
    i.func_wrap(
        "respond-start",
        |store: StoreContextMut<'_, GuestState>, (req, status, headers): (u64, u16, Headers)| {
            answer(store, req, &headers, |_, http, headers, out, scratch| {
                http.respond_start(status, headers.iter().copied(), out, scratch)
            })
        },
    )?;
    i.func_wrap(
        "respond-write",
        |store: StoreContextMut<'_, GuestState>, (req, data): (u64, WasmList<u8>)| -> Reply<u32> {
            let state = store.data();
            let reply = state
                .request(req)
                .and_then(|(_, conn)| conn.http()?.respond_write(data.as_le_slice(&store), &conn.out(&state.output)));
            Ok((reply.map_err(Into::into),))
        },
    )?;
    i.func_wrap("respond-finish", |store: StoreContextMut<'_, GuestState>, (req,): (u64,)| -> Reply<()> {
        let state = store.data();
        let reply = state.request(req).and_then(|(_, conn)| conn.http()?.respond_finish(&conn.out(&state.output)));
        Ok((reply.map_err(Into::into),))
    })?;
    i.func_wrap("notify-writable", |store: StoreContextMut<'_, GuestState>, (req,): (u64,)| -> Reply<()> {
        let reply = store.data().request(req).and_then(|(_, conn)| conn.http()?.notify_response_writable());
        Ok((reply.map_err(Into::into),))
    })?;
    i.func_wrap("peer-address", |store: StoreContextMut<'_, GuestState>, (req,): (u64,)| -> Reply<String> {
        let reply = store
            .data()
            .request(req)
            .map(|(_, conn)| conn.transport.peer_addr().map(|a| a.to_string()).unwrap_or_default());
        Ok((reply.map_err(Into::into),))
    })?;
    i.func_wrap(
        "accept-websocket",
        |store: StoreContextMut<'_, GuestState>, (req, protocol): (u64, Option<WasmStr>)| -> Reply<u64> {
            let state = store.data();
            let (key, conn) = match state.request(req) {
                Ok(found) => found,
                Err(e) => return Ok((Err(e.into()),)),
            };
            let protocol = match &protocol {
                Some(p) => match p.to_str(&store) {
                    Ok(p) => Some(p),
                    Err(_) => return Ok((Err(ErrorCode::InvalidArgument),)),
                },
                None => None,
            };
            let out = conn.out(&state.output);
            let accepted = conn.http().and_then(|http| {
                let scratch = &mut state.scratch.borrow_mut();
                // The request handle dies; the WebSocket's is born.
                http.accept_websocket(protocol.as_deref(), &out, scratch, &state.limits.http, || {
                    state.requests.borrow_mut().remove(ReqKey::from_handle(req));
                    state.websockets.borrow_mut().insert(key).handle()
                })
            });
            Ok((accepted.map_err(Into::into),))
        },
    )?;
    i.func_wrap("send", |store: StoreContextMut<'_, GuestState>, (h, message): (u64, Message)| -> Reply<()> {
        let state = store.data();
        let (conn, http) = match state.websocket(h).and_then(|conn| Ok((conn, conn.http()?))) {
            Ok(found) => found,
            Err(e) => return Ok((Err(e.into()),)),
        };
        let out = conn.out(&state.output);
        let reply = match &message {
            Message::Text(text) => match text.to_str(&store) {
                Ok(text) => http.send(ws::Opcode::Text, text.as_bytes(), &out),
                Err(_) => Err(wasmloop_io::ErrorCode::InvalidArgument),
            },
            Message::Binary(data) => http.send(ws::Opcode::Binary, data.as_le_slice(&store), &out),
        };
        Ok((reply.map_err(Into::into),))
    })?;
    i.func_wrap("websocket-notify-writable", |store: StoreContextMut<'_, GuestState>, (h,): (u64,)| -> Reply<()> {
        let reply = store.data().websocket(h).and_then(|conn| conn.http()?.notify_websocket_writable());
        Ok((reply.map_err(Into::into),))
    })?;
    i.func_wrap(
        "close-websocket",
        |store: StoreContextMut<'_, GuestState>, (h, code, reason): (u64, u16, WasmStr)| -> Reply<()> {
            let state = store.data();
            let reply = state.websocket(h).and_then(|conn| {
                let reason = reason.to_str(&store).map_err(|_| wasmloop_io::ErrorCode::InvalidArgument)?;
                conn.http()?.close_websocket(code, &reason, &conn.out(&state.output))
            });
            Ok((reply.map_err(Into::into),))
        },
    )?;
    Ok(())
}
