//! What the operator allows a guest to reach: deny by default.
//!
//! An allowlist entry is an address or CIDR network plus a port or port
//! range: `127.0.0.1:6379`, `10.0.0.0/8:5432`, `[::1]:8000-8100`,
//! `[fd00::/8]:*`. A connect is allowed if any entry matches.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::str::FromStr;

use ipnet::IpNet;

/// One allowlist entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowRule {
    pub network: IpNet,
    pub ports: RangeInclusive<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid address rule `{rule}`: {problem} (expected e.g. 127.0.0.1:6379, 10.0.0.0/8:5432, [::1]:8000-8100)")]
pub struct RuleError {
    pub rule: String,
    pub problem: &'static str,
}

impl AllowRule {
    pub fn allows(&self, addr: SocketAddr) -> bool {
        self.network.contains(&addr.ip()) && self.ports.contains(&addr.port())
    }
}

impl FromStr for AllowRule {
    type Err = RuleError;

    fn from_str(rule: &str) -> Result<AllowRule, RuleError> {
        let fail = |problem| RuleError { rule: rule.to_string(), problem };
        let (host, ports) = rule.rsplit_once(':').ok_or_else(|| fail("no port"))?;
        let host = match host.strip_prefix('[') {
            Some(rest) => rest.strip_suffix(']').ok_or_else(|| fail("unclosed `[`"))?,
            None if host.contains(':') => return Err(fail("IPv6 addresses go in brackets")),
            None => host,
        };
        let network = if host.contains('/') {
            host.parse::<IpNet>().map_err(|_| fail("bad network"))?.trunc()
        } else {
            IpNet::from(host.parse::<IpAddr>().map_err(|_| fail("bad IP address"))?)
        };
        let ports = match ports {
            "*" => 0..=u16::MAX,
            p => match p.split_once('-') {
                Some((lo, hi)) => {
                    let lo: u16 = lo.parse().map_err(|_| fail("bad port"))?;
                    let hi: u16 = hi.parse().map_err(|_| fail("bad port"))?;
                    if lo > hi {
                        return Err(fail("port range runs backwards"));
                    }
                    lo..=hi
                }
                None => {
                    let port: u16 = p.parse().map_err(|_| fail("bad port"))?;
                    port..=port
                }
            },
        };
        Ok(AllowRule { network, ports })
    }
}

impl fmt::Display for AllowRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.network {
            IpNet::V4(net) if net.prefix_len() == 32 => write!(f, "{}", net.addr())?,
            IpNet::V4(net) => write!(f, "{net}")?,
            IpNet::V6(net) if net.prefix_len() == 128 => write!(f, "[{}]", net.addr())?,
            IpNet::V6(net) => write!(f, "[{net}]")?,
        }
        match (*self.ports.start(), *self.ports.end()) {
            (0, u16::MAX) => write!(f, ":*"),
            (lo, hi) if lo == hi => write!(f, ":{lo}"),
            (lo, hi) => write!(f, ":{lo}-{hi}"),
        }
    }
}

/// Everything the operator grants a guest beyond its listeners.
#[derive(Clone, Debug, Default)]
pub struct Grants {
    /// Where the guest may connect (TCP) and send datagrams (UDP).
    pub connect: Allowlist,
    /// Addresses the guest may bind UDP sockets on.
    pub udp: Vec<SocketAddr>,
}

/// A guest's outbound allowlist.
#[derive(Clone, Debug, Default)]
pub struct Allowlist {
    rules: Vec<AllowRule>,
}

impl Allowlist {
    pub fn new(rules: Vec<AllowRule>) -> Allowlist {
        Allowlist { rules }
    }

    pub fn allows(&self, addr: SocketAddr) -> bool {
        self.rules.iter().any(|r| r.allows(addr))
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: &str) -> AllowRule {
        s.parse().unwrap()
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn single_address_and_port() {
        let r = rule("127.0.0.1:6379");
        assert!(r.allows(addr("127.0.0.1:6379")));
        assert!(!r.allows(addr("127.0.0.1:6380")));
        assert!(!r.allows(addr("127.0.0.2:6379")));
    }

    #[test]
    fn cidr_network() {
        let r = rule("10.0.0.0/8:5432");
        assert!(r.allows(addr("10.200.3.4:5432")));
        assert!(!r.allows(addr("11.0.0.1:5432")));
    }

    #[test]
    fn ipv6_with_port_range() {
        let r = rule("[::1]:8000-8100");
        assert!(r.allows(addr("[::1]:8000")));
        assert!(r.allows(addr("[::1]:8100")));
        assert!(!r.allows(addr("[::1]:8101")));
        assert!(!r.allows(addr("127.0.0.1:8050")));
        assert!(rule("[fd00::/8]:*").allows(addr("[fd12::1]:1")));
    }

    #[test]
    fn rules_print_as_they_parse() {
        for s in ["127.0.0.1:6379", "10.0.0.0/8:5432", "[::1]:8000-8100", "[fd00::/8]:*"] {
            assert_eq!(rule(s).to_string(), s);
        }
    }

    #[test]
    fn malformed_rules_name_the_problem() {
        let problem = |s: &str| s.parse::<AllowRule>().unwrap_err().problem;
        assert_eq!(problem("127.0.0.1"), "no port");
        assert_eq!(problem("::1:80"), "IPv6 addresses go in brackets");
        assert_eq!(problem("[::1:80"), "unclosed `[`");
        assert_eq!(problem("localhost:80"), "bad IP address");
        assert_eq!(problem("10.0.0.0/99:80"), "bad network");
        assert_eq!(problem("127.0.0.1:9-1"), "port range runs backwards");
        assert_eq!(problem("127.0.0.1:http"), "bad port");
    }

    #[test]
    fn empty_allowlist_denies_everything() {
        assert!(!Allowlist::default().allows(addr("127.0.0.1:1")));
    }
}
