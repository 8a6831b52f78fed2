//! Socket activation: listening sockets a supervisor bound and passed down
//! (`--listen-fd 3`, `--listen-fd systemd:http`), taken over by descriptor
//! number before the process opens anything that could reuse the number.

use std::str::FromStr;

use super::listener::{ListenerSpec, Protocol, adopt_listener};

/// A `--listen-fd` value: a descriptor number or systemd's, and what the
/// host speaks on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenFd {
    source: FdSource,
    protocol: Protocol,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FdSource {
    Number(i32),
    /// Every socket of systemd socket activation (`LISTEN_FDS`).
    Systemd,
}

/// `3`, `3:http`, `3:ws`, `systemd`, `systemd:http`, `systemd:ws`.
impl FromStr for ListenFd {
    type Err = String;

    fn from_str(text: &str) -> Result<ListenFd, String> {
        let (source, protocol) = match text.rsplit_once(':') {
            Some((source, "http")) => (source, Protocol::Http),
            Some((source, "ws")) => (source, Protocol::WebSocket),
            Some((_, other)) => return Err(format!("unknown protocol `{other}` (expected `http` or `ws`)")),
            None => (text, Protocol::Tcp),
        };
        let source = match source {
            "systemd" => FdSource::Systemd,
            number => FdSource::Number(
                number.parse().map_err(|_| format!("`{number}` is not a descriptor number or `systemd`"))?,
            ),
        };
        Ok(ListenFd { source, protocol })
    }
}

/// Takes over the listening sockets named by `--listen-fd`. Call it before
/// anything opens a descriptor: the numbers must still name what the
/// supervisor passed (see `wasmloop_reactor::take_inherited`).
pub fn inherit_listeners(flags: &[ListenFd]) -> anyhow::Result<Vec<ListenerSpec>> {
    let mut listeners = Vec::new();
    for flag in flags {
        let numbers = match flag.source {
            FdSource::Number(fd) => vec![fd],
            FdSource::Systemd => systemd_fds()?,
        };
        for fd in numbers {
            let owned = wasmloop_reactor::take_inherited(fd)
                .map_err(|e| anyhow::anyhow!("cannot listen on inherited descriptor {fd}: {e}"))?;
            listeners.push(ListenerSpec { socket: adopt_listener(owned)?, protocol: flag.protocol });
        }
    }
    Ok(listeners)
}

/// The descriptors systemd passed: 3 to 3 + `LISTEN_FDS`, if `LISTEN_PID`
/// names this process (sd_listen_fds(3)).
fn systemd_fds() -> anyhow::Result<Vec<i32>> {
    const FIRST: i32 = 3;
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let (Some(pid), Some(count)) = (var("LISTEN_PID"), var("LISTEN_FDS")) else {
        anyhow::bail!("--listen-fd systemd: LISTEN_PID and LISTEN_FDS are not set (not started by socket activation)");
    };
    if pid.parse::<u32>().ok() != Some(std::process::id()) {
        anyhow::bail!("--listen-fd systemd: LISTEN_PID is {pid}, not this process ({})", std::process::id());
    }
    let count: i32 = count
        .parse()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| anyhow::anyhow!("--listen-fd systemd: LISTEN_FDS is `{count}`, not a positive number"))?;
    Ok((FIRST..FIRST + count).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listen_fd_value_is_a_number_or_systemd_with_an_optional_protocol() {
        let parsed = |text: &str| text.parse::<ListenFd>().map(|l| (l.source, l.protocol));
        assert_eq!(parsed("3"), Ok((FdSource::Number(3), Protocol::Tcp)));
        assert_eq!(parsed("4:http"), Ok((FdSource::Number(4), Protocol::Http)));
        assert_eq!(parsed("systemd:ws"), Ok((FdSource::Systemd, Protocol::WebSocket)));
        assert!(parsed("3:tls").unwrap_err().contains("unknown protocol `tls`"));
        assert!(parsed("three").unwrap_err().contains("`three` is not a descriptor number"));
    }
}
