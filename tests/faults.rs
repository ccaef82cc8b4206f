//! Breaking the herd on purpose: pause/resume through the real supervisor, and the herd
//! caught up afterwards.

mod common;

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use common::supervised::Supervised;
use common::{exchange, wait_until, Herd, CLASSIC};

/// Health probes every 200 ms, two missed ones kill: a frozen node would be killed within
/// half a second if its silence counted.
const FAST_HEALTH: &str = ", health_interval_ms: 200, health_failures: 2";

#[test]
fn a_paused_node_is_not_restarted_by_health_checks_and_catches_up_on_resume() {
    let s = Supervised::with(FAST_HEALTH, "");
    s.ok(&["start", "all"]);
    wait_until("every link to be up", || {
        s.status().iter().all(|n| n["links_up"] == n["links_total"])
    });
    let pid = s.node_pid("Welsh").unwrap();
    let out = s.ok(&["pause", "Welsh"]);
    assert!(out.contains("Welsh paused"), "{out}");
    let frozen = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    assert!(
        frozen[frozen.rfind(')').unwrap() + 2..].starts_with('T'),
        "{frozen}"
    );

    // An update while it is frozen, at a neighbour.
    let reply = s
        .herd
        .send("Alford", "IAMAT paused.client +10+10 1700000000\n");
    assert!(reply.starts_with("AT Alford "), "{reply}");
    let at_line = reply.trim_end().to_owned();

    // Ten probe intervals and more: still paused, same process, never restarted.
    let began = Instant::now();
    while began.elapsed() < Duration::from_millis(2000) {
        let n = s.node("Welsh");
        assert_eq!(n["state"], "paused", "{n}");
        assert_eq!(n["pid"], pid, "{n}");
        assert_eq!(n["restarts"], 0, "{n}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A second pause changes nothing, nor does a start: it stays frozen.
    assert!(s.ok(&["pause", "Welsh"]).contains("already paused"));
    s.ok(&["start", "Welsh"]);
    assert_eq!(s.node("Welsh")["state"], "paused");

    let out = s.ok(&["resume", "Welsh"]);
    assert!(out.contains("Welsh resumed"), "{out}");
    let n = s.node("Welsh");
    assert_eq!(
        (n["state"].as_str(), n["pid"].as_u64()),
        (Some("running"), Some(pid as u64))
    );
    s.herd.wait_for_at("Welsh", "paused.client", &at_line);
    // And it stays up: probes answered again.
    let began = Instant::now();
    while began.elapsed() < Duration::from_millis(1000) {
        let n = s.node("Welsh");
        assert_eq!(
            (n["state"].as_str(), n["restarts"].as_u64()),
            (Some("running"), Some(0))
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let resumed = s.run(&["resume", "Welsh"]);
    assert!(!resumed.status.success(), "not paused any more");
    let why = String::from_utf8_lossy(&resumed.stderr);
    assert!(why.contains("Welsh is running, not paused"), "{why}");
}

#[test]
fn a_paused_node_stops_cleanly() {
    let s = Supervised::herd(&[("Solo", &[])], FAST_HEALTH, "");
    s.ok(&["start", "all"]);
    s.ok(&["pause", "Solo"]);
    let out = s.ok(&["stop", "Solo"]);
    assert!(out.contains("stopped"), "{out}");
    assert!(s.node_pid("Solo").is_none());
    let n = s.node("Solo");
    assert_eq!(n["state"], "stopped", "{n}");
    assert!(
        n["last_exit"].is_null(),
        "a SIGTERM it acted on is a clean stop, no news in LAST EXIT: {n}"
    );
}

#[test]
fn a_new_supervisor_adopts_a_paused_node_as_paused_and_does_not_kill_it() {
    let s = Supervised::herd(&[("Solo", &[])], FAST_HEALTH, "");
    s.ok(&["start", "all"]);
    let pid = s.node_pid("Solo").unwrap();
    // A node whose parent dies while it is frozen is thawed by the kernel (its process
    // group is orphaned: SIGHUP, SIGCONT). A node already adopted has init as its parent,
    // so it stays frozen when the supervisor that paused it goes: that one is tested.
    let kill_supervisor = || {
        common::nix_kill(s.daemon_pid().unwrap(), "KILL");
        wait_until("the supervisor to die", || s.daemon_pid().is_none());
    };
    kill_supervisor();
    s.ok(&["start", "all"]);
    assert_eq!(s.node("Solo")["state"], "running");
    s.ok(&["pause", "Solo"]);
    kill_supervisor();
    // Without a supervisor, status reads the frozen state from /proc.
    let out = s.run(&["status", "--json"]);
    let status: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status[0]["state"], "paused", "{status:?}");

    // A new supervisor adopts it paused: its silence is no hang.
    s.ok(&["start", "all"]);
    assert!(s.daemon_pid().is_some());
    let began = Instant::now();
    while began.elapsed() < Duration::from_millis(1500) {
        let n = s.node("Solo");
        assert_eq!(n["state"], "paused", "{n}");
        assert_eq!(n["pid"], pid, "{n}");
        assert_eq!(n["restarts"], 0, "{n}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = s.ok(&["resume", "Solo"]);
    assert!(out.contains("Solo resumed"), "{out}");
    let reply = s.herd.send("Solo", "IAMAT thawed +10+10 1700000000\n");
    assert!(reply.starts_with("AT Solo "), "{reply}");
    assert_eq!(s.node("Solo")["pid"], pid);
}

const SECRET: &str = "secret: chaos-test-secret-0123456789abcdef\n";

fn verify(herd: &Herd) -> (i32, serde_json::Value) {
    let out = common::run_to_end(herd.herdctl().args(["verify", "--json"]), b"");
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "verify --json printed no JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), report)
}

fn start_herd(servers: &[(&str, &[&str])], extra: &str) -> Herd {
    let herd = Herd::configure(servers, extra);
    for (name, _) in servers {
        herd.spawn(name);
    }
    for (name, _) in servers {
        herd.wait_listening(name);
    }
    herd
}

#[test]
fn verify_says_whether_the_herd_agrees_and_who_lacks_what() {
    // Two servers with no link between them: what one is told, the other never learns.
    let herd = start_herd(&[("Apart", &[]), ("Alone", &[])], SECRET);
    let (code, report) = verify(&herd);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["agree"], true);

    let reply = herd.send("Apart", "IAMAT lonely.client +10+10 1700000000\n");
    let (code, report) = verify(&herd);
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["agree"], false);
    assert_eq!(report["differing_buckets"], 1);
    let sample = &report["samples"][0];
    assert_eq!(sample["client"], "lonely.client");
    assert_eq!(sample["newest"], reply.trim_end());
    assert_eq!(sample["held_by"], serde_json::json!(["Apart"]));
    assert_eq!(sample["lacking"], serde_json::json!(["Alone"]));
    let text = common::run_to_end(herd.herdctl().arg("verify"), b"");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("the herd differs") && text.contains("lacking: Alone"),
        "{text}"
    );

    // The same update at the other: they agree again.
    herd.send("Alone", "IAMAT lonely.client +10+10 1700000001\n");
    herd.send("Apart", "IAMAT lonely.client +10+10 1700000001\n");
    assert_eq!(verify(&herd).0, 1, "each holds its own AT line");

    herd.kill("Alone");
    let (code, report) = verify(&herd);
    assert_eq!(code, 2, "{report}");
    assert_eq!(report["unreachable"], serde_json::json!(["Alone"]));
}

#[test]
fn verify_sees_a_linked_herd_agree_and_the_control_path_refuses_strangers() {
    let herd = start_herd(CLASSIC, SECRET);
    herd.send("Alford", "IAMAT one +10+10 1700000000\n");
    let reply = herd.send("Ball", "IAMAT two +10+10 1700000000\n");
    herd.wait_for_at("Alford", "two", reply.trim_end());
    common::wait_until("the herd to agree", || verify(&herd).0 == 0);
    let (_, report) = verify(&herd);
    for server in report["servers"].as_array().unwrap() {
        assert_eq!(server["clients"], 2, "{report}");
    }

    // No proof, a made-up proof, a command without a challenge, a replayed command: all
    // answered `?`, and nothing is carried out.
    let port = herd.port("Welsh");
    let nonce = "0123456789abcdef0123456789abcdef";
    let anonymous = exchange(
        port,
        format!("HERD OPERATOR {nonce}\nHERD CONTROL - CUT Ball 1\n").as_bytes(),
    );
    let anonymous = String::from_utf8_lossy(&anonymous);
    assert!(
        anonymous.contains("\n? HERD CONTROL - CUT Ball 1\n"),
        "{anonymous}"
    );
    let forged = format!("HERD CONTROL {} DIGEST\n", "ab".repeat(32));
    let answer = herd.send("Welsh", &format!("HERD OPERATOR {nonce}\n{forged}"));
    assert!(answer.ends_with(&format!("? {forged}")), "{answer}");
    let answer = herd.send("Welsh", &forged);
    assert_eq!(answer, format!("? {forged}"), "no challenge, no command");
    herd.log_once_it_has("Welsh", "refused the control command");

    // A proved command works once; the same line replayed over a new challenge is refused.
    let secret = herdctl::auth::HerdSecret::new("chaos-test-secret-0123456789abcdef".into());
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(common::DEADLINE)).unwrap();
    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
    writeln!(stream, "HERD OPERATOR {nonce}").unwrap();
    let mut challenge = String::new();
    reader.read_line(&mut challenge).unwrap();
    let (server, node_nonce, _) = herdctl::protocol::parse_challenge(&challenge).unwrap();
    let proof = secret.control_mac(server, node_nonce, nonce, "DIGEST");
    let proved = format!("HERD CONTROL {proof} DIGEST\n");
    stream.write_all(proved.as_bytes()).unwrap();
    let mut done = String::new();
    reader.read_line(&mut done).unwrap();
    assert!(done.starts_with("HERD DONE {"), "{done}");
    let replayed = herd.send("Welsh", &format!("HERD OPERATOR {nonce}\n{proved}"));
    assert!(replayed.ends_with(&format!("? {proved}")), "{replayed}");
}

/// Anti-entropy every second, so repairs come quickly.
const QUICK_REPAIR: &str = "secret: chaos-test-secret-0123456789abcdef\nreconnect: { initial_ms: 50, max_ms: 300, sync_interval_s: 1 }\n";

fn link(herd: &Herd, args: &[&str]) -> String {
    let out = common::run_to_end(herd.herdctl().arg("link").args(args), b"");
    assert!(
        out.status.success(),
        "herdctl link {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn links_up(herd: &Herd, name: &str) -> usize {
    herd.status(name).links_up
}

#[test]
fn a_cut_isolates_a_server_and_heal_all_converges_the_herd() {
    let herd = start_herd(CLASSIC, QUICK_REPAIR);
    wait_until("Alford's links to be up", || links_up(&herd, "Alford") == 2);
    let out = link(&herd, &["cut", "Alford", "Hamilton"]);
    assert!(out.contains("Alford: link to Hamilton: cut"), "{out}");
    assert!(out.contains("Hamilton: link to Alford: cut"), "{out}");
    link(&herd, &["cut", "Welsh", "Alford"]);
    wait_until("Alford to be cut off", || links_up(&herd, "Alford") == 0);
    let figures = herd.status("Alford");
    assert_eq!(figures.faults["Hamilton"], "cut");
    assert_eq!(figures.faults["Welsh"], "cut");

    // An update at the isolated server reaches nobody, even past anti-entropy periods.
    let reply = herd.send("Alford", "IAMAT isolated.client +10+10 1700000000\n");
    let at_line = reply.trim_end();
    let (code, report) = verify(&herd);
    assert_eq!(code, 1, "{report}");
    assert_eq!(
        report["samples"][0]["held_by"],
        serde_json::json!(["Alford"])
    );
    assert_eq!(herd.known_at("Hamilton", "isolated.client"), None);
    // The rest of the herd still floods among itself.
    let other = herd.send("Ball", "IAMAT others.client +10+10 1700000000\n");
    herd.wait_for_at("Hamilton", "others.client", other.trim_end());
    assert_eq!(herd.known_at("Alford", "others.client"), None);
    herd.log_once_it_has("Alford", "link fault on the link to Hamilton: cut");

    // A link that does not exist, or a server that does not: one-line errors.
    let bad = common::run_to_end(herd.herdctl().args(["link", "cut", "Alford", "Ball"]), b"");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("are not linked"));

    let out = link(&herd, &["heal", "all"]);
    assert!(out.contains("Alford: no link faults"), "{out}");
    wait_until("the herd to agree after the heal", || verify(&herd).0 == 0);
    assert_eq!(
        herd.known_at("Hamilton", "isolated.client").as_deref(),
        Some(at_line)
    );
    assert!(herd.status("Alford").faults.is_empty());
}

fn link_status(herd: &Herd, name: &str) -> serde_json::Value {
    let (code, body) = herd.admin_get(name, "/status", None);
    assert_eq!(code, 200, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    status["links"][0].clone()
}

#[test]
fn faults_show_in_the_admin_status_and_metrics() {
    let extra = format!("{QUICK_REPAIR}admin: {{ open: true }}\n");
    let herd = start_herd(&[("Near", &["Far"]), ("Far", &[])], &extra);
    wait_until("the link to be up", || links_up(&herd, "Near") == 1);
    let fault = |kind: &str| {
        herd.metric(
            "Near",
            &format!("herd_link_fault{{peer=\"Far\",kind=\"{kind}\"}}"),
        )
    };
    assert_eq!(
        (fault("cut"), fault("delay"), fault("loss")),
        (0.0, 0.0, 0.0)
    );
    assert!(link_status(&herd, "Near")["fault"].is_null());

    link(&herd, &["delay", "Near", "Far", "50"]);
    link(&herd, &["loss", "Near", "Far", "100"]);
    wait_until("the faulty link to be up", || {
        links_up(&herd, "Near") == 1 && links_up(&herd, "Far") == 1
    });
    herd.send("Near", "IAMAT dropped.client +10+10 1700000000\n");
    wait_until("the dropped flood to be counted", || {
        link_status(&herd, "Near")["fault_lines_dropped"].as_u64() >= Some(1)
    });
    let near = link_status(&herd, "Near");
    assert_eq!(near["peer"], "Far", "{near}");
    assert_eq!(
        near["fault"]["describe"], "delay 50 ms, loss 100%",
        "{near}"
    );
    assert_eq!(near["fault"]["delay_ms"], 50, "{near}");
    assert_eq!(near["fault"]["loss_percent"], 100, "{near}");
    assert_eq!(near["fault"]["cut"], false, "{near}");
    assert!(near["fault_lines_delayed"].as_u64() >= Some(1), "{near}");
    assert_eq!(
        (fault("cut"), fault("delay"), fault("loss")),
        (0.0, 1.0, 1.0)
    );
    let prefix = "herd_link_fault_delay_seconds{peer=\"Far\"}";
    assert_eq!(herd.metric("Near", prefix), 0.05);
    let prefix = "herd_link_fault_loss_ratio{peer=\"Far\"}";
    assert_eq!(herd.metric("Near", prefix), 1.0);
    let prefix = "herd_link_fault_lines_total{peer=\"Far\",effect=\"dropped\"}";
    assert!(herd.metric("Near", prefix) >= 1.0);
    let prefix = "herd_link_fault_lines_total{peer=\"Far\",effect=\"delayed\"}";
    assert!(herd.metric("Near", prefix) >= 1.0);
    // The other end holds the same fault.
    assert_eq!(link_status(&herd, "Far")["fault"]["delay_ms"], 50);

    link(&herd, &["cut", "Far", "Near"]);
    assert_eq!(fault("cut"), 1.0);
    assert_eq!(link_status(&herd, "Far")["fault"]["cut"], true);

    link(&herd, &["heal", "all"]);
    assert_eq!(
        (fault("cut"), fault("delay"), fault("loss")),
        (0.0, 0.0, 0.0)
    );
    assert!(link_status(&herd, "Near")["fault"].is_null());
    assert!(link_status(&herd, "Far")["fault"].is_null());
}

#[test]
fn delay_slows_propagation_loss_is_repaired_and_a_restart_clears_a_cut() {
    let herd = start_herd(&[("Near", &["Far"]), ("Far", &[])], QUICK_REPAIR);
    wait_until("the link to be up", || links_up(&herd, "Near") == 1);

    let out = link(&herd, &["delay", "Near", "Far", "400", "--jitter", "50"]);
    assert!(out.contains("Near: link to Far: delay 400±50 ms"), "{out}");
    wait_until("the delayed link to be up", || {
        links_up(&herd, "Near") == 1 && links_up(&herd, "Far") == 1
    });
    let sent = Instant::now();
    let reply = herd.send("Near", "IAMAT slow.client +10+10 1700000000\n");
    herd.wait_for_at("Far", "slow.client", reply.trim_end());
    let took = sent.elapsed();
    assert!(took >= Duration::from_millis(350), "arrived after {took:?}");

    // All floods lost: only anti-entropy can bring the update.
    link(&herd, &["heal", "Near", "Far"]);
    link(&herd, &["loss", "Far", "Near", "100"]);
    wait_until("the lossy link to be up", || {
        links_up(&herd, "Near") == 1 && links_up(&herd, "Far") == 1
    });
    let synced = herd.status("Far").synced;
    let reply = herd.send("Near", "IAMAT lossy.client +10+10 1700000000\n");
    herd.wait_for_at("Far", "lossy.client", reply.trim_end());
    assert!(
        herd.status("Far").synced > synced,
        "repaired by anti-entropy"
    );
    assert!(herd.status("Near").faults["Far"].contains("loss 100%"));

    // A cut held by Near, cleared when Far restarts (Far no longer holds it).
    link(&herd, &["cut", "Near", "Far"]);
    wait_until("the link to be cut", || links_up(&herd, "Near") == 0);
    herd.kill("Far");
    herd.start_node("Far");
    wait_until("the restart to clear the cut", || {
        herd.status("Near").faults.is_empty() && links_up(&herd, "Near") == 1
    });
    wait_until("Near to log why the cut went", || {
        herd.log_text("Near").contains("Far no longer holds it")
    });
    // The fault exchange is on the wire, so it is in the logs, both ways.
    let near = herd.log_text("Near");
    assert!(near.contains(" INFO Far > HERD FAULT "), "{near}");
    assert!(near.contains(" INFO Far < HERD FAULT -"), "{near}");
    assert!(herd.log_text("Far").contains(" INFO Near > HERD FAULT -"));
}

#[test]
fn a_short_seeded_chaos_run_loses_nothing_and_converges() {
    let s = Supervised::with(
        "",
        "secret: chaos-test-secret-0123456789abcdef\n\
         reconnect: { initial_ms: 50, max_ms: 300, sync_interval_s: 1 }\n",
    );
    s.ok(&["start", "all"]);
    let out = common::run_to_end(
        s.herd.herdctl().args([
            "chaos",
            "--duration",
            "15",
            "--seed",
            "7",
            "--rate",
            "10",
            "--json",
        ]),
        b"",
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "chaos --json printed no JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    eprintln!("{report:#}");
    assert!(out.status.success(), "{report:#}");
    assert_eq!(report["lost"], 0, "{report:#}");
    assert_eq!(report["converged"], true, "{report:#}");
    assert!(report["acked"].as_u64().unwrap() > 50, "{report:#}");
    // Every fault kind is drawn (the schedule deals each kind once a run has room for it).
    let faults = report["faults"].as_array().unwrap();
    for kind in ["cut", "delay", "loss", "pause", "kill", "restart"] {
        assert!(
            faults.iter().any(|f| f["kind"] == kind),
            "no {kind} fault in {report:#}"
        );
    }
    assert!(report["flood_lines_per_update"].as_f64().unwrap() > 0.0);
    // Every server is back and the herd agrees.
    assert!(s.status().iter().all(|n| n["state"] == "running"));
    assert_eq!(
        common::run_to_end(s.herd.herdctl().arg("verify"), b"")
            .status
            .code(),
        Some(0)
    );
}
