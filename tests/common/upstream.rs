//! A web service stand-in for the providers that proxy WHATSAT (google, x): a real HTTP/1.1
//! server on a free loopback port that answers as the test says and records every request,
//! and a node that runs as `herdctl run` with the service's secret in its environment.
//! No test touches the internet.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Herd, DEADLINE};

/// How long an upstream that never answers in time hangs (`Reply::Hang(HANG)`).
pub const HANG: Duration = Duration::from_secs(10);

pub const IAMAT: &str = "IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503\n";

// ---------------------------------------------------------------------------------------------
// A tiny HTTP/1.1 server: one request per connection, `Connection: close`.

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    /// Header names lower-cased.
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl Recorded {
    /// The query string's pairs, percent-decoded (`+` is a space, as in a form).
    pub fn query(&self) -> BTreeMap<String, String> {
        let query = self.target.split_once('?').map(|(_, q)| q).unwrap_or("");
        query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (decode(k), decode(v))
            })
            .collect()
    }

    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap()
    }
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).expect("a %XX escape"));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

pub enum Reply {
    Http {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
        delay: Duration,
    },
    /// Accept, read the request, and say nothing for this long.
    Hang(Duration),
}

impl Reply {
    /// An answer with `status` and a JSON (or any) `body`.
    pub fn status(status: u16, body: impl Into<String>) -> Reply {
        Reply::Http {
            status,
            headers: Vec::new(),
            body: body.into(),
            delay: Duration::ZERO,
        }
    }

    /// The same answer with one more header.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        if let Reply::Http { headers, .. } = &mut self {
            headers.push((name.to_owned(), value.to_owned()));
        }
        self
    }
}

pub fn ok(body: impl Into<String>) -> Reply {
    Reply::status(200, body)
}

type Responder = dyn Fn(&Recorded, usize) -> Reply + Send + Sync;

pub struct Upstream {
    port: u16,
    requests: Arc<Mutex<Vec<Recorded>>>,
    stop: Arc<AtomicBool>,
}

impl Upstream {
    /// Serves on a free loopback port; `respond` gets each request and its index (0-based).
    pub fn start(respond: impl Fn(&Recorded, usize) -> Reply + Send + Sync + 'static) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let respond: Arc<Responder> = Arc::new(respond);
        let (recorded, stopping) = (Arc::clone(&requests), Arc::clone(&stop));
        thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (recorded, respond) = (Arc::clone(&recorded), Arc::clone(&respond));
                thread::spawn(move || serve(stream, &recorded, &*respond));
            }
        });
        Upstream {
            port,
            requests,
            stop,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wakes the accept loop
    }
}

fn serve(stream: TcpStream, recorded: &Mutex<Vec<Recorded>>, respond: &Responder) {
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return; // the wake-up connection, or a client that gave up
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let target = parts.next().unwrap_or("").to_owned();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 {
            return;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((name, value)) = h.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
    }
    let length: usize = headers
        .get("content-length")
        .map(|l| l.parse().unwrap())
        .unwrap_or(0);
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let request = Recorded {
        method,
        target,
        headers,
        body: String::from_utf8(body).unwrap(),
    };
    let index = {
        let mut all = recorded.lock().unwrap();
        all.push(request.clone());
        all.len() - 1
    };
    let mut stream = reader.into_inner();
    match respond(&request, index) {
        Reply::Hang(how_long) => thread::sleep(how_long),
        Reply::Http {
            status,
            headers,
            body,
            delay,
        } => {
            thread::sleep(delay);
            let reason = if status == 200 { "OK" } else { "Error" };
            let mut head = format!(
                "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=UTF-8\r\n\
                 Content-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            for (name, value) in headers {
                head += &format!("{name}: {value}\r\n");
            }
            head += "\r\n";
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body.as_bytes());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A node with the service's secret in its environment.

pub struct ProxyNode {
    pub herd: Herd,
    /// The secret the node was given, which must never show.
    secret: String,
    /// The first line of the last reply [`ProxyNode::send`] read: the log is checked once
    /// it holds it (the log writer holds lines a moment to write them in time order).
    last_reply: std::sync::Mutex<String>,
}

impl ProxyNode {
    /// Starts a one-server herd with `places_yaml` and `env`=`secret`, and waits until it
    /// listens.
    pub fn start(places_yaml: &str, env: &str, secret: &str) -> ProxyNode {
        let node = ProxyNode::spawn(places_yaml, env, Some(secret));
        node.herd.wait_listening("Alford");
        node
    }

    /// Starts it without waiting, with `env` set to `secret` or removed (`None`).
    pub fn spawn(places_yaml: &str, env: &str, secret: Option<&str>) -> ProxyNode {
        let herd = Herd::configure(super::SOLO, places_yaml);
        herd.spawn_with_env("Alford", &[(env, secret)]);
        ProxyNode {
            herd,
            secret: secret.unwrap_or_default().to_owned(),
            last_reply: Default::default(),
        }
    }

    pub fn send(&self, input: &str) -> String {
        let reply = self.herd.send("Alford", input);
        *self.last_reply.lock().unwrap() = reply.lines().next().unwrap_or_default().to_owned();
        reply
    }

    /// IAMAT for kiwi, returning its AT line.
    pub fn locate_kiwi(&self) -> String {
        let at = self.send(IAMAT);
        assert!(at.starts_with("AT Alford "), "{at}");
        at.trim_end().to_owned()
    }

    /// WHATSAT for kiwi: the AT line and the parsed document, after checking the wire format
    /// and that the secret is not in the reply.
    pub fn whatsat(&self, radius: &str, bound: usize) -> (String, Value) {
        let reply = self.send(&format!("WHATSAT kiwi.cs.ucla.edu {radius} {bound}\n"));
        self.assert_not_in(&reply, "a reply");
        parse_whatsat(&reply)
    }

    /// WHATSAT for kiwi with an upstream that hangs for [`HANG`] and a node whose places
    /// `timeout_ms` is `timeout`: the document, checked to have come when the timeout ran
    /// out, neither before it nor from the upstream's eventual answer (a bound no load on
    /// the machine can reach: the hang is 25 timeouts long).
    pub fn whatsat_past_the_timeout(&self, timeout: Duration) -> Value {
        let started = Instant::now();
        let (_, document) = self.whatsat("10", 5);
        let took = started.elapsed();
        assert!(
            took >= timeout.mul_f64(0.95),
            "answered before the {timeout:?} timeout: {took:?}"
        );
        assert!(
            took < HANG,
            "answered after {took:?}: when the upstream stopped hanging, not at the timeout"
        );
        document
    }

    /// Neither the node's logs nor its stderr hold the secret, or its second half.
    pub fn assert_secret_hidden(&self) {
        let last_reply = self.last_reply.lock().unwrap().clone();
        let logs = match last_reply.is_empty() {
            true => {
                super::wait_until("Alford's log", || !self.herd.log_text("Alford").is_empty());
                self.herd.log_text("Alford")
            }
            false => self.herd.log_once_it_has("Alford", &last_reply),
        };
        self.assert_not_in(&logs, "the log");
        self.assert_not_in(&self.herd.stderr("Alford"), "stderr");
    }

    /// `text` holds neither the secret nor its second half.
    pub fn assert_not_in(&self, text: &str, where_: &str) {
        let half = &self.secret[self.secret.len() / 2..];
        assert!(
            !text.contains(&self.secret) && !text.contains(half),
            "the secret (or part of it) is in {where_}:\n{text}"
        );
    }
}

/// Splits a WHATSAT reply and checks the protocol's newline rules.
pub fn parse_whatsat(reply: &str) -> (String, Value) {
    assert!(
        reply.ends_with("}\n\n"),
        "must end with the document and an empty line: {reply:?}"
    );
    let (at, json) = reply.split_once('\n').expect("an AT line");
    assert!(at.starts_with("AT Alford "), "{reply}");
    let json = &json[..json.len() - 2];
    assert!(
        !json.contains("\n\n"),
        "a run of newlines reached the wire: {reply:?}"
    );
    let document: Value = serde_json::from_str(json).expect("the document is JSON");
    (at.to_owned(), document)
}

/// Ten WHATSATs for kiwi at once, same radius, bounds 1 to 10, against a node whose herd.yaml
/// `places:` line `places_yaml` makes for the stand-in's base URL (`url("")`), and with no
/// cache, so only single-flight can share a request. The stand-in answers `answer` only once
/// the node says (`places_waiting` in `HERD STATUS`) that all ten queries are waiting on the
/// places provider, so every query is then waiting on whatever requests exist.
/// Returns each bound's document (in bound order) and how many requests reached the stand-in.
pub fn ten_concurrent_whatsats(
    places_yaml: impl FnOnce(&Upstream) -> String,
    env: &str,
    secret: &str,
    answer: String,
) -> (Vec<Value>, usize) {
    use std::sync::{OnceLock, Weak};
    // Weak: the stand-in's thread must not keep the node, and so its process, alive.
    let node_slot: Arc<OnceLock<Weak<ProxyNode>>> = Arc::default();
    let slot = Arc::clone(&node_slot);
    let upstream = Upstream::start(move |_, _| {
        let node = slot
            .get()
            .and_then(Weak::upgrade)
            .expect("the node is running");
        super::wait_until("ten WHATSATs to wait on the places provider", || {
            node.herd.status("Alford").places_waiting >= 10
        });
        ok(answer.clone())
    });
    let node = Arc::new(ProxyNode::start(&places_yaml(&upstream), env, secret));
    node_slot.set(Arc::downgrade(&node)).ok();
    node.locate_kiwi();
    let threads: Vec<_> = (1..=10)
        .map(|bound| {
            let node = Arc::clone(&node);
            thread::spawn(move || node.whatsat("10", bound).1)
        })
        .collect();
    let documents = threads.into_iter().map(|t| t.join().unwrap()).collect();
    node.assert_secret_hidden();
    (documents, upstream.count())
}
