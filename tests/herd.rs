//! The five-node classic herd, started for real with `herdctl run`, checked on the wire.

mod common;

use common::{exchange, wait_until, Herd, SOLO};

const ALL: [&str; 5] = ["Alford", "Ball", "Hamilton", "Holiday", "Welsh"];

#[test]
fn an_update_reaches_every_server_and_whatsat_answers_byte_for_byte() {
    let herd = Herd::classic();
    let at = herd.iamat(
        "Alford",
        "kiwi.cs.ucla.edu",
        "+34.068930-118.445127",
        "1621464827.959498503",
    );
    // Ball is two hops from Alford (via Welsh, or Hamilton and Holiday).
    for server in ALL {
        herd.wait_for_at(server, "kiwi.cs.ucla.edu", &at);
    }
    for server in ALL {
        let reply = herd.send(server, "WHATSAT kiwi.cs.ucla.edu 10 5\n");
        let (first, json) = reply.split_once('\n').unwrap();
        assert_eq!(first, at, "{server} must answer with Alford's AT line");
        assert!(
            json.ends_with("}\n\n"),
            "{server}: ends with an empty line: {reply:?}"
        );
        assert!(
            !json.trim_end().contains("\n\n"),
            "no blank lines inside the JSON"
        );
        let doc: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(doc["status"], "OK");
        let results = doc["results"].as_array().unwrap();
        assert!(!results.is_empty() && results.len() <= 5, "{results:?}");
        for r in results {
            assert!(r["name"].is_string() && r["place_id"].is_string());
            assert!(r["geometry"]["location"]["lat"].is_f64());
        }
    }
    // The bound cuts the results.
    let reply = herd.send("Ball", "WHATSAT kiwi.cs.ucla.edu 50 2\n");
    let doc: serde_json::Value = serde_json::from_str(reply.split_once('\n').unwrap().1).unwrap();
    assert_eq!(doc["results"].as_array().unwrap().len(), 2);
}

#[test]
fn invalid_lines_get_a_question_mark_and_a_copy() {
    let herd = Herd::start(SOLO);
    herd.iamat(
        "Alford",
        "kiwi",
        "+34.068930-118.445127",
        "1621464827.959498503",
    );
    let cases = [
        "WHATSAT kiwi 51 5",
        "WHATSAT kiwi 0 5",
        "WHATSAT kiwi 10 21",
        "WHATSAT kiwi 10 0",
        "WHATSAT kiwi 10.5 5.5",
        "WHATSAT unknown.client 10 5",
        "WHATSAT kiwi 10",
        "IAMAT kiwi +34.068930-118.445127",
        "IAMAT kiwi +91.0-118.4 1621464827",
        "IAMAT kiwi +34.0-180.5 1621464827",
        "IAMAT kiwi 34.068930-118.445127 1621464827",
        "IAMAT kiwi +34.068930-118.445127 -1621464827",
        "IAMAT kiwi +34.068930-118.445127 1e9",
        "IAMAT kiwi +34.068930-118.445127 nan",
        "iamat kiwi +34.068930-118.445127 1621464827",
        "HELLO there",
        "AT Alford +0.000000001 kiwi +1+1 5",
        "HERD AT Alford +0.000000001 kiwi +1+1 5",
        "",
    ];
    for line in cases {
        let reply = herd.send("Alford", &format!("{line}\n"));
        assert_eq!(reply, format!("? {line}\n"), "for {line:?}");
    }
    // A forged flood from a client is neither answered as valid nor applied.
    assert!(herd
        .known_at("Alford", "kiwi")
        .unwrap()
        .ends_with("1621464827.959498503"));
    // CRLF is a terminator; the copy is the line without it.
    assert_eq!(herd.send("Alford", "FOO bar\r\n"), "? FOO bar\n");
    // Invalid UTF-8 is copied as received.
    assert_eq!(
        exchange(herd.port("Alford"), b"IAMAT \xff +1+1 1\n"),
        b"? IAMAT \xff +1+1 1\n"
    );
}

#[test]
fn several_lines_per_connection_and_a_final_line_without_newline() {
    let herd = Herd::start(SOLO);
    let reply = herd.send(
        "Alford",
        "IAMAT a +1+1 1\nbogus\n  IAMAT\tb   -1.5+2.25 2.5  \r\nWHATSAT a 1 1",
    );
    let lines: Vec<&str> = reply.lines().collect();
    assert!(
        lines[0].starts_with("AT Alford +") && lines[0].ends_with(" a +1+1 1"),
        "{reply}"
    );
    assert_eq!(lines[1], "? bogus");
    assert!(lines[2].ends_with(" b -1.5+2.25 2.5"), "{reply}");
    assert_eq!(
        lines[3], lines[0],
        "WHATSAT answers with the stored AT line"
    );
    assert!(reply.ends_with("}\n\n"), "{reply:?}");
}

#[test]
fn newer_wins_and_older_is_dropped_everywhere() {
    let herd = Herd::classic();
    let first = herd.iamat("Alford", "kiwi", "+10+10", "100");
    for s in ALL {
        herd.wait_for_at(s, "kiwi", &first);
    }
    let newer = herd.iamat("Ball", "kiwi", "+20+20", "200");
    for s in ALL {
        herd.wait_for_at(s, "kiwi", &newer);
    }
    // An older report still gets its AT reply, but changes nothing.
    herd.iamat("Holiday", "kiwi", "+30+30", "150");
    // A marker sent after it at the same server, once everywhere, proves the older one had
    // every chance to spread (links are FIFO).
    let marker = herd.iamat("Holiday", "marker", "+0+0", "1");
    for s in ALL {
        herd.wait_for_at(s, "marker", &marker);
    }
    for s in ALL {
        assert_eq!(
            herd.known_at(s, "kiwi").as_deref(),
            Some(newer.as_str()),
            "at {s}"
        );
    }
    // The classic herd is one ring, so Ball's update goes round both ways: each of the four
    // others hears it new once and floods it on, and the two wavefronts meet as two stale
    // copies, dropped. Every server logs which neighbour sent which.
    wait_until("every copy of Ball's update in the logs", || {
        let count = |what: &str| {
            let line = format!(" < HERD {newer} ({what})");
            ALL.iter()
                .map(|s| herd.log_text(s).matches(&line).count())
                .sum::<usize>()
        };
        count("new, flooded") == 4 && count("stale, dropped") == 2
    });
}

#[test]
fn floods_route_around_a_dead_server_and_links_reform() {
    let herd = Herd::classic();
    let warmup = herd.iamat("Alford", "warmup", "+1+1", "1");
    for s in ALL {
        herd.wait_for_at(s, "warmup", &warmup);
    }

    // Welsh down: Alford -> Hamilton -> Holiday -> Ball.
    herd.kill("Welsh");
    let around = herd.iamat("Alford", "kiwi", "+34.068930-118.445127", "1000");
    herd.wait_for_at("Ball", "kiwi", &around);

    // Welsh and Hamilton down: Alford is cut off but still serves.
    herd.kill("Hamilton");
    let cut_off = herd.iamat("Alford", "kiwi", "+34.068930-118.445127", "2000");
    assert_eq!(
        herd.known_at("Alford", "kiwi").as_deref(),
        Some(cut_off.as_str())
    );
    // Both of Alford's neighbours are gone, so nothing can have carried it.
    assert_eq!(
        herd.known_at("Ball", "kiwi").as_deref(),
        Some(around.as_str())
    );

    // They come back: links re-form by themselves and the herd catches up.
    herd.start_node("Welsh");
    herd.start_node("Hamilton");
    for s in ALL {
        herd.wait_for_at(s, "kiwi", &cut_off);
    }
    let after = herd.iamat("Ball", "kiwi", "+34.068930-118.445127", "3000");
    for s in ALL {
        herd.wait_for_at(s, "kiwi", &after);
    }
    // Alford saw each link go down with its neighbour and come back: up, dropped, up again
    // (not just any "dropped" in the log, which the flood lines' "stale, dropped" has too).
    for neighbour in ["Welsh", "Hamilton"] {
        herd.wait_for_relink("Alford", neighbour);
    }
}
