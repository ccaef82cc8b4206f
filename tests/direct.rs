//! `herdctl reload --node` and `herdctl probe`: one node acted on directly, with no
//! supervisor, as systemd's ExecReload and a container's health check do.

mod common;

use common::{run_to_end, with_peers, Herd};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn reload_node_applies_the_file_to_that_node_and_checks_its_pid() {
    let herd = Herd::configure(&[("Alford", &[]), ("Ball", &[])], "");
    herd.start_node("Alford");
    herd.start_node("Ball");
    let pid = herd.pid("Alford");
    let reload =
        |args: &[&str]| run_to_end(herd.herdctl().args(["reload", "--node"]).args(args), b"");

    // A pid the node's lock does not name: refused, nothing signalled.
    let out = reload(&["Alford", "--pid", &(pid + 100_000).to_string()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(&format!("held by pid {pid}")),
        "{}",
        text(&out.stderr)
    );

    // The file gains a link; the reload returns once Alford runs it.
    let yaml = std::fs::read_to_string(&herd.config).unwrap();
    let linked = with_peers(&yaml, "Alford", &["Ball"]);
    std::fs::write(&herd.config, linked).unwrap();
    let out = reload(&["Alford", "--pid", &pid.to_string()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("Alford (pid"),
        "{}",
        text(&out.stdout)
    );
    herd.log_once_it_has("Alford", "link to Ball added");
    assert_eq!(herd.pid("Alford"), pid, "reloaded live, not restarted");
    // Ball takes it too (a link needs both ends), with no --pid: its lock says which.
    let out = reload(&["Ball"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let at = herd.send("Alford", "IAMAT kiwi +34.0-118.4 1621464827.5\n");
    herd.wait_for_at("Ball", "kiwi", at.trim_end());

    // A broken file: an error naming it, and the node runs on.
    std::fs::write(&herd.config, "servers: [\n").unwrap();
    let out = reload(&["Alford"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("herd.yaml"),
        "{}",
        text(&out.stderr)
    );
    assert!(herd
        .send("Alford", "HERD STATUS\n")
        .starts_with("HERD STATUS"));
}

#[test]
fn reload_node_and_probe_say_when_the_node_is_not_running() {
    let herd = Herd::configure(&[("Alford", &[]), ("Ball", &[])], "");
    herd.start_node("Ball");
    let out = run_to_end(herd.herdctl().args(["reload", "--node", "Alford"]), b"");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("Alford is not running"),
        "{}",
        text(&out.stderr)
    );

    let probe = |name: &str| run_to_end(herd.herdctl().args(["probe", name]), b"");
    let out = probe("Ball");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = probe("Alford");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("Alford does not answer /healthz"),
        "{}",
        text(&out.stderr)
    );
    let ready = run_to_end(herd.herdctl().args(["probe", "--ready", "Ball"]), b"");
    assert!(ready.status.success(), "{}", text(&ready.stderr));
    // Something else on Alford's admin port, answering nothing, is not Alford.
    let _impostor = std::net::TcpListener::bind(("127.0.0.1", herd.admin_port("Alford"))).unwrap();
    assert!(!probe("Alford").status.success());
    assert!(!probe("Nobody").status.success());
}
