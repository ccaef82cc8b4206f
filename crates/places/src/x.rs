//! The x provider: WHATSAT answered with recent posts near the client, from the X API v2
//! recent search (the last seven days), as the seed paper's Twitter herd meant to.
//!
//! `GET <endpoint>/2/tweets/search/recent?query=point_radius:[LNG LAT RADIUSkm]` with a bearer
//! token, asking for a full page ([`MAX_RESULTS`]) with each post's `created_at`, `geo` and
//! author (`expansions=author_id` puts the authors' `name` and `username` in
//! `includes.users`; `geo.place_id` puts the tagged places in `includes.places`).
//!
//! The reply is X's own document (`data`, `includes`, `meta`, any partial `errors`) with
//! `data` cut to the WHATSAT bound and the rest kept true to what is left ([`cut_to_bound`]).
//! `point_radius` takes a radius below 25 miles: a larger WHATSAT radius (the protocol allows
//! 50 km) is clamped to [`MAX_RADIUS_KM`] and the document says so in `radius_clamped`.
//! When X cannot answer, the document is X's problem shape (`title`, `detail`, `type`,
//! `status`) saying what went wrong, with the rate limit's reset time on HTTP 429
//! ([`error_document`]). Caching, single-flight, the timeout and keeping the token out of
//! every message are [`super::http`]'s.

use std::time::{SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderMap, AUTHORIZATION};
use reqwest::{Client, RequestBuilder, StatusCode, Url};
use serde_json::{json, Map, Value};

use super::http::{Answer, HttpProvider, NoAnswer, Search, Secret, Service, MAX_RESULTS};
use super::NearbyQuery;
use herd_config::config::UpstreamSettings;

/// The environment variable that holds the bearer token (an app-only OAuth 2.0 token).
pub const TOKEN_ENV: &str = "X_BEARER_TOKEN";

/// Added to the endpoint's path.
pub const SEARCH_PATH: &str = "2/tweets/search/recent";

/// The largest radius sent: `point_radius` takes less than 25 miles (40.23 km).
pub const MAX_RADIUS_KM: f64 = 40.0;

/// What each post carries besides its `id` and `text`.
pub const TWEET_FIELDS: &str = "created_at,geo,author_id";
/// The objects put in `includes`: each post's author and tagged place.
pub const EXPANSIONS: &str = "author_id,geo.place_id";
pub const USER_FIELDS: &str = "name,username";
pub const PLACE_FIELDS: &str = "full_name,geo,country_code,place_type";

/// The x provider: the X API recent search behind the shared cache and single-flight.
pub type XProvider = HttpProvider<XRecentSearch>;

/// The X API v2 recent search's request and answer formats.
#[derive(Debug, Clone, Copy)]
pub struct XRecentSearch;

impl XRecentSearch {
    /// The provider for `settings`, with the token from [`TOKEN_ENV`] (read by the caller
    /// with [`XRecentSearch::token_from_env`]).
    pub fn provider(settings: &UpstreamSettings, token: Secret) -> anyhow::Result<XProvider> {
        HttpProvider::new(XRecentSearch, settings, token)
    }

    /// The token from `X_BEARER_TOKEN`, or an error naming the variable.
    pub fn token_from_env() -> anyhow::Result<Secret> {
        Secret::from_env(TOKEN_ENV, "x", "your bearer token", "Bearer ")
    }
}

/// `<endpoint>/2/tweets/search/recent`, whatever path the endpoint has (a proxy's prefix).
pub fn search_url(endpoint: &Url) -> Url {
    let mut url = endpoint.clone();
    let path = format!("{}/{SEARCH_PATH}", endpoint.path().trim_end_matches('/'));
    url.set_path(&path);
    url
}

/// The search query: posts geo-tagged within the radius (kilometres) of the point.
pub fn point_radius_query(search: Search) -> String {
    format!(
        "point_radius:[{} {} {}km]",
        search.lng, search.lat, search.radius
    )
}

impl Service for XRecentSearch {
    const NAME: &'static str = "x";
    const LABEL: &'static str = "X API";
    const RADIUS_UNIT: &'static str = "km";

    /// Kilometres, at most [`MAX_RADIUS_KM`].
    fn radius(&self, radius_km: f64) -> f64 {
        radius_km.min(MAX_RADIUS_KM)
    }

    fn request(
        &self,
        client: &Client,
        endpoint: &Url,
        token: &Secret,
        search: Search,
    ) -> RequestBuilder {
        let mut url = search_url(endpoint);
        url.query_pairs_mut()
            .append_pair("query", &point_radius_query(search))
            .append_pair("max_results", &MAX_RESULTS.to_string())
            .append_pair("tweet.fields", TWEET_FIELDS)
            .append_pair("expansions", EXPANSIONS)
            .append_pair("user.fields", USER_FIELDS)
            .append_pair("place.fields", PLACE_FIELDS);
        client.get(url).header(AUTHORIZATION, token.header())
    }

    fn read(&self, answer: Answer) -> Result<Value, Value> {
        let parsed = answer.json();
        if !answer.status.is_success() {
            return Err(error_document(
                answer.status,
                &answer.headers,
                parsed,
                now_unix(),
            ));
        }
        let bad = |what: String| {
            let detail = format!("X API answered HTTP {} with {what}", answer.status);
            problem(StatusCode::BAD_GATEWAY, &detail)
        };
        let Some(parsed) = parsed else {
            return Err(bad(format!(
                "a body that is not JSON ({} bytes)",
                answer.body.len()
            )));
        };
        let Value::Object(mut document) = parsed else {
            return Err(bad("a JSON document that is not an object".into()));
        };
        let posts = match document.get("data") {
            None => 0,
            Some(Value::Array(posts)) => posts.len(),
            Some(_) => return Err(bad("a \"data\" that is not a list".into())),
        };
        match document.get_mut("meta") {
            None => {
                document.insert("meta".into(), json!({ "result_count": posts }));
            }
            Some(Value::Object(meta)) => {
                meta.insert("result_count".into(), posts.into());
            }
            Some(_) => return Err(bad("a \"meta\" that is not an object".into())),
        }
        Ok(Value::Object(document))
    }

    fn unanswered(&self, why: NoAnswer, message: &str) -> Value {
        let status = match why {
            NoAnswer::TimedOut => StatusCode::GATEWAY_TIMEOUT,
            NoAnswer::Failed => StatusCode::BAD_GATEWAY,
            // As X itself says when a client asks too often.
            NoAnswer::OverBudget => StatusCode::TOO_MANY_REQUESTS,
        };
        problem(status, message)
    }

    fn summary(&self, document: &Value) -> String {
        match (document.get("data"), document["detail"].as_str()) {
            (None, Some(detail)) => detail.to_owned(),
            _ => format!(
                "{} posts",
                document["meta"]["result_count"].as_u64().unwrap_or(0)
            ),
        }
    }

    fn finish(&self, mut document: Value, query: &NearbyQuery, search: Search) -> Value {
        cut_to_bound(&mut document, query.bound);
        // Against the limit, not the radius sent: that one is also rounded (to 0.1 km).
        if query.radius_km > MAX_RADIUS_KM {
            if let Value::Object(map) = &mut document {
                map.insert(
                    "radius_clamped".into(),
                    json!({
                        "requested_km": query.radius_km,
                        "searched_km": search.radius,
                        "detail": format!(
                            "the X API's point_radius takes less than 25 miles; searched {} km \
                             instead of {} km",
                            search.radius, query.radius_km
                        ),
                    }),
                );
            }
        }
        document
    }
}

/// Cuts `data` to `bound` posts and keeps the rest true to what is left: `meta.result_count`
/// counts them, `newest_id`/`oldest_id` are theirs, `includes` holds only their authors and
/// places, and `next_token` goes (it would skip the posts cut off). An answer within the bound
/// is left as X sent it.
pub fn cut_to_bound(document: &mut Value, bound: usize) {
    let Some(posts) = document.get_mut("data").and_then(Value::as_array_mut) else {
        return;
    };
    if posts.len() <= bound {
        return;
    }
    posts.truncate(bound);
    let ids = |field: fn(&Value) -> Option<&Value>| -> Vec<Value> {
        posts.iter().filter_map(field).cloned().collect()
    };
    let authors = ids(|p| p.get("author_id"));
    let places = ids(|p| p.get("geo")?.get("place_id"));
    let newest = posts.first().and_then(|p| p.get("id")).cloned();
    let oldest = posts.last().and_then(|p| p.get("id")).cloned();
    let count = posts.len();

    if let Some(Value::Object(meta)) = document.get_mut("meta") {
        meta.insert("result_count".into(), count.into());
        meta.remove("next_token");
        for (key, id) in [("newest_id", newest), ("oldest_id", oldest)] {
            match id {
                Some(id) => meta.insert(key.into(), id),
                None => meta.remove(key),
            };
        }
    }
    if let Some(Value::Object(includes)) = document.get_mut("includes") {
        for (key, kept) in [("users", &authors), ("places", &places)] {
            if let Some(Value::Array(objects)) = includes.get_mut(key) {
                objects.retain(|o| o.get("id").is_some_and(|id| kept.contains(id)));
                if objects.is_empty() {
                    includes.remove(key);
                }
            }
        }
        if includes.is_empty() {
            if let Some(document) = document.as_object_mut() {
                document.remove("includes");
            }
        }
    }
}

/// A failed search in X's problem shape (as X API v2 reports a request error), with
/// `meta.result_count` 0 so a client that reads `meta` always finds it.
fn problem(status: StatusCode, detail: &str) -> Value {
    json!({
        "title": status.canonical_reason().unwrap_or("Error"),
        "detail": detail,
        "type": "about:blank",
        "status": status.as_u16(),
        "meta": {"result_count": 0},
    })
}

/// The document for an HTTP error answer: X's own problem document when the body is one
/// (its `title`, `type`, `errors`, ... pass through), its `detail` prefixed with the HTTP
/// status, the `x-rate-limit-*` headers as `rate_limit`, and on HTTP 429 when the limit
/// resets. `now` is Unix time in seconds.
pub fn error_document(
    status: StatusCode,
    headers: &HeaderMap,
    body: Option<Value>,
    now: u64,
) -> Value {
    let mut document = match body {
        Some(Value::Object(map)) => map,
        _ => Map::new(),
    };
    let reason = document
        .get("detail")
        .and_then(Value::as_str)
        .or_else(|| document.get("title").and_then(Value::as_str))
        .or_else(|| {
            document.get("errors")?.as_array()?.iter().find_map(|e| {
                e.get("message")
                    .or_else(|| e.get("detail"))
                    .and_then(Value::as_str)
            })
        })
        .map(|r| format!(": {r}"))
        .unwrap_or_default();
    let mut detail = format!("X API answered HTTP {status}{reason}");

    let header =
        |name: &str| -> Option<u64> { headers.get(name)?.to_str().ok()?.trim().parse().ok() };
    let mut rate_limit = Map::new();
    for (key, name) in [
        ("limit", "x-rate-limit-limit"),
        ("remaining", "x-rate-limit-remaining"),
        ("reset", "x-rate-limit-reset"),
    ] {
        if let Some(value) = header(name) {
            rate_limit.insert(key.into(), value.into());
        }
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        match header("x-rate-limit-reset") {
            Some(reset) => {
                let wait = reset.saturating_sub(now);
                detail += &format!(
                    "; the rate limit resets at {} (x-rate-limit-reset {reset}, in {wait} s)",
                    utc_rfc3339(reset)
                );
                rate_limit.insert("reset_at".into(), utc_rfc3339(reset).into());
                rate_limit.insert("reset_in_s".into(), wait.into());
            }
            None => detail += "; X sent no x-rate-limit-reset",
        }
    }
    if !rate_limit.is_empty() {
        document.insert("rate_limit".into(), Value::Object(rate_limit));
    }

    let title = match document.get("title") {
        Some(Value::String(t)) if !t.is_empty() => t.clone(),
        _ => status.canonical_reason().unwrap_or("Error").to_owned(),
    };
    document.insert("title".into(), title.into());
    document.insert("detail".into(), detail.into());
    document
        .entry("type")
        .or_insert_with(|| "about:blank".into());
    document.insert("status".into(), status.as_u16().into());
    document.remove("data");
    document.insert("meta".into(), json!({"result_count": 0}));
    Value::Object(document)
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Unix time as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_rfc3339(unix: u64) -> String {
    let (year, month, day, hour, minute, second) = herd_wire::clock::civil(unix);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    /// A recent search answer in X's documented shape: three posts, two by one author, one
    /// with a tagged place.
    fn answer() -> Value {
        json!({
            "data": [
                {"id": "3", "text": "third", "author_id": "u1", "created_at": "2026-11-23T10:00:03.000Z",
                 "edit_history_tweet_ids": ["3"],
                 "geo": {"place_id": "p1", "coordinates": {"type": "Point", "coordinates": [-118.44, 34.07]}}},
                {"id": "2", "text": "second", "author_id": "u2", "created_at": "2026-11-23T10:00:02.000Z",
                 "edit_history_tweet_ids": ["2"], "geo": {"place_id": "p2"}},
                {"id": "1", "text": "first", "author_id": "u1", "created_at": "2026-11-23T10:00:01.000Z",
                 "edit_history_tweet_ids": ["1"], "geo": {"place_id": "p1"}}
            ],
            "includes": {
                "users": [{"id": "u1", "name": "One", "username": "one"},
                          {"id": "u2", "name": "Two", "username": "two"}],
                "places": [{"id": "p1", "full_name": "Westwood, Los Angeles"},
                           {"id": "p2", "full_name": "Santa Monica, CA"}]
            },
            "meta": {"newest_id": "3", "oldest_id": "1", "result_count": 3, "next_token": "b26v89c19zqg8o3"}
        })
    }

    #[test]
    fn the_request_asks_for_posts_near_the_point_with_their_authors() {
        let search = Search {
            lat: 34.06893,
            lng: -118.445127,
            radius: 10.5,
        };
        assert_eq!(
            point_radius_query(search),
            "point_radius:[-118.445127 34.06893 10.5km]"
        );
        let clamped = Search {
            radius: XRecentSearch.radius(50.0),
            ..search
        };
        assert_eq!(
            point_radius_query(clamped),
            "point_radius:[-118.445127 34.06893 40km]"
        );
        assert_eq!(XRecentSearch.radius(0.25), 0.25);
        let endpoint = |s: &str| search_url(&Url::parse(s).unwrap()).to_string();
        assert_eq!(
            endpoint("https://api.x.com"),
            "https://api.x.com/2/tweets/search/recent"
        );
        assert_eq!(
            endpoint("http://127.0.0.1:9/proxy/"),
            "http://127.0.0.1:9/proxy/2/tweets/search/recent"
        );

        let token = Secret::new(TOKEN_ENV, "AAAA%3Dtok", "Bearer ").unwrap();
        let request = XRecentSearch
            .request(
                &Client::new(),
                &Url::parse("https://api.x.com").unwrap(),
                &token,
                search,
            )
            .build()
            .unwrap();
        assert_eq!(request.method(), "GET");
        assert_eq!(request.headers()[AUTHORIZATION], "Bearer AAAA%3Dtok");
        let query: Vec<(String, String)> = request.url().query_pairs().into_owned().collect();
        assert_eq!(
            query,
            [
                ("query", "point_radius:[-118.445127 34.06893 10.5km]"),
                ("max_results", "20"),
                ("tweet.fields", "created_at,geo,author_id"),
                ("expansions", "author_id,geo.place_id"),
                ("user.fields", "name,username"),
                ("place.fields", "full_name,geo,country_code,place_type"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        assert!(!request.url().as_str().contains("tok"));
    }

    #[test]
    fn cutting_keeps_meta_and_includes_true() {
        let mut doc = answer();
        cut_to_bound(&mut doc, 1);
        assert_eq!(doc["data"].as_array().unwrap().len(), 1);
        assert_eq!(
            doc["meta"],
            json!({"newest_id": "3", "oldest_id": "3", "result_count": 1})
        );
        assert_eq!(
            doc["includes"],
            json!({"users": [{"id": "u1", "name": "One", "username": "one"}],
                   "places": [{"id": "p1", "full_name": "Westwood, Los Angeles"}]})
        );

        let mut doc = answer();
        cut_to_bound(&mut doc, 2);
        assert_eq!(doc["meta"]["oldest_id"], "2");
        assert_eq!(doc["includes"]["users"].as_array().unwrap().len(), 2);

        let mut doc = answer();
        cut_to_bound(&mut doc, 3);
        assert_eq!(doc, answer(), "within the bound nothing changes");

        let mut empty = json!({"meta": {"result_count": 0}});
        cut_to_bound(&mut empty, 5);
        assert_eq!(empty, json!({"meta": {"result_count": 0}}));
    }

    #[test]
    fn a_clamped_radius_is_said_in_the_document() {
        let query = NearbyQuery {
            lat: 34.0,
            lng: -118.0,
            radius_km: 50.0,
            bound: 2,
        };
        let search = Search {
            lat: 34.0,
            lng: -118.0,
            radius: XRecentSearch.radius(50.0),
        };
        let doc = XRecentSearch.finish(answer(), &query, search);
        assert_eq!(doc["radius_clamped"]["requested_km"], 50.0);
        assert_eq!(doc["radius_clamped"]["searched_km"], 40.0);
        assert_eq!(doc["meta"]["result_count"], 2);
        let within = NearbyQuery {
            radius_km: 40.0,
            ..query
        };
        let doc = XRecentSearch.finish(answer(), &within, search);
        assert!(doc.get("radius_clamped").is_none());
    }

    #[test]
    fn successful_answers_are_checked() {
        let read = |status: u16, body: &str| {
            XRecentSearch.read(Answer {
                status: StatusCode::from_u16(status).unwrap(),
                headers: HeaderMap::new(),
                body: body.as_bytes().to_vec(),
            })
        };
        assert_eq!(read(200, &answer().to_string()).unwrap(), answer());
        assert_eq!(
            read(200, r#"{"meta":{"result_count":0}}"#).unwrap(),
            json!({"meta": {"result_count": 0}})
        );
        let wrong_count = read(
            200,
            r#"{"data":[{"id":"1","text":"a"}],"meta":{"result_count":7}}"#,
        );
        assert_eq!(wrong_count.unwrap()["meta"]["result_count"], 1);
        for bad in ["not json", "[1]", r#"{"data":{}}"#, r#"{"meta":3}"#] {
            let doc = read(200, bad).unwrap_err();
            assert_eq!(doc["status"], 502, "{bad}: {doc}");
            assert_eq!(doc["meta"]["result_count"], 0);
        }
    }

    #[test]
    fn rate_limited_answers_say_when_the_limit_resets() {
        let mut headers = HeaderMap::new();
        headers.insert("x-rate-limit-limit", HeaderValue::from_static("450"));
        headers.insert("x-rate-limit-remaining", HeaderValue::from_static("0"));
        headers.insert("x-rate-limit-reset", HeaderValue::from_static("1795435242"));
        let body = json!({"title": "Too Many Requests", "detail": "Too Many Requests",
                          "type": "about:blank", "status": 429});
        let doc = error_document(
            StatusCode::TOO_MANY_REQUESTS,
            &headers,
            Some(body),
            1795435200,
        );
        assert_eq!(doc["status"], 429);
        assert_eq!(doc["title"], "Too Many Requests");
        assert_eq!(
            doc["rate_limit"],
            json!({"limit": 450, "remaining": 0, "reset": 1795435242u64,
                   "reset_at": "2026-11-23T12:00:42Z", "reset_in_s": 42})
        );
        let detail = doc["detail"].as_str().unwrap();
        assert!(
            detail.starts_with("X API answered HTTP 429 Too Many Requests: Too Many Requests")
                && detail.contains("2026-11-23T12:00:42Z")
                && detail.contains("in 42 s"),
            "{detail}"
        );
        assert_eq!(doc["meta"], json!({"result_count": 0}));
    }

    #[test]
    fn other_http_errors_keep_x_s_reason() {
        let body = json!({
            "errors": [{"parameters": {"query": ["point_radius:[x]"]},
                        "message": "There were errors processing your request: bad point_radius"}],
            "title": "Invalid Request",
            "detail": "One or more parameters to your request was invalid.",
            "type": "https://api.x.com/2/problems/invalid-request"
        });
        let doc = error_document(StatusCode::BAD_REQUEST, &HeaderMap::new(), Some(body), 0);
        assert_eq!(doc["status"], 400);
        assert_eq!(doc["title"], "Invalid Request");
        assert_eq!(doc["type"], "https://api.x.com/2/problems/invalid-request");
        assert!(doc["errors"].is_array(), "X's errors pass through");
        assert_eq!(
            doc["detail"],
            "X API answered HTTP 400 Bad Request: One or more parameters to your request was invalid."
        );
        assert!(doc.get("rate_limit").is_none());

        let doc = error_document(StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new(), None, 0);
        assert_eq!(doc["title"], "Service Unavailable");
        assert_eq!(doc["detail"], "X API answered HTTP 503 Service Unavailable");
        assert_eq!(doc["type"], "about:blank");

        let doc = error_document(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), None, 0);
        assert!(doc["detail"]
            .as_str()
            .unwrap()
            .ends_with("X sent no x-rate-limit-reset"));
    }

    #[test]
    fn unix_time_in_rfc3339() {
        assert_eq!(utc_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_rfc3339(1_705_420_800), "2024-01-16T16:00:00Z");
        assert_eq!(utc_rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    }
}
