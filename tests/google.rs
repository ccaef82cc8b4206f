//! The google places provider against a real HTTP server on loopback, started by the test,
//! that answers in Google's documented formats (Nearby Search legacy and Places API New) and
//! records every request (`common::upstream`). A node runs as `herdctl run` with
//! `GOOGLE_PLACES_API_KEY` set. No test touches the internet.

mod common;

use std::time::{Duration, Instant};

use common::hold_ports;
use common::upstream::{ok, ten_concurrent_whatsats, ProxyNode, Reply, Upstream, HANG, IAMAT};
use serde_json::{json, Value};

const KEY: &str = "AIzaTEST-herd-secret-0123456789";

// ---------------------------------------------------------------------------------------------
// Google's formats.

/// A legacy Nearby Search answer with `n` places, pretty-printed the way Google does, plus
/// blank lines between results (which must not reach the wire).
fn legacy_answer(n: usize) -> String {
    let results: Vec<String> = (0..n)
        .map(|i| {
            serde_json::to_string_pretty(&json!({
                "business_status": "OPERATIONAL",
                "geometry": {
                    "location": {"lat": 34.0689 + i as f64 * 0.001, "lng": -118.4452},
                    "viewport": {
                        "northeast": {"lat": 34.07, "lng": -118.44},
                        "southwest": {"lat": 34.06, "lng": -118.45}
                    }
                },
                "icon": "https://maps.gstatic.com/mapfiles/place_api/icons/v1/png_71/cafe-71.png",
                "name": format!("Place {i}"),
                "place_id": format!("ChIJplace{i}"),
                "plus_code": {"compound_code": "3H9W+XX Los Angeles", "global_code": "85633H9W+XX"},
                "rating": 4.5,
                "reference": format!("ChIJplace{i}"),
                "scope": "GOOGLE",
                "types": ["cafe", "food", "point_of_interest", "establishment"],
                "user_ratings_total": 100 + i,
                "vicinity": "405 Hilgard Ave, Los Angeles"
            }))
            .unwrap()
        })
        .collect();
    format!(
        "{{\n   \"html_attributions\" : [],\n\n\n   \"results\" : [\n{}\n   ],\n\n   \"status\" : \"OK\"\n}}\n\n",
        results.join(",\n\n\n")
    )
}

/// A Places API (New) `searchNearby` answer with `n` places.
fn new_answer(n: usize) -> String {
    let places: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "id": format!("ChIJnew{i}"),
                "types": ["restaurant", "food", "point_of_interest", "establishment"],
                "formattedAddress": format!("{i} Westwood Blvd, Los Angeles, CA 90024, USA"),
                "shortFormattedAddress": format!("{i} Westwood Blvd, Los Angeles"),
                "location": {"latitude": 34.06 + i as f64 * 0.001, "longitude": -118.44},
                "rating": 4.2,
                "userRatingCount": 50 + i,
                "priceLevel": "PRICE_LEVEL_INEXPENSIVE",
                "businessStatus": "OPERATIONAL",
                "displayName": {"text": format!("Diner {i}"), "languageCode": "en"}
            })
        })
        .collect();
    serde_json::to_string_pretty(&json!({ "places": places })).unwrap()
}

// ---------------------------------------------------------------------------------------------
// A node with the key in its environment.

type Node = ProxyNode;

fn start(places_yaml: &str) -> Node {
    ProxyNode::start(places_yaml, "GOOGLE_PLACES_API_KEY", KEY)
}

fn places_yaml(api: &str, endpoint: &str, extra: &str) -> String {
    format!(
        "places: {{ provider: google, api: {api}, endpoint: '{endpoint}', timeout_ms: 2000, allow_http: true{extra} }}\n"
    )
}

fn names(document: &Value) -> Vec<String> {
    document["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect()
}

fn assert_error_document(document: &Value, status: &str, message_part: &str) {
    assert_eq!(document["status"], status, "{document:#}");
    assert_eq!(document["results"], json!([]), "{document:#}");
    let message = document["error_message"].as_str().expect("error_message");
    assert!(
        message.contains(message_part),
        "{message:?} lacks {message_part:?}"
    );
    assert!(!message.contains(KEY));
}

// ---------------------------------------------------------------------------------------------

#[test]
fn legacy_request_shape_bound_newlines_and_cache() {
    let upstream = Upstream::start(|_, _| ok(legacy_answer(20)));
    // A budget above the misses measured below.
    let node = start(&places_yaml(
        "legacy",
        &upstream.url("/maps/api/place/nearbysearch/json"),
        ", max_requests_per_s: 1000",
    ));
    let at = node.locate_kiwi();

    let started = Instant::now();
    let (at_line, document) = node.whatsat("10.5", 5);
    let miss = started.elapsed();
    assert_eq!(at_line, at, "the stored AT line comes first");
    assert_eq!(document["status"], "OK");
    assert_eq!(document["html_attributions"], json!([]));
    assert_eq!(
        names(&document),
        ["Place 0", "Place 1", "Place 2", "Place 3", "Place 4"]
    );
    let first_reply = document.clone();
    let first = &document["results"][0];
    assert_eq!(first["place_id"], "ChIJplace0", "Google's fields are kept");
    assert_eq!(first["user_ratings_total"], 100);
    assert_eq!(first["geometry"]["viewport"]["northeast"]["lat"], 34.07);

    let requests = upstream.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "GET");
    assert_eq!(request.path(), "/maps/api/place/nearbysearch/json");
    let query = request.query();
    assert_eq!(
        query["location"], "34.0689,-118.4451",
        "the location rounded to 4 decimals"
    );
    assert_eq!(query["radius"], "10500", "10.5 km in metres");
    assert_eq!(query["key"], KEY);
    assert_eq!(query.len(), 3, "{query:?}");

    // Same location and radius, another bound: served from the cache, cut after it.
    let started = Instant::now();
    let (_, document) = node.whatsat("10.5", 20);
    let hit = started.elapsed();
    assert_eq!(names(&document).len(), 20);
    let (_, document) = node.whatsat("10.5", 1);
    assert_eq!(names(&document), ["Place 0"]);
    // A bound asked before gets the text kept for it: the same reply.
    let (_, five) = node.whatsat("10.5", 5);
    assert_eq!(names(&five), names(&first_reply));
    assert_eq!(five, first_reply);
    assert_eq!(upstream.count(), 1, "cache hits make no upstream request");

    // Another radius is another cache entry.
    node.whatsat("3", 2);
    assert_eq!(upstream.count(), 2);
    assert_eq!(upstream.requests()[1].query()["radius"], "3000");

    // Rough costs, as the client sees them (debug build, loopback upstream).
    let rounds = 20;
    let started = Instant::now();
    for _ in 0..rounds {
        node.whatsat("10.5", 20);
    }
    let hits = started.elapsed() / rounds;
    let started = Instant::now();
    for i in 0..rounds {
        // Radii 0.1 km apart: each its own cache entry.
        node.whatsat(&format!("{}.{}", 20 + i / 10, i % 10), 20);
    }
    let misses = started.elapsed() / rounds;
    assert_eq!(upstream.count(), 2 + rounds as usize);
    eprintln!(
        "WHATSAT cost: first miss {miss:?}, first hit {hit:?}; mean over {rounds}: \
         cache hit {hits:?}, upstream round trip (loopback) {misses:?}"
    );
    node.assert_secret_hidden();
}

#[test]
fn new_api_request_shape_and_mapping() {
    let upstream = Upstream::start(|_, _| ok(new_answer(20)));
    let node = start(&places_yaml(
        "new",
        &upstream.url("/v1/places:searchNearby"),
        "",
    ));
    node.locate_kiwi();
    let (_, document) = node.whatsat("10", 3);
    assert_eq!(document["status"], "OK");
    assert_eq!(names(&document), ["Diner 0", "Diner 1", "Diner 2"]);
    assert_eq!(
        document["results"][1],
        json!({
            "business_status": "OPERATIONAL",
            "geometry": {"location": {"lat": 34.061, "lng": -118.44}},
            "name": "Diner 1",
            "place_id": "ChIJnew1",
            "price_level": 1,
            "rating": 4.2,
            "reference": "ChIJnew1",
            "types": ["restaurant", "food", "point_of_interest", "establishment"],
            "user_ratings_total": 51,
            "vicinity": "1 Westwood Blvd, Los Angeles"
        })
    );

    let requests = upstream.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(
        request.target, "/v1/places:searchNearby",
        "no key in the URL"
    );
    assert_eq!(request.headers["x-goog-api-key"], KEY);
    let mask = &request.headers["x-goog-fieldmask"];
    for field in [
        "places.id",
        "places.displayName",
        "places.location",
        "places.types",
    ] {
        assert!(
            mask.split(',').any(|f| f == field),
            "{field} missing from {mask}"
        );
    }
    assert!(request.headers["content-type"].starts_with("application/json"));
    let body: Value = serde_json::from_str(&request.body).unwrap();
    assert_eq!(
        body,
        json!({
            "maxResultCount": 20,
            "locationRestriction": {"circle": {
                "center": {"latitude": 34.0689, "longitude": -118.4451},
                "radius": 10000.0
            }}
        }),
        "a full page is asked for so the cached answer serves every bound"
    );

    let (_, document) = node.whatsat("10", 20);
    assert_eq!(names(&document).len(), 20);
    assert_eq!(upstream.count(), 1, "a cache hit");
    node.assert_secret_hidden();
}

#[test]
fn new_api_no_places_is_zero_results() {
    let upstream = Upstream::start(|_, _| ok("{}\n"));
    let node = start(&places_yaml(
        "new",
        &upstream.url("/v1/places:searchNearby"),
        "",
    ));
    node.locate_kiwi();
    let (_, document) = node.whatsat("1", 5);
    assert_eq!(
        document,
        json!({"html_attributions": [], "results": [], "status": "ZERO_RESULTS"})
    );
}

#[test]
fn ten_concurrent_queries_make_one_upstream_request() {
    let (documents, requests) = ten_concurrent_whatsats(
        |upstream| places_yaml("legacy", &upstream.url("/json"), ", cache_ttl_s: 0"),
        "GOOGLE_PLACES_API_KEY",
        KEY,
        legacy_answer(20),
    );
    for (document, bound) in documents.iter().zip(1..) {
        assert_eq!(document["status"], "OK");
        assert_eq!(names(document).len(), bound);
    }
    assert_eq!(
        requests, 1,
        "single-flight: one upstream request for ten queries"
    );
}

#[test]
fn http_500_is_an_error_document_and_is_not_cached() {
    let upstream = Upstream::start(|_, index| {
        if index == 0 {
            Reply::status(500, "<html>Internal error</html>")
        } else {
            ok(legacy_answer(2))
        }
    });
    let node = start(&places_yaml("legacy", &upstream.url("/json"), ""));
    node.locate_kiwi();
    let (_, document) = node.whatsat("10", 5);
    assert_error_document(&document, "UNKNOWN_ERROR", "HTTP 500");
    assert_eq!(document["html_attributions"], json!([]));
    let (_, document) = node.whatsat("10", 5);
    assert_eq!(document["status"], "OK", "the failure was not cached");
    assert_eq!(upstream.count(), 2);
    node.assert_secret_hidden();
}

#[test]
fn a_hang_past_the_timeout_is_answered_within_it() {
    let upstream = Upstream::start(|_, _| Reply::Hang(HANG));
    let node = start(&format!(
        "places: {{ provider: google, endpoint: '{}', timeout_ms: 400, allow_http: true }}\n",
        upstream.url("/json")
    ));
    node.locate_kiwi();
    let document = node.whatsat_past_the_timeout(Duration::from_millis(400));
    assert_error_document(&document, "UNKNOWN_ERROR", "400 ms");
    // The node keeps serving.
    assert!(node.send(IAMAT).starts_with("AT Alford "));
    node.assert_secret_hidden();
}

#[test]
fn request_denied_passes_through() {
    // Legacy: HTTP 200 with Google's status.
    let upstream = Upstream::start(|_, _| {
        ok(r#"{
   "error_message" : "The provided API key is invalid. ",
   "html_attributions" : [],
   "results" : [],
   "status" : "REQUEST_DENIED"
}"#)
    });
    let node = start(&places_yaml("legacy", &upstream.url("/json"), ""));
    node.locate_kiwi();
    let (_, document) = node.whatsat("10", 5);
    assert_error_document(
        &document,
        "REQUEST_DENIED",
        "The provided API key is invalid.",
    );
    node.whatsat("10", 5);
    assert_eq!(upstream.count(), 2, "REQUEST_DENIED is not cached");
    node.assert_secret_hidden();

    // New: HTTP 403 with a Google API error.
    let upstream = Upstream::start(|_, _| {
        Reply::status(
            403,
            r#"{
  "error": {
    "code": 403,
    "message": "API key not valid. Please pass a valid API key.",
    "status": "PERMISSION_DENIED"
  }
}"#,
        )
    });
    let node = start(&places_yaml(
        "new",
        &upstream.url("/v1/places:searchNearby"),
        "",
    ));
    node.locate_kiwi();
    let (_, document) = node.whatsat("10", 5);
    assert_error_document(&document, "REQUEST_DENIED", "API key not valid");
    node.assert_secret_hidden();
}

#[test]
fn bad_json_and_connection_refused_are_error_documents() {
    let upstream = Upstream::start(|_, _| ok("this is not JSON"));
    let node = start(&places_yaml("legacy", &upstream.url("/json"), ""));
    node.locate_kiwi();
    let (_, document) = node.whatsat("10", 5);
    assert_error_document(&document, "UNKNOWN_ERROR", "not JSON");
    node.assert_secret_hidden();

    // Held (bound, not listening) to the end: a connection to it is refused.
    let held = hold_ports(1).pop().unwrap();
    let closed = held[0].port;
    let node = start(&places_yaml(
        "legacy",
        &format!("http://127.0.0.1:{closed}/json"),
        "",
    ));
    node.locate_kiwi();
    let started = Instant::now();
    let (_, document) = node.whatsat("10", 5);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_error_document(&document, "UNKNOWN_ERROR", "cannot connect");
    node.assert_secret_hidden();
}

#[test]
fn a_missing_key_stops_the_node_at_start() {
    for key in [None, Some("")] {
        let node = ProxyNode::spawn(
            "places: { provider: google }\n",
            "GOOGLE_PLACES_API_KEY",
            key,
        );
        let status = node.herd.wait_exit("Alford");
        assert!(!status.success());
        let stderr = node.herd.stderr("Alford");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains("GOOGLE_PLACES_API_KEY"), "{stderr}");
    }
}
