//! File descriptors: the process's limit (`RLIMIT_NOFILE`), and the share of
//! it each guest's connections may take.
//!
//! Every connection is a descriptor. If the guests' connection limits add up
//! to more than the process may open, one guest flooded with connections
//! takes every descriptor and the others can no longer accept, reload or
//! even open their module files. So the host raises its soft limit to the
//! hard one at start, keeps a reserve for itself, and lowers
//! `max_connections` where the sum would not fit, giving every guest an even
//! share of what is left (a guest that asks for less than its share keeps
//! what it asked for, and the rest goes to the others).

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// What the host itself holds open, apart from its guests' connections.
#[derive(Clone, Copy, Debug, Default)]
pub struct Needs {
    /// Event loops (`--workers`): each has its own listeners and sockets.
    pub workers: usize,
    /// Guests (each version of each holds its compiled code's memory image).
    pub guests: usize,
    /// Listening sockets of one worker, over all guests.
    pub listeners: usize,
    /// UDP sockets one worker's guests may bind (their `udp` grants).
    pub udp: usize,
    /// Clients the admin listener serves at once, if it runs.
    pub admin_clients: usize,
}

/// Standard streams, the admin listener, module files and compiled cache
/// entries read while starting or reloading, and slack.
const BASE: usize = 32;
/// One loop: its epoll or kqueue descriptor, its waker and timer, the
/// signal self-pipes, the `--watch` descriptor; calloop adds its own.
const PER_WORKER: usize = 16;
/// A listening socket, and the spare descriptor it keeps to shed
/// connections when the process runs out (server/listener.rs).
const PER_LISTENER: usize = 2;
/// A guest's compiled code image, twice during a reload.
const PER_GUEST: usize = 2;

/// Raises the soft descriptor limit to the hard one, and returns the soft
/// limit in force (`None`: unlimited). Where the system refuses that (macOS
/// has no finite hard limit, and caps the soft one at
/// `kern.maxfilesperproc`), the highest power of two it takes. Not raising
/// it is no error: the connection limits are fitted to what is in force.
pub fn raise_limit() -> Option<u64> {
    let limit = getrlimit(Resource::Nofile);
    if let Some(soft) = limit.current {
        let mut want = limit.maximum.unwrap_or(1 << 20);
        while want > soft {
            if setrlimit(Resource::Nofile, Rlimit { current: Some(want), maximum: limit.maximum }).is_ok() {
                break;
            }
            want = want.next_power_of_two() / 2;
        }
    }
    getrlimit(Resource::Nofile).current
}

/// Descriptors the host keeps for itself.
pub fn reserve(needs: Needs) -> usize {
    let per_worker = PER_WORKER + needs.listeners * PER_LISTENER + needs.udp;
    BASE + needs.admin_clients + needs.guests * PER_GUEST + needs.workers * per_worker
}

/// Fits each guest's connection limit (`wanted`, per worker) into `budget`
/// descriptors shared by `workers` loops. Unchanged if the sum fits; else
/// every guest gets an even share, and what a guest wanting less leaves
/// goes to the others.
pub fn fit(budget: usize, workers: usize, wanted: &[usize]) -> Vec<usize> {
    let workers = workers.max(1);
    let total = wanted.iter().fold(0usize, |sum, &w| sum.saturating_add(w.saturating_mul(workers)));
    if total <= budget {
        return wanted.to_vec();
    }
    let mut order: Vec<usize> = (0..wanted.len()).collect();
    order.sort_by_key(|&i| wanted[i]);
    let mut left = budget;
    let mut fitted = vec![0; wanted.len()];
    for (k, &i) in order.iter().enumerate() {
        let share = left / ((wanted.len() - k) * workers);
        fitted[i] = wanted[i].min(share);
        left -= fitted[i] * workers;
    }
    fitted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_that_fit_are_left_alone() {
        assert_eq!(fit(1000, 2, &[100, 300]), vec![100, 300]);
    }

    #[test]
    fn limits_that_do_not_fit_get_even_shares_and_small_ones_give_the_rest_away() {
        assert_eq!(fit(200, 1, &[10_000, 10_000]), vec![100, 100]);
        assert_eq!(fit(200, 2, &[10_000, 10_000]), vec![50, 50]);
        assert_eq!(fit(200, 1, &[10, 10_000, 10_000]), vec![10, 95, 95]);
        assert_eq!(fit(200, 1, &[usize::MAX]), vec![200]);
        assert_eq!(fit(1, 2, &[5]), vec![0]);
    }

    #[test]
    fn the_reserve_counts_workers_listeners_and_the_admin_clients() {
        let one = reserve(Needs { workers: 1, guests: 1, listeners: 1, udp: 0, admin_clients: 0 });
        let two = reserve(Needs { workers: 2, guests: 1, listeners: 1, udp: 0, admin_clients: 0 });
        assert_eq!(two - one, PER_WORKER + PER_LISTENER);
        let admin = reserve(Needs { workers: 1, guests: 1, listeners: 1, udp: 0, admin_clients: 16 });
        assert_eq!(admin - one, 16);
    }
}
