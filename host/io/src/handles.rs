//! Handles: the integers an owner (a guest or a native handler) holds for
//! its connections, UDP sockets, requests, WebSockets and timers. One
//! generational table per kind (slotmap); a handle carries its kind's tag,
//! so one kind's handle never names another kind's object, and a stale or
//! forged integer names nothing.

use slotmap::{Key, KeyData, new_key_type};
use wasmloop_reactor::TimerId;

new_key_type! {
    /// A guest's connection handle. Its integer form (slot + generation) is
    /// what the guest holds; a stale or forged integer finds nothing.
    pub struct ConnKey;
}

new_key_type! {
    /// A guest's UDP socket handle, like [`ConnKey`].
    pub struct UdpKey;
}

new_key_type! {
    /// A guest's HTTP request handle (`http.request`), naming the
    /// connection the request came on.
    pub struct ReqKey;
}

new_key_type! {
    /// A guest's WebSocket handle (`http.websocket`).
    pub struct WsKey;
}

/// A slot-map key as the integer handle a guest holds, and back.
///
/// Every kind of handle lives in its own table, and the tables number their
/// slots alike: without more, one kind's handle would be a live handle of
/// another kind (a request's handle written to as a raw TCP connection, a
/// UDP socket's cancelling a timer). So each kind puts its own [`tag`](Handle::TAG)
/// in bits 28..32 of the integer, which hold the slot index's top bits, and
/// `from_handle` accepts only its own: a handle of another kind gives the
/// null key, which names nothing. Slot indices never get near 2^28: every
/// table is bounded by a guest limit far below that (`max_connections`,
/// `max_timers`), and 2^28 live slots would take gigabytes.
pub trait Handle: Key + From<KeyData> {
    /// This kind's tag, 1..=15 (0 would let untagged numbers through).
    const TAG: u64;

    fn handle(self) -> u64 {
        tag(self.data().as_ffi(), Self::TAG)
    }

    fn from_handle(handle: u64) -> Self {
        untag(handle, Self::TAG).map_or_else(KeyData::default, key_data).into()
    }
}

impl Handle for ConnKey {
    const TAG: u64 = 1;
}
impl Handle for UdpKey {
    const TAG: u64 = 2;
}
impl Handle for ReqKey {
    const TAG: u64 = 3;
}
impl Handle for WsKey {
    const TAG: u64 = 4;
}
/// Timer handles are tagged like the keyed ones (see [`timer_handle`]).
const TIMER_TAG: u64 = 5;

/// Where a handle keeps its kind's tag: the top four bits of the slot index.
const TAG_SHIFT: u32 = 28;
const TAG_MASK: u64 = 0xF << TAG_SHIFT;

/// A slot-map key's integer (`KeyData::as_ffi`: generation << 32 | index)
/// with a kind's tag.
fn tag(ffi: u64, tag: u64) -> u64 {
    debug_assert_eq!(ffi & TAG_MASK, 0, "a slot index reached 2^28");
    ffi | tag << TAG_SHIFT
}

/// The slot-map key's integer behind `handle`, if it carries `tag`.
fn untag(handle: u64, tag: u64) -> Option<u64> {
    (handle & TAG_MASK == tag << TAG_SHIFT).then_some(handle & !TAG_MASK)
}

/// The handle a guest holds for one of its timers.
pub fn timer_handle(id: TimerId) -> u64 {
    tag(id.to_u64(), TIMER_TAG)
}

/// The timer a guest's handle names; another kind's handle names none.
/// (`TimerId::from_u64` keeps the odd-generation rule of [`key_data`].)
pub fn timer_id(handle: u64) -> TimerId {
    TimerId::from_u64(untag(handle, TIMER_TAG).unwrap_or(0))
}

/// The handle a guest holds for its listener at `index` (the order it was
/// granted them): 1, 2, ... Zero stays invalid, and no keyed handle can be
/// this small (each carries a tag at bit 28 or above), so a listener's
/// handle never names anything else.
pub fn listener_handle(index: usize) -> u64 {
    index as u64 + 1
}

/// The index of the listener a guest's handle names, if it could name one
/// (whether the guest has that many listeners is the caller's to check).
pub fn listener_index(handle: u64) -> Option<usize> {
    usize::try_from(handle).ok()?.checked_sub(1)
}

/// The slot-map key a guest's handle names. `KeyData::from_ffi` forces the
/// generation (the high 32 bits) odd, so a handle with an even generation
/// would alias the live handle one generation up: a number the guest was
/// never given would reach one of its objects. Keys the host mints always
/// have an odd generation; any other number names nothing.
fn key_data(handle: u64) -> KeyData {
    // The default key is slotmap's null key, in no map.
    if handle & (1 << 32) == 0 { KeyData::default() } else { KeyData::from_ffi(handle) }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use wasmloop_reactor::Token;

    use slotmap::SlotMap;
    use wasmloop_reactor::TimerHeap;

    use super::*;

    #[test]
    fn a_handle_names_nothing_in_another_kinds_table() {
        let (mut conns, mut udp) = (SlotMap::<ConnKey, ()>::with_key(), SlotMap::<UdpKey, ()>::with_key());
        let (mut requests, mut websockets) = (SlotMap::<ReqKey, ()>::with_key(), SlotMap::<WsKey, ()>::with_key());
        let mut timers = TimerHeap::new();
        let (c, u, r, w) = (conns.insert(()), udp.insert(()), requests.insert(()), websockets.insert(()));
        let t = timers.insert(Instant::now(), None, Token(0));
        // The same slot and generation in each table: only the tag differs.
        assert!([u.data(), r.data(), w.data()].iter().all(|&d| d == c.data()));
        let handles = [c.handle(), u.handle(), r.handle(), w.handle(), timer_handle(t)];
        for (i, &h) in handles.iter().enumerate() {
            assert_eq!(handles.iter().filter(|&&other| other == h).count(), 1, "handle {i} is unique");
            assert_eq!(conns.contains_key(ConnKey::from_handle(h)), i == 0, "handle {i} as a connection");
            assert_eq!(udp.contains_key(UdpKey::from_handle(h)), i == 1, "handle {i} as a UDP socket");
            assert_eq!(requests.contains_key(ReqKey::from_handle(h)), i == 2, "handle {i} as a request");
            assert_eq!(websockets.contains_key(WsKey::from_handle(h)), i == 3, "handle {i} as a WebSocket");
            assert_eq!(timers.contains(timer_id(h)), i == 4, "handle {i} as a timer");
        }
        // Untagged integers (the key's own, a listener's 1) name nothing.
        for h in [c.data().as_ffi(), 1, 0, u64::MAX] {
            assert!(!conns.contains_key(ConnKey::from_handle(h)), "{h:#x}");
            assert!(!timers.contains(timer_id(h)), "{h:#x}");
        }
        // An even generation still names nothing (`key_data`).
        assert!(!conns.contains_key(ConnKey::from_handle(c.handle() ^ 1 << 32)));
    }

    #[test]
    fn listener_handles_count_from_one_and_name_their_index() {
        assert_eq!((listener_handle(0), listener_handle(1)), (1, 2));
        for index in [0, 1, 41] {
            assert_eq!(listener_index(listener_handle(index)), Some(index));
        }
        assert_eq!(listener_index(0), None, "zero is no handle");
    }
}
