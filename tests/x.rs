//! The x places provider (X API v2 recent search) against a real HTTP server on loopback,
//! started by the test, that answers in X's documented formats (posts with `includes` and
//! `meta`, problem documents, `x-rate-limit-*` headers) and records every request
//! (`common::upstream`). A node runs as `herdctl run` with `X_BEARER_TOKEN` set. No test
//! touches the internet.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::hold_ports;
use common::upstream::{ok, ten_concurrent_whatsats, ProxyNode, Reply, Upstream, HANG, IAMAT};
use serde_json::{json, Value};

const TOKEN_ENV: &str = "X_BEARER_TOKEN";
/// Shaped like a real app-only bearer token (percent-escapes included).
const TOKEN: &str = "AAAAAAAAAAAAAAAAAAAAAHerdTest%2Fbearer%3DToken0123456789abcdef";

/// A recent search answer with `n` posts, newest first, pretty-printed with blank lines
/// between posts (which must not reach the wire). Post `i` is by `u{i % 4}` and tagged with
/// place `p{i % 3}`; every other post has exact coordinates.
fn posts_answer(n: usize) -> String {
    let posts: Vec<String> = (0..n)
        .map(|i| {
            let mut geo = json!({"place_id": format!("p{}", i % 3)});
            if i % 2 == 0 {
                geo["coordinates"] =
                    json!({"type": "Point", "coordinates": [-118.445 + i as f64 * 0.001, 34.069]});
            }
            serde_json::to_string_pretty(&json!({
                "id": post_id(i),
                "text": format!("post {i} from Westwood"),
                "created_at": format!("2026-11-23T10:{:02}:00.000Z", 59 - i),
                "author_id": format!("u{}", i % 4),
                "edit_history_tweet_ids": [post_id(i)],
                "geo": geo,
            }))
            .unwrap()
        })
        .collect();
    let users: Vec<Value> = (0..n.min(4))
        .map(|u| json!({"id": format!("u{u}"), "name": format!("User {u}"), "username": format!("user{u}")}))
        .collect();
    let places: Vec<Value> = (0..n.min(3))
        .map(|p| {
            json!({"id": format!("p{p}"), "full_name": format!("Place {p}, Los Angeles"),
                   "country_code": "US", "place_type": "neighborhood"})
        })
        .collect();
    let mut meta = json!({"result_count": n, "next_token": "b26v89c19zqg8o3fo7gesq314yb9l2l4ptqy"});
    if n > 0 {
        meta["newest_id"] = json!(post_id(0));
        meta["oldest_id"] = json!(post_id(n - 1));
    }
    format!(
        "{{\n  \"data\": [\n{}\n  ],\n\n\n  \"includes\": {},\n\n  \"meta\": {}\n}}\n\n",
        posts.join(",\n\n\n"),
        serde_json::to_string_pretty(&json!({"users": users, "places": places})).unwrap(),
        serde_json::to_string_pretty(&meta).unwrap()
    )
}

fn post_id(i: usize) -> String {
    format!("18612345678901{:05}", 99_999 - i)
}

fn start(places_yaml: &str) -> ProxyNode {
    ProxyNode::start(places_yaml, TOKEN_ENV, TOKEN)
}

fn places_yaml(endpoint: &str, extra: &str) -> String {
    format!("places: {{ provider: x, endpoint: '{endpoint}', timeout_ms: 2000, allow_http: true{extra} }}\n")
}

fn ids(document: &Value, list: &str) -> Vec<String> {
    let items = match list {
        "data" => &document["data"],
        other => &document["includes"][other],
    };
    items
        .as_array()
        .unwrap_or_else(|| panic!("no {list} in {document:#}"))
        .iter()
        .map(|item| item["id"].as_str().unwrap().to_owned())
        .collect()
}

/// A document saying what went wrong: X's problem shape, no posts, `meta.result_count` 0.
fn assert_problem(document: &Value, status: u16, title: &str, detail_part: &str) {
    assert_eq!(document["status"], status, "{document:#}");
    assert_eq!(document["title"], title, "{document:#}");
    assert!(document.get("data").is_none(), "{document:#}");
    assert_eq!(document["meta"], json!({"result_count": 0}));
    let detail = document["detail"].as_str().expect("detail");
    assert!(
        detail.contains(detail_part),
        "{detail:?} lacks {detail_part:?}"
    );
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

// ---------------------------------------------------------------------------------------------

#[test]
fn request_shape_bound_meta_includes_and_cache() {
    let upstream = Upstream::start(|_, _| ok(posts_answer(20)));
    // A base URL with a path (a proxy's prefix): the search path is added to it.
    let node = start(&places_yaml(&upstream.url("/xapi/"), ""));
    let at = node.locate_kiwi();

    let (at_line, document) = node.whatsat("10.5", 5);
    assert_eq!(at_line, at, "the stored AT line comes first");
    let posts: Vec<String> = (0..5).map(post_id).collect();
    assert_eq!(ids(&document, "data"), posts);
    let first = &document["data"][0];
    assert_eq!(first["created_at"], "2026-11-23T10:59:00.000Z");
    assert_eq!(first["author_id"], "u0");
    assert_eq!(first["geo"]["coordinates"]["coordinates"][1], 34.069);
    assert_eq!(
        document["meta"],
        json!({"result_count": 5, "newest_id": posts[0], "oldest_id": posts[4]}),
        "meta counts the posts sent; next_token would skip the ones cut off"
    );
    assert_eq!(ids(&document, "users"), ["u0", "u1", "u2", "u3"]);
    assert_eq!(ids(&document, "places"), ["p0", "p1", "p2"]);
    assert_eq!(document["includes"]["users"][1]["username"], "user1");

    let requests = upstream.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "GET");
    assert_eq!(request.path(), "/xapi/2/tweets/search/recent");
    assert_eq!(request.headers["authorization"], format!("Bearer {TOKEN}"));
    assert!(!request.target.contains("Token0123"), "no token in the URL");
    let query = request.query();
    assert_eq!(query["query"], "point_radius:[-118.4451 34.0689 10.5km]");
    assert_eq!(
        query["max_results"], "20",
        "a full page, so one cached answer serves every bound"
    );
    let listed =
        |key: &str| -> BTreeSet<String> { query[key].split(',').map(str::to_owned).collect() };
    for field in ["created_at", "geo", "author_id"] {
        assert!(listed("tweet.fields").contains(field), "{query:?}");
    }
    assert!(listed("expansions").contains("author_id"), "{query:?}");
    assert!(listed("expansions").contains("geo.place_id"), "{query:?}");
    assert!(listed("user.fields").contains("username"), "{query:?}");
    assert!(listed("place.fields").contains("full_name"), "{query:?}");

    // Another bound: a cache hit, cut after it; within the page X's document is whole.
    let (_, document) = node.whatsat("10.5", 2);
    assert_eq!(ids(&document, "data"), &posts[..2]);
    assert_eq!(ids(&document, "users"), ["u0", "u1"], "only their authors");
    assert_eq!(ids(&document, "places"), ["p0", "p1"]);
    assert_eq!(document["meta"]["result_count"], 2);
    let (_, document) = node.whatsat("10.5", 20);
    let whole: Value = serde_json::from_str(&posts_answer(20)).unwrap();
    assert_eq!(
        document, whole,
        "20 posts for bound 20: X's document as sent"
    );
    assert_eq!(upstream.count(), 1, "cache hits make no upstream request");

    // Another radius is another cache entry.
    node.whatsat("3", 1);
    assert_eq!(upstream.count(), 2);
    assert_eq!(
        upstream.requests()[1].query()["query"],
        "point_radius:[-118.4451 34.0689 3km]"
    );
    node.assert_secret_hidden();
}

#[test]
fn a_radius_above_40_km_is_clamped_and_the_document_says_so() {
    let upstream = Upstream::start(|_, _| ok(posts_answer(4)));
    let node = start(&places_yaml(&upstream.url(""), ""));
    node.locate_kiwi();

    let (_, document) = node.whatsat("50", 3);
    assert_eq!(
        upstream.requests()[0].query()["query"],
        "point_radius:[-118.4451 34.0689 40km]"
    );
    assert_eq!(ids(&document, "data").len(), 3);
    let clamped = &document["radius_clamped"];
    assert_eq!(clamped["requested_km"], 50.0);
    assert_eq!(clamped["searched_km"], 40.0);
    assert!(
        clamped["detail"].as_str().unwrap().contains("25 miles"),
        "{clamped}"
    );

    // 45 km and 40 km search the same circle: one cached answer, said for each.
    let (_, document) = node.whatsat("45", 3);
    assert_eq!(document["radius_clamped"]["requested_km"], 45.0);
    let (_, document) = node.whatsat("40", 3);
    assert!(document.get("radius_clamped").is_none(), "{document:#}");
    assert_eq!(upstream.count(), 1);

    let (_, document) = node.whatsat("39.5", 1);
    assert!(document.get("radius_clamped").is_none());
    assert_eq!(upstream.count(), 2);
    // The protocol's limit still holds: above 50 km is not a valid WHATSAT.
    assert_eq!(
        node.send("WHATSAT kiwi.cs.ucla.edu 50.5 3\n"),
        "? WHATSAT kiwi.cs.ucla.edu 50.5 3\n"
    );
}

#[test]
fn no_posts_nearby_is_an_empty_meta() {
    let upstream = Upstream::start(|_, _| ok(r#"{"meta":{"result_count":0}}"#));
    let node = start(&places_yaml(&upstream.url(""), ""));
    node.locate_kiwi();
    let (_, document) = node.whatsat("1", 5);
    assert_eq!(document, json!({"meta": {"result_count": 0}}));
    node.whatsat("1", 5);
    assert_eq!(upstream.count(), 1, "an empty answer is an answer: cached");
}

#[test]
fn rate_limited_says_when_the_limit_resets_and_is_not_cached() {
    let reset = now() + 600;
    let upstream = Upstream::start(move |_, index| {
        if index == 0 {
            Reply::status(
                429,
                r#"{"title":"Too Many Requests","detail":"Too Many Requests","type":"about:blank","status":429}"#,
            )
            .header("x-rate-limit-limit", "450")
            .header("x-rate-limit-remaining", "0")
            .header("x-rate-limit-reset", &reset.to_string())
        } else {
            ok(posts_answer(3))
        }
    });
    let node = start(&places_yaml(&upstream.url(""), ""));
    node.locate_kiwi();

    let (_, document) = node.whatsat("10", 5);
    assert_problem(
        &document,
        429,
        "Too Many Requests",
        "the rate limit resets at",
    );
    let limit = &document["rate_limit"];
    assert_eq!(limit["reset"], reset, "{document:#}");
    assert_eq!(limit["limit"], 450);
    assert_eq!(limit["remaining"], 0);
    let wait = limit["reset_in_s"].as_u64().unwrap();
    assert!((590..=600).contains(&wait), "{wait}");
    assert!(limit["reset_at"].as_str().unwrap().ends_with('Z'));

    // Not cached: the next query asks X again, and the node served throughout.
    let (_, document) = node.whatsat("10", 5);
    assert_eq!(ids(&document, "data").len(), 3);
    assert_eq!(upstream.count(), 2);
    node.assert_secret_hidden();
}

#[test]
fn http_errors_and_bad_answers_say_what_went_wrong() {
    let upstream = Upstream::start(|_, index| match index {
        // X's problem document; this one (as a misbehaving proxy might) echoes the token.
        0 => Reply::status(
            401,
            format!(
                r#"{{"title":"Unauthorized","type":"about:blank","status":401,"detail":"Unauthorized: {TOKEN}"}}"#
            ),
        ),
        1 => Reply::status(
            400,
            r#"{"errors":[{"parameters":{"query":["point_radius:[...]"]},"message":"There were errors processing your request: Reference to invalid operator 'point_radius'. Operator is not available in current product or you are not permitted to access it"}],"title":"Invalid Request","detail":"One or more parameters to your request was invalid.","type":"https://api.x.com/2/problems/invalid-request"}"#,
        ),
        2 => Reply::status(503, "<html>Service Unavailable</html>"),
        _ => ok("this is not JSON"),
    });
    let node = start(&places_yaml(&upstream.url(""), ""));
    node.locate_kiwi();

    let (_, document) = node.whatsat("10", 5);
    assert_problem(&document, 401, "Unauthorized", "X API answered HTTP 401");
    assert!(
        document["detail"]
            .as_str()
            .unwrap()
            .contains("[X_BEARER_TOKEN]"),
        "the echoed token is scrubbed: {document:#}"
    );

    let (_, document) = node.whatsat("10", 5);
    assert_problem(&document, 400, "Invalid Request", "HTTP 400");
    assert!(
        document["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("point_radius"),
        "X's errors pass through: {document:#}"
    );
    assert_eq!(
        document["type"],
        "https://api.x.com/2/problems/invalid-request"
    );

    let (_, document) = node.whatsat("10", 5);
    assert_problem(&document, 503, "Service Unavailable", "HTTP 503");

    let (_, document) = node.whatsat("10", 5);
    assert_problem(&document, 502, "Bad Gateway", "not JSON");
    assert_eq!(upstream.count(), 4, "no failure is cached");
    node.assert_secret_hidden();
}

#[test]
fn no_answer_is_a_gateway_document_within_the_timeout() {
    let upstream = Upstream::start(|_, _| Reply::Hang(HANG));
    let node = start(&format!(
        "places: {{ provider: x, endpoint: '{}', timeout_ms: 400, allow_http: true }}\n",
        upstream.url("")
    ));
    node.locate_kiwi();
    let document = node.whatsat_past_the_timeout(Duration::from_millis(400));
    assert_problem(&document, 504, "Gateway Timeout", "within 400 ms");
    assert!(node.send(IAMAT).starts_with("AT Alford "), "still serving");
    node.assert_secret_hidden();

    // Held (bound, not listening) to the end: a connection to it is refused.
    let held = hold_ports(1).pop().unwrap();
    let closed = held[0].port;
    let node = start(&places_yaml(&format!("http://127.0.0.1:{closed}"), ""));
    node.locate_kiwi();
    let (_, document) = node.whatsat("10", 5);
    assert_problem(&document, 502, "Bad Gateway", "cannot connect");
    node.assert_secret_hidden();
}

#[test]
fn ten_concurrent_queries_make_one_upstream_request() {
    let (documents, requests) = ten_concurrent_whatsats(
        |upstream| places_yaml(&upstream.url(""), ", cache_ttl_s: 0"),
        TOKEN_ENV,
        TOKEN,
        posts_answer(20),
    );
    for (document, bound) in documents.iter().zip(1..) {
        assert_eq!(ids(document, "data").len(), bound);
        assert_eq!(document["meta"]["result_count"], bound);
    }
    assert_eq!(
        requests, 1,
        "single-flight: one upstream request for ten queries"
    );
}

#[test]
fn a_missing_or_malformed_token_stops_the_node_at_start() {
    for token in [None, Some(""), Some("two words")] {
        let node = ProxyNode::spawn("places: { provider: x }\n", TOKEN_ENV, token);
        let status = node.herd.wait_exit("Alford");
        assert!(!status.success());
        let stderr = node.herd.stderr("Alford");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(TOKEN_ENV), "{stderr}");
        assert!(!stderr.contains("words"), "the token never shows: {stderr}");
    }
}
