//! `herdctl bench` end to end: short runs of the real binary against a real one-node herd.
//! They check that the figures are sane (no errors, a non-zero rate, the fields present),
//! never that they reach the performance targets (those are for `herdctl bench` itself, on a
//! quiet machine; see the README's BENCHMARKS section).

mod common;

use common::{Herd, PAIR, SOLO};
use serde_json::Value;

fn bench(herd: &Herd, args: &[&str]) -> Value {
    let output = common::run_to_end(herd.herdctl().arg("bench").args(args).arg("--json"), b"");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "herdctl bench {args:?} failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {stdout}"))
}

fn assert_sane(report: &Value) {
    for field in herdctl::bench::report::REQUIRED_JSON_FIELDS {
        assert!(report.get(field).is_some(), "{field} missing: {report}");
    }
    assert_eq!(report["errors"], 0, "{report}");
    assert!(report["ops_per_s"].as_f64().unwrap() > 0.0, "{report}");
    assert!(report["p99_us"].as_f64().unwrap() >= report["p50_us"].as_f64().unwrap());
}

#[test]
fn a_short_closed_loop_run_with_a_mix_has_no_errors() {
    let herd = Herd::start(SOLO);
    let report = bench(
        &herd,
        &[
            "--target",
            "Alford",
            "--duration",
            "2",
            "--connections",
            "4",
            "--mix",
            "iamat=80,whatsat=20",
        ],
    );
    assert_sane(&report);
    assert_eq!(report["mode"], "closed");
    assert!(report.get("echo_ops_per_s").is_none(), "{report}");
}

#[test]
fn a_tiny_baseline_echo_run_reports_the_ratio() {
    let herd = Herd::start(SOLO);
    let report = bench(
        &herd,
        &[
            "--target",
            "Alford",
            "--duration",
            "0.5",
            "--connections",
            "2",
            "--baseline-echo",
        ],
    );
    assert_sane(&report);
    assert!(report["echo_ops_per_s"].as_f64().unwrap() > 0.0, "{report}");
    assert!(report["ratio_to_echo"].is_number(), "{report}");
}

#[test]
fn ids_sets_how_many_clients_the_run_reports_to() {
    let herd = Herd::start(SOLO);
    let report = bench(
        &herd,
        &[
            "--target",
            "Alford",
            "--duration",
            "0.5",
            "--connections",
            "2",
            "--ids",
            "7",
        ],
    );
    assert_sane(&report);
    assert_eq!(report["ids"], 7, "{report}");
    assert_eq!(herd.status("Alford").clients, 7);

    // Runs with one --id-prefix update the same clients; without it each run brings new ones.
    let run = |prefix: &[&str]| {
        let mut args = vec!["--target", "Alford", "--duration", "0.3", "--ids", "5"];
        args.extend_from_slice(prefix);
        assert_sane(&bench(&herd, &args));
    };
    run(&["--id-prefix", "same-"]);
    run(&["--id-prefix", "same-"]);
    assert_eq!(herd.status("Alford").clients, 7 + 5);
    run(&[]);
    assert_eq!(herd.status("Alford").clients, 7 + 5 + 5);
    assert!(herd.known_at("Alford", "same-4").is_some());
    let bad_prefix = common::run_to_end(
        herd.herdctl()
            .args(["bench", "--target", "Alford", "--id-prefix", "two words"]),
        b"",
    );
    assert!(!bad_prefix.status.success());
    assert!(String::from_utf8_lossy(&bad_prefix.stderr).contains("--id-prefix"));
    let refused = common::run_to_end(
        herd.herdctl()
            .args(["bench", "--target", "Alford", "--ids", "0"]),
        b"",
    );
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--ids must be at least 1"));
}

#[test]
fn open_loop_per_request_and_propagation_run_without_errors() {
    let herd = Herd::start(PAIR);
    let report = bench(
        &herd,
        &[
            "--target",
            "Alford",
            "--duration",
            "1",
            "--rate",
            "200",
            "--per-request",
            "--propagation",
            "Ball",
        ],
    );
    assert_sane(&report);
    assert_eq!(report["mode"], "open");
    assert!(
        report["propagation"]["samples"].as_u64().unwrap() > 0,
        "{report}"
    );
    assert_eq!(report["propagation"]["lost"], 0, "{report}");
    assert!(report["propagation_p99_us"].is_number(), "{report}");
    // How late requests left is reported, and it is part of (never more than) the latency.
    let late = report["send_late_p50_us"]
        .as_f64()
        .expect("send_late_p50_us");
    assert!(late <= report["p50_us"].as_f64().unwrap(), "{report}");
    assert!(report["pacer_late_p99_us"].is_number(), "{report}");
}

#[test]
fn the_herd_mode_compares_a_lone_node_and_the_five_server_herd() {
    // It starts its own herds: no herd file of the caller's is read.
    let output = common::run_to_end(
        common::herdctl().args([
            "--config",
            "/nonexistent/herd.yaml",
            "bench",
            "--herd",
            "--forwarding",
            "tree",
            "--duration",
            "1",
            "--connections",
            "4",
            "--json",
        ]),
        b"",
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    for phase in ["lone", "herd"] {
        assert_eq!(report[phase]["errors"], 0, "{report}");
        assert!(
            report[phase]["ops_per_s"].as_f64().unwrap() > 0.0,
            "{report}"
        );
        assert!(report[phase]["node_cpu_us_per_update"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(report["forwarding"], "tree");
    assert!(report["ratio"].as_f64().unwrap() > 0.0, "{report}");
    // On the tree every server but Bailey hears each update once, and only once (an update
    // that lost to a newer one of the same client at Bailey is not sent on at all).
    let ops = report["herd"]["ops"].as_f64().unwrap();
    let new = report["new_receptions"].as_f64().unwrap();
    assert_eq!(report["duplicates"], 0, "{report}");
    assert!(new <= 4.0 * ops && new >= 3.9 * ops, "{report}");
    let lines = report["flood_lines_per_update"].as_f64().unwrap();
    assert!((3.9..=4.0).contains(&lines), "{report}");
}

#[test]
fn rounds_repeat_the_herd_comparison_and_report_the_ratio_s_median_and_range() {
    let run = |json: bool| {
        let mut args = vec![
            "--config",
            "/nonexistent/herd.yaml",
            "bench",
            "--herd",
            "--rounds",
            "2",
            "--duration",
            "0.5",
            "--connections",
            "2",
        ];
        if json {
            args.push("--json");
        }
        let output = common::run_to_end(common::herdctl().args(args), b"");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    };
    let series: Value = serde_json::from_str(run(true).trim()).unwrap();
    let rounds = series["rounds"].as_array().expect("rounds");
    assert_eq!(rounds.len(), 2, "{series}");
    let ratios: Vec<f64> = rounds
        .iter()
        .map(|r| r["ratio"].as_f64().unwrap())
        .collect();
    assert!(ratios.iter().all(|&r| r > 0.0), "{series}");
    let spread = &series["ratio"];
    let (lo, hi) = (ratios[0].min(ratios[1]), ratios[0].max(ratios[1]));
    assert_eq!(spread["min"].as_f64(), Some(lo), "{series}");
    assert_eq!(spread["max"].as_f64(), Some(hi), "{series}");
    let median = spread["median"].as_f64().unwrap();
    assert!((median - (lo + hi) / 2.0).abs() < 1e-9, "{series}");

    // As a table: a line per round, then the spread.
    let table = run(false);
    assert!(
        table.contains("round 1: lone ") && table.contains("round 2: lone "),
        "{table}"
    );
    assert!(
        table.contains("herd / lone node over 2 rounds: median "),
        "{table}"
    );

    // Rounds need --herd, and at least one.
    let refused = common::run_to_end(
        common::herdctl().args(["bench", "--target", "Alford", "--rounds", "2"]),
        b"",
    );
    assert!(!refused.status.success());
    let zero = common::run_to_end(
        common::herdctl().args(["bench", "--herd", "--rounds", "0"]),
        b"",
    );
    assert!(!zero.status.success());
    assert!(String::from_utf8_lossy(&zero.stderr).contains("--rounds"));
}

/// `herdctl bench ARGS --json` with the herd file `config`; its report.
fn bench_with(config: &std::path::Path, args: &[&str]) -> Value {
    let output = common::run_to_end(
        common::herdctl()
            .arg("--config")
            .arg(config)
            .arg("bench")
            .args(args)
            .arg("--json"),
        b"",
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "herdctl bench {args:?} failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap()
}

#[test]
fn a_run_speaks_tls_to_servers_with_a_tls_port() {
    let herd = Herd::configure_tls(common::PAIR, "");
    herd.give_tls_port("Alford");
    herd.give_tls_port("Ball");
    herd.start_node("Alford");
    herd.start_node("Ball");
    // The bench's copy of the herd file sends Alford's and Ball's client ports where nothing
    // listens: only their tls_ports can answer it.
    let yaml = std::fs::read_to_string(&herd.config).unwrap();
    // Held (bound, not listening) to the end: a connection to either is refused.
    let held = common::hold_ports(2);
    let dead = [held[0][0].port, held[1][0].port];
    let copy = herd.path().join("bench.yaml");
    let mut moved = yaml.clone();
    for (name, port) in [("Alford", dead[0]), ("Ball", dead[1])] {
        let from = format!("  {name}: {{ port: {}, ", herd.port(name));
        assert!(moved.contains(&from), "{moved}");
        moved = moved.replace(&from, &format!("  {name}: {{ port: {port}, "));
    }
    std::fs::write(&copy, moved).unwrap();

    let report = bench_with(
        &copy,
        &[
            "--target",
            "Alford",
            "--duration",
            "1",
            "--connections",
            "4",
            "--mix",
            "iamat=80,whatsat=20",
            "--propagation",
            "Ball",
        ],
    );
    assert_sane(&report);
    assert_eq!(report["tls"], true, "{report}");
    assert!(
        report["propagation"]["samples"].as_u64().unwrap() > 0,
        "{report}"
    );
    let per_request = bench_with(
        &copy,
        &[
            "--target",
            "Alford",
            "--duration",
            "0.5",
            "--rate",
            "50",
            "--per-request",
        ],
    );
    assert_sane(&per_request);

    // --plain keeps to the client port, in plain text.
    let plain = bench(
        &herd,
        &["--target", "Alford", "--duration", "0.3", "--plain"],
    );
    assert_sane(&plain);
    assert_eq!(plain["tls"], false, "{plain}");

    // The certificate is checked against the herd CA: another herd's CA is refused.
    let other = tempfile::tempdir().unwrap();
    herd.certs(&["init", "--dir", other.path().to_str().unwrap()]);
    std::fs::copy(
        other.path().join("ca.pem"),
        herd.path().join("certs/ca.pem"),
    )
    .unwrap();
    let refused = common::run_to_end(
        common::herdctl().arg("--config").arg(&copy).args([
            "bench",
            "--target",
            "Alford",
            "--duration",
            "0.3",
            "--json",
        ]),
        b"",
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("over TLS") && stderr.contains("certificate"),
        "{stderr}"
    );
}

/// The pids of `pid`'s children (Linux: /proc/PID/task/TID/children, over its threads).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Whether `pid` still runs (a zombie nobody reaped yet has ended).
fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat.rsplit_once(") ")?.1.chars().next()?;
            Some(state != 'Z' && state != 'X')
        })
        .unwrap_or(false)
}

#[test]
fn a_herd_bench_killed_with_sigkill_takes_its_nodes_with_it() {
    let mut bench = common::Running::spawn(
        common::herdctl()
            .args([
                "--config",
                "/nonexistent/herd.yaml",
                "bench",
                "--herd",
                "--duration",
                "60",
                "--connections",
                "2",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    let pid = bench.0.id();
    // Whatever happens, the test leaves no node behind.
    let mut nodes = Reaped(Vec::new());
    common::wait_until("the bench to start its first node", || {
        nodes.0 = children_of(pid);
        !nodes.0.is_empty()
    });
    common::nix_kill(pid, "KILL");
    let _ = bench.0.wait();
    for &node in &nodes.0 {
        common::wait_until(&format!("node {node} to end with the bench"), || {
            !is_running(node)
        });
    }
}

/// Processes killed when dropped, if they still run.
struct Reaped(Vec<u32>);

impl Drop for Reaped {
    fn drop(&mut self) {
        for &pid in self.0.iter().filter(|&&pid| is_running(pid)) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}
