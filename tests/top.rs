//! `herdctl top` against a real herd: its rendering (ratatui's test backend) from real
//! scrapes, the plain `--once` table, and the live view under a real terminal (tmux).

mod common;

use std::process::Command;
use std::time::Duration;

use common::{wait_until, Herd};
use herdctl::config::HerdConfig;
use herdctl::top::model::{Row, State};
use herdctl::top::render::{draw, View};
use herdctl::top::scrape::Scraper;
use ratatui::backend::TestBackend;
use ratatui::Terminal;

/// Alford floods to Welsh and Hill; Hill is never started, so it is missing.
const TRIO: &[(&str, &[&str])] = &[
    ("Alford", &["Welsh", "Hill"]),
    ("Welsh", &[]),
    ("Hill", &[]),
];

fn two_of_three() -> Herd {
    let herd = Herd::configure(TRIO, "");
    for name in ["Alford", "Welsh"] {
        herd.spawn(name);
    }
    for name in ["Alford", "Welsh"] {
        herd.wait_listening(name);
    }
    wait_until("Alford's link to Welsh", || {
        herd.status("Alford").links_up == 1
    });
    herd
}

fn row<'a>(view: &'a View, name: &str) -> &'a Row {
    view.rows.iter().find(|r| r.name == name).unwrap()
}

#[test]
fn the_view_renders_rates_and_missing_links_from_real_scrapes() {
    let herd = two_of_three();
    let config =
        HerdConfig::load(&herd.config, &herdctl::config::Environment::of_process()).unwrap();
    let scraper = Scraper::new(&config, Duration::from_secs(2)).unwrap();
    let before = scraper.scrape();
    for i in 0..5 {
        herd.send(
            "Alford",
            &format!("IAMAT kiwi{i} +34.068930-118.445127 1621464827.5\n"),
        );
    }
    let last = herd.send("Alford", "IAMAT kiwi4 +34.068930-118.445127 1621464828.5\n");
    herd.wait_for_at("Welsh", "kiwi4", last.trim_end());
    let now = scraper.scrape();
    let mut view = herdctl::top::view(Some(&before), &now);

    let alford = row(&view, "Alford");
    assert_eq!(alford.state, State::Up);
    assert_eq!(alford.clients, Some(5));
    let rates = alford.rates.expect("two scrapes of one process give rates");
    assert!(rates[0] > 0.0, "IAMAT/s: {rates:?}");
    assert!(alford.p99_s.is_some(), "requests were timed: {alford:?}");
    assert!(alford.floods_out.unwrap() > 0.0, "{alford:?}");
    assert_eq!(alford.missing, ["Hill"]);
    let hill_down_s = alford.missing_for_s[0].expect("/status says how long a link is down");
    assert!(hill_down_s <= alford.uptime_s.unwrap(), "{alford:?}");
    assert_eq!(alford.store_ok, Some(true));
    let welsh = row(&view, "Welsh");
    assert!(welsh.floods_in.unwrap() > 0.0, "{welsh:?}");
    assert_eq!(welsh.clients, Some(5));
    assert_eq!(row(&view, "Hill").state, State::Unreachable);

    let screen = |view: &View| {
        let mut terminal = Terminal::new(TestBackend::new(170, 6)).unwrap();
        terminal.draw(|frame| draw(frame, view)).unwrap();
        let buffer = terminal.backend().buffer().clone();
        let width = buffer.area.width as usize;
        let text: String = buffer.content.iter().map(|c| c.symbol()).collect();
        text.chars()
            .collect::<Vec<_>>()
            .chunks(width)
            .map(|l| l.iter().collect::<String>().trim_end().to_owned())
            .collect::<Vec<_>>()
    };
    let lines = screen(&view);
    assert!(
        lines[0].starts_with("herdctl top: 2/3 servers up  sort: NAME"),
        "{lines:#?}"
    );
    assert!(
        lines[1].starts_with("NAME") && lines[1].contains("IAMAT/s"),
        "{lines:#?}"
    );
    // By name: Alford, Hill, Welsh.
    assert!(
        lines[2].starts_with("Alford")
            && lines[2].contains("1/2 -Hill")
            && lines[2].contains(" up "),
        "{lines:#?}"
    );
    assert!(
        lines[3].starts_with("Hill") && lines[3].contains("unreachable"),
        "{lines:#?}"
    );
    assert!(
        lines[4].starts_with("Welsh") && lines[4].contains("1/1"),
        "{lines:#?}"
    );

    // `s` five times: CLIENTS, largest first (Hill has none: last); then scrolled by one.
    for _ in 0..5 {
        view.sort = view.sort.next();
    }
    view.sort.apply(&mut view.rows);
    view.scroll_by(1, 3);
    let lines = screen(&view);
    assert!(lines[0].contains("sort: CLIENTS"), "{lines:#?}");
    assert!(lines[2].starts_with("Welsh"), "{lines:#?}");
    assert!(lines[3].starts_with("Hill"), "{lines:#?}");
}

#[test]
fn once_prints_one_table_with_the_server_that_is_down_unreachable() {
    let herd = two_of_three();
    herd.send("Alford", "IAMAT kiwi +34.068930-118.445127 1621464827.5\n");
    let out = herd
        .herdctl()
        .args(["top", "--once", "--interval", "0.2"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        5,
        "one title, one heading, three servers: {text}"
    );
    assert_eq!(lines[0], "herdctl top: 2/3 servers up");
    let words = |line: &str| {
        line.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let alford = words(lines[2]);
    assert_eq!(alford[..3], ["Alford", "127.0.0.1", "up"], "{text}");
    assert_eq!(alford[5], "1", "one client: {text}");
    assert!(lines[2].contains(" 1/2 -Hill "), "{text}");
    assert_eq!(
        words(lines[3])[..3],
        ["Hill", "127.0.0.1", "unreachable"],
        "{text}"
    );
    assert_eq!(words(lines[4])[..3], ["Welsh", "127.0.0.1", "up"], "{text}");

    let out = herd
        .herdctl()
        .args(["top", "--once", "--interval", "0"])
        .output()
        .unwrap();
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(error.lines().count(), 1, "{error}");
    assert!(error.contains("--interval 0 is out of range"), "{error}");
}

/// A tmux server of the test's own (its own socket), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn command(&self) -> Command {
        let mut command = Command::new("tmux");
        command.args(["-L", &self.socket]);
        command
    }

    fn pane(&self) -> String {
        let out = self
            .command()
            .args(["capture-pane", "-p", "-t", "top"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn running(&self) -> bool {
        self.command()
            .args(["has-session", "-t", "top"])
            .output()
            .is_ok_and(|o| o.status.success())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").output();
    }
}

#[test]
fn the_live_view_runs_in_a_real_terminal_and_q_quits() {
    if Command::new("tmux").arg("-V").output().is_err() {
        common::skip_unless_ci("tmux is not installed, so the live view cannot be tried");
        return;
    }
    let herd = two_of_three();
    let tmux = Tmux {
        socket: format!("herdctl-top-{}", std::process::id()),
    };
    let top = format!(
        "{} --config {} top --interval 0.2",
        env!("CARGO_BIN_EXE_herdctl"),
        herd.config.display()
    );
    let started = tmux
        .command()
        .args([
            "new-session",
            "-d",
            "-s",
            "top",
            "-x",
            "180",
            "-y",
            "20",
            &top,
        ])
        .status()
        .unwrap();
    assert!(started.success());
    wait_until("the live table in the pane", || {
        let pane = tmux.pane();
        pane.contains("herdctl top: 2/3 servers up")
            && pane
                .lines()
                .any(|l| l.starts_with("Alford") && l.contains("1/2 -Hill"))
            && pane
                .lines()
                .any(|l| l.starts_with("Hill") && l.contains("unreachable"))
    });
    let pane = tmux.pane();
    let sent = tmux
        .command()
        .args(["send-keys", "-t", "top", "q"])
        .status();
    assert!(sent.unwrap().success());
    wait_until("q to end herdctl top (and so its tmux session)", || {
        !tmux.running()
    });
    assert!(pane.contains("sort: NAME"), "{pane}");
}
