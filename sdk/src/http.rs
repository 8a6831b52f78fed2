//! HTTP/1.1 requests and WebSockets, with the protocol in the host.
//!
//! The host parses requests, frames responses, keeps connections alive and
//! does the WebSocket handshake and framing; the guest sees a [`Request`]
//! with its [`RequestHead`] and answers it, or sees whole [`Message`]s on a
//! [`WebSocket`].

use std::fmt;

use crate::Result;
use crate::bindings::wasmloop::handler::http;

/// One request and its response, from
/// [`Handler::on_request`](crate::Handler::on_request) until the response is
/// finished ([`respond`](Self::respond) or [`finish`](Self::finish)), the
/// request is upgraded ([`accept_websocket`](Self::accept_websocket)), or
/// [`Handler::on_request_closed`](crate::Handler::on_request_closed).
///
/// A response is either whole ([`respond`](Self::respond)) or streamed
/// ([`start`](Self::start), any number of [`write`](Self::write)s,
/// [`finish`](Self::finish)). The host adds `Content-Length` or chunked
/// framing, `Date` and `Connection`, and sends only the head to `HEAD`
/// requests, so a guest answers `HEAD` as it answers `GET`.
///
/// Headers are `(name, value)` pairs. A header the host owns
/// (`content-length`, `transfer-encoding`, `connection`, `upgrade`, `date`),
/// a name that is not an HTTP token, a value containing CR, LF or NUL, or a
/// status outside `200..=599` is refused with
/// [`Error::InvalidArgument`](crate::Error::InvalidArgument), and nothing is
/// sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Request(pub(crate) u64);

impl Request {
    /// Answers with a whole response; the handle is dead afterwards.
    ///
    /// Fails with [`Error::LimitReached`](crate::Error::LimitReached) if the
    /// response does not fit the connection's output limit (the host's
    /// `--max-output`; stream larger bodies with [`start`](Self::start)),
    /// and with [`Error::Closed`](crate::Error::Closed) if a streamed
    /// response was already started. On any error nothing was sent.
    pub fn respond(&self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> Result<()> {
        Ok(http::respond(self.0, status, headers, body)?)
    }

    /// Starts a streamed response: the body follows in [`write`](Self::write)
    /// calls (sent chunked; to an HTTP/1.0 client, until the connection
    /// closes) and ends with [`finish`](Self::finish). Errors as for
    /// [`respond`](Self::respond).
    pub fn start(&self, status: u16, headers: &[(&str, &str)]) -> Result<()> {
        Ok(http::respond_start(self.0, status, headers)?)
    }

    /// Body bytes of a started response; returns how many the host took.
    ///
    /// Less than `data.len()` means the connection's output buffer is full:
    /// the rest was not taken and is still the guest's. Call
    /// [`notify_writable`](Self::notify_writable) and go on in
    /// [`Handler::on_response_writable`](crate::Handler::on_response_writable).
    /// Each call hands `data` to the host, so offer large bodies in pieces
    /// (say 64 KiB) rather than all of what is left every time.
    pub fn write(&self, data: &[u8]) -> Result<usize> {
        Ok(http::respond_write(self.0, data)? as usize)
    }

    /// Ends a started response; the handle is dead afterwards and the next
    /// request on the connection (if any) follows.
    pub fn finish(&self) -> Result<()> {
        Ok(http::respond_finish(self.0)?)
    }

    /// Asks for one
    /// [`on_response_writable`](crate::Handler::on_response_writable) call
    /// once the connection's output buffer is empty (right after this
    /// callback if it already is).
    pub fn notify_writable(&self) -> Result<()> {
        Ok(http::notify_writable(self.0)?)
    }

    /// The client's address, e.g. `127.0.0.1:51234`.
    pub fn peer_address(&self) -> Result<String> {
        Ok(http::peer_address(self.0)?)
    }

    /// Accepts a WebSocket upgrade request (see
    /// [`RequestHead::is_websocket`]): the host answers
    /// `101 Switching Protocols`, naming `protocol` as the chosen
    /// subprotocol, and the request handle is dead. Messages then come to
    /// [`Handler::on_websocket_message`](crate::Handler::on_websocket_message).
    ///
    /// `protocol` must be one the client offered
    /// ([`RequestHead::websocket_protocols`]); otherwise, or if the request
    /// is not an upgrade, this fails with
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument). To refuse an
    /// upgrade, answer with any response instead.
    pub fn accept_websocket(&self, protocol: Option<&str>) -> Result<WebSocket> {
        Ok(WebSocket(http::accept_websocket(self.0, protocol)?))
    }
}

/// A request's method, target and headers, as given to
/// [`Handler::on_request`](crate::Handler::on_request).
#[derive(Clone, Debug)]
pub struct RequestHead(pub(crate) http::RequestHead);

impl RequestHead {
    /// `GET`, `POST`, ... as sent. Methods are case-sensitive (RFC 9110).
    pub fn method(&self) -> &str {
        &self.0.method
    }

    /// The request target as sent, e.g. `/items/7?full=1`. Not
    /// percent-decoded.
    pub fn target(&self) -> &str {
        &self.0.target
    }

    /// The target up to its `?`, e.g. `/items/7`.
    pub fn path(&self) -> &str {
        let target = self.target();
        target.split_once('?').map_or(target, |(path, _)| path)
    }

    /// The target after its first `?`, e.g. `full=1`; `None` without a `?`.
    pub fn query(&self) -> Option<&str> {
        self.target().split_once('?').map(|(_, query)| query)
    }

    /// The value of the first header named `name`, compared
    /// case-insensitively. A field sent more than once comes once per line
    /// in [`headers`](Self::headers).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, value)| value)
    }

    /// Every header as `(name, value)`, in the order sent. Names keep the
    /// client's case; values are trimmed of surrounding whitespace.
    pub fn headers(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        self.0.headers.iter().map(|(name, value)| (name.as_str(), value.as_str()))
    }

    /// The body's declared length (`Content-Length`; 0 for a request without
    /// a body), or `None` for a chunked body, whose length is known only at
    /// its end.
    pub fn body_length(&self) -> Option<u64> {
        self.0.body_length
    }

    /// A valid WebSocket upgrade request on a WebSocket listener
    /// (`--listen-ws`): it may be accepted with [`Request::accept_websocket`]
    /// or refused with any response.
    pub fn is_websocket(&self) -> bool {
        self.0.websocket
    }

    /// The subprotocols the client offers (`Sec-WebSocket-Protocol`), in its
    /// order of preference.
    pub fn websocket_protocols(&self) -> impl Iterator<Item = &str> + '_ {
        self.headers()
            .filter(|(name, _)| name.eq_ignore_ascii_case("sec-websocket-protocol"))
            .flat_map(|(_, value)| value.split(','))
            .map(str::trim)
            .filter(|protocol| !protocol.is_empty())
    }
}

/// An accepted WebSocket, from [`Request::accept_websocket`] until
/// [`Handler::on_websocket_close`](crate::Handler::on_websocket_close).
///
/// Sending is all or nothing: a message the connection's output buffer
/// cannot take now is refused with
/// [`Error::LimitReached`](crate::Error::LimitReached) and nothing is sent.
/// Keep it (or drop the client) and retry after
/// [`notify_writable`](Self::notify_writable) brings
/// [`Handler::on_websocket_writable`](crate::Handler::on_websocket_writable).
/// A message larger than the output limit (the host's `--max-output`) never
/// fits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WebSocket(pub(crate) u64);

impl WebSocket {
    /// Sends one text message. Errors as for [`send`](Self::send).
    pub fn send_text(&self, text: &str) -> Result<()> {
        self.send(Message::Text(text))
    }

    /// Sends one binary message. Errors as for [`send`](Self::send).
    pub fn send_binary(&self, data: &[u8]) -> Result<()> {
        self.send(Message::Binary(data))
    }

    /// Sends one message, whole or not at all.
    ///
    /// Fails with [`Error::LimitReached`](crate::Error::LimitReached) when
    /// the output buffer cannot take it now (nothing was sent), and with
    /// [`Error::Closed`](crate::Error::Closed) once the close handshake has
    /// begun (by [`close`](Self::close) or by the peer).
    pub fn send(&self, message: Message<'_>) -> Result<()> {
        let message = match message {
            Message::Text(text) => http::MessageParam::Text(text),
            Message::Binary(data) => http::MessageParam::Binary(data),
        };
        Ok(http::send(self.0, message)?)
    }

    /// Asks for one
    /// [`on_websocket_writable`](crate::Handler::on_websocket_writable) call
    /// once the output buffer is empty (right after this callback if it
    /// already is).
    pub fn notify_writable(&self) -> Result<()> {
        Ok(http::websocket_notify_writable(self.0)?)
    }

    /// Starts the close handshake with `code` (1000 normal, 1001 going away,
    /// 3000..=4999 the application's) and a `reason` of at most 123 bytes.
    /// [`on_websocket_close`](crate::Handler::on_websocket_close) follows when
    /// the peer answers, or after the host's timeout.
    pub fn close(&self, code: u16, reason: &str) -> Result<()> {
        Ok(http::close_websocket(self.0, code, reason)?)
    }
}

/// A WebSocket message, reassembled from its frames: given to
/// [`Handler::on_websocket_message`](crate::Handler::on_websocket_message)
/// and taken by [`WebSocket::send`]. Borrowed, so neither receiving nor
/// sending copies it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum Message<'a> {
    /// UTF-8 text (the host checks incoming text).
    Text(&'a str),
    Binary(&'a [u8]),
}

impl Message<'_> {
    /// The payload's bytes, text or binary.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Message::Text(text) => text.as_bytes(),
            Message::Binary(data) => data,
        }
    }

    /// The payload's length in bytes.
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for Message<'_> {
    /// Shows text, and binary by its length only: messages may be large.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Message::Text(text) => f.debug_tuple("Text").field(text).finish(),
            Message::Binary(data) => write!(f, "Binary({} bytes)", data.len()),
        }
    }
}

impl<'a> From<&'a http::MessageResult> for Message<'a> {
    fn from(message: &'a http::MessageResult) -> Self {
        match message {
            http::MessageResult::Text(text) => Message::Text(text),
            http::MessageResult::Binary(data) => Message::Binary(data),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(target: &str, headers: &[(&str, &str)]) -> RequestHead {
        RequestHead(http::RequestHead {
            method: "GET".into(),
            target: target.into(),
            headers: headers.iter().map(|&(n, v)| (n.into(), v.into())).collect(),
            body_length: Some(0),
            websocket: false,
        })
    }

    #[test]
    fn path_and_query_split_at_the_first_question_mark() {
        let h = head("/items/7?full=1&q=a?b", &[]);
        assert_eq!(h.path(), "/items/7");
        assert_eq!(h.query(), Some("full=1&q=a?b"));
        let h = head("/items/7", &[]);
        assert_eq!(h.path(), "/items/7");
        assert_eq!(h.query(), None);
        assert_eq!(head("/?", &[]).query(), Some(""));
    }

    #[test]
    fn header_names_compare_case_insensitively_and_the_first_wins() {
        let h = head("/", &[("Content-Type", "text/plain"), ("X-Tag", "a"), ("x-tag", "b")]);
        assert_eq!(h.header("content-type"), Some("text/plain"));
        assert_eq!(h.header("X-TAG"), Some("a"));
        assert_eq!(h.header("accept"), None);
        assert_eq!(h.headers().len(), 3);
    }

    #[test]
    fn websocket_protocols_lists_every_offer_in_order() {
        let h = head("/", &[("Sec-WebSocket-Protocol", "chat, superchat"), ("sec-websocket-protocol", " v2 ,")]);
        assert_eq!(h.websocket_protocols().collect::<Vec<_>>(), ["chat", "superchat", "v2"]);
        assert_eq!(head("/", &[]).websocket_protocols().count(), 0);
    }
}
