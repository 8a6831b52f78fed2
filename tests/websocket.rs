//! WebSocket in the host (`--listen-ws`), with the `ws-chat` guest: a real
//! client library (Python `websockets`, tests/clients/ws_chat.py) for
//! broadcast, fragmented and large messages, ping/pong and close codes, and
//! raw sockets for what a library will not send: unmasked frames, invalid
//! UTF-8, oversized frames, a bad handshake.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::support::{Host, IO_TIMEOUT, bounded, run_bounded, workspace_root};

fn chat() -> Host {
    Host::command("ws_chat").listen_flag("--listen-ws").args(["--ws-max-message", "1048576"]).spawn()
}

/// The Python `websockets` package, installed from PyPI into the target
/// directory on first use.
fn python_websockets() -> PathBuf {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = workspace_root().join("target/lang-tools/py-websockets");
        if dir.join("websockets").is_dir() {
            return Ok(dir);
        }
        let mut cmd = Command::new("python3");
        cmd.args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target"])
            .arg(&dir)
            .arg("websockets==15.0.1");
        let out = run_bounded(cmd, Duration::from_secs(300)).map_err(|e| format!("cannot run pip: {e}"))?;
        if !out.status.success() {
            return Err(format!("pip install websockets failed: {}", out.stderr));
        }
        Ok(dir)
    });
    dir.clone().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn python_websockets_client_chats_with_fragments_large_messages_pings_and_close_codes() {
    bounded(Duration::from_secs(180), || {
        let host = chat();
        let mut cmd = Command::new("python3");
        cmd.arg(workspace_root().join("tests/clients/ws_chat.py"))
            .arg(format!("ws://{}/", host.addr()))
            .env("PYTHONPATH", python_websockets());
        let out = run_bounded(cmd, Duration::from_secs(120)).expect("python3 runs");
        assert!(out.status.success(), "the client failed:\n{}\n{}\nhost log:\n{}", out.stdout, out.stderr, host.logs());
        for step in [
            "broadcast",
            "fragmented text",
            "large binary",
            "ordered",
            "ping",
            "close 4001",
            "server close 1000",
            "too big 1009",
        ] {
            assert!(out.stdout.contains(&format!("ok {step}")), "step `{step}` missing:\n{}", out.stdout);
        }
        host.assert_no_errors();
    });
}

/// A WebSocket opened by hand.
struct Raw {
    stream: TcpStream,
}

impl Raw {
    fn open(addr: SocketAddr) -> Raw {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream
            .write_all(
                b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                  Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            )
            .unwrap();
        let head = read_head(&mut stream);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "accept key (RFC 6455 §1.3): {head}");
        Raw { stream }
    }

    fn send_frame(&mut self, first: u8, payload: &[u8], mask: bool) {
        let mut frame = vec![first];
        let mask_bit = if mask { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => frame.push(mask_bit | n as u8),
            n if n < 65536 => {
                frame.push(mask_bit | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(mask_bit | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let key = [0x37, 0xfa, 0x21, 0x3d];
        if mask {
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            frame.extend_from_slice(payload);
        }
        // The server may close before taking it all; that is fine.
        let _ = self.stream.write_all(&frame);
    }

    /// The next frame from the server: (opcode, payload).
    fn frame(&mut self) -> (u8, Vec<u8>) {
        let mut head = [0; 2];
        self.stream.read_exact(&mut head).expect("a frame from the server");
        assert_eq!(head[1] & 0x80, 0, "server frames are not masked");
        let len = match head[1] & 0x7f {
            126 => {
                let mut n = [0; 2];
                self.stream.read_exact(&mut n).unwrap();
                u16::from_be_bytes(n) as usize
            }
            127 => {
                let mut n = [0; 8];
                self.stream.read_exact(&mut n).unwrap();
                u64::from_be_bytes(n) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0; len];
        self.stream.read_exact(&mut payload).unwrap();
        (head[0] & 0x0f, payload)
    }

    /// Expects a close frame with `code`, then the end of the stream.
    fn expect_close(&mut self, code: u16) {
        let (opcode, payload) = self.frame();
        assert_eq!(opcode, 8, "expected a close frame");
        assert!(payload.len() >= 2, "close frame without a code");
        assert_eq!(
            u16::from_be_bytes([payload[0], payload[1]]),
            code,
            "reason: {}",
            String::from_utf8_lossy(&payload[2..])
        );
        let mut rest = Vec::new();
        let _ = self.stream.read_to_end(&mut rest);
    }
}

fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).expect("reading the handshake answer") == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[test]
fn protocol_violations_get_the_right_close_code() {
    bounded(Duration::from_secs(120), || {
        let host = Host::command("ws_chat").listen_flag("--listen-ws").args(["--ws-max-message", "4096"]).spawn();
        let addr = host.addr();

        // A masked ping is answered with a pong carrying the same payload.
        let mut ws = Raw::open(addr);
        ws.send_frame(0x89, b"ping?", true);
        assert_eq!(ws.frame(), (0xA, b"ping?".to_vec()));

        // Client frames must be masked: 1002.
        ws.send_frame(0x81, b"hello", false);
        ws.expect_close(1002);

        // Text must be UTF-8: 1007.
        let mut ws = Raw::open(addr);
        ws.send_frame(0x81, &[0x68, 0xff, 0xfe], true);
        ws.expect_close(1007);

        // Over --ws-max-message: 1009.
        let mut ws = Raw::open(addr);
        ws.send_frame(0x82, &vec![7; 5000], true);
        ws.expect_close(1009);

        // Reserved bits without an extension: 1002.
        let mut ws = Raw::open(addr);
        ws.send_frame(0xC1, b"x", true);
        ws.expect_close(1002);

        // The peer's close is answered with the same code.
        let mut ws = Raw::open(addr);
        let mut payload = 3001u16.to_be_bytes().to_vec();
        payload.extend_from_slice(b"bye now");
        ws.send_frame(0x88, &payload, true);
        ws.expect_close(3001);
        host.assert_no_errors();
    });
}

#[test]
fn a_bad_handshake_is_refused_and_a_plain_request_is_served() {
    bounded(Duration::from_secs(120), || {
        let host = chat();
        let mut stream = TcpStream::connect(host.addr()).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream
            .write_all(
                b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                  Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
            )
            .unwrap();
        let head = read_head(&mut stream);
        assert!(head.starts_with("HTTP/1.1 426"), "{head}");
        assert!(head.contains("Sec-WebSocket-Version: 13"), "{head}");

        let mut stream = TcpStream::connect(host.addr()).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    });
}
