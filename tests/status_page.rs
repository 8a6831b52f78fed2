//! The admin listener's status page (host/src/admin/status.html) in a real
//! browser: the host runs the echo guest with `--admin`, a client keeps
//! echoing over a few connections, and the system chromium, driven by
//! playwright-core (tests/clients/status_page.mjs), loads the page, waits
//! until its charts hold data, and takes a screenshot. This test then checks
//! in the decoded PNG that every chart canvas really has its line drawn.
//!
//! The first run installs Debian's chromium and playwright-core
//! (tests/clients/install-browser.sh); later runs reuse them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::support::{self, Host, alone, bounded, run_bounded, workspace_root};
use serde_json::Value;

/// Installing chromium with apt-get on a fresh machine, and playwright-core
/// with npm.
const INSTALL_LIMIT: Duration = Duration::from_secs(150);
/// Starting the browser, collecting at least 3 samples a second apart, the
/// screenshot.
const BROWSER_LIMIT: Duration = Duration::from_secs(90);
/// How long the page may take to fill its charts (inside BROWSER_LIMIT).
const PAGE_FILL_MS: u64 = 45_000;
/// Echo connections the client keeps busy.
const CONNECTIONS: usize = 3;

#[test]
fn status_page_in_chromium_shows_the_echo_guest_with_live_charts() {
    // Chromium keeps both cores busy while it starts and draws: with another
    // test's traffic beside it, the echo guest was once descheduled past its
    // 50 ms callback deadline (a trap, and a reset client).
    let _alone = alone();
    bounded(Duration::from_secs(240), || {
        let node_modules = install_browser();
        let host = Host::command("echo").args(["--admin", "127.0.0.1:0"]).spawn();
        let url = admin_url(&host);
        let traffic = Traffic::start(host.addr());

        let screenshot = workspace_root().join("target").join("status-page.png");
        let _ = std::fs::remove_file(&screenshot);
        let mut cmd = Command::new("node");
        cmd.arg(workspace_root().join("tests/clients/status_page.mjs"))
            .arg(&url)
            .arg(&screenshot)
            .arg("echo")
            .arg(PAGE_FILL_MS.to_string())
            .env("PLAYWRIGHT_NODE_MODULES", &node_modules);
        let out = run_bounded(cmd, BROWSER_LIMIT)
            .unwrap_or_else(|e| panic!("cannot run node tests/clients/status_page.mjs (is Node.js installed?): {e}"));
        let echoed = traffic.stop();
        assert!(
            out.status.success(),
            "the browser client failed ({}); screenshot of the failed state (if any): {}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            screenshot.display(),
            out.stdout,
            out.stderr
        );
        assert!(echoed > 0, "the echo client got nothing back");

        let line = out.stdout.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
        let report: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("the browser client printed no JSON ({e}):\n{}", out.stdout));
        assert_eq!(
            report["pid"].as_str(),
            Some(host.pid().to_string().as_str()),
            "the page shows another pid than the host's: {report}"
        );
        let guests: Vec<&str> = report["guests"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        assert_eq!(guests, ["echo"], "the guest table: {report}");
        let eps = report["eps"]["echo"].as_f64().unwrap_or(0.0);
        assert!(eps > 0.0, "echo's events/s on the page is {eps}, while a client was echoing: {report}");
        assert!(report["loops"].as_u64().unwrap_or(0) >= 1, "no event loop row on the page: {report}");

        let charts = report["charts"].as_array().cloned().unwrap_or_default();
        let mut kinds: Vec<&str> = charts.iter().filter_map(|c| c["kind"].as_str()).collect();
        kinds.sort_unstable();
        assert_eq!(kinds, ["events", "latency", "memory"], "one chart of each kind for echo: {report}");

        let image = Image::read(&screenshot);
        let mut failures = Vec::new();
        for chart in &charts {
            let id = chart["id"].as_str().unwrap_or("?");
            let colors: Vec<[u8; 3]> = chart["colors"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(|c| parse_color(c).unwrap_or_else(|| panic!("chart {id} has a bad colour {c:?}")))
                .collect();
            assert!(!colors.is_empty(), "chart {id} names no line colour: {chart}");
            let b = Rect::of(chart).unwrap_or_else(|| panic!("chart {id} has no bounding box: {chart}"));
            assert!(
                b.x1 <= image.width && b.y1 <= image.height && b.x1 > b.x0 + 50 && b.y1 > b.y0 + 50,
                "chart {id} at {b:?} is not a visible box inside the {}x{} screenshot",
                image.width,
                image.height
            );
            let ink = image.ink(&b, &colors);
            let width = b.x1 - b.x0;
            eprintln!("chart {id}: {} line pixels spanning {} of {width} columns", ink.pixels, ink.x_span());
            // A 2 px line across the chart is about 2 × width pixels; ask
            // for half a width, spread over half the chart.
            if ink.pixels < width / 2 || ink.x_span() < width / 2 {
                failures.push(format!(
                    "chart {id} ({} points) at {b:?}: {} pixels of its line colours {:?}, spanning {} of {width} \
                     columns",
                    chart["points"],
                    ink.pixels,
                    chart["colors"],
                    ink.x_span()
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "charts without a drawn line in {}:\n{}",
            screenshot.display(),
            failures.join("\n")
        );
        host.assert_no_errors();
    });
}

/// Runs tests/clients/install-browser.sh; returns playwright-core's
/// `node_modules` directory (its last line of output).
fn install_browser() -> PathBuf {
    let script = workspace_root().join("tests/clients/install-browser.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(&script).current_dir(workspace_root());
    let out = run_bounded(cmd, INSTALL_LIMIT).unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed ({}): it installs chromium (apt-get) and playwright-core (npm)\nstdout:\n{}\nstderr:\n{}",
        script.display(),
        out.status,
        out.stdout,
        out.stderr
    );
    let dir = PathBuf::from(out.stdout.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim());
    assert!(
        dir.join("playwright-core").is_dir(),
        "{} did not report a node_modules directory with playwright-core:\n{}",
        script.display(),
        out.stdout
    );
    dir
}

/// The URL in the host's `admin listening on http://127.0.0.1:PORT/` line.
fn admin_url(host: &Host) -> String {
    let addr = host.admin_addr();
    assert_eq!(addr.ip(), std::net::Ipv4Addr::LOCALHOST, "the admin address {addr} is not 127.0.0.1");
    format!("http://{addr}/")
}

/// A thread that echoes small messages over a few connections, round and
/// round, until stopped.
struct Traffic {
    stop: Arc<AtomicBool>,
    echoed: Arc<AtomicU64>,
    handle: JoinHandle<Result<(), String>>,
}

impl Traffic {
    fn start(addr: SocketAddr) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let echoed = Arc::new(AtomicU64::new(0));
        let handle = {
            let (stop, echoed) = (stop.clone(), echoed.clone());
            thread::Builder::new()
                .name("echo-traffic".into())
                .spawn(move || -> Result<(), String> {
                    let mut streams = Vec::new();
                    for i in 0..CONNECTIONS {
                        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
                            .map_err(|e| format!("connection {i}: connect: {e}"))?;
                        support::configure(&s);
                        streams.push(s);
                    }
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        for (i, s) in streams.iter_mut().enumerate() {
                            let message = format!("message {n} on connection {i}\n");
                            s.write_all(message.as_bytes()).map_err(|e| format!("connection {i}: write: {e}"))?;
                            let mut back = vec![0; message.len()];
                            s.read_exact(&mut back).map_err(|e| format!("connection {i}: read: {e}"))?;
                            if back != message.as_bytes() {
                                return Err(format!(
                                    "connection {i} sent {message:?}, got {:?}",
                                    String::from_utf8_lossy(&back)
                                ));
                            }
                            echoed.fetch_add(1, Ordering::Relaxed);
                            n += 1;
                        }
                        // Pacing (a few hundred messages a second), not waiting.
                        thread::sleep(Duration::from_millis(2));
                    }
                    Ok(())
                })
                .expect("cannot spawn the echo client")
        };
        Traffic { stop, echoed, handle }
    }

    /// Stops the client; returns how many messages came back. Panics if one
    /// did not come back intact.
    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        match self.handle.join() {
            Ok(Ok(())) => self.echoed.load(Ordering::Relaxed),
            Ok(Err(e)) => panic!("the echo client failed: {e}"),
            Err(payload) => std::panic::resume_unwind(payload),
        }
    }
}

/// `#rrggbb`.
fn parse_color(s: &str) -> Option<[u8; 3]> {
    let hex = s.trim().strip_prefix('#')?;
    if hex.len() != 6 {
        return None;
    }
    let byte = |i: usize| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok();
    Some([byte(0)?, byte(2)?, byte(4)?])
}

/// A box in screenshot pixels, shrunk to the pixels fully inside the
/// canvas: `x0..x1`, `y0..y1`.
#[derive(Debug)]
struct Rect {
    x0: usize,
    y0: usize,
    x1: usize,
    y1: usize,
}

impl Rect {
    fn of(chart: &Value) -> Option<Rect> {
        let (x, y, w, h) =
            (chart["x"].as_f64()?, chart["y"].as_f64()?, chart["width"].as_f64()?, chart["height"].as_f64()?);
        if x < 0.0 || y < 0.0 || w <= 0.0 || h <= 0.0 {
            return None;
        }
        Some(Rect {
            x0: x.ceil() as usize,
            y0: y.ceil() as usize,
            x1: (x + w).floor() as usize,
            y1: (y + h).floor() as usize,
        })
    }
}

/// The screenshot as 8-bit RGB.
struct Image {
    width: usize,
    height: usize,
    rgb: Vec<u8>,
}

/// Pixels of a chart's line colours.
struct Ink {
    pixels: usize,
    min_x: usize,
    max_x: usize,
}

impl Ink {
    fn x_span(&self) -> usize {
        if self.pixels == 0 { 0 } else { self.max_x - self.min_x + 1 }
    }
}

impl Image {
    fn read(path: &Path) -> Image {
        let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", path.display()));
        let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
        decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
        let mut reader = decoder.read_info().unwrap_or_else(|e| panic!("{} is not a PNG: {e}", path.display()));
        let mut buf = vec![0; reader.output_buffer_size().expect("the screenshot fits in memory")];
        let info = reader.next_frame(&mut buf).unwrap_or_else(|e| panic!("cannot decode {}: {e}", path.display()));
        let (width, height) = (info.width as usize, info.height as usize);
        let channels = match info.color_type {
            png::ColorType::Rgb => 3,
            png::ColorType::Rgba => 4,
            png::ColorType::Grayscale => 1,
            png::ColorType::GrayscaleAlpha => 2,
            other => panic!("unexpected colour type {other:?} in {}", path.display()),
        };
        let mut rgb = Vec::with_capacity(width * height * 3);
        for y in 0..height {
            let row = &buf[y * info.line_size..y * info.line_size + width * channels];
            for px in row.chunks_exact(channels) {
                match channels {
                    1 | 2 => rgb.extend_from_slice(&[px[0]; 3]),
                    _ => rgb.extend_from_slice(&px[..3]),
                }
            }
        }
        Image { width, height, rgb }
    }

    /// Counts the pixels in `b` within a small distance of one of `colors`
    /// (the core of an antialiased line; its light fill does not count).
    fn ink(&self, b: &Rect, colors: &[[u8; 3]]) -> Ink {
        const TOLERANCE: i32 = 40;
        let mut ink = Ink { pixels: 0, min_x: usize::MAX, max_x: 0 };
        for y in b.y0..b.y1.min(self.height) {
            for x in b.x0..b.x1.min(self.width) {
                let i = (y * self.width + x) * 3;
                let px = &self.rgb[i..i + 3];
                let near = colors
                    .iter()
                    .any(|c| c.iter().zip(px).all(|(&want, &got)| (want as i32 - got as i32).abs() <= TOLERANCE));
                if near {
                    ink.pixels += 1;
                    ink.min_x = ink.min_x.min(x);
                    ink.max_x = ink.max_x.max(x);
                }
            }
        }
        ink
    }
}
