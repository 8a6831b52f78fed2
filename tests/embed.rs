//! wasmloop inside a foreign loop: `examples/embed-tokio`, a tokio
//! `current_thread` application with its own HTTP endpoint, runs the echo
//! guest on the same thread through `Host::backend_fd`/`next_timeout`/
//! `run_once`. Both answer, and both ran on one thread.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{self, IO_TIMEOUT, bounded, run_bounded, workspace_root};

#[test]
fn the_apps_endpoint_and_a_guest_answer_from_one_thread() {
    bounded(Duration::from_secs(600), || {
        let guest = support::guest("echo");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(&cargo);
        build.current_dir(workspace_root()).args(["build", "-p", "embed-tokio"]);
        let out = run_bounded(build, Duration::from_secs(500)).expect("cargo runs");
        assert!(out.status.success(), "building embed-tokio failed:\n{}", out.stderr);
        let target =
            std::env::var_os("CARGO_TARGET_DIR").map_or(workspace_root().join("target"), |d| workspace_root().join(d));

        let mut app = Command::new(target.join("debug/embed-tokio"))
            .arg(&guest)
            .env("XDG_CACHE_HOME", support::shared_cache_home())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start embed-tokio");
        let mut lines = BufReader::new(app.stderr.take().unwrap()).lines();
        let mut addr = |what: &str| -> SocketAddr {
            let line = lines.next().expect("a line").expect("stderr");
            let rest = line.strip_prefix(what).unwrap_or_else(|| panic!("expected `{what}...`, got {line:?}"));
            rest.trim().parse().expect("an address")
        };
        let guest_addr = addr("guest listening on");
        let app_addr = addr("app listening on");

        // The guest echoes.
        let mut echo = TcpStream::connect(guest_addr).unwrap();
        echo.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        for i in 0..50 {
            let message = format!("message {i}\n");
            echo.write_all(message.as_bytes()).unwrap();
            let mut back = vec![0; message.len()];
            echo.read_exact(&mut back).unwrap();
            assert_eq!(back, message.as_bytes());
        }

        // The app answers, and says both ran on its one thread.
        let mut http = TcpStream::connect(app_addr).unwrap();
        http.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        http.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut answer = String::new();
        http.read_to_string(&mut answer).unwrap();
        let body = answer.split("\r\n\r\n").nth(1).expect("a body");
        let words: Vec<&str> = body.split_whitespace().collect();
        assert_eq!(words.len(), 4, "{body:?}");
        let (app_thread, loop_thread) = (words[1], words[3]);
        assert_eq!(loop_thread, format!("Some({app_thread})"), "guest turns ran on another thread: {body:?}");

        let _ = app.kill();
        let _ = app.wait();
    });
}
