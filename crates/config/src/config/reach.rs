//! Where each server is reached: by neighbours and clients (its host), by a process on its
//! own machine (its listen address), what it binds, and which servers live here. Nothing
//! here looks anything up: what this machine is and what names resolve to come in a
//! [`Locality`] the caller took where blocking is allowed.

use std::net::{IpAddr, SocketAddr};

use anyhow::{anyhow, Result};

use super::{HerdConfig, ServerConfig};
use crate::hosts::{Endpoint, Host, Locality};

/// Where this machine reaches a server (see [`HerdConfig::reach`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reach {
    /// The server is here: it lives on this machine, or its process runs here anyway.
    pub local: bool,
    /// Its client port: the local address when `local`, else its host.
    pub endpoint: Endpoint,
    /// Its admin endpoint, on the same address as `endpoint`.
    pub admin: Endpoint,
}

impl HerdConfig {
    /// Where neighbours and clients dial `server`: its host (a name is resolved at each
    /// dial, see [`Endpoint::connect`]) and port.
    pub fn endpoint(&self, server: &ServerConfig) -> Endpoint {
        Endpoint::new(server.host.clone(), server.port)
    }

    /// Where a process on the server's own machine reaches it: its `listen:` address when
    /// it has one (the unspecified address as loopback), else its host. The supervisor
    /// probes its nodes there, so a host that only works from outside (NAT) does not matter.
    pub fn local_endpoint(&self, server: &ServerConfig) -> Endpoint {
        match server.listen {
            Some(IpAddr::V4(ip)) if ip.is_unspecified() => {
                Endpoint::new(Host::Ip(IpAddr::from([127, 0, 0, 1])), server.port)
            }
            Some(IpAddr::V6(ip)) if ip.is_unspecified() => {
                Endpoint::new(Host::Ip(std::net::Ipv6Addr::LOCALHOST.into()), server.port)
            }
            Some(ip) => Endpoint::new(Host::Ip(ip), server.port),
            None => self.endpoint(server),
        }
    }

    /// Where a process on the server's own machine reaches its admin endpoint (see
    /// [`HerdConfig::local_endpoint`]).
    pub fn local_admin_endpoint(&self, server: &ServerConfig) -> Endpoint {
        let client = self.local_endpoint(server);
        Endpoint::new(client.host, server.admin_port)
    }

    /// Where anyone reaches `server`'s admin endpoint: its host and admin port.
    pub fn admin_endpoint(&self, server: &ServerConfig) -> Endpoint {
        Endpoint::new(server.host.clone(), server.admin_port)
    }

    /// The address `server` binds: its `listen:` address, else the address its host has on
    /// this machine (a name as `here` resolved it).
    pub fn listen_address(&self, server: &ServerConfig, here: &Locality) -> Result<SocketAddr> {
        if let Some(ip) = server.listen {
            return Ok(SocketAddr::new(ip, server.port));
        }
        let found = here.addresses(&server.host).map_err(|e| anyhow!(e))?;
        let machine = here.machine();
        found
            .iter()
            .find(|ip| machine.owns(**ip))
            .map(|ip| SocketAddr::new(*ip, server.port))
            .ok_or_else(|| {
                anyhow!(
                    "{} cannot listen on its host {}: it resolves to {}, not an address of this \
                     machine ({}); run it on its host, or give it listen: (e.g. 0.0.0.0) in {}",
                    server.name,
                    server.host,
                    found
                        .iter()
                        .map(IpAddr::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                    machine.describe(),
                    self.path.display()
                )
            })
    }

    /// Every server's host: what a [`Locality`] for this herd looks up.
    pub fn hosts(&self) -> impl Iterator<Item = &Host> {
        self.servers.values().map(|s| &s.host)
    }

    /// Whether `server` lives on this machine: its host is, or resolved to, one of its
    /// addresses.
    pub fn is_local(&self, server: &ServerConfig, here: &Locality) -> bool {
        here.is_here(&server.host)
    }

    /// The servers that live on this machine, by name.
    pub fn local_servers(&self, here: &Locality) -> Vec<String> {
        self.servers
            .values()
            .filter(|s| self.is_local(s, here))
            .map(|s| s.name.clone())
            .collect()
    }

    /// Where a process on this machine reaches `server`: on its local address when it lives
    /// here or, `runs_here`, its process runs here anyway (it moved while running); else
    /// across the network at its host. The one place `send`, `status`, `tail`, `top` and the
    /// operator's commands make that choice.
    pub fn reach(&self, server: &ServerConfig, here: &Locality, runs_here: bool) -> Reach {
        let local = runs_here || self.is_local(server, here);
        let (endpoint, admin) = match local {
            true => (
                self.local_endpoint(server),
                self.local_admin_endpoint(server),
            ),
            false => (self.endpoint(server), self.admin_endpoint(server)),
        };
        Reach {
            local,
            endpoint,
            admin,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_herd::parse;
    use crate::hosts::{Host, Locality, Machine};

    #[test]
    fn each_server_may_have_its_own_host_and_listen_address() {
        let c = parse(
            "host: herd.example.com\nlisten: 0.0.0.0\nservers:\n  \
             A: { port: 12000 }\n  \
             B: { port: 12000, host: 10.0.0.2 }\n  \
             C: { port: 12000, host: C.Example.com, listen: '::' }\n  \
             D: { port: 12001, host: 10.0.0.2, listen: 10.0.0.2 }\n",
        )
        .unwrap();
        let s = |n: &str| &c.servers[n];
        assert_eq!(s("A").host, Host::Name("herd.example.com".into()));
        assert_eq!(s("B").host, Host::Ip("10.0.0.2".parse().unwrap()));
        assert_eq!(s("C").host, Host::Name("c.example.com".into()));
        assert_eq!(
            s("A").listen,
            Some("0.0.0.0".parse().unwrap()),
            "global listen"
        );
        assert_eq!(s("C").listen, Some("::".parse().unwrap()), "per server");
        assert_eq!(c.endpoint(s("C")).to_string(), "c.example.com:12000");
        assert_eq!(c.local_endpoint(s("A")).to_string(), "127.0.0.1:12000");
        assert_eq!(c.local_endpoint(s("C")).to_string(), "[::1]:12000");
        assert_eq!(c.local_endpoint(s("D")).to_string(), "10.0.0.2:12001");
        assert_eq!(
            c.listen_address(s("D"), &Locality::default()).unwrap(),
            "10.0.0.2:12001".parse().unwrap()
        );

        // A name is here when it resolved to one of this machine's addresses.
        let here = Locality::with(
            Machine::with_addresses(["10.0.0.2".parse().unwrap()]),
            [
                ("herd.example.com", vec!["10.0.0.9".parse().unwrap()]),
                ("c.example.com", vec!["10.0.0.2".parse().unwrap()]),
            ],
        );
        assert_eq!(c.local_servers(&here), ["B", "C", "D"]);
        let nowhere = Locality::with(Machine::with_addresses([]), []);
        assert_eq!(c.local_servers(&nowhere), Vec::<String>::new());
    }

    #[test]
    fn a_server_whose_host_is_elsewhere_cannot_listen_here_without_listen() {
        let machine = || Machine::with_addresses(["10.1.1.1".parse().unwrap()]);
        let here = Locality::with(machine(), []);
        let c = parse("servers:\n  A: { port: 1, host: 192.0.2.1 }\n").unwrap();
        let e = format!(
            "{:#}",
            c.listen_address(&c.servers["A"], &here).unwrap_err()
        );
        assert!(
            e.contains("A cannot listen on its host 192.0.2.1")
                && e.contains("not an address of this machine (10.1.1.1)")
                && e.contains("listen:"),
            "{e}"
        );
        let c = parse("servers:\n  A: { port: 1, host: 192.0.2.1, listen: 0.0.0.0 }\n").unwrap();
        assert_eq!(
            c.listen_address(&c.servers["A"], &here).unwrap(),
            "0.0.0.0:1".parse().unwrap()
        );
        let c = parse("servers:\n  A: { port: 1, host: h.example }\n").unwrap();
        let resolved =
            |ip: &str| Locality::with(machine(), [("h.example", vec![ip.parse().unwrap()])]);
        assert_eq!(
            c.listen_address(&c.servers["A"], &resolved("10.1.1.1"))
                .unwrap(),
            "10.1.1.1:1".parse().unwrap()
        );
        let e = format!(
            "{:#}",
            c.listen_address(&c.servers["A"], &resolved("10.2.2.2"))
                .unwrap_err()
        );
        assert!(e.contains("it resolves to 10.2.2.2, not an address"), "{e}");

        // Taken for real: a name is looked up once, and one that does not resolve says so.
        let c = parse("servers:\n  A: { port: 1, host: localhost }\n  B: { port: 2, host: no-such-host.invalid }\n").unwrap();
        let here = Locality::look_up(c.servers.values().map(|s| &s.host)).unwrap();
        assert!(c
            .listen_address(&c.servers["A"], &here)
            .unwrap()
            .ip()
            .is_loopback());
        let e = format!(
            "{:#}",
            c.listen_address(&c.servers["B"], &here).unwrap_err()
        );
        assert!(e.contains("cannot resolve no-such-host.invalid"), "{e}");
        assert_eq!(c.local_servers(&here), ["A"]);
    }

    #[test]
    fn a_server_is_reached_locally_when_it_lives_or_runs_here() {
        let c = parse(
            "servers:\n  A: { port: 1, admin_port: 5, host: 10.1.1.1, listen: 0.0.0.0 }\n  \
             B: { port: 2, host: 10.2.2.2, listen: 0.0.0.0 }\n",
        )
        .unwrap();
        let here = Locality::with(Machine::with_addresses(["10.1.1.1".parse().unwrap()]), []);
        let shown = |r: super::Reach| (r.local, r.endpoint.to_string(), r.admin.to_string());
        let reach = |name: &str, runs_here| shown(c.reach(&c.servers[name], &here, runs_here));
        assert_eq!(
            reach("A", false),
            (true, "127.0.0.1:1".into(), "127.0.0.1:5".into())
        );
        assert_eq!(
            reach("B", false),
            (false, "10.2.2.2:2".into(), "10.2.2.2:1002".into())
        );
        assert_eq!(
            reach("B", true),
            (true, "127.0.0.1:2".into(), "127.0.0.1:1002".into())
        );
    }
}
