//! `links.forwarding`: plain flooding against the origin's spanning tree, on the five-server
//! graph of issue 26, counted from every server's wire log (each flooded line a server
//! receives is logged `(new, flooded)` or `(stale, dropped)`).

mod common;

use std::process::Command;

use common::{wait_until, Herd};

/// Bailey-Bona, Bailey-Campbell, Bona-Clark, Bona-Campbell, Campbell-Jaquez, Clark-Jaquez.
const GRAPH: &[(&str, &[&str])] = &[
    ("Bailey", &["Bona", "Campbell"]),
    ("Bona", &["Clark", "Campbell"]),
    ("Campbell", &["Jaquez"]),
    ("Clark", &["Jaquez"]),
    ("Jaquez", &[]),
];
const ALL: [&str; 5] = ["Bailey", "Bona", "Campbell", "Clark", "Jaquez"];
/// Updates sent in each test.
const UPDATES: usize = 10;

fn start(forwarding: &str, extra: &str) -> Herd {
    let herd = Herd::configure(
        GRAPH,
        &format!(
            "secret: forwarding-test-secret-0123456789abcdef\nlinks: {{ forwarding: {forwarding} }}\n{extra}"
        ),
    )
    .started();
    wait_until("every link to be up", || {
        ALL.iter().all(|s| {
            let f = herd.status(s);
            f.links_up == f.links_total
        })
    });
    herd
}

/// Sends `UPDATES` IAMATs at Bailey, waits until every server holds each, and returns
/// their AT lines.
fn updates(herd: &Herd, tag: &str) -> Vec<String> {
    let ats: Vec<String> = (0..UPDATES)
        .map(|i| {
            let reply = herd.send("Bailey", &format!("IAMAT {tag}{i} +10+10 {}\n", 1000 + i));
            assert!(reply.starts_with("AT Bailey "), "{reply}");
            reply.trim_end().to_owned()
        })
        .collect();
    for (i, at) in ats.iter().enumerate() {
        for s in ALL {
            herd.wait_for_at(s, &format!("{tag}{i}"), at);
        }
    }
    ats
}

/// How many times the servers' logs say they received one of `ats` flooded as `what`.
fn received(herd: &Herd, ats: &[String], what: &str) -> usize {
    ALL.iter()
        .map(|s| {
            let log = herd.log_text(s);
            ats.iter()
                .map(|at| log.matches(&format!(" < HERD {at} ({what})")).count())
                .sum::<usize>()
        })
        .sum()
}

/// Waits until the logs show `new` first receptions and `stale` duplicates of `ats`.
fn wait_for_counts(herd: &Herd, ats: &[String], new: usize, stale: usize) {
    wait_until(&format!("{new} new and {stale} stale receptions"), || {
        received(herd, ats, "new, flooded") == new && received(herd, ats, "stale, dropped") == stale
    });
}

#[test]
fn flooding_sends_each_update_eight_times_on_this_graph_half_of_them_duplicates() {
    let herd = start("flood", "");
    let ats = updates(&herd, "flood");
    // Bailey sends 2; each of the 4 others sends on to all but the sender (1+2+1+2 = 6):
    // 8 lines, of which 4 are first receptions and 4 duplicates.
    wait_for_counts(&herd, &ats, 4 * UPDATES, 4 * UPDATES);
}

#[test]
fn tree_forwarding_reaches_every_server_once() {
    let herd = start("tree", "");
    let ats = updates(&herd, "tree");
    // Bailey -> Bona, Campbell; Bona -> Clark; Campbell -> Jaquez: 4 lines, no duplicate.
    wait_for_counts(&herd, &ats, 4 * UPDATES, 0);
    // An update from another origin follows that origin's tree: Jaquez -> Campbell, Clark;
    // Campbell -> Bailey, Bona.
    let reply = herd.send("Jaquez", "IAMAT fromjaquez +10+10 5000\n");
    let at = reply.trim_end().to_owned();
    for s in ALL {
        herd.wait_for_at(s, "fromjaquez", &at);
    }
    wait_for_counts(&herd, &[at], 4, 0);
}

#[test]
fn tree_forwarding_falls_back_when_a_tree_link_is_cut() {
    // Anti-entropy every second: what the tree cannot carry past the cut comes back by it.
    let herd = start(
        "tree",
        "reconnect: { initial_ms: 50, max_ms: 300, sync_interval_s: 1 }\n",
    );
    let out = common::run_to_end(herd.herdctl().args(["link", "cut", "Bona", "Clark"]), b"");
    assert!(out.status.success(), "{out:?}");
    wait_until("Bona's link to Clark to be down", || {
        herd.status("Bona").links_up == 2
    });
    // Bona's tree child for Bailey's updates is cut off: Bona floods to Campbell instead,
    // and Clark, which Bailey's tree reaches only through Bona, gets them through Jaquez.
    let ats = updates(&herd, "cut");
    assert!(!ats.is_empty());
    // Healed, the tree carries them again, once each.
    let out = common::run_to_end(herd.herdctl().args(["link", "heal", "all"]), b"");
    assert!(out.status.success(), "{out:?}");
    wait_until("every link to be up again", || {
        ALL.iter().all(|s| {
            let f = herd.status(s);
            f.links_up == f.links_total
        })
    });
    let ats = updates(&herd, "healed");
    // Back on the tree: 4 lines per update (an anti-entropy exchange, every second here, can
    // bring a record ahead of its flood and add a copy or two; flooding would be 8 each).
    wait_until("every healed update logged where it arrived", || {
        received(&herd, &ats, "new, flooded") + received(&herd, &ats, "stale, dropped")
            >= 4 * UPDATES - 4
    });
    let lines = received(&herd, &ats, "new, flooded") + received(&herd, &ats, "stale, dropped");
    assert!(
        lines < 6 * UPDATES,
        "{lines} flood lines for {UPDATES} updates"
    );
}

#[test]
fn an_unknown_forwarding_is_refused_with_the_fix() {
    let herd = Herd::configure(GRAPH, "links: { forwarding: gossip }\n");
    let out = common::run_to_end(
        Command::new(env!("CARGO_BIN_EXE_herdctl"))
            .arg("--config")
            .arg(&herd.config)
            .args(["run", "Bailey"]),
        b"",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("links.forwarding is \"gossip\"; use flood"),
        "{err}"
    );
}
