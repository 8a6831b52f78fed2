//! The chat guest written in JavaScript (`examples/js-chat`, built by its
//! `build.sh` with componentize-js) on the real host: the same chat
//! conformance checks as the Rust chat guest, many clients at once, and a
//! large volume of lines relayed byte for byte.
//!
//! The component embeds a JavaScript engine (~12 MB), which a debug host
//! takes ~40 s to compile: about what the harness allows a host to become
//! ready, and more when several tests compile it at once. So [`js_chat`]
//! compiles it once per process with `host check` (which must say it fits),
//! filling the compiled cache the hosts share; they then start in
//! milliseconds.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{
    self, Host, LineReader, Writer, alone, assert_same_bytes, bounded, conformance, example_guest, random_bytes,
};

/// `target/examples/js-chat.wasm`, built by its `build.sh`, checked with
/// `host check` and compiled into the hosts' shared cache (once per process;
/// other tests wait for it).
fn js_chat() -> PathBuf {
    static CHECKED: OnceLock<PathBuf> = OnceLock::new();
    CHECKED
        .get_or_init(|| {
            let module = example_guest("js-chat");
            let mut check = Command::new(support::HOST);
            check.arg("check").arg(&module).env("XDG_CACHE_HOME", support::shared_cache_home());
            let out = support::run_bounded(check, Duration::from_secs(600)).expect("cannot run `host check`");
            assert!(
                out.status.success() && out.stdout.contains("fits the wasmloop:handler world"),
                "`host check {}` does not accept it ({}):\n{}\n{}",
                module.display(),
                out.status,
                out.stdout,
                out.stderr
            );
            module
        })
        .clone()
}

#[test]
fn js_chat_broadcasts_each_line_to_every_other_client() {
    bounded(Duration::from_secs(900), || {
        let host = Host::command_for(js_chat()).spawn();
        conformance::chat_broadcast(&host);
        host.assert_no_errors();
    });
}

#[test]
fn js_chat_with_a_hundred_clients_relays_one_line_to_all_ninety_nine_others() {
    const CLIENTS: usize = 100;
    bounded(Duration::from_secs(900), || {
        support::raise_fd_limit(4 * CLIENTS as u64);
        let host = Host::command_for(js_chat()).spawn();
        let mut clients = conformance::chat_join(&host, CLIENTS);

        let start = Instant::now();
        clients[0].send("one line for the ninety-nine others");
        for (i, client) in clients.iter_mut().enumerate().skip(1) {
            assert_eq!(client.line(), "one line for the ninety-nine others", "what client {i} received");
        }
        eprintln!("one line reached {} clients in {:?}", CLIENTS - 1, start.elapsed());

        // The sender did not get its own line back: the next thing it reads
        // is someone else's.
        clients[1].send("and a reply");
        assert_eq!(clients[0].line(), "and a reply", "what the first sender received");
        host.assert_no_errors();
    });
}

#[test]
fn js_chat_relays_a_mebibyte_of_lines_byte_exact_to_each_other_client() {
    const VOLUME: usize = 1 << 20;
    bounded(Duration::from_secs(900), || {
        let host = Host::command_for(js_chat()).spawn();
        let clients = conformance::chat_join(&host, 3);
        let [sender, first, second] = <[LineReader; 3]>::try_from(clients).unwrap_or_else(|_| panic!("three clients"));
        let data = Arc::new(lines_of_random_bytes(VOLUME, 0x15_c4a7));

        // The others read while the sender writes, so no backlog builds up
        // in the host. (After `chat_join` no handshake bytes are left unread.)
        let start = Instant::now();
        let other = {
            let mut stream = second.stream().try_clone().unwrap();
            thread::spawn(move || support::read_exactly(&mut stream, VOLUME))
        };
        let writer = Writer::start(sender.stream(), data.clone(), false);
        let got = support::read_exactly(&mut first.stream().try_clone().unwrap(), VOLUME);
        let got_other = other.join().expect("the second reader");
        writer.join();
        eprintln!("1 MiB of lines relayed to 2 clients in {:?}", start.elapsed());
        assert_same_bytes(&got, &data, "what the first other client received");
        assert_same_bytes(&got_other, &data, "what the second other client received");
        host.assert_no_errors();
    });
}

#[test]
fn js_chat_relays_many_short_lines_within_the_callback_deadline() {
    // 64 KiB reads full of 16-byte lines: a guest making one host call per
    // line overran the default 50 ms callback deadline, trapped and was
    // restarted (its clients reset).
    const VOLUME: usize = 2 << 20;
    // The deadline is wall time: another test's load beside it would
    // measure the machine, not the guest.
    let _alone = alone();
    bounded(Duration::from_secs(900), || {
        let host = Host::command_for(js_chat()).spawn();
        let clients = conformance::chat_join(&host, 2);
        let [sender, reader] = <[LineReader; 2]>::try_from(clients).unwrap_or_else(|_| panic!("two clients"));
        let data: Arc<Vec<u8>> =
            Arc::new((0..VOLUME / 16).flat_map(|i| format!("{:015}\n", i * 7919).into_bytes()).collect());

        let start = Instant::now();
        let writer = Writer::start(sender.stream(), data.clone(), false);
        let got = support::read_exactly(&mut reader.stream().try_clone().unwrap(), VOLUME);
        writer.join();
        eprintln!("{} lines of 16 bytes relayed in {:?}", VOLUME / 16, start.elapsed());
        assert_same_bytes(&got, &data, "what the other client received");
        host.assert_no_errors();
    });
}

/// `len` random bytes cut into `\n`-terminated lines: mostly up to 4 KiB,
/// every 50th one 60 KiB (so lines span the host's 64 KiB reads), none over
/// the chat's 64 KiB limit. The bytes are anything but `\n`, including
/// invalid UTF-8: the chat must not touch them.
fn lines_of_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut data = random_bytes(len, seed);
    for byte in &mut data {
        if *byte == b'\n' {
            *byte = b'.';
        }
    }
    let lengths = random_bytes(len / 16, seed.rotate_left(17));
    let mut at = 0;
    for (i, &short) in lengths.iter().enumerate() {
        at += if i % 50 == 49 { 60 * 1024 } else { usize::from(short) * 16 };
        if at >= len - 1 {
            break;
        }
        data[at] = b'\n';
        at += 1;
    }
    data[len - 1] = b'\n';
    data
}
