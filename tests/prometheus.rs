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
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{name} is missing (Debian package prometheus); .ci/run installs it"
        );
        eprintln!("skipped: {name} not found (apt-get install prometheus)");
    }
    found
}

fn started(herd: Herd) -> Herd {
    for name in herd.ports.keys() {
        herd.spawn(name);
    }
    for name in herd.ports.keys() {
        herd.wait_listening(name);
    }
    herd
}

#[test]
fn promtool_accepts_every_nodes_metrics() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let herd = started(Herd::configure(CLASSIC, "admin: { open: true }\n"));
    herd.send("Alford", "IAMAT kiwi +34.068930-118.445127 1621464827.5\n");
    herd.send("Ball", "WHATSAT nobody 10 5\n");
    for name in herd.ports.keys() {
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
