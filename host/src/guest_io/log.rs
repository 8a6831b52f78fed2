//! A guest's lines into the host log: its `log` calls and its stdout and
//! stderr. Each line carries the guest's name and version, control
//! characters are escaped (a guest cannot end a line and forge one of the
//! host's), and lines past the guest's rate (`--max-log-lines-per-sec`) are
//! dropped and counted, so one guest cannot flood the log for the others.
//!
//! Nothing here waits on the log's reader: the host's log writer
//! (`main.rs`) queues each line for a writer thread and drops what does not
//! fit, so a full or closed stderr never stalls the loop.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tracing::Level;

use crate::metrics::GuestMetrics;

/// Longest guest line logged; the rest is cut (and the cut is said). With
/// the log queue's length in lines (`main.rs`), this bounds the memory a
/// stalled log reader can make the host hold for guests' lines.
pub const MAX_LINE: usize = 4 * 1024;

pub struct GuestLog {
    guest: Arc<str>,
    version: Arc<str>,
    bucket: Mutex<Bucket>,
    metrics: Option<Arc<GuestMetrics>>,
}

/// A token bucket of lines: `per_sec` a second, at most one second's worth
/// saved up.
struct Bucket {
    per_sec: f64,
    tokens: f64,
    refilled: Instant,
    /// Lines dropped since the drops were last reported.
    dropped: u64,
    /// When they were, so that is said at most once a second.
    reported: Option<Instant>,
}

impl GuestLog {
    pub fn new(guest: Arc<str>, version: Arc<str>, per_sec: u32, metrics: Option<Arc<GuestMetrics>>) -> GuestLog {
        let per_sec = f64::from(per_sec);
        let bucket = Bucket { per_sec, tokens: per_sec, refilled: Instant::now(), dropped: 0, reported: None };
        GuestLog { guest, version, bucket: Mutex::new(bucket), metrics }
    }

    /// Logs one line of the guest's (`stream`: "log", "stdout", "stderr"),
    /// unless the guest is over its rate.
    pub fn line(&self, level: Level, stream: &'static str, text: &str) {
        let (guest, version) = (&*self.guest, &*self.version);
        let dropped = {
            // Only the loop thread logs for its guests: never contended.
            let mut bucket = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            let refill = now.duration_since(bucket.refilled).as_secs_f64() * bucket.per_sec;
            bucket.tokens = (bucket.tokens + refill).min(bucket.per_sec);
            bucket.refilled = now;
            // What was dropped is said at most once a second: when dropping
            // starts, then as a count with the next line let through.
            let due = bucket.reported.is_none_or(|at| now.duration_since(at).as_secs() >= 1);
            if bucket.tokens < 1.0 {
                if bucket.dropped == 0 && due {
                    bucket.reported = Some(now);
                    let per_sec = bucket.per_sec;
                    tracing::warn!(guest, version, "over its log rate ({per_sec} lines/s): dropping its lines");
                }
                bucket.dropped += 1;
                if let Some(metrics) = &self.metrics {
                    metrics.log_dropped.inc();
                }
                return;
            }
            bucket.tokens -= 1.0;
            if bucket.dropped > 0 && due {
                bucket.reported = Some(now);
                std::mem::take(&mut bucket.dropped)
            } else {
                0
            }
        };
        if dropped > 0 {
            tracing::warn!(guest, version, "{dropped} log lines of this guest dropped: over its rate limit");
        }
        let text = cut_to_line(text);
        let text = escape_controls(&text);
        match level {
            Level::TRACE => tracing::trace!(target: "guest", guest, version, stream, "{text}"),
            Level::DEBUG => tracing::debug!(target: "guest", guest, version, stream, "{text}"),
            Level::INFO => tracing::info!(target: "guest", guest, version, stream, "{text}"),
            Level::WARN => tracing::warn!(target: "guest", guest, version, stream, "{text}"),
            Level::ERROR => tracing::error!(target: "guest", guest, version, stream, "{text}"),
        }
    }
}

/// `text`, or its first [`MAX_LINE`] bytes and how much was cut.
fn cut_to_line(text: &str) -> Cow<'_, str> {
    if text.len() <= MAX_LINE {
        return Cow::Borrowed(text);
    }
    let end = (0..=MAX_LINE).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
    Cow::Owned(format!("{}… [{} more bytes cut]", &text[..end], text.len() - end))
}

/// `text` with every control character (C0, DEL, C1) and the Unicode line
/// and paragraph separators written as an escape (`\n`, `\u{1b}`), so a
/// guest's line is one line of the host's log and cannot carry terminal
/// escape sequences.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    let special = |c: char| c.is_control() || c == '\u{2028}' || c == '\u{2029}';
    if !text.contains(special) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if special(c) {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    Cow::Owned(escaped)
}

#[cfg(test)]
mod tests {
    use super::{MAX_LINE, cut_to_line, escape_controls};

    #[test]
    fn a_line_longer_than_max_line_is_cut_on_a_char_boundary_and_says_so() {
        let long = "é".repeat(MAX_LINE);
        let cut = cut_to_line(&long);
        let (kept, note) = cut.split_once('…').expect("cut");
        assert!(kept.len() <= MAX_LINE && kept.chars().all(|c| c == 'é'));
        assert_eq!(note, format!(" [{} more bytes cut]", long.len() - kept.len()));
        assert_eq!(cut_to_line("short"), "short");
    }

    #[test]
    fn control_characters_are_escaped_and_plain_text_is_borrowed() {
        assert!(matches!(escape_controls("plain text, ünïcödé"), std::borrow::Cow::Borrowed(_)));
        assert_eq!(
            escape_controls("a\nINFO host: forged\r\x1b[31mred\x7f\u{85}\u{2028}"),
            "a\\nINFO host: forged\\r\\u{1b}[31mred\\u{7f}\\u{85}\\u{2028}"
        );
    }
}
