//! `echo-tokio`: the echo benchmark's tokio contender. One thread (a
//! `current_thread` runtime), a task per connection that reads into a
//! 64 KiB buffer and `write_all`s it back: the idiomatic single-threaded
//! async Rust echo server.
//!
//! `echo-tokio [--listen ADDR]` prints `listening on ADDR` to stderr.

use std::net::SocketAddr;

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Bytes read per `read` call (as `host` and `echo-native`).
const READ_CHUNK: usize = 64 * 1024;
/// Listen backlog (as `host` and `echo-native`).
const BACKLOG: u32 = 4096;

#[derive(Parser)]
#[command(name = "echo-tokio", about = "Echo server on a tokio current_thread runtime")]
struct Args {
    /// Address to accept connections on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    runtime.block_on(serve(args.listen))
}

async fn serve(address: SocketAddr) -> anyhow::Result<()> {
    let socket = if address.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    let listener = socket.listen(BACKLOG)?;
    eprintln!("listening on {}", listener.local_addr()?);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(echo(stream));
            }
            // Out of descriptors and the like: the benchmark sizes its limits
            // so this does not happen; say so and keep serving.
            Err(e) => eprintln!("accept failed: {e}"),
        }
    }
}

async fn echo(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0; READ_CHUNK];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}
