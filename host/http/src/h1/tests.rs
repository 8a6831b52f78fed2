//! The HTTP/1.1 parser's, body decoder's and response writer's unit tests.

use super::date::civil_from_days;
use super::*;
use std::time::{Duration, UNIX_EPOCH};

fn parse(buf: &[u8]) -> Result<Option<Head>, HttpError> {
    HeadParser::new(Limits::default()).parse(buf).map(|head| head.cloned())
}

fn parse_ok(buf: &[u8]) -> Head {
    match parse(buf) {
        Ok(Some(head)) => head,
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
    }
}

fn status_of(buf: &[u8]) -> u16 {
    match parse(buf) {
        Err(error) => error.status,
        other => panic!("{:?} was not refused: {other:?}", String::from_utf8_lossy(buf)),
    }
}

/// A 1.1 request with a Host and the given extra header lines.
fn request_with(extra: &str) -> Vec<u8> {
    format!("POST /upload HTTP/1.1\r\nHost: example.com\r\n{extra}\r\n").into_bytes()
}

const GET: &[u8] = b"GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\nAccept:  text/html \r\nX-Empty:\r\n\r\n";

#[test]
fn parses_a_get_head_with_spans_into_the_buffer() {
    let head = parse_ok(GET);
    assert_eq!(head.str(GET, &head.method), "GET");
    assert_eq!(head.str(GET, &head.target), "/index.html?q=1");
    assert_eq!(head.minor_version, 1);
    assert_eq!(head.len, GET.len());
    assert_eq!(head.body, BodyKind::Length(0));
    assert!(head.keep_alive && !head.expect_continue && !head.is_head);
    let fields: Vec<_> = head.headers(GET).collect();
    assert_eq!(fields, [("Host", "example.com"), ("Accept", "text/html"), ("X-Empty", "")]);
}

#[test]
fn header_lookup_is_case_insensitive_and_returns_the_first() {
    let buf = request_with("x-tag: one\r\nX-TAG: two\r\n");
    let head = parse_ok(&buf);
    assert_eq!(head.header(&buf, "X-Tag"), Some("one"));
    assert_eq!(head.header(&buf, "HOST"), Some("example.com"));
    assert_eq!(head.header(&buf, "missing"), None);
}

#[test]
fn str_of_a_foreign_buffer_is_empty_not_a_panic() {
    let head = parse_ok(GET);
    assert_eq!(head.str(b"GE", &head.target), "");
    assert_eq!(head.str(b"\xff\xff\xff", &head.method), "");
}

#[test]
fn every_proper_prefix_is_incomplete() {
    for end in 0..GET.len() {
        assert_eq!(parse(&GET[..end]), Ok(None), "prefix of {end} bytes");
    }
}

#[test]
fn leading_empty_lines_are_skipped_and_counted() {
    let buf = [b"\r\n\r\n".as_slice(), GET].concat();
    let head = parse_ok(&buf);
    assert_eq!(head.len, buf.len());
    assert_eq!(head.str(&buf, &head.method), "GET");
    assert_eq!(head.method, 4..7);
}

#[test]
fn pipelined_heads_parse_one_after_another() {
    let second = b"HEAD /b HTTP/1.1\r\nHost: h\r\n\r\n";
    let buf = [GET, second.as_slice(), b"GET /c"].concat();
    let mut parser = HeadParser::new(Limits::default());
    let first_len = parser.parse(&buf).unwrap().unwrap().len;
    assert_eq!(first_len, GET.len());
    let rest = &buf[first_len..];
    let head = parser.parse(rest).unwrap().unwrap();
    assert_eq!((head.str(rest, &head.target), head.len, head.is_head), ("/b", second.len(), true));
    assert_eq!(parser.parse(&rest[second.len()..]), Ok(None));
}

#[test]
fn keep_alive_follows_the_version_and_connection_options() {
    let keep_alive = |buf: &[u8]| parse_ok(buf).keep_alive;
    assert!(keep_alive(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
    assert!(!keep_alive(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"));
    assert!(!keep_alive(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Keep-Alive, CLOSE\r\n\r\n"));
    assert!(keep_alive(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\n\r\n"));
    assert!(!keep_alive(b"GET / HTTP/1.0\r\n\r\n"));
    assert!(keep_alive(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
    assert!(keep_alive(b"GET / HTTP/1.0\r\nConnection: te, keep-alive\r\n\r\n"));
    assert!(!keep_alive(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n"));
}

#[test]
fn http_1_0_needs_no_host() {
    let head = parse_ok(b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(head.minor_version, 0);
}

#[test]
fn expect_100_continue_is_seen_on_1_1_only() {
    assert!(parse_ok(&request_with("Expect: 100-Continue\r\nContent-Length: 5\r\n")).expect_continue);
    assert!(!parse_ok(&request_with("Expect: something-else\r\n")).expect_continue);
    assert!(!parse_ok(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n").expect_continue);
}

#[test]
fn head_method_is_flagged() {
    assert!(parse_ok(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n").is_head);
    assert!(!parse_ok(b"head / HTTP/1.1\r\nHost: h\r\n\r\n").is_head, "methods are case-sensitive");
}

#[test]
fn body_framing_comes_from_content_length_or_chunked() {
    assert_eq!(parse_ok(&request_with("Content-Length: 42\r\n")).body, BodyKind::Length(42));
    assert_eq!(parse_ok(&request_with("Content-Length: 007\r\n")).body, BodyKind::Length(7));
    assert_eq!(parse_ok(&request_with("Content-Length: 5, 5\r\n")).body, BodyKind::Length(5));
    assert_eq!(parse_ok(&request_with("Content-Length: 5\r\ncontent-length: 5\r\n")).body, BodyKind::Length(5));
    assert_eq!(parse_ok(&request_with("Transfer-Encoding: Chunked\r\n")).body, BodyKind::Chunked);
    assert_eq!(parse_ok(&request_with("Transfer-Encoding: ,chunked,\r\n")).body, BodyKind::Chunked);
}

#[test]
fn target_forms() {
    assert_eq!(parse_ok(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n").target, 8..9);
    parse_ok(b"GET http://example.com/a HTTP/1.1\r\nHost: example.com\r\n\r\n");
    parse_ok(b"GET HTTPS://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n");
    assert_eq!(status_of(b"GET * HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    assert_eq!(status_of(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n"), 400);
    assert_eq!(status_of(b"GET index.html HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    assert_eq!(status_of(b"GET ftp://example.com/ HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
}

#[test]
fn malformed_syntax_is_400() {
    for buf in [
        b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n".as_slice(),
        b"GET /\r\nHost: h\r\n\r\n",
        b" / HTTP/1.1\r\nHost: h\r\n\r\n",
        b"G(T / HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : h\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nX-Folded: a\r\n b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nNo-Colon\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\x01\r\n\r\n",
        b"GET / HTTP/1.1\rHost: h\r\n\r\n",
        b"GET / FOO/1.1\r\nHost: h\r\n\r\n",
        b"GET / HTTP/1.1x\r\nHost: h\r\n\r\n",
        b"GET / HTTP/10.0\r\nHost: h\r\n\r\n",
    ] {
        assert_eq!(status_of(buf), 400, "{:?}", String::from_utf8_lossy(buf));
    }
}

#[test]
fn header_value_not_utf8_is_400() {
    assert_eq!(status_of(b"GET / HTTP/1.1\r\nHost: h\r\nX-Name: caf\xe9\r\n\r\n"), 400);
    assert_eq!(parse_ok("GET / HTTP/1.1\r\nHost: h\r\nX-Name: café\r\n\r\n".as_bytes()).headers.len(), 2);
}

#[test]
fn unsupported_version_is_505() {
    assert_eq!(status_of(b"GET / HTTP/2.0\r\nHost: h\r\n\r\n"), 505);
    assert_eq!(status_of(b"GET / HTTP/1.2\r\nHost: h\r\n\r\n"), 505);
    assert_eq!(status_of(b"GET / HTTP/0.9\r\n\r\n"), 505);
    // Detected before the line is complete.
    assert_eq!(status_of(b"GET / HTTP/3"), 505);
}

#[test]
fn http_1_1_needs_exactly_one_host() {
    assert_eq!(status_of(b"GET / HTTP/1.1\r\n\r\n"), 400);
    assert_eq!(status_of(b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"), 400);
    assert_eq!(status_of(b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n"), 400);
}

#[test]
fn ambiguous_content_length_is_400() {
    for extra in [
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        "Content-Length: 12a\r\n",
        "Content-Length: +5\r\n",
        "Content-Length: -1\r\n",
        "Content-Length: 0x10\r\n",
        "Content-Length: 1 2\r\n",
        "Content-Length:\r\n",
        "Content-Length: 5,\r\n",
        "Content-Length: 5, 6\r\n",
        "Content-Length: 5\r\nContent-Length: 6\r\n",
    ] {
        assert_eq!(status_of(&request_with(extra)), 400, "{extra:?}");
    }
}

#[test]
fn transfer_codings_other_than_chunked_are_501() {
    for extra in [
        "Transfer-Encoding: gzip, chunked\r\n",
        "Transfer-Encoding: chunked, gzip\r\n",
        "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: identity\r\n",
        "Transfer-Encoding: chunked;q=1\r\n",
    ] {
        assert_eq!(status_of(&request_with(extra)), 501, "{extra:?}");
    }
}

#[test]
fn malformed_transfer_encoding_is_400() {
    assert_eq!(status_of(&request_with("Transfer-Encoding: chunked, chunked\r\n")), 400);
    assert_eq!(status_of(&request_with("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n")), 400);
    assert_eq!(status_of(&request_with("Transfer-Encoding:\r\n")), 400);
    assert_eq!(status_of(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), 400);
}

#[test]
fn content_length_is_413_one_over_the_limit() {
    let limits = Limits { max_body: 100, ..Limits::default() };
    let mut parser = HeadParser::new(limits);
    let at = request_with("Content-Length: 100\r\n");
    assert_eq!(parser.parse(&at).unwrap().unwrap().body, BodyKind::Length(100));
    assert_eq!(parser.parse(&request_with("Content-Length: 101\r\n")).unwrap_err().status, 413);
    let huge = request_with("Content-Length: 99999999999999999999999999\r\n");
    assert_eq!(parser.parse(&huge).unwrap_err().status, 413);
}

#[test]
fn head_is_431_one_byte_over_max_head() {
    let max_head = GET.len();
    let mut parser = HeadParser::new(Limits { max_head, ..Limits::default() });
    assert_eq!(parser.parse(GET).unwrap().unwrap().len, max_head);
    // Whatever follows a head that fits does not count.
    assert!(parser.parse(&[GET, b"GET / HTTP/1.1\r\n"].concat()).unwrap().is_some());
    let longer = [b"\r\n", GET].concat();
    assert_eq!(parser.parse(&longer).unwrap_err().status, 431);
    // Incomplete: read more while under the limit, refuse at it.
    assert_eq!(parser.parse(&GET[..max_head - 1]), Ok(None));
    let cut = [&GET[..GET.len() - 2], b"X-"].concat();
    assert_eq!(parser.parse(&cut).unwrap_err().status, 431);
}

#[test]
fn endless_empty_lines_hit_the_head_limit() {
    let mut parser = HeadParser::new(Limits { max_head: 64, ..Limits::default() });
    assert_eq!(parser.parse(&b"\r\n".repeat(31)), Ok(None));
    assert_eq!(parser.parse(&b"\r\n".repeat(32)).unwrap_err().status, 431);
}

#[test]
fn header_count_is_431_one_over_max_headers() {
    let mut parser = HeadParser::new(Limits { max_headers: 3, ..Limits::default() });
    let three = request_with("A: 1\r\nB: 2\r\n");
    assert_eq!(parser.parse(&three).unwrap().unwrap().headers.len(), 3);
    assert_eq!(parser.parse(&request_with("A: 1\r\nB: 2\r\nC: 3\r\n")).unwrap_err().status, 431);
}

#[test]
fn max_headers_above_the_slots_acts_as_the_slots() {
    let mut parser = HeadParser::new(Limits { max_headers: 10_000, ..Limits::default() });
    let fields = |n: usize| (1..n).map(|i| format!("X-{i}: v\r\n")).collect::<String>();
    assert!(parser.parse(&request_with(&fields(HEADER_SLOTS))).unwrap().is_some());
    assert_eq!(parser.parse(&request_with(&fields(HEADER_SLOTS + 1))).unwrap_err().status, 431);
}

#[test]
fn parser_reuses_its_header_vec() {
    let mut parser = HeadParser::new(Limits::default());
    let capacity = parser.parse(&request_with("A: 1\r\nB: 2\r\n")).unwrap().unwrap().headers.capacity();
    let head = parser.parse(GET).unwrap().unwrap();
    assert_eq!((head.headers.len(), head.headers.capacity()), (3, capacity));
}

#[test]
fn error_response_bytes() {
    let mut out = Vec::new();
    HttpError::new(431, "too many header fields").write_response(&mut out, b"Sun, 06 Nov 1994 08:49:37 GMT");
    let expected = "HTTP/1.1 431 Request Header Fields Too Large\r\n\
        Content-Type: text/plain; charset=utf-8\r\n\
        Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
        Content-Length: 23\r\n\
        Connection: close\r\n\
        \r\n\
        too many header fields\n";
    assert_eq!(String::from_utf8(out).unwrap(), expected);
}

// ---- body decoding ----

fn limits(max_body: u64, max_head: usize) -> Limits {
    Limits { max_head, max_headers: 64, max_body }
}

/// Feeds `pieces` as a server would: the buffer grows by one piece,
/// consumed bytes are removed. Returns the body and the bytes left over.
fn decode_pieces(kind: BodyKind, limits: &Limits, pieces: &[&[u8]]) -> Result<(Vec<u8>, Vec<u8>), HttpError> {
    let mut decoder = BodyDecoder::new(kind, limits);
    let (mut buffer, mut body) = (Vec::new(), Vec::new());
    for piece in pieces {
        buffer.extend_from_slice(piece);
        loop {
            let (consumed, data) = decoder.decode(&buffer)?;
            assert!(consumed <= buffer.len() && data.len() <= consumed);
            body.extend_from_slice(data);
            buffer.drain(..consumed);
            if consumed == 0 {
                break;
            }
        }
        assert!(decoder.is_done() || buffer.is_empty(), "framing bytes left unconsumed");
    }
    assert_eq!(decoder.received(), body.len() as u64);
    if !decoder.is_done() {
        return Err(HttpError::new(0, "incomplete"));
    }
    Ok((body, buffer))
}

/// The same input split at every position, at every pair of positions,
/// and byte by byte, must decode the same.
fn decode_every_split(kind: BodyKind, limits: &Limits, input: &[u8]) -> Result<(Vec<u8>, Vec<u8>), HttpError> {
    let whole = decode_pieces(kind, limits, &[input]);
    for i in 0..=input.len() {
        assert_eq!(decode_pieces(kind, limits, &[&input[..i], &input[i..]]), whole, "split at {i}");
        for j in i..=input.len() {
            let pieces = [&input[..i], &input[i..j], &input[j..]];
            assert_eq!(decode_pieces(kind, limits, &pieces), whole, "split at {i} and {j}");
        }
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(decode_pieces(kind, limits, &bytes), whole, "byte by byte");
    whole
}

fn ok(body: &[u8], rest: &[u8]) -> Result<(Vec<u8>, Vec<u8>), HttpError> {
    Ok((body.to_vec(), rest.to_vec()))
}

#[test]
fn content_length_body_stops_at_its_length() {
    let limits = Limits::default();
    let decoded = decode_every_split(BodyKind::Length(11), &limits, b"hello worldGET / HTTP/1.1\r\n");
    assert_eq!(decoded, ok(b"hello world", b"GET / HTTP/1.1\r\n"));
}

#[test]
fn zero_length_body_is_done_at_once() {
    let mut decoder = BodyDecoder::new(BodyKind::Length(0), &Limits::default());
    assert!(decoder.is_done());
    assert_eq!(decoder.decode(b"GET"), Ok((0, b"".as_slice())));
}

#[test]
fn decode_returns_one_run_that_is_a_sub_slice_of_the_input() {
    let input = b"4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n";
    let mut decoder = BodyDecoder::new(BodyKind::Chunked, &Limits::default());
    let (consumed, data) = decoder.decode(input).unwrap();
    assert_eq!((consumed, data), (7, b"Wiki".as_slice()));
    assert!(std::ptr::eq(data, &input[3..7]));
    assert_eq!(decoder.decode(&input[7..]).unwrap(), (10, b"pedia".as_slice()));
    assert_eq!(decoder.decode(&input[17..]).unwrap(), (7, b"".as_slice()));
    assert!(decoder.is_done());
    assert_eq!(decoder.received(), 9);
}

#[test]
fn chunked_body_with_extensions_and_trailers() {
    let input = b"4;name=value\r\nWiki\r\n5 ; a ; b=\"x;y\"\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n\
        000\r\nExpires: never\r\nX-Trailer:\r\n\r\nNEXT";
    let decoded = decode_every_split(BodyKind::Chunked, &Limits::default(), input);
    assert_eq!(decoded, ok(b"Wikipedia in\r\n\r\nchunks.", b"NEXT"));
}

#[test]
fn empty_chunked_body() {
    assert_eq!(decode_every_split(BodyKind::Chunked, &Limits::default(), b"0\r\n\r\n"), ok(b"", b""));
}

#[test]
fn chunked_body_exactly_at_max_body_and_one_over() {
    let input = b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
    assert_eq!(decode_every_split(BodyKind::Chunked, &limits(5, 1024), input), ok(b"abcde", b""));
    let over = decode_every_split(BodyKind::Chunked, &limits(4, 1024), input);
    assert_eq!(over.unwrap_err().status, 413);
}

#[test]
fn chunk_size_overflow_is_413() {
    let input = b"10000000000000000\r\n";
    assert_eq!(decode_pieces(BodyKind::Chunked, &limits(u64::MAX, 1024), &[input]).unwrap_err().status, 413);
}

#[test]
fn chunk_size_digits_are_bounded() {
    let at = format!("{}1\r\nx\r\n0\r\n\r\n", "0".repeat(63));
    assert_eq!(decode_pieces(BodyKind::Chunked, &Limits::default(), &[at.as_bytes()]), ok(b"x", b""));
    let over = format!("{}1\r\nx\r\n0\r\n\r\n", "0".repeat(64));
    assert_eq!(decode_pieces(BodyKind::Chunked, &Limits::default(), &[over.as_bytes()]).unwrap_err().status, 400);
}

#[test]
fn malformed_chunked_framing_is_400() {
    for input in [
        b"\r\n".as_slice(),
        b"x\r\n",
        b";ext\r\n",
        b" 4\r\nWiki\r\n0\r\n\r\n",
        b"4\nWiki\r\n0\r\n\r\n",
        b"4\r\nWikiX\r\n0\r\n\r\n",
        b"4\r\nWiki\n0\r\n\r\n",
        b"4\r\nWiki\r\n0\n\r\n",
        b"4\r\nWiki\r\n0\r\n\n",
        b"4 x\r\nWiki\r\n0\r\n\r\n",
        b"4;a\x01\r\nWiki\r\n0\r\n\r\n",
        b"4;a\nWiki\r\n0\r\n\r\n",
        b"4\r\r\nWiki\r\n0\r\n\r\n",
        b"-4\r\nWiki\r\n0\r\n\r\n",
        b"0\r\nNo-Colon\r\n\r\n",
        b"0\r\n Folded: x\r\n\r\n",
        b"0\r\nBad Name: x\r\n\r\n",
        b"0\r\nX: a\x00b\r\n\r\n",
        b"0\r\nX: a\rb\r\n\r\n",
    ] {
        let result = decode_pieces(BodyKind::Chunked, &Limits::default(), &[input]);
        assert_eq!(result.map_err(|e| e.status), Err(400), "{:?}", String::from_utf8_lossy(input));
    }
}

#[test]
fn errors_are_sticky() {
    let mut decoder = BodyDecoder::new(BodyKind::Chunked, &Limits::default());
    let error = decoder.decode(b"zz").unwrap_err();
    assert_eq!(decoder.decode(b"4\r\nWiki\r\n"), Err(error));
    assert!(!decoder.is_done());
}

#[test]
fn content_length_over_max_body_fails_in_the_decoder_too() {
    let mut decoder = BodyDecoder::new(BodyKind::Length(6), &limits(5, 1024));
    assert_eq!(decoder.decode(b"abcdef").unwrap_err().status, 413);
}

#[test]
fn trailers_are_bounded_by_max_head() {
    // Budget counts every trailer byte, the final CRLF included.
    let input = b"0\r\nA: 1\r\n\r\n";
    let trailer_bytes = input.len() - 3;
    assert_eq!(decode_pieces(BodyKind::Chunked, &limits(10, trailer_bytes), &[input]), ok(b"", b""));
    let over = decode_pieces(BodyKind::Chunked, &limits(10, trailer_bytes - 1), &[input]);
    assert_eq!(over.unwrap_err().status, 431);
}

#[test]
fn chunk_extensions_are_bounded_by_max_head_over_the_whole_body() {
    // Each ";e\r" after the size counts 3 bytes: 2 chunks x 3 = 6.
    let input = b"1;e\r\na\r\n1;e\r\nb\r\n0\r\n\r\n";
    assert_eq!(decode_pieces(BodyKind::Chunked, &limits(10, 6 + 2), &[input]), ok(b"ab", b""));
    let over = decode_pieces(BodyKind::Chunked, &limits(10, 6 + 1), &[input]);
    assert_eq!(over.unwrap_err().status, 431);
}

// ---- responses ----

const DATE: &[u8] = b"Sun, 06 Nov 1994 08:49:37 GMT";

fn head_bytes(status: u16, headers: &[(&str, &str)], framing: Framing, close: bool) -> String {
    let mut out = b"leading ".to_vec();
    write_head(&mut out, status, headers.iter().copied(), framing, close, DATE);
    let text = String::from_utf8(out).unwrap();
    text.strip_prefix("leading ").expect("write_head appends").to_string()
}

#[test]
fn response_head_with_content_length() {
    let text = head_bytes(200, &[("Content-Type", "text/plain"), ("X-A", "b")], Framing::Length(12), false);
    assert_eq!(
        text,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-A: b\r\n\
         Date: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: 12\r\n\r\n"
    );
}

#[test]
fn response_head_chunked_and_closing() {
    let text = head_bytes(404, &[], Framing::Chunked, true);
    assert_eq!(
        text,
        "HTTP/1.1 404 Not Found\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
}

#[test]
fn response_head_until_close_says_close() {
    let text = head_bytes(200, &[], Framing::UntilClose, false);
    assert_eq!(text, "HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nConnection: close\r\n\r\n");
}

#[test]
fn response_head_without_body_has_no_framing() {
    for status in [101, 204, 304] {
        let text = head_bytes(status, &[], Framing::Length(5), false);
        let expected =
            format!("HTTP/1.1 {status} {}\r\nDate: {}\r\n\r\n", reason_phrase(status), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(text, expected);
        assert!(!head_bytes(status, &[], Framing::Chunked, false).contains("Transfer-Encoding"));
        assert!(!head_bytes(status, &[], Framing::UntilClose, false).contains("Connection"));
    }
    assert_eq!(head_bytes(299, &[], Framing::Length(0), false).lines().next(), Some("HTTP/1.1 299 "));
    assert!(
        head_bytes(200, &[], Framing::Length(u64::MAX), false).contains("Content-Length: 18446744073709551615\r\n")
    );
}

#[test]
fn reason_phrases_and_bodies() {
    assert_eq!(reason_phrase(200), "OK");
    assert_eq!(reason_phrase(413), "Content Too Large");
    assert_eq!(reason_phrase(505), "HTTP Version Not Supported");
    assert_eq!(reason_phrase(299), "");
    assert!(status_allows_body(200) && status_allows_body(404) && status_allows_body(205));
    assert!(!status_allows_body(100) && !status_allows_body(199) && !status_allows_body(204));
    assert!(!status_allows_body(304));
}

#[test]
fn check_header_refuses_bad_names_values_and_host_owned_fields() {
    assert_eq!(check_header("Content-Type", "text/html; charset=utf-8"), Ok(()));
    assert_eq!(check_header("x-weird!#$%&'*+-.^_`|~", "\tany\u{7f} text é"), Ok(()));
    for name in ["", "Bad Name", "Bad:Name", "Bad\rName", "Naïve", "(x)"] {
        assert_eq!(check_header(name, "v"), Err("header name is not a token"), "{name:?}");
    }
    for value in ["a\r\nSet-Cookie: x", "a\nb", "a\rb", "a\0b"] {
        assert_eq!(check_header("X", value), Err("header value contains CR, LF or NUL"), "{value:?}");
    }
    for name in ["Content-Length", "transfer-encoding", "CONNECTION", "Upgrade", "date", "Keep-Alive"] {
        assert_eq!(check_header(name, "x"), Err("header is set by the host"), "{name:?}");
    }
}

#[test]
fn chunk_headers() {
    let mut buf = [0; 18];
    assert_eq!(chunk_header(&mut buf, 0), b"0\r\n");
    assert_eq!(chunk_header(&mut buf, 1), b"1\r\n");
    assert_eq!(chunk_header(&mut buf, 0xfff), b"fff\r\n");
    assert_eq!(chunk_header(&mut buf, 0x1000), b"1000\r\n");
    assert_eq!(chunk_header(&mut buf, usize::MAX), b"ffffffffffffffff\r\n");
}

#[test]
fn constants() {
    assert_eq!(LAST_CHUNK, b"0\r\n\r\n");
    assert_eq!(CHUNK_END, b"\r\n");
    assert_eq!(CONTINUE, b"HTTP/1.1 100 Continue\r\n\r\n");
}

#[test]
fn a_chunked_response_decodes_back() {
    let mut body = Vec::new();
    let mut buf = [0; 18];
    for piece in [b"Wiki".as_slice(), b"pedia in chunks"] {
        body.extend_from_slice(chunk_header(&mut buf, piece.len()));
        body.extend_from_slice(piece);
        body.extend_from_slice(CHUNK_END);
    }
    body.extend_from_slice(LAST_CHUNK);
    let decoded = decode_pieces(BodyKind::Chunked, &Limits::default(), &[&body]);
    assert_eq!(decoded, ok(b"Wikipedia in chunks", b""));
}

fn date_at(seconds: u64) -> String {
    String::from_utf8(http_date(UNIX_EPOCH + Duration::from_secs(seconds)).to_vec()).unwrap()
}

#[test]
fn http_dates() {
    assert_eq!(date_at(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
    assert_eq!(date_at(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    assert_eq!(date_at(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
    assert_eq!(date_at(951_868_799), "Tue, 29 Feb 2000 23:59:59 GMT");
    assert_eq!(date_at(1_709_251_199), "Thu, 29 Feb 2024 23:59:59 GMT");
    assert_eq!(date_at(4_107_542_400), "Mon, 01 Mar 2100 00:00:00 GMT");
    assert_eq!(date_at(253_402_300_799), "Fri, 31 Dec 9999 23:59:59 GMT");
    assert_eq!(date_at(u64::MAX / 2), "Fri, 31 Dec 9999 23:59:59 GMT");
    assert_eq!(http_date(UNIX_EPOCH - Duration::from_secs(1)), *b"Thu, 01 Jan 1970 00:00:00 GMT");
}

#[test]
fn http_date_agrees_with_day_by_day_counting() {
    // Every day from 1970 to 2100 against a plain calendar walk.
    let (mut year, mut month, mut day) = (1970u64, 1u64, 1u64);
    for days in 0..47_482u64 {
        assert_eq!(civil_from_days(days), (year, month, day), "day {days}");
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
        let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        day += 1;
        if day > month_days[(month - 1) as usize] {
            (day, month) = (1, month + 1);
            if month > 12 {
                (month, year) = (1, year + 1);
            }
        }
    }
}
