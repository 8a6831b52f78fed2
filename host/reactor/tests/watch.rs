//! The file watcher on real files: a write in place, an atomic rename over
//! the file, and a file created after watching began are all reported; a
//! neighbour in the same directory is not; an idle watcher stays silent.

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::bounded;
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use wasmloop_reactor::{FileWatcher, WatchId};

/// Waits (at most `limit`) for the watcher to become readable, then returns
/// every file it reports. Changes arrive as bursts: collect until quiet.
fn reported(watcher: &mut FileWatcher, limit: Duration) -> HashSet<WatchId> {
    let mut seen = HashSet::new();
    let deadline = Instant::now() + limit;
    let mut quiet_for = limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now()).min(quiet_for);
        let mut fds = [PollFd::new(watcher, PollFlags::IN)];
        let timeout = Timespec::try_from(left).unwrap();
        if poll(&mut fds, Some(&timeout)).unwrap() == 0 {
            return seen;
        }
        watcher.drain(|id| {
            seen.insert(id);
        });
        // Once something arrived, only wait briefly for the rest of a burst.
        quiet_for = Duration::from_millis(50);
    }
}

fn write(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
}

#[test]
fn writes_renames_and_creations_are_reported_and_neighbours_are_not() {
    bounded(Duration::from_secs(30), || {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.wasm");
        let b = dir.path().join("b.wasm");
        write(&a, "a1");
        let mut watcher = FileWatcher::new().unwrap();
        let id_a = watcher.watch(&a).unwrap();
        let id_b = watcher.watch(&b).unwrap();
        let wait = Duration::from_secs(5);

        assert!(reported(&mut watcher, Duration::from_millis(200)).is_empty(), "nothing changed yet");

        write(&a, "a2");
        assert_eq!(reported(&mut watcher, wait), HashSet::from([id_a]), "a write in place");

        let tmp = dir.path().join(".a.tmp");
        write(&tmp, "a3");
        fs::rename(&tmp, &a).unwrap();
        assert!(reported(&mut watcher, wait).contains(&id_a), "an atomic rename over the file");

        write(&b, "b1");
        assert_eq!(reported(&mut watcher, wait), HashSet::from([id_b]), "a file created after watching began");

        write(&dir.path().join("unrelated.txt"), "x");
        assert!(reported(&mut watcher, Duration::from_millis(300)).is_empty(), "a neighbour is not a watched file");

        // And the rename did not break watching `a`.
        write(&a, "a4");
        assert_eq!(reported(&mut watcher, wait), HashSet::from([id_a]), "a write after the rename");
    });
}
