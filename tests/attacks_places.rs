//! A client driving a paid places service's bill (issue 19, item 4), against a real node
//! (`herdctl run`) whose google or x provider points at a real HTTP server on loopback
//! (`common::upstream`) that counts what reaches it. Each test is an attack that worked
//! before the budget: one upstream request per WHATSAT, no rate limit, no cap in flight,
//! redirects followed, the key sent over plain http.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use common::upstream::{ok, parse_whatsat, ProxyNode, Reply, Upstream};
use common::wait_until;
use serde_json::{json, Value};

const KEY: &str = "AIzaTEST-attack-key-0123456789";
const TOKEN: &str = "AAAATEST-attack-token-0123456789";

const GOOGLE_OK: &str = r#"{"html_attributions": [], "results": [{"name": "Cafe", "place_id": "p1", "geometry": {"location": {"lat": 34.07, "lng": -118.44}}, "types": ["cafe"], "vicinity": "Westwood"}], "status": "OK"}"#;

fn google(upstream: &Upstream, extra: &str) -> ProxyNode {
    let node = ProxyNode::start(
        &format!(
            "places: {{ provider: google, endpoint: '{}', allow_http: true{extra} }}\n",
            upstream.url("/json")
        ),
        "GOOGLE_PLACES_API_KEY",
        KEY,
    );
    node.locate_kiwi();
    node
}

/// Sends every WHATSAT line of `lines` on one connection; returns each reply's document.
fn whatsats(node: &ProxyNode, lines: &[String]) -> Vec<Value> {
    let reply = node.send(&lines.concat());
    node.assert_not_in(&reply, "a reply");
    let documents: Vec<Value> = reply
        .split_terminator("\n\n")
        .map(|one| parse_whatsat(&format!("{one}\n\n")).1)
        .collect();
    assert_eq!(documents.len(), lines.len(), "{reply}");
    documents
}

/// WHATSATs for kiwi at radii `first`, `first + step`, ... (`count` of them), in km.
fn radii(first: f64, step: f64, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            format!(
                "WHATSAT kiwi.cs.ucla.edu {:.3} 5\n",
                first + step * i as f64
            )
        })
        .collect()
}

fn statuses(documents: &[Value]) -> Vec<&str> {
    documents
        .iter()
        .map(|d| d["status"].as_str().unwrap_or("?"))
        .collect()
}

#[test]
fn radii_a_metre_apart_share_a_handful_of_upstream_requests() {
    let upstream = Upstream::start(|_, _| ok(GOOGLE_OK));
    let node = google(&upstream, "");
    // 10.001 km, 10.002 km, ... 10.200 km: before rounding, 200 requests (200 paid calls).
    let documents = whatsats(&node, &radii(10.001, 0.001, 200));
    assert!(statuses(&documents).iter().all(|s| *s == "OK"));
    let sent: Vec<String> = upstream
        .requests()
        .iter()
        .map(|r| r.query()["radius"].clone())
        .collect();
    assert_eq!(sent, ["10000", "10100", "10200"], "radii rounded to 0.1 km");
    assert_eq!(node.herd.status("Alford").places_refused, 0);
}

#[test]
fn over_the_rate_whatsat_is_answered_over_query_limit_and_nothing_is_sent() {
    let upstream = Upstream::start(|_, _| ok(GOOGLE_OK));
    // No cache: every radius below would be a paid request.
    let node = google(&upstream, ", max_requests_per_s: 1, cache_ttl_s: 0");
    let documents = whatsats(&node, &radii(1.0, 1.0, 20));
    let statuses = statuses(&documents);
    let refused: Vec<&Value> = documents
        .iter()
        .filter(|d| d["status"] == "OVER_QUERY_LIMIT")
        .collect();
    assert!(
        !refused.is_empty(),
        "20 requests at 1 a second: {statuses:?}"
    );
    let sent = statuses.iter().filter(|s| **s == "OK").count();
    assert_eq!(sent + refused.len(), 20, "{statuses:?}");
    assert_eq!(upstream.count(), sent, "a refused WHATSAT sends nothing");
    for document in refused {
        assert_eq!(document["results"], json!([]));
        assert_eq!(document["html_attributions"], json!([]));
        let message = document["error_message"].as_str().unwrap();
        assert!(message.contains("max_requests_per_s (1)"), "{message}");
    }
    assert_eq!(
        node.herd.status("Alford").places_refused,
        (20 - sent) as u64
    );
    node.assert_secret_hidden();
}

#[test]
fn requests_in_flight_are_capped() {
    // The service holds every answer until the test lets it go.
    let release = Arc::new(AtomicBool::new(false));
    let held = Arc::clone(&release);
    let upstream = Upstream::start(move |_, _| {
        wait_until("the test to release the answers", || {
            held.load(Ordering::SeqCst)
        });
        ok(GOOGLE_OK)
    });
    let node = Arc::new(google(
        &upstream,
        ", max_in_flight: 2, timeout_ms: 25000, cache_ttl_s: 0",
    ));
    let waiting: Vec<_> = ["1", "2"]
        .into_iter()
        .map(|radius| {
            let node = Arc::clone(&node);
            thread::spawn(move || node.whatsat(radius, 5).1)
        })
        .collect();
    wait_until("two requests in flight", || upstream.count() == 2);
    let (_, third) = node.whatsat("3", 5);
    assert_eq!(third["status"], "OVER_QUERY_LIMIT", "{third:#}");
    let message = third["error_message"].as_str().unwrap();
    assert!(message.contains("max_in_flight (2)"), "{message}");
    assert_eq!(upstream.count(), 2);
    release.store(true, Ordering::SeqCst);
    for thread in waiting {
        assert_eq!(thread.join().unwrap()["status"], "OK");
    }
    // The places are free again.
    assert_eq!(node.whatsat("3", 5).1["status"], "OK");
    assert_eq!(upstream.count(), 3);
    assert_eq!(node.herd.status("Alford").places_refused, 1);
}

#[test]
fn a_redirect_is_not_followed() {
    let upstream = Upstream::start(|request, _| {
        if request.path() == "/json" {
            Reply::status(302, "").header("Location", "/elsewhere")
        } else {
            ok(GOOGLE_OK)
        }
    });
    let node = google(&upstream, "");
    let (_, document) = node.whatsat("10", 5);
    assert_ne!(document["status"], "OK", "{document:#}");
    assert!(
        document["error_message"].as_str().unwrap().contains("302"),
        "{document:#}"
    );
    let paths: Vec<String> = upstream
        .requests()
        .iter()
        .map(|r| r.path().to_owned())
        .collect();
    assert_eq!(paths, ["/json"], "the key went nowhere else");
    node.assert_secret_hidden();
}

#[test]
fn plain_http_is_refused_unless_allowed() {
    let upstream = Upstream::start(|_, _| ok(GOOGLE_OK));
    let node = ProxyNode::spawn(
        &format!(
            "places: {{ provider: google, endpoint: '{}' }}\n",
            upstream.url("/json")
        ),
        "GOOGLE_PLACES_API_KEY",
        Some(KEY),
    );
    assert!(!node.herd.wait_exit("Alford").success());
    let stderr = node.herd.stderr("Alford");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("plain http") && stderr.contains("allow_http: true"),
        "{stderr}"
    );
    assert_eq!(upstream.count(), 0);
    node.assert_not_in(&stderr, "stderr");
}

#[test]
fn the_x_provider_over_budget_answers_in_x_shape() {
    let upstream = Upstream::start(|_, _| ok(r#"{"meta": {"result_count": 0}}"#));
    let node = ProxyNode::start(
        &format!(
            "places: {{ provider: x, endpoint: '{}', allow_http: true, max_requests_per_s: 1, \
             cache_ttl_s: 0 }}\n",
            upstream.url("")
        ),
        "X_BEARER_TOKEN",
        TOKEN,
    );
    node.locate_kiwi();
    let documents = whatsats(&node, &radii(1.0, 1.0, 10));
    let refused: Vec<&Value> = documents.iter().filter(|d| d["status"] == 429).collect();
    assert!(!refused.is_empty(), "{documents:?}");
    assert_eq!(upstream.count(), documents.len() - refused.len());
    for document in refused {
        assert_eq!(document["title"], "Too Many Requests", "{document:#}");
        assert_eq!(document["meta"]["result_count"], 0);
        assert!(document["detail"].as_str().unwrap().contains("budget"));
    }
}
