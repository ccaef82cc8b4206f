//! Where a server is: its host (an IP address or a DNS name), the address a process reaches it
//! on, and whether it lives on this machine.
//!
//! DNS names are resolved at every use, never cached here, so a neighbour that moves (a new
//! address behind its name) is found on the next dial. Resolution goes through the system
//! resolver (getaddrinfo: `/etc/hosts`, then DNS, as nsswitch.conf says).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::TcpStream;

/// A server's host as herd.yaml gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Ip(IpAddr),
    /// A DNS name (lower-cased: names are case-insensitive), resolved at every dial.
    Name(String),
}

impl Host {
    /// An IP address or a DNS name (letters, digits and `-` in dot-separated labels);
    /// `None` when it is neither.
    pub fn parse(text: &str) -> Option<Host> {
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Some(Host::Ip(ip));
        }
        let name = text.strip_suffix('.').unwrap_or(text);
        let label_ok = |label: &str| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        };
        // An all-digit last label would be a mistyped IP address, not a name.
        let last_is_numeric = name
            .rsplit('.')
            .next()
            .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()));
        (name.len() <= 253 && name.split('.').all(label_ok) && !last_is_numeric)
            .then(|| Host::Name(name.to_ascii_lowercase()))
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(name) => f.write_str(name),
        }
    }
}

/// A host and a port: where to dial a server. Shown as `host:port` (`[v6]:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: Host,
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Ip(ip) => write!(f, "{}", SocketAddr::new(*ip, self.port)),
            Host::Name(name) => write!(f, "{name}:{}", self.port),
        }
    }
}

impl Endpoint {
    pub fn new(host: Host, port: u16) -> Endpoint {
        Endpoint { host, port }
    }

    /// Every address the host has now (a fresh lookup for a name), without blocking the
    /// runtime (the lookup runs on tokio's blocking pool).
    pub async fn resolve(&self) -> io::Result<Vec<SocketAddr>> {
        match &self.host {
            Host::Ip(ip) => Ok(vec![SocketAddr::new(*ip, self.port)]),
            Host::Name(name) => {
                let found: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), self.port))
                    .await
                    .map_err(|e| unresolved(name, e))?
                    .collect();
                non_empty(name, found)
            }
        }
    }

    /// Like [`Endpoint::resolve`], for code outside an async runtime.
    pub fn resolve_blocking(&self) -> io::Result<Vec<SocketAddr>> {
        match &self.host {
            Host::Ip(ip) => Ok(vec![SocketAddr::new(*ip, self.port)]),
            Host::Name(name) => {
                let found: Vec<SocketAddr> = (name.as_str(), self.port)
                    .to_socket_addrs()
                    .map_err(|e| unresolved(name, e))?
                    .collect();
                non_empty(name, found)
            }
        }
    }

    /// Resolves the host now and connects to the first of its addresses that accepts: the
    /// one way a node dials a neighbour, so a name is looked up again at every dial.
    pub async fn connect(&self) -> io::Result<TcpStream> {
        let mut last_error = None;
        for address in self.resolve().await? {
            match TcpStream::connect(address).await {
                Ok(stream) => return Ok(stream),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.expect("resolve never returns an empty list"))
    }

    /// [`Endpoint::connect`] for code outside an async runtime, each attempt within `timeout`.
    pub fn connect_blocking(
        &self,
        timeout: Duration,
    ) -> io::Result<(std::net::TcpStream, SocketAddr)> {
        let mut last_error = None;
        for address in self.resolve_blocking()? {
            match std::net::TcpStream::connect_timeout(&address, timeout) {
                Ok(stream) => return Ok((stream, address)),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.expect("resolve never returns an empty list"))
    }
}

fn unresolved(name: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("cannot resolve {name}: {e}"))
}

fn non_empty(name: &str, found: Vec<SocketAddr>) -> io::Result<Vec<SocketAddr>> {
    if found.is_empty() {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{name} resolves to no address"),
        ))
    } else {
        Ok(found)
    }
}

/// This machine's own IP addresses: what decides which servers of a herd live here.
#[derive(Debug, Clone, Default)]
pub struct Machine {
    addresses: BTreeSet<IpAddr>,
}

impl Machine {
    /// The addresses on this machine's interfaces (in this network namespace), now.
    pub fn this() -> Result<Machine> {
        let addresses = nix::ifaddrs::getifaddrs()
            .context("cannot list this machine's network addresses")?
            .filter_map(|interface| {
                let address = interface.address?;
                if let Some(v4) = address.as_sockaddr_in() {
                    Some(IpAddr::V4(v4.ip()))
                } else {
                    address.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
                }
            })
            .collect();
        Ok(Machine { addresses })
    }

    /// A machine with exactly these addresses (for tests).
    pub fn with_addresses(addresses: impl IntoIterator<Item = IpAddr>) -> Machine {
        Machine {
            addresses: addresses.into_iter().collect(),
        }
    }

    /// Whether `ip` reaches this machine: one of its addresses, any loopback address (the
    /// whole 127/8 is local on Linux), or the unspecified address (which dials this machine).
    pub fn owns(&self, ip: IpAddr) -> bool {
        ip.is_loopback() || ip.is_unspecified() || self.addresses.contains(&ip)
    }

    /// This machine's addresses, for messages (loopback left out).
    pub fn describe(&self) -> String {
        let shown: Vec<String> = self
            .addresses
            .iter()
            .filter(|ip| !ip.is_loopback())
            .map(ToString::to_string)
            .collect();
        if shown.is_empty() {
            "loopback only".to_owned()
        } else {
            shown.join(", ")
        }
    }
}

/// Which hosts of a herd are this machine, from one look-up: this machine's addresses and
/// what each host name resolved to. Taking one blocks (getifaddrs, getaddrinfo), so callers
/// take it where blocking is allowed (`spawn_blocking` in async code; beside the
/// supervisor's loop, never in it); deciding with it does not.
#[derive(Debug, Clone, Default)]
pub struct Locality {
    machine: Machine,
    /// Each host name looked up: its addresses, or why it has none.
    names: BTreeMap<String, Result<Vec<IpAddr>, String>>,
}

impl Locality {
    /// This machine's addresses now, and every name among `hosts` resolved now. Blocks.
    pub fn look_up<'a>(hosts: impl IntoIterator<Item = &'a Host>) -> Result<Locality> {
        let machine = Machine::this()?;
        let names = hosts
            .into_iter()
            .filter_map(|host| match host {
                Host::Name(name) => Some(name),
                Host::Ip(_) => None,
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(|name| {
                let found = Endpoint::new(Host::Name(name.clone()), 0)
                    .resolve_blocking()
                    .map(|found| found.iter().map(SocketAddr::ip).collect())
                    .map_err(|e| e.to_string());
                (name.clone(), found)
            })
            .collect();
        Ok(Locality { machine, names })
    }

    /// A machine with these addresses, where each name has these addresses (for tests).
    pub fn with<'a>(
        machine: Machine,
        names: impl IntoIterator<Item = (&'a str, Vec<IpAddr>)>,
    ) -> Locality {
        let names = names
            .into_iter()
            .map(|(name, found)| (name.to_owned(), Ok(found)))
            .collect();
        Locality { machine, names }
    }

    pub fn machine(&self) -> &Machine {
        &self.machine
    }

    /// The addresses `host` had at the look-up; an error says why a name had none (or that
    /// it was not looked up).
    pub fn addresses(&self, host: &Host) -> Result<Vec<IpAddr>, String> {
        match host {
            Host::Ip(ip) => Ok(vec![*ip]),
            Host::Name(name) => match self.names.get(name) {
                Some(found) => found.clone(),
                None => Err(format!("{name} was not looked up")),
            },
        }
    }

    /// Whether `host` is (or resolved to) an address of this machine. A name that did not
    /// resolve is not here.
    pub fn is_here(&self, host: &Host) -> bool {
        self.addresses(host)
            .is_ok_and(|found| found.iter().any(|ip| self.machine.owns(*ip)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_ip_addresses_or_dns_names() {
        assert_eq!(
            Host::parse("10.0.0.5"),
            Some(Host::Ip([10, 0, 0, 5].into()))
        );
        assert_eq!(Host::parse("::1"), Some(Host::Ip("::1".parse().unwrap())));
        assert_eq!(
            Host::parse("Herd-1.Example.com."),
            Some(Host::Name("herd-1.example.com".into()))
        );
        assert_eq!(
            Host::parse("localhost"),
            Some(Host::Name("localhost".into()))
        );
        for bad in [
            "",
            "a b",
            "-a.com",
            "a-.com",
            "a..b",
            "10.0.0.256",
            "1.2.3",
            "a_b.com",
            "a/b",
        ] {
            assert_eq!(Host::parse(bad), None, "{bad:?}");
        }
        assert_eq!(Host::parse(&"a".repeat(64)), None);
    }

    #[test]
    fn endpoints_show_as_host_and_port() {
        let e = |h: &str| Endpoint::new(Host::parse(h).unwrap(), 12000).to_string();
        assert_eq!(e("10.0.0.5"), "10.0.0.5:12000");
        assert_eq!(e("::1"), "[::1]:12000");
        assert_eq!(e("herd.example"), "herd.example:12000");
    }

    #[test]
    fn a_name_is_resolved_at_every_use() {
        let localhost = Endpoint::new(Host::Name("localhost".into()), 7);
        let found = localhost.resolve_blocking().unwrap();
        assert!(found.iter().all(|a| a.ip().is_loopback() && a.port() == 7));
        let nowhere = Endpoint::new(Host::Name("no-such-host.invalid".into()), 7);
        let e = nowhere.resolve_blocking().unwrap_err().to_string();
        assert!(e.contains("cannot resolve no-such-host.invalid"), "{e}");
    }

    #[test]
    fn locality_is_by_this_machines_addresses() {
        let machine = Machine::with_addresses(["10.1.2.3".parse().unwrap()]);
        let host = |h: &str| Host::parse(h).unwrap();
        let here = Locality::with(
            machine,
            [
                ("localhost", vec!["127.0.0.1".parse().unwrap()]),
                ("elsewhere.example", vec!["10.1.2.4".parse().unwrap()]),
            ],
        );
        assert!(here.is_here(&host("10.1.2.3")));
        assert!(here.is_here(&host("127.0.0.1")));
        assert!(here.is_here(&host("127.0.0.2")));
        assert!(here.is_here(&host("0.0.0.0")));
        assert!(here.is_here(&host("localhost")));
        assert!(!here.is_here(&host("10.1.2.4")));
        assert!(!here.is_here(&host("elsewhere.example")));
        assert!(!here.is_here(&host("not-looked-up.example")));

        // Taken for real: names resolved once, one that does not resolve is not here.
        let (localhost, nowhere) = (host("localhost"), host("no-such-host.invalid"));
        let here = Locality::look_up([&localhost, &nowhere, &host("127.0.0.1")]).unwrap();
        assert!(here.is_here(&localhost) && here.is_here(&host("127.0.0.1")));
        assert!(!here.is_here(&nowhere));
        let e = here.addresses(&nowhere).unwrap_err();
        assert!(e.contains("cannot resolve no-such-host.invalid"), "{e}");
    }
}
