//! A herd across real separate hosts: each "machine" is a network namespace with its own
//! address on a private test range (10.213.0.0/24), joined to the others by a bridge that
//! lives in a namespace of its own, so nothing is added to the machine's own network. Each
//! host has its own copy of one herd.yaml (and its own folders) and runs `herdctl` inside its
//! namespace, as on a separate machine. Per-host DNS comes from `/etc/netns/<ns>/hosts`,
//! which `ip netns exec` mounts over /etc/hosts for what runs there.
//!
//! These need root and iproute2. Under CI=true they must run (`.ci/run` installs iproute2);
//! elsewhere, without them, they print why and skip. Every namespace, process in it and
//! hosts file is removed when the test ends, pass or fail.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{run_to_end, wait_until};
use serde_json::Value;

/// The port every server uses: each host is a separate machine, so they can share it.
const PORT: u16 = 12000;
/// Names with this prefix are this test suite's.
const PREFIX: &str = "herdt";

/// Runs `ip ARGS`, panicking with its stderr if it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether this process may build namespaces; `Err` says what is missing.
fn can_build_namespaces() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("they need root (network namespaces)".into());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(out) if out.status.success() => Ok(()),
        _ => Err("they need `ip` (apt-get install iproute2)".into()),
    }
}

/// Machines on one private network, torn down on drop.
struct Network {
    /// The namespace holding the bridge.
    switch: String,
    hosts: Vec<Host>,
    /// Every namespace created so far, so a failure half-way still cleans up.
    namespaces: Vec<String>,
    dir: tempfile::TempDir,
}

/// One machine: a namespace with one address, and its own folder with its copy of herd.yaml.
struct Host {
    ns: String,
    address: String,
    dir: PathBuf,
}

impl Network {
    /// `count` machines at 10.213.0.1, .2, ..., or `None` (after saying why) when this
    /// process cannot build them and is not under CI.
    fn build(count: usize) -> Option<Network> {
        if let Err(why) = can_build_namespaces() {
            common::skip_unless_ci(&format!("multi-host tests: {why}"));
            return None;
        }
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        // Unique per test: parallel tests (threads or processes) never share a name.
        let id = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut network = Network {
            switch: format!("{id}-sw"),
            hosts: Vec::new(),
            namespaces: Vec::new(),
            dir: tempfile::tempdir().unwrap(),
        };
        let switch = network.switch.clone();
        network.add_namespace(&switch);
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &switch, "link", "set", "br0", "up"]);
        for i in 1..=count {
            let ns = format!("{id}-h{i}");
            network.add_namespace(&ns);
            // Created straight inside the namespaces: the host's own network never sees them.
            let port = format!("h{i}");
            ip(&[
                "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &port,
                "netns", &switch,
            ]);
            ip(&["-n", &switch, "link", "set", &port, "master", "br0", "up"]);
            let address = format!("10.213.0.{i}");
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{address}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            let dir = network.dir.path().join(format!("h{i}"));
            std::fs::create_dir(&dir).unwrap();
            network.hosts.push(Host { ns, address, dir });
        }
        Some(network)
    }

    fn add_namespace(&mut self, ns: &str) {
        ip(&["netns", "add", ns]);
        self.namespaces.push(ns.to_owned());
        ip(&["-n", ns, "link", "set", "lo", "up"]);
    }

    fn host(&self, i: usize) -> &Host {
        &self.hosts[i - 1]
    }

    /// Gives every host its own copy of the same herd file, and of one herd secret (as an
    /// operator copies `herd.secret`: a host that made its own could not link).
    fn copy_herd_file(&self, yaml: &str) {
        use std::os::unix::fs::OpenOptionsExt;
        let secret = herdctl::auth::HerdSecret::generate();
        for host in &self.hosts {
            std::fs::write(host.config(), yaml).unwrap();
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(host.dir.join("herd.secret"))
                .unwrap();
            std::io::Write::write_all(&mut file, secret.reveal().as_bytes()).unwrap();
        }
    }

    /// Writes every host's hosts file (read by what `ip netns exec` starts there, at each
    /// lookup). Written in place: `ip netns exec` bind-mounts the file itself, so a
    /// replaced file would not be seen by processes already running.
    fn set_hosts_file(&self, lines: &str) {
        for host in &self.hosts {
            let folder = Path::new("/etc/netns").join(&host.ns);
            std::fs::create_dir_all(&folder).unwrap();
            let text = format!("127.0.0.1 localhost\n{lines}");
            std::fs::write(folder.join("hosts"), text).unwrap();
        }
    }

    /// Unplugs (or plugs back) host `i`'s cable at the switch.
    fn set_link(&self, i: usize, up: bool) {
        let port = format!("h{i}");
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.switch, "link", "set", &port, state]);
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            // Everything that runs in a test namespace was started by this test: supervisors
            // and nodes. SIGKILL each by its pid.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
            let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(ns));
        }
        // Gone only if empty: other namespaces' files there are not ours.
        let _ = std::fs::remove_dir("/etc/netns");
    }
}

impl Host {
    fn config(&self) -> PathBuf {
        self.dir.join("herd.yaml")
    }

    /// `herdctl --config <this host's copy> ARGS`, run inside this host's namespace.
    fn herdctl(&self, args: &[&str]) -> Output {
        let mut command = Command::new("ip");
        command
            .args([
                "netns",
                "exec",
                &self.ns,
                env!("CARGO_BIN_EXE_herdctl"),
                "--config",
            ])
            .arg(self.config())
            .args(args)
            .env_remove("HERD_CONFIG")
            .env_remove("HERD_SECRET");
        run_to_end(&mut command, b"")
    }

    /// Like [`Host::herdctl`], failing the test unless it succeeds; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.herdctl(args);
        assert!(
            out.status.success(),
            "on {}: herdctl {} failed: {}{}",
            self.address,
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Like [`Host::herdctl`], failing the test unless it fails; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.herdctl(args);
        assert!(
            !out.status.success(),
            "on {}: herdctl {} should fail",
            self.address,
            args.join(" ")
        );
        String::from_utf8(out.stderr).unwrap()
    }

    /// `herdctl status --json` as seen from this host, by server name.
    fn status(&self) -> std::collections::BTreeMap<String, Value> {
        let rows: Vec<Value> = serde_json::from_str(&self.ok(&["status", "--json"])).unwrap();
        rows.into_iter()
            .map(|r| (r["name"].as_str().unwrap().to_owned(), r))
            .collect()
    }

    /// The AT line `server` holds for `client` (asked from this host), if any.
    fn known_at(&self, server: &str, client: &str) -> Option<String> {
        let out = self.herdctl(&["send", server, &format!("WHATSAT {client} 1 1")]);
        let reply = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success() && reply.starts_with("AT "))
            .then(|| reply.lines().next().unwrap().to_owned())
    }

    /// All of `server`'s log files on this host, concatenated.
    fn log_text(&self, server: &str) -> String {
        common::log_text_in(&self.dir, server)
    }
}

/// The classic herd, one server per host (`hosts[i]` is server i's host), all on one port.
/// Peer connections idle out after 3 s (three 1 s anti-entropy periods), so a cut link
/// breaks its connections quickly; neighbours redial fast.
fn classic_herd_file(hosts: [&str; 5]) -> String {
    let [alford, ball, hamilton, holiday, welsh] = hosts;
    format!(
        "servers:\n\
         \x20 Alford:   {{ host: {alford}, port: {PORT}, peers: [Hamilton, Welsh] }}\n\
         \x20 Ball:     {{ host: {ball}, port: {PORT}, peers: [Holiday, Welsh] }}\n\
         \x20 Hamilton: {{ host: {hamilton}, port: {PORT}, peers: [Holiday] }}\n\
         \x20 Holiday:  {{ host: {holiday}, port: {PORT} }}\n\
         \x20 Welsh:    {{ host: {welsh}, port: {PORT} }}\n\
         reconnect: {{ initial_ms: 50, max_ms: 500, sync_interval_s: 1 }}\n\
         limits: {{ idle_timeout_s: 1 }}\n"
    )
}

const SERVERS: [&str; 5] = ["Alford", "Ball", "Hamilton", "Holiday", "Welsh"];

#[test]
fn five_hosts_one_herd_file_start_all_on_each_status_flood_cut_and_heal() {
    let Some(net) = Network::build(5) else { return };
    let addresses: Vec<&str> = net.hosts.iter().map(|h| h.address.as_str()).collect();
    net.copy_herd_file(&classic_herd_file(addresses.clone().try_into().unwrap()));

    // `start all` on each machine starts the one server that lives there.
    for (i, server) in SERVERS.iter().enumerate() {
        let out = net.host(i + 1).ok(&["start", "all"]);
        assert!(out.contains(&format!("{server:<12} running")), "{out}");
        assert!(out.contains("1 server started"), "{out}");
        for other in SERVERS.iter().filter(|s| *s != server) {
            assert!(
                !out.contains(other),
                "{server}'s host started {other}: {out}"
            );
        }
    }
    let h1 = net.host(1);

    // Naming another host's server is an error naming its host; so is its log.
    let e = h1.fails(&["start", "Ball"]);
    assert!(e.contains("Ball lives on host 10.213.0.2"), "{e}");
    let e = h1.fails(&["stop", "Ball"]);
    assert!(e.contains("Ball lives on host 10.213.0.2"), "{e}");
    let e = h1.fails(&["tail", "Ball"]);
    assert!(e.contains("Ball's log is on its host 10.213.0.2"), "{e}");

    // Status from one host lists all five, the four others asked across the network.
    wait_until(
        "every link of the herd to be up, seen from Alford's host",
        || {
            h1.status()
                .values()
                .all(|r| r["state"] == "running" && r["links_up"] == r["links_total"])
        },
    );
    let status = h1.status();
    assert_eq!(status.len(), 5);
    for (i, server) in SERVERS.iter().enumerate() {
        let row = &status[*server];
        assert_eq!(row["host"], addresses[i], "{row}");
        assert_eq!(row["local"], *server == "Alford", "{row}");
        assert_eq!(row["port"], PORT, "{row}");
        assert!(row["pid"].is_u64() && row["uptime_s"].is_u64(), "{row}");
    }
    assert!(status["Alford"]["restarts"].is_u64());
    assert!(
        status["Ball"]["restarts"].is_null(),
        "unknown from another host"
    );
    let table = h1.ok(&["status"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("Ball") && l.contains("10.213.0.2") && l.contains(" no ")),
        "{table}"
    );

    // An update sent to Alford (from Hamilton's host) floods across hosts: Ball, two hops
    // away on another machine, answers WHATSAT with Alford's AT line (asked from a fourth).
    let at = net.host(3).ok(&[
        "send",
        "Alford",
        "IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503",
    ]);
    let at = at.trim_end();
    assert!(at.starts_with("AT Alford "), "{at}");
    wait_until("Ball to hold Alford's update", || {
        net.host(4).known_at("Ball", "kiwi.cs.ucla.edu").as_deref() == Some(at)
    });
    let reply = net
        .host(4)
        .ok(&["send", "Ball", "WHATSAT kiwi.cs.ucla.edu 10 2"]);
    assert!(
        reply.starts_with(&format!("{at}\n{{")) && reply.ends_with("}\n\n"),
        "{reply}"
    );

    // Unplug Welsh's machine: status says so ...
    let dropped = |from: &str| {
        let prefix = format!("peer connection from {from} ");
        net.host(5)
            .log_text("Welsh")
            .lines()
            .filter(|l| l.contains(&prefix) && l.contains(") dropped"))
            .count()
    };
    let drops_before = (dropped("Alford"), dropped("Ball"));
    net.set_link(5, false);
    wait_until("Welsh to be unreachable from Alford's host", || {
        h1.status()["Welsh"]["state"] == "unreachable"
    });
    // ... and the herd routes around it: Alford -> Hamilton -> Holiday -> Ball.
    let cut = h1.ok(&["send", "Alford", "IAMAT cut +10.0+20.0 1700000000.5"]);
    let cut = cut.trim_end();
    wait_until(
        "Ball to hold the update sent while Welsh was cut off",
        || net.host(2).known_at("Ball", "cut").as_deref() == Some(cut),
    );
    assert_eq!(
        net.host(5).known_at("Welsh", "cut"),
        None,
        "Welsh is cut off"
    );
    // Welsh closes its neighbours' silent connections (what they still had in flight for
    // it is lost with them), so what heals it below is anti-entropy, not a late delivery.
    wait_until("Welsh to close its neighbours' silent connections", || {
        dropped("Alford") > drops_before.0 && dropped("Ball") > drops_before.1
    });

    // Plug it back: the links re-form and anti-entropy brings Welsh what it missed.
    net.set_link(5, true);
    wait_until("Welsh to catch up after the cut", || {
        net.host(5).known_at("Welsh", "cut").as_deref() == Some(cut)
    });
    let welsh = &net.host(5).status()["Welsh"];
    assert!(
        welsh["synced"].as_u64() >= Some(1),
        "by anti-entropy: {welsh}"
    );
    wait_until("every link to be up again", || {
        h1.status()
            .values()
            .all(|r| r["state"] == "running" && r["links_up"] == r["links_total"])
    });

    // `stop all` on one machine stops its server only.
    net.host(2).ok(&["stop", "all"]);
    let status = h1.status();
    assert_eq!(status["Ball"]["state"], "unreachable");
    assert_eq!(status["Holiday"]["state"], "running");
}

#[test]
fn dns_names_are_resolved_at_every_dial_so_a_server_that_moves_is_found() {
    let Some(net) = Network::build(3) else { return };
    // Alford on the first machine, Welsh on the second; the third is spare.
    net.set_hosts_file("10.213.0.1 alford.herd.test\n10.213.0.2 welsh.herd.test\n");
    net.copy_herd_file(&format!(
        "servers:\n\
         \x20 Alford: {{ host: alford.herd.test, port: {PORT}, peers: [Welsh] }}\n\
         \x20 Welsh:  {{ host: welsh.herd.test, port: {PORT} }}\n\
         reconnect: {{ initial_ms: 50, max_ms: 500 }}\n"
    ));
    let (h1, h2, h3) = (net.host(1), net.host(2), net.host(3));
    // Which servers are local is decided by resolving their names on each machine.
    let e = h3.fails(&["start", "all"]);
    assert!(
        e.contains("no server of") && e.contains("Welsh welsh.herd.test"),
        "{e}"
    );
    assert!(h1.ok(&["start", "all"]).contains("Alford"));
    assert!(h2.ok(&["start", "all"]).contains("Welsh"));
    wait_until("Alford to link to Welsh by name", || {
        let status = h1.status();
        status["Alford"]["links_up"] == 1 && status["Welsh"]["state"] == "running"
    });
    let status = h1.status();
    assert_eq!(status["Welsh"]["host"], "welsh.herd.test");
    assert_eq!(status["Welsh"]["local"], false);
    let old_pid = status["Welsh"]["pid"].clone();

    // Welsh moves to the third machine: stopped on the second, its name pointed at the
    // third (in every machine's hosts file), started there. Alford is left running: it
    // resolves the name again when it redials, and finds Welsh where it is now.
    h2.ok(&["stop", "all"]);
    net.set_hosts_file("10.213.0.1 alford.herd.test\n10.213.0.3 welsh.herd.test\n");
    let e = h2.fails(&["start", "Welsh"]);
    assert!(e.contains("Welsh lives on host welsh.herd.test"), "{e}");
    assert!(h3.ok(&["start", "all"]).contains("Welsh"));
    wait_until("Alford to find Welsh at its new address", || {
        let status = h1.status();
        status["Alford"]["links_up"] == 1
            && status["Welsh"]["state"] == "running"
            && status["Welsh"]["pid"] != old_pid
    });
    // The log writer holds lines a moment to write them in time order.
    wait_until("Alford to log the link to Welsh's new machine", || {
        h1.log_text("Alford")
            .contains("peer link to Welsh (welsh.herd.test:12000) up")
    });
    let at = h1.ok(&["send", "Alford", "IAMAT moved +1.0+2.0 1700000000.25"]);
    let at = at.trim_end();
    wait_until("the update to reach Welsh on its new machine", || {
        h3.known_at("Welsh", "moved").as_deref() == Some(at)
    });
}
