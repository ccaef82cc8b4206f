//! A real herd for black-box tests: `herdctl run` processes on loopback ports, killed when
//! the test ends, pass or fail.
#![allow(dead_code)] // each test binary uses a different part of this

pub mod peer;
pub mod supervised;
pub mod upstream;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long anything in a test may take before it counts as broken. Generous, because CI
/// runs debug builds on two cores alongside other tests.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The classic herd's links (PROTOCOL.md).
pub const CLASSIC: &[(&str, &[&str])] = &[
    ("Alford", &["Hamilton", "Welsh"]),
    ("Ball", &["Holiday", "Welsh"]),
    ("Hamilton", &["Holiday"]),
    ("Holiday", &[]),
    ("Welsh", &[]),
];

/// `links.tls` with the files of `herdctl certs init` (`certs/` beside the herd file).
pub const TLS_YAML: &str =
    "links:\n  tls: { ca: certs/ca.pem, cert: \"certs/{name}.pem\", key: \"certs/{name}.key\" }\n";

/// One server alone.
pub const SOLO: &[(&str, &[&str])] = &[("Alford", &[])];

/// Two neighbours (Alford dials Ball, and Ball dials back: a link is both ways).
pub const PAIR: &[(&str, &[&str])] = &[("Alford", &["Ball"]), ("Ball", &[])];

/// An IAMAT line, newline included.
pub fn iamat_line(client: &str, location: &str, time: &str) -> String {
    format!("IAMAT {client} {location} {time}\n")
}

/// Client `i` of a batch tagged `tag`: `tag-i`.
pub fn numbered_client(tag: &str, i: usize) -> String {
    format!("{tag}-{i}")
}

/// The IAMAT of [`numbered_client`] `i`, at a location and time of its own (all in range),
/// so every client of a batch is told apart by its AT line.
pub fn numbered_iamat(tag: &str, i: usize) -> String {
    let location = format!("+{}.{i:06}-118.{:06}", i % 90, i * 7 % 1_000_000);
    iamat_line(
        &numbered_client(tag, i),
        &location,
        &format!("1621464827.{i:09}"),
    )
}

/// A herd file: `servers` as (name, port, peers), each with its default admin port, fast
/// reconnects (unless `extra` sets its own), then `extra`.
pub fn herd_yaml(servers: &[(&str, u16, &[&str])], extra: &str) -> String {
    let mut yaml = String::from("servers:\n");
    for (name, port, peers) in servers {
        yaml += &format!(
            "  {name}: {{ port: {port}, admin_port: {}, peers: [{}] }}\n",
            port + ADMIN_OFFSET,
            peers.join(", ")
        );
    }
    if !extra.contains("reconnect:") {
        yaml += "reconnect: { initial_ms: 50, max_ms: 500 }\n";
    }
    yaml + extra
}

pub fn herdctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_herdctl"))
}

/// A child process killed when dropped, so a failing test never leaves it behind.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Running {
    pub fn spawn(command: &mut Command) -> Running {
        Running(command.spawn().unwrap())
    }

    /// Waits for the process to exit, up to the deadline (then the test fails, and the drop
    /// kills it).
    pub fn wait(&mut self) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < DEADLINE, "herdctl did not exit in time");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Runs `command` to the end with `stdin`, like `Command::output` but killed (failing the
/// test) if it outlives the deadline, so a hang can never stall the test run.
pub fn run_to_end(command: &mut Command, stdin: &[u8]) -> std::process::Output {
    let mut child = Running::spawn(
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let mut input = child.0.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let read_all = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = r.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = read_all(Box::new(child.0.stdout.take().unwrap()));
    let stderr = read_all(Box::new(child.0.stderr.take().unwrap()));
    let status = child.wait();
    std::process::Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// Polls `condition` until it holds or the deadline passes, then panics naming `what`.
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        if start.elapsed() > DEADLINE {
            panic!("timed out after {DEADLINE:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A server's admin port when the herd file gives none (herdctl's `ADMIN_PORT_OFFSET`).
pub const ADMIN_OFFSET: u16 = 1000;

/// A loopback port held for a test: bound (without `SO_REUSEADDR`) but not listening, so
/// no other process can bind it, while a connection to it is refused exactly as to a free
/// port (a neighbour dialling it sees a server that is not up yet). Dropping it frees the
/// port for whoever is meant to listen there.
pub struct HeldPort {
    pub port: u16,
    socket: std::os::fd::OwnedFd,
}

impl HeldPort {
    fn bind(port: u16) -> Option<HeldPort> {
        use nix::sys::socket::{bind, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
        use std::os::fd::AsRawFd;
        let socket = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        bind(socket.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, port)).ok()?;
        Some(HeldPort { port, socket })
    }

    /// The held socket, listening.
    pub fn listen(self) -> TcpListener {
        use nix::sys::socket::{listen, Backlog};
        listen(&self.socket, Backlog::new(128).unwrap()).unwrap();
        TcpListener::from(self.socket)
    }
}

/// Ports below the kernel's ephemeral range, so outgoing connections never take them, picked
/// at random so parallel tests (threads or processes) do not collide, each with its default
/// admin port (port + [`ADMIN_OFFSET`]): a herd file written with these ports and no
/// `admin_port:` gets admin ports that are free too. Each port and admin port comes held
/// ([`HeldPort`]), so it stays free until the caller lets go of it, just before its
/// user binds it: `[port, admin port]` per entry.
pub fn hold_ports(count: usize) -> Vec<[HeldPort; 2]> {
    let mut seed = std::process::id() as u64 ^ Instant::now().elapsed().as_nanos() as u64;
    seed ^= std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut held: Vec<[HeldPort; 2]> = Vec::new();
    let mut handed = HANDED_PORTS.lock().unwrap_or_else(|e| e.into_inner());
    while held.len() < count {
        // xorshift: good enough to spread tests over the range.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let port = 20000 + (seed % 11000) as u16;
        let admin = port + ADMIN_OFFSET;
        if handed.contains(&port) || handed.contains(&admin) {
            continue;
        }
        if let (Some(client), Some(admin)) = (HeldPort::bind(port), HeldPort::bind(admin)) {
            handed.extend([client.port, admin.port]);
            held.push([client, admin]);
        }
    }
    held
}

/// Like [`hold_ports`], let go at once: for a port that must have nothing on it, or one a
/// program the test cannot hand a held port to binds soon after (that program may then,
/// rarely, find it taken by another process).
pub fn free_ports(count: usize) -> Vec<u16> {
    hold_ports(count)
        .iter()
        .map(|[port, _]| port.port)
        .collect()
}

/// Every port (and its admin port) this test process has handed out, so no two tests of
/// one process are ever given the same port, even after one has let go of it.
static HANDED_PORTS: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());

/// Connects, sends `input`, half-closes, and returns everything the server sent back.
pub fn exchange(port: u16, input: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("cannot connect to port {port}: {e}"));
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.write_all(input).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let mut reply = Vec::new();
    stream
        .read_to_end(&mut reply)
        .unwrap_or_else(|e| panic!("reading the reply from port {port}: {e}"));
    reply
}

/// One request/response exchange with the server on `port`, as text.
pub fn send_to(port: u16, input: &str) -> String {
    String::from_utf8(exchange(port, input.as_bytes())).unwrap()
}

/// The AT line the server on `port` holds for `client`, or `None` if it answers `?`.
pub fn known_at(port: u16, client: &str) -> Option<String> {
    let reply = send_to(port, &format!("WHATSAT {client} 1 1\n"));
    match reply.starts_with("? ") {
        true => None,
        false => Some(reply.lines().next().unwrap().to_owned()),
    }
}

/// Waits until the server on `port` holds exactly `at_line` for `client`.
pub fn wait_for_at(port: u16, client: &str, at_line: &str) {
    wait_until(&format!("port {port} to hold {at_line:?}"), || {
        known_at(port, client).as_deref() == Some(at_line)
    });
}

/// `GET path` on the admin endpoint at `port`: status code and body.
pub fn admin_get(port: u16, path: &str, token: Option<&str>) -> (u16, String) {
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some(token) = token {
        request += &format!("Authorization: Bearer {token}\r\n");
    }
    request += "\r\n";
    let reply = String::from_utf8(exchange(port, request.as_bytes())).unwrap();
    let (head, body) = reply
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {reply:?}"));
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

pub struct Herd {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    ports: Mutex<Ports>,
    children: Mutex<BTreeMap<String, Child>>,
}

/// A herd's ports, and those still held for it until their node starts.
#[derive(Default)]
struct Ports {
    client: BTreeMap<String, u16>,
    tls: BTreeMap<String, u16>,
    held: BTreeMap<u16, HeldPort>,
    /// Nothing outside this herd may have the port numbers yet (no node spawned, no port
    /// asked for), so a start whose port was taken may move the herd to fresh ones.
    movable: bool,
}

impl Ports {
    fn of(&self, name: &str) -> Vec<u16> {
        let port = self.client[name];
        [
            Some(port),
            Some(port + ADMIN_OFFSET),
            self.tls.get(name).copied(),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// How many times a start whose node found its port taken (by another process, between the
/// herd letting go of the port and the node binding it) is tried again on fresh ports.
const PORT_RETRIES: usize = 3;

/// What a node says on its standard error when one of its ports is taken.
const PORT_TAKEN: &str = "is another process using port";

impl Herd {
    /// Writes a herd file for `servers` (name, peers) with free ports; starts nothing.
    pub fn configure(servers: &[(&str, &[&str])], extra_yaml: &str) -> Herd {
        let dir = tempfile::tempdir().unwrap();
        let mut ports = Ports {
            movable: true,
            ..Ports::default()
        };
        for ((name, _), held) in servers.iter().zip(hold_ports(servers.len())) {
            ports.client.insert(name.to_string(), held[0].port);
            ports.held.extend(held.map(|h| (h.port, h)));
        }
        let with_ports: Vec<(&str, u16, &[&str])> = servers
            .iter()
            .map(|&(name, peers)| (name, ports.client[name], peers))
            .collect();
        let yaml = herd_yaml(&with_ports, extra_yaml);
        let config = dir.path().join("herd.yaml");
        std::fs::write(&config, yaml).unwrap();
        Herd {
            dir,
            config,
            ports: Mutex::new(ports),
            children: Mutex::new(BTreeMap::new()),
        }
    }

    fn ports(&self) -> std::sync::MutexGuard<'_, Ports> {
        self.ports.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The names of the herd's servers, in order.
    pub fn names(&self) -> Vec<String> {
        self.ports().client.keys().cloned().collect()
    }

    /// Lets go of server `name`'s held ports (client, admin, TLS), for whatever is to bind
    /// them next.
    pub fn release(&self, name: &str) {
        let mut ports = self.ports();
        for port in ports.of(name) {
            ports.held.remove(&port);
        }
    }

    /// Lets go of every held port: for a program (the supervisor, a container) that starts
    /// the nodes itself.
    pub fn release_all(&self) {
        let mut ports = self.ports();
        ports.held.clear();
        ports.movable = false;
    }

    /// A listener on server `name`'s client port (the held socket itself, now listening,
    /// so no one can take the port in between), for a test that plays that server.
    pub fn listen_as(&self, name: &str) -> TcpListener {
        let port = self.port(name);
        let held = self.ports().held.remove(&port);
        held.expect("a port still held (not started, not let go)")
            .listen()
    }

    /// Moves the herd to fresh held ports, in the herd file too. Only for a herd that no
    /// one outside it knows the ports of (see [`Ports::movable`]); `false` if the herd file
    /// does not have the lines [`Herd::configure`] wrote.
    fn move_to_fresh_ports(&self) -> bool {
        let mut ports = self.ports();
        let mut yaml = std::fs::read_to_string(&self.config).unwrap();
        let names: Vec<String> = ports.client.keys().cloned().collect();
        let mut fresh = hold_ports(names.len() + ports.tls.len()).into_iter();
        let mut held = BTreeMap::new();
        for name in &names {
            let [client, admin] = fresh.next().unwrap();
            let mut moves = vec![
                (ports.client[name], client.port),
                (ports.client[name] + ADMIN_OFFSET, admin.port),
            ];
            ports.client.insert(name.clone(), client.port);
            held.extend([(client.port, client), (admin.port, admin)]);
            if let Some(old) = ports.tls.get(name).copied() {
                let [tls, _] = fresh.next().unwrap();
                moves.push((old, tls.port));
                ports.tls.insert(name.clone(), tls.port);
                held.insert(tls.port, tls);
            }
            let head = format!("  {name}: {{ ");
            let Some(start) = yaml.find(&head) else {
                return false;
            };
            let end = start + yaml[start..].find('\n').unwrap_or(yaml.len() - start);
            let mut line = yaml[start..end].to_owned();
            for (key, (old, new)) in ["port", "admin_port", "tls_port"].iter().zip(&moves) {
                let from = format!(" {key}: {old},");
                if !line.contains(&from) {
                    return false;
                }
                line = line.replace(&from, &format!(" {key}: {new},"));
            }
            yaml.replace_range(start..end, &line);
        }
        std::fs::write(&self.config, yaml).unwrap();
        ports.held = held;
        true
    }

    /// Configures and starts every server, and waits until each one answers.
    pub fn start(servers: &[(&str, &[&str])]) -> Herd {
        Herd::configure(servers, "").started()
    }

    pub fn classic() -> Herd {
        Herd::start(CLASSIC)
    }

    /// `herdctl --config <this herd's file>`. Whatever it runs may bind the herd's ports
    /// (a supervisor starting nodes), so the herd lets go of them all.
    pub fn herdctl(&self) -> Command {
        self.release_all();
        self.herdctl_binding_nothing()
    }

    /// [`Herd::herdctl`] for a command that binds none of the herd's ports.
    fn herdctl_binding_nothing(&self) -> Command {
        let mut command = herdctl();
        command.arg("--config").arg(&self.config);
        command
    }

    /// Server `name`'s client port (from now on the herd keeps to its ports).
    pub fn port(&self, name: &str) -> u16 {
        let mut ports = self.ports();
        ports.movable = false;
        ports.client[name]
    }

    /// Server `name`'s admin port.
    pub fn admin_port(&self, name: &str) -> u16 {
        self.port(name) + ADMIN_OFFSET
    }

    /// `GET path` on server `name`'s admin endpoint: status code and body.
    pub fn admin_get(&self, name: &str, path: &str, token: Option<&str>) -> (u16, String) {
        admin_get(self.admin_port(name), path, token)
    }

    /// A herd whose links are TLS (`TLS_YAML` before `extra_yaml`), its certificates made by
    /// `herdctl certs init` in `certs/` beside the herd file; nothing started.
    pub fn configure_tls(servers: &[(&str, &[&str])], extra_yaml: &str) -> Herd {
        let herd = Herd::configure(servers, &format!("{TLS_YAML}{extra_yaml}"));
        herd.certs(&["init"]);
        herd
    }

    /// `herdctl certs ARGS` for this herd, which must succeed; its standard output.
    pub fn certs(&self, args: &[&str]) -> String {
        let output = run_to_end(self.herdctl_binding_nothing().arg("certs").args(args), b"");
        assert!(
            output.status.success(),
            "herdctl certs {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// Gives server `name` a `tls_port` (a free one, held until `name` starts) in the herd
    /// file; the port.
    pub fn give_tls_port(&self, name: &str) -> u16 {
        let [held, _] = hold_ports(1).pop().unwrap();
        let port = held.port;
        let yaml = std::fs::read_to_string(&self.config).unwrap();
        let from = format!("  {name}: {{ port: {}, ", self.ports().client[name]);
        assert!(yaml.contains(&from), "{yaml}");
        let yaml = yaml.replace(&from, &format!("{from}tls_port: {port}, "));
        std::fs::write(&self.config, yaml).unwrap();
        let mut ports = self.ports();
        ports.tls.insert(name.to_owned(), port);
        ports.held.insert(port, held);
        port
    }

    /// Starts `herdctl run NAME` (stderr kept in the herd's folder for post-mortems).
    pub fn spawn(&self, name: &str) {
        self.spawn_with_env(name, &[]);
    }

    /// Like [`Herd::spawn`], with environment variables set (`Some`) or removed (`None`).
    /// The node is the herd's like any other: watched, logged, killed at the end. Its
    /// ports are let go of just before.
    pub fn spawn_with_env(&self, name: &str, env: &[(&str, Option<&str>)]) {
        let stderr = std::fs::File::create(self.dir.path().join(format!("{name}.stderr"))).unwrap();
        let mut command = self.herdctl_binding_nothing();
        command
            .args(["run", name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        for (key, value) in env {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        self.release(name);
        let child = command.spawn().unwrap();
        self.ports().movable = false;
        let previous = self.children.lock().unwrap().insert(name.to_owned(), child);
        assert!(previous.is_none(), "{name} was already running");
    }

    /// Every server spawned at once, then each waited for: neighbours dial each other while
    /// the rest start.
    pub fn started(self) -> Herd {
        self.start_nodes(&self.names());
        self
    }

    pub fn start_node(&self, name: &str) {
        self.start_nodes(&[name.to_owned()]);
    }

    /// Spawns `names`, then waits until each listens. Another process can take a port in
    /// the moment between the herd letting go of it and the node binding it; when a node
    /// says so and the herd's ports are still its own secret (nothing started, no port
    /// asked for), the nodes are stopped and started again on fresh ports, at most
    /// [`PORT_RETRIES`] times.
    fn start_nodes(&self, names: &[String]) {
        for attempt in 0.. {
            let movable = self.ports().movable;
            for name in names {
                self.spawn(name);
            }
            let Err(taken) = names.iter().try_for_each(|name| self.await_listening(name)) else {
                return;
            };
            if !movable || attempt == PORT_RETRIES {
                panic!("{taken}");
            }
            for name in names {
                if let Some(child) = self.children.lock().unwrap().remove(name) {
                    drop(Running(child));
                }
            }
            if !self.move_to_fresh_ports() {
                panic!("{taken} (and the herd file is not one the herd can move to other ports)");
            }
            self.ports().movable = true;
            eprintln!("{taken}: starting again on fresh ports");
        }
    }

    /// Waits until `name` listens on its client port and on its admin port: a node binds
    /// the admin port just after the client port, and a test may go to either first.
    pub fn wait_listening(&self, name: &str) {
        if let Err(taken) = self.await_listening(name) {
            panic!("{taken}");
        }
    }

    /// [`Herd::wait_listening`], or what `name` said if it exited because a port of its was
    /// taken (any other exit fails the test).
    fn await_listening(&self, name: &str) -> Result<(), String> {
        let port = self.ports().client[name];
        let admin = port + ADMIN_OFFSET;
        let mut taken = None;
        wait_until(&format!("{name} to listen on {port} and {admin}"), || {
            if let Some(child) = self.children.lock().unwrap().get_mut(name) {
                if let Ok(Some(status)) = child.try_wait() {
                    let stderr = self.stderr(name);
                    if !stderr.contains(PORT_TAKEN) {
                        panic!("{name} exited with {status}: {stderr}");
                    }
                    taken = Some(format!("{name} found a port taken: {}", stderr.trim_end()));
                    return true;
                }
            }
            TcpStream::connect(("127.0.0.1", port)).is_ok()
                && TcpStream::connect(("127.0.0.1", admin)).is_ok()
        });
        taken.map_or(Ok(()), Err)
    }

    pub fn stderr(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.stderr"))).unwrap_or_default()
    }

    /// SIGKILL: a crash, as far as the rest of the herd can tell.
    pub fn kill(&self, name: &str) {
        let mut child = self.children.lock().unwrap().remove(name).expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM, and wait for a clean exit.
    pub fn terminate(&self, name: &str) -> std::process::ExitStatus {
        let pid = self
            .children
            .lock()
            .unwrap()
            .get(name)
            .expect("running")
            .id();
        nix_kill(pid, "TERM");
        self.wait_exit(name)
    }

    /// Waits (up to the deadline, then the test fails) for `name` to exit by itself.
    pub fn wait_exit(&self, name: &str) -> std::process::ExitStatus {
        let mut child = Running(self.children.lock().unwrap().remove(name).expect("running"));
        child.wait()
    }

    /// The pid of server `name` (as it reports itself).
    pub fn pid(&self, name: &str) -> u32 {
        self.status(name).pid
    }

    /// Server `name`'s resident memory, in KiB (from /proc, by its own pid).
    pub fn rss_kib(&self, name: &str) -> u64 {
        let pid = self.pid(name);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .expect("VmRSS in /proc/PID/status");
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// The value of server `name`'s `/metrics` sample that starts with `prefix` (name and
    /// labels); the herd file must open its admin endpoint (`admin: { open: true }`).
    pub fn metric(&self, name: &str, prefix: &str) -> f64 {
        let (code, page) = self.admin_get(name, "/metrics", None);
        assert_eq!(code, 200, "{page}");
        let line = page
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in {page}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }

    /// Server `name`'s own figures (`HERD STATUS`).
    pub fn status(&self, name: &str) -> herdctl::protocol::NodeFigures {
        let reply = self.send(name, "HERD STATUS\n");
        herdctl::protocol::parse_status(&reply)
            .unwrap_or_else(|| panic!("{name} answered HERD STATUS with {reply:?}"))
    }

    /// Waits until each of `names` has every link its herd file gives it up (a test whose
    /// check reads a flood's own log line must not race the handshake: a record sent before
    /// the link is up arrives by anti-entropy instead).
    pub fn wait_links_up(&self, names: &[&str]) {
        for name in names {
            wait_until(&format!("{name}'s links to be up"), || {
                let status = self.status(name);
                status.links_up == status.links_total
            });
        }
    }

    /// One request/response exchange with server `name`, as text.
    pub fn send(&self, name: &str, input: &str) -> String {
        send_to(self.port(name), input)
    }

    /// Sends an IAMAT to server `name`, checks its reply is the AT line for it (this
    /// server's name, a skew with nine decimals, the client's fields as sent) and returns
    /// that line.
    pub fn iamat(&self, name: &str, client: &str, location: &str, time: &str) -> String {
        let reply = self.send(name, &iamat_line(client, location, time));
        let line = reply.strip_suffix('\n').expect("one line");
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields.len(), 6, "{reply:?}");
        assert_eq!((fields[0], fields[1]), ("AT", name));
        let skew = fields[2];
        assert!(skew.starts_with(['+', '-']), "{skew}");
        assert_eq!(skew.split_once('.').unwrap().1.len(), 9, "{skew}");
        assert_eq!(&fields[3..], [client, location, time]);
        line.to_owned()
    }

    /// The lines of server `name`'s log that say link `neighbour` came `up` (the dialler's
    /// `peer link to NEIGHBOUR (ADDRESS) up`) or `dropped`, in order.
    pub fn link_events(&self, name: &str, neighbour: &str) -> Vec<String> {
        let prefix = format!("peer link to {neighbour} (");
        self.log_text(name)
            .lines()
            .filter_map(|l| {
                let event = &l[l.find(&prefix)? + prefix.len()..];
                let (_address, what) = event.split_once(") ")?;
                (what == "up" || what.starts_with("dropped: ")).then(|| what.to_owned())
            })
            .collect()
    }

    /// Waits until server `name`'s log shows link `neighbour` up, dropped, and up again
    /// (the log writer is asynchronous); fails showing the events it found.
    pub fn wait_for_relink(&self, name: &str, neighbour: &str) -> Vec<String> {
        let relinked = |events: &[String]| {
            events.len() >= 3
                && events[0] == "up"
                && events[1].starts_with("dropped: ")
                && events[2] == "up"
        };
        let start = Instant::now();
        loop {
            let events = self.link_events(name, neighbour);
            if relinked(&events) {
                return events;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{name}'s log shows no re-link to {neighbour}: {events:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The AT line `name` holds for `client`, or `None` if it answers `?`.
    pub fn known_at(&self, name: &str, client: &str) -> Option<String> {
        known_at(self.port(name), client)
    }

    /// Waits until server `name` holds exactly `at_line` for `client`.
    pub fn wait_for_at(&self, name: &str, client: &str, at_line: &str) {
        wait_for_at(self.port(name), client, at_line);
    }

    /// All of server `name`'s log files, concatenated in name order.
    pub fn log_text(&self, name: &str) -> String {
        log_text_in(self.dir.path(), name)
    }

    /// Server `name`'s log once it contains `what`: the log writer holds lines up to
    /// `logs.order_window_ms` to write them in time order, so a line is not there at once.
    pub fn log_once_it_has(&self, name: &str, what: &str) -> String {
        wait_until(&format!("{name}'s log to contain {what:?}"), || {
            self.log_text(name).contains(what)
        });
        self.log_text(name)
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The herd's secret: `herd.secret` beside its herd file (created if no node made it
    /// yet, exactly as a node would).
    pub fn secret(&self) -> herdctl::auth::HerdSecret {
        herdctl::auth::SecretSource::Default(self.dir.path().join("herd.secret"))
            .ensure_secret()
            .unwrap()
            .unwrap()
    }
}

impl Drop for Herd {
    fn drop(&mut self) {
        let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        for child in children.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// All of server `name`'s log files under the herd folder `dir` (`dir/logs/<name>/`),
/// concatenated in name order.
pub fn log_text_in(dir: &Path, name: &str) -> String {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("logs").join(name))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap_or_default())
        .collect()
}

/// Sends a signal by name with the system `kill`, so tests need no extra crates.
pub fn nix_kill(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// For a test that needs a tool or engine this machine lacks: says so and returns, so the
/// caller can skip, except under CI=true (CI machines have them all: `.ci/run` installs
/// them), where the test fails instead.
pub fn skip_unless_ci(message: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{message} (CI=true: .ci/run installs it, so missing is a failure)");
    }
    eprintln!("SKIPPED: {message}");
}

/// `yaml` (a herd file `Herd::configure` wrote) with server `name`'s peers set to `peers`.
pub fn with_peers(yaml: &str, name: &str, peers: &[&str]) -> String {
    let line = format!("  {name}: ");
    let changed: Vec<String> = yaml
        .lines()
        .map(|l| match l.starts_with(&line) {
            true => l.replace("peers: []", &format!("peers: [{}]", peers.join(", "))),
            false => l.to_owned(),
        })
        .collect();
    let changed = changed.join("\n") + "\n";
    assert_ne!(changed, yaml, "{name} has no `peers: []` in\n{yaml}");
    changed
}
