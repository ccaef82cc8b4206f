//! `servers:` checked: names, ports (per host), admin and TLS ports, hosts, listen
//! addresses, and the links between servers (a link named by one end is bidirectional).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use anyhow::{anyhow, bail, Result};
use serde_saphyr::Spanned;

use super::defaults::ADMIN_PORT_OFFSET;
use super::model::RawConfig;
use super::settings::ServerConfig;
use crate::hosts::Host;
use herd_wire::protocol::is_valid_server_name;

/// Every server of the file, resolved, with its neighbours on both ends of each link.
pub(super) fn servers(raw: &RawConfig, shown: &str) -> Result<BTreeMap<String, ServerConfig>> {
    let default_host = match &raw.host {
        None => Host::Ip(IpAddr::from([127, 0, 0, 1])),
        Some(h) => host_value(h, "host", shown)?,
    };
    let default_listen = match &raw.listen {
        None => None,
        Some(l) => Some(listen_value(l, "listen", shown)?),
    };

    if raw.servers.is_empty() {
        bail!("{shown}: servers: is empty; list at least one server with its port");
    }
    let mut servers = BTreeMap::new();
    // Ports are per host: servers on different hosts may share one.
    let mut ports: BTreeMap<(String, u16), &str> = BTreeMap::new();
    let mut admin_ports: Vec<(String, u16, String, u64)> = Vec::new();
    for (name, spec) in &raw.servers {
        let line = spec.referenced.line();
        if name == "all" {
            bail!(
                "{shown} line {line}: \"all\" is reserved (herdctl start all means every \
                 server); rename this server"
            );
        }
        if !is_valid_server_name(name) {
            bail!(
                "{shown} line {line}: server name {name:?} is not valid; use letters, digits, \
                 '-' and '_', starting with a letter"
            );
        }
        let port = spec.value.port.value;
        let port_line = spec.value.port.referenced.line();
        let port = u16::try_from(port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| {
                anyhow!("{shown} line {port_line}: server {name} has port {port}; use 1-65535")
            })?;
        let host = match &spec.value.host {
            None => default_host.clone(),
            Some(h) => host_value(h, &format!("server {name} has host"), shown)?,
        };
        let listen = match &spec.value.listen {
            None => default_listen,
            Some(l) => Some(listen_value(
                l,
                &format!("server {name} has listen"),
                shown,
            )?),
        };
        if let Some(other) = ports.insert((host.to_string(), port), name) {
            bail!(
                "{shown} line {port_line}: servers {other} and {name} both use port {port} on \
                 host {host}; give each server on a host its own port"
            );
        }
        let admin_port = admin_port_value(name, port, spec.value.admin_port.as_ref(), shown)?;
        admin_ports.push((host.to_string(), admin_port, name.clone(), port_line));
        let tls_port = match &spec.value.tls_port {
            None => None,
            Some(p) => {
                let line = p.referenced.line();
                let value = u16::try_from(p.value)
                    .ok()
                    .filter(|v| *v != 0)
                    .ok_or_else(|| {
                        anyhow!(
                            "{shown} line {line}: server {name} has tls_port {}; use 1-65535",
                            p.value
                        )
                    })?;
                if raw.links.tls.is_none() {
                    bail!(
                        "{shown} line {line}: server {name} has tls_port but the herd has no \
                         links.tls (its certificate); add links.tls: {{ ca, cert, key }} (see \
                         herdctl certs init)"
                    );
                }
                if let Some(other) = ports.insert((host.to_string(), value), name) {
                    bail!(
                        "{shown} line {line}: server {name}'s tls_port {value} is also used by \
                         {other} on host {host}; give it a port of its own"
                    );
                }
                Some(value)
            }
        };
        servers.insert(
            name.clone(),
            ServerConfig {
                name: name.clone(),
                host,
                port,
                listen,
                neighbours: BTreeSet::new(),
                admin_port,
                tls_port,
            },
        );
    }
    // An admin port must not be any server's client port or another admin port on the
    // same host.
    for (i, (host, admin_port, name, line)) in admin_ports.iter().enumerate() {
        let clash = ports
            .get(&(host.clone(), *admin_port))
            .copied()
            .or_else(|| {
                admin_ports[..i]
                    .iter()
                    .find(|(h, p, _, _)| h == host && p == admin_port)
                    .map(|(_, _, other, _)| other.as_str())
            });
        if let Some(other) = clash {
            bail!(
                "{shown} line {line}: server {name}'s admin port {admin_port} is also used by \
                 {other} on host {host}; give {name} another admin_port: (default: port + \
                 {ADMIN_PORT_OFFSET})"
            );
        }
    }
    for (name, spec) in &raw.servers {
        for peer in &spec.value.peers {
            let line = peer.referenced.line();
            let peer = &peer.value;
            if peer == name {
                bail!(
                    "{shown} line {line}: server {name} lists itself as a peer; remove it \
                     from its peers"
                );
            }
            if !servers.contains_key(peer) {
                bail!(
                    "{shown} line {line}: server {name} lists unknown peer {peer:?}; add \
                     {peer} under servers: or fix the name (known: {})",
                    raw.servers.keys().cloned().collect::<Vec<_>>().join(", ")
                );
            }
            servers
                .get_mut(name)
                .unwrap()
                .neighbours
                .insert(peer.clone());
            servers
                .get_mut(peer)
                .unwrap()
                .neighbours
                .insert(name.clone());
        }
    }
    Ok(servers)
}

/// A server's `admin_port:`, or its default (`port` + [`ADMIN_PORT_OFFSET`]).
pub(super) fn admin_port_value(
    name: &str,
    port: u16,
    given: Option<&Spanned<u32>>,
    shown: &str,
) -> Result<u16> {
    match given {
        Some(p) => u16::try_from(p.value)
            .ok()
            .filter(|a| *a != 0 && *a != port)
            .ok_or_else(|| {
                anyhow!(
                    "{shown} line {}: server {name} has admin_port {}; use 1-65535, not its \
                     client port",
                    p.referenced.line(),
                    p.value
                )
            }),
        None => port.checked_add(ADMIN_PORT_OFFSET).ok_or_else(|| {
            anyhow!(
                "{shown}: server {name} has port {port}, so its default admin port (port + \
                 {ADMIN_PORT_OFFSET}) does not exist; give it admin_port: (1-65535)"
            )
        }),
    }
}

/// A `host:` value: an IP address or a DNS name.
pub(super) fn host_value(h: &Spanned<String>, what: &str, shown: &str) -> Result<Host> {
    Host::parse(&h.value).ok_or_else(|| {
        anyhow!(
            "{shown} line {}: {what} {:?}, which is neither an IP address nor a DNS name; use \
             e.g. 10.0.0.5 or herd1.example.com",
            h.referenced.line(),
            h.value
        )
    })
}

/// A `listen:` value: an IP address of this machine, or 0.0.0.0 / :: for all of them.
pub(super) fn listen_value(l: &Spanned<String>, what: &str, shown: &str) -> Result<IpAddr> {
    l.value.parse().map_err(|_| {
        anyhow!(
            "{shown} line {}: {what} {:?}, which is not an IP address; listen: is the address \
             to bind, e.g. 0.0.0.0 (every address of the machine)",
            l.referenced.line(),
            l.value
        )
    })
}

/// Floods only reach servers connected to the origin: warn when the link graph is split.
pub(super) fn disconnected_warning(servers: &BTreeMap<String, ServerConfig>) -> Option<String> {
    let first = servers.keys().next()?;
    let mut seen = BTreeSet::from([first.as_str()]);
    let mut stack = vec![first.as_str()];
    while let Some(name) = stack.pop() {
        for n in &servers[name].neighbours {
            if seen.insert(n) {
                stack.push(n);
            }
        }
    }
    let unreached: Vec<&str> = servers
        .keys()
        .map(String::as_str)
        .filter(|n| !seen.contains(n))
        .collect();
    (!unreached.is_empty()).then(|| {
        format!(
            "the herd is not connected: {} cannot reach {}; updates will not flood between them",
            first,
            unreached.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use crate::config::test_herd::{error, parse};

    #[test]
    fn errors_name_the_line_and_the_fix() {
        let e = error("servers:\n  A: { port: 1, peers: [B] }\n  C: { port: 2 }\n");
        assert!(
            e.contains("line 2") && e.contains("unknown peer \"B\""),
            "{e}"
        );
        let e = error("servers:\n  A: { port: 1 }\n  B: { port: 1 }\n");
        assert!(e.contains("line 3") && e.contains("both use port 1"), "{e}");
        let e = error("servers:\n  A: { port: 1, peers: [A] }\n");
        assert!(e.contains("line 2") && e.contains("itself"), "{e}");
        let e = error("servers:\n  'bad name': { port: 1 }\n");
        assert!(e.contains("line 2") && e.contains("not valid"), "{e}");
        let e = error("servers:\n  A: { port: 70000 }\n");
        assert!(e.contains("line 2") && e.contains("1-65535"), "{e}");
        let e = error("servers:\n  A: { port: 1, peer: [B] }\n");
        assert!(e.contains("line 2") && e.contains("peer"), "{e}");
        let e = error("servers:\n  A: { port: 1 }\nhost: 'local host'\n");
        assert!(
            e.contains("line 3") && e.contains("neither an IP address nor a DNS name"),
            "{e}"
        );
        let e = error("servers:\n  all: { port: 1 }\n");
        assert!(e.contains("line 2") && e.contains("reserved"), "{e}");
        let e = error("servers: {}\n");
        assert!(e.contains("empty"), "{e}");
        let e = error("servers:\n  A: { port: 1 }\nplaces: { provider: bing }\n");
        assert!(e.contains("line 3"), "{e}");
    }

    #[test]
    fn ports_are_unique_per_host_and_hosts_are_checked() {
        let e = error(
            "servers:\n  A: { port: 1, host: h.example }\n  B: { port: 1, host: H.example }\n",
        );
        assert!(
            e.contains("line 3") && e.contains("both use port 1 on host h.example"),
            "{e}"
        );
        let e = error("servers:\n  A: { port: 1, host: 'a b' }\n");
        assert!(
            e.contains("line 2") && e.contains("server A has host \"a b\""),
            "{e}"
        );
        let e = error("servers:\n  A: { port: 1, listen: any }\n");
        assert!(
            e.contains("line 2") && e.contains("not an IP address") && e.contains("0.0.0.0"),
            "{e}"
        );
        let e = error("servers:\n  A: { port: 1 }\nlisten: localhost\n");
        assert!(e.contains("line 3") && e.contains("listen"), "{e}");
    }

    #[test]
    fn a_split_herd_is_a_warning_not_an_error() {
        let c =
            parse("servers:\n  A: { port: 1, peers: [B] }\n  B: { port: 2 }\n  C: { port: 3 }\n")
                .unwrap();
        assert_eq!(c.warnings.len(), 1);
        assert!(c.warnings[0].contains("cannot reach C"), "{:?}", c.warnings);
    }
}
