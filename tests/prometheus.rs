//! The metrics as Prometheus reads them: `promtool check metrics` on every node's page, and
//! a real Prometheus server scraping a running herd through `herdctl export prometheus`.
//! Both need Debian's `prometheus` package (promtool, prometheus); without it they skip,
//! unless CI=true, where missing is a failure.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{Herd, CLASSIC};

/// The path of `tool`, or `None` (after saying so) when it is missing outside CI.
fn tool(name: &str) -> Option<String> {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if found.is_none() {
        common::skip_unless_ci(&format!("{name} not found (apt-get install prometheus)"));
    }
    found
}

#[test]
fn promtool_accepts_every_nodes_metrics() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let herd = Herd::configure(CLASSIC, "admin: { open: true }\n").started();
    herd.send("Alford", "IAMAT kiwi +34.068930-118.445127 1621464827.5\n");
    herd.send("Ball", "WHATSAT nobody 10 5\n");
    for name in &herd.names() {
        let (status, page) = herd.admin_get(name, "/metrics", None);
        assert_eq!(status, 200);
        let mut check = Command::new(&promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        check
            .stdin
            .take()
            .unwrap()
            .write_all(page.as_bytes())
            .unwrap();
        let out = check.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{name}: promtool check metrics: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `GET path` on Prometheus's HTTP API (HTTP/1.0: the answer is whole, then the connection
/// closes): the JSON body.
fn api(port: u16, path: &str) -> Option<serde_json::Value> {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).ok()?;
    let (_, body) = reply.split_once("\r\n\r\n")?;
    serde_json::from_str(body).ok()
}

/// The value of a PromQL query that yields one number, if it does (yet).
fn query_value(port: u16, promql: &str) -> Option<f64> {
    let encoded: String = promql
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let answer = api(port, &format!("/api/v1/query?query={encoded}"))?;
    let result = answer["data"]["result"].as_array()?;
    if result.len() != 1 {
        return None;
    }
    result[0]["value"][1].as_str()?.parse().ok()
}

const TRIO: &[(&str, &[&str])] = &[("Alford", &["Welsh"]), ("Ball", &["Welsh"]), ("Welsh", &[])];

#[test]
fn a_real_prometheus_scrapes_the_herd() {
    let Some(prometheus) = tool("prometheus") else {
        return;
    };
    let herd = Herd::configure(
        TRIO,
        "secret: \"a-prometheus-test-secret-of-32-chars-or-more\"\n",
    )
    .started();
    // The config as `export prometheus` writes it, with a fast scrape for the test.
    let token = herd.path().join("admin.token");
    let out = common::run_to_end(
        herd.herdctl()
            .args(["export", "prometheus", "--write-token", "--token-file"])
            .arg(&token),
        b"",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let scrape = String::from_utf8(out.stdout).unwrap();
    assert!(!scrape.contains(&std::fs::read_to_string(&token).unwrap().trim().to_owned()));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&token).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let config = herd.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!("global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n{scrape}"),
    )
    .unwrap();
    let held = common::hold_ports(1).pop().unwrap();
    let port = held[0].port;
    let log = std::fs::File::create(herd.path().join("prometheus.log")).unwrap();
    drop(held); // for Prometheus to bind
    let _prometheus = common::Running::spawn(
        Command::new(prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                herd.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log),
    );
    let log = || std::fs::read_to_string(herd.path().join("prometheus.log")).unwrap_or_default();

    // Three clients, each flooded to all three servers.
    for (server, client) in [("Alford", "kiwi"), ("Alford", "moa"), ("Ball", "tui")] {
        let at = herd.send(server, &format!("IAMAT {client} +1+1 1\n"));
        for name in &herd.names() {
            herd.wait_for_at(name, client, at.trim_end());
        }
    }
    let wait_for = |what: &str, promql: &str, expected: f64| {
        common::wait_until(what, || query_value(port, promql) == Some(expected));
    };
    // (A failure here shows Prometheus's own log too.)
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for("every server to be up", "sum(up{job=\"herd\"})", 3.0);
        wait_for("the clients to add up", "sum(herd_clients)", 9.0);
        wait_for(
            "Welsh's links to be up",
            "sum(herd_link_up{server=\"Welsh\"})",
            2.0,
        );
        herd.kill("Ball");
        wait_for(
            "Welsh's link to Ball to go down",
            "herd_link_up{server=\"Welsh\",peer=\"Ball\"}",
            0.0,
        );
        wait_for("Ball to be down", "up{server=\"Ball\"}", 0.0);
    }));
    if outcome.is_err() {
        panic!("prometheus log:\n{}", log());
    }
}
