//! What the providers that proxy WHATSAT to a web service share (google, x): the HTTP client,
//! the secret from the environment, one bounded request, the cache with single-flight, and
//! messages that never carry the secret.
//!
//! A [`Service`] says how to ask one web service and how to read its answers; an
//! [`HttpProvider`] runs it:
//! - answers are cached by location and radius ([`super::cache`]); the bound is applied after
//!   the cache, so every request asks for a full page ([`MAX_RESULTS`]) and one cached page
//!   serves every bound;
//! - queries are rounded first ([`super::budget::rounded`]: coordinates to 4 decimals, the
//!   radius to 0.1 km), so near-identical queries share one answer, and what is sent is the
//!   rounded query;
//! - concurrent identical queries share one upstream request (single-flight);
//! - what is sent is bounded ([`Budget`]: requests a second and in flight); a request over
//!   the budget is not sent, and the WHATSAT gets the service's over-limit document at once;
//! - redirects are not followed (an answer that redirects is an error document), and the
//!   endpoint is `https` unless `places.allow_http` says otherwise (checked by `config.rs`,
//!   enforced again by the client);
//! - only answers the service calls successful are cached; failures are shared by the queries
//!   already waiting for them and then forgotten, so the next query asks again;
//! - any failure (HTTP error, timeout, connection refused, a body that is not the expected
//!   JSON) becomes the service's error document, within the timeout.
//!
//! The secret never reaches a log, a reply or an error: reqwest's errors carry the request URL
//! (which may hold a key), so messages are built from the error kind and its sources with the
//! URL stripped, and every string of every document is scrubbed of the secret before it is
//! cached, logged or sent.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Client, RequestBuilder, StatusCode, Url};
use serde_json::Value;

use super::budget::{self, Budget, Refusal, Spend};
use super::cache::{Cache, Source};
use super::{Document, NearbyQuery, PlacesFuture, PlacesProvider};
use herd_config::config::UpstreamSettings;

/// The protocol's largest bound: every request asks for this many results.
pub const MAX_RESULTS: usize = 20;

/// The most bytes of an upstream answer read (a full page is tens of KB).
const MAX_BODY_BYTES: usize = 4 << 20;

/// A credential from the environment that does not show itself in `Debug` output.
pub struct Secret {
    /// The environment variable it came from, for messages.
    var: &'static str,
    value: String,
    /// The value as an HTTP header value (with the service's prefix), marked sensitive.
    header: HeaderValue,
}

impl Secret {
    /// The secret in `var`, or an error naming the variable and the fix, for a node whose
    /// `provider` needs it (`what`: "your key", "your bearer token").
    pub fn from_env(
        var: &'static str,
        provider: &str,
        what: &str,
        header_prefix: &str,
    ) -> anyhow::Result<Secret> {
        match std::env::var(var) {
            Ok(value) if !value.trim().is_empty() => Secret::new(var, value.trim(), header_prefix),
            Ok(_) => bail!(
                "places.provider is {provider} but {var} is empty; export {var}=<{what}> before \
                 starting the node, or use provider: offline"
            ),
            Err(_) => bail!(
                "places.provider is {provider} but {var} is not set; export {var}=<{what}> \
                 before starting the node, or use provider: offline"
            ),
        }
    }

    /// `value` as the secret from `var`: printable ASCII with no spaces, as API keys and
    /// bearer tokens are (so it is always a valid header value).
    pub fn new(var: &'static str, value: &str, header_prefix: &str) -> anyhow::Result<Secret> {
        if value.is_empty() || !value.chars().all(|c| c.is_ascii_graphic()) {
            bail!("{var} must be printable ASCII with no spaces");
        }
        let mut header = HeaderValue::from_str(&format!("{header_prefix}{value}"))
            .with_context(|| format!("{var} cannot be sent as an HTTP header"))?;
        header.set_sensitive(true);
        Ok(Secret {
            var,
            value: value.to_owned(),
            header,
        })
    }

    /// The secret itself, for a request that must carry it in its URL.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// The secret as a header value (with its prefix, e.g. `Bearer `), marked sensitive.
    pub fn header(&self) -> HeaderValue {
        self.header.clone()
    }

    /// `text` with every occurrence of the secret replaced.
    pub fn scrub(&self, text: &str) -> String {
        text.replace(&self.value, &format!("[{}]", self.var))
    }

    /// Scrubs every string in `value`, keys included (services do not echo secrets, but a
    /// proxy or a misconfigured endpoint might).
    pub fn scrub_json(&self, value: &mut Value) {
        match value {
            Value::String(s) if s.contains(&self.value) => *s = self.scrub(s),
            Value::Array(items) => items.iter_mut().for_each(|v| self.scrub_json(v)),
            Value::Object(map) => {
                if map.keys().any(|k| k.contains(&self.value)) {
                    *map = std::mem::take(map)
                        .into_iter()
                        .map(|(k, v)| (self.scrub(&k), v))
                        .collect();
                }
                map.values_mut().for_each(|v| self.scrub_json(v));
            }
            _ => {}
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({}: [redacted])", self.var)
    }
}

/// One search as sent upstream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Search {
    pub lat: f64,
    pub lng: f64,
    /// In the service's own unit and range (see [`Service::radius`]).
    pub radius: f64,
}

/// An HTTP answer, read to its end (at most [`MAX_BODY_BYTES`]).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as JSON, if it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// Why no HTTP answer came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoAnswer {
    /// Nothing within the timeout.
    TimedOut,
    /// The connection failed or broke off.
    Failed,
    /// Not sent: over the node's budget for the service ([`Budget`]).
    OverBudget,
}

/// One web service's request and answer formats.
pub trait Service: Send + Sync + 'static {
    /// The provider's name in herd.yaml and in logs ("google", "x").
    const NAME: &'static str;
    /// How messages name the service ("Google Places", "X API").
    const LABEL: &'static str;
    /// The unit of [`Service::radius`], for logs ("m", "km").
    const RADIUS_UNIT: &'static str;

    /// The radius sent for a WHATSAT radius in kilometres, in the service's own unit and
    /// range; queries with the same location and radius share a cache entry.
    fn radius(&self, radius_km: f64) -> f64;

    /// The request for `search`, asking for a full page of [`MAX_RESULTS`].
    fn request(
        &self,
        client: &Client,
        endpoint: &Url,
        secret: &Secret,
        search: Search,
    ) -> RequestBuilder;

    /// The document for an HTTP answer: `Ok` when it is a successful answer (cached), `Err`
    /// when it says what went wrong (not cached).
    fn read(&self, answer: Answer) -> Result<Value, Value>;

    /// The document when no HTTP answer came; `message` says what happened.
    fn unanswered(&self, why: NoAnswer, message: &str) -> Value;

    /// A few words on a document for the log: its status, its size, or what went wrong.
    fn summary(&self, document: &Value) -> String;

    /// What one query gets: the (shared, cached) `document` for `search`, cut to the query's
    /// bound, plus anything the query needs said. It must depend on nothing else than its
    /// arguments: its wire text is kept with the cached document, per bound and radius asked.
    fn finish(&self, document: Value, query: &NearbyQuery, search: Search) -> Value;
}

/// The cache key: the location and the radius sent (rounded, see [`budget::rounded`]).
type Key = (u64, u64, u64);

/// How many wire texts (bound, radius asked) one answer keeps; past that, a query's text is
/// rendered each time (they are only a shortcut).
const MAX_RENDERINGS: usize = 8;

/// A service's answer for one search, as the cache shares it: the document, and the wire
/// text each (bound, radius asked) got from it, so a cache hit costs a copy instead of a
/// deep copy of the document, [`Service::finish`] and rendering.
struct Answered {
    document: Value,
    renderings: Mutex<Vec<((usize, u64), Document)>>,
}

impl Answered {
    fn new(document: Value) -> Answered {
        Answered {
            document,
            renderings: Mutex::new(Vec::new()),
        }
    }

    /// The wire text for `query`: the one kept, or `render`'s (then kept, if there is room).
    fn text(&self, query: &NearbyQuery, render: impl FnOnce(&Value) -> Document) -> Document {
        let asked = (query.bound, query.radius_km.to_bits());
        let lock = || self.renderings.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, text)) = lock().iter().find(|(k, _)| *k == asked) {
            return text.clone();
        }
        // Rendered outside the lock: two queries may both render it; either copy is right.
        let text = render(&self.document);
        let mut renderings = lock();
        if renderings.len() < MAX_RENDERINGS && renderings.iter().all(|(k, _)| *k != asked) {
            renderings.push((asked, text.clone()));
        }
        text
    }
}

/// A places provider that proxies to the web service `S`; see the module docs.
pub struct HttpProvider<S: Service> {
    service: S,
    client: Client,
    endpoint: Url,
    secret: Secret,
    timeout: Duration,
    cache: Cache<Key, Arc<Answered>>,
    budget: Budget,
    stats: super::PlacesStats,
}

impl<S: Service + fmt::Debug> fmt::Debug for HttpProvider<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpProvider")
            .field("service", &self.service)
            .field("endpoint", &self.endpoint.as_str())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl<S: Service> HttpProvider<S> {
    /// A provider with one shared HTTP client (connection pool, rustls).
    pub fn new(
        service: S,
        settings: &UpstreamSettings,
        secret: Secret,
    ) -> anyhow::Result<HttpProvider<S>> {
        let client = Client::builder()
            .user_agent(concat!("herdctl/", env!("CARGO_PKG_VERSION")))
            // A redirect could send the key, or the spend, elsewhere: it is answered as an
            // error instead.
            .redirect(reqwest::redirect::Policy::none())
            .https_only(!settings.allow_http)
            .connect_timeout(settings.timeout)
            .timeout(settings.timeout)
            .build()
            .with_context(|| format!("cannot set up the HTTP client for {}", S::LABEL))?;
        Ok(HttpProvider {
            service,
            client,
            endpoint: settings.endpoint.clone(),
            secret,
            timeout: settings.timeout,
            cache: Cache::new(settings.cache_ttl, settings.cache_entries),
            budget: Budget::new(settings.max_requests_per_s, settings.max_in_flight),
            stats: Default::default(),
        })
    }

    /// The answer for `query` as wire text, from the cache or from the service.
    pub async fn search(&self, query: NearbyQuery) -> Document {
        let sent = budget::rounded(query);
        let search = Search {
            lat: sent.lat,
            lng: sent.lng,
            radius: self.service.radius(sent.radius_km),
        };
        let key = (
            search.lat.to_bits(),
            search.lng.to_bits(),
            search.radius.to_bits(),
        );
        let started = Instant::now();
        let fetch = || async {
            let (document, cacheable) = self.fetch(search).await;
            (Arc::new(Answered::new(document)), cacheable)
        };
        let (answered, source) = self.cache.get_or_fetch(key, fetch).await;
        if source != Source::Fetched {
            self.stats.hits.inc();
        }
        let document = &answered.document;
        if source != Source::Hit {
            tracing::info!(
                "places: {} {},{} radius {} {}: {} ({}, {} ms)",
                S::NAME,
                search.lat,
                search.lng,
                search.radius,
                S::RADIUS_UNIT,
                self.service.summary(document),
                if source == Source::Fetched {
                    "fetched"
                } else {
                    "shared an in-flight fetch"
                },
                started.elapsed().as_millis()
            );
        }
        answered.text(&query, |document| {
            Document::render(&self.service.finish(document.clone(), &query, search))
        })
    }

    /// One upstream request, bounded by the timeout: the document and whether it may be cached.
    async fn fetch(&self, search: Search) -> (Value, bool) {
        let _in_flight = match self.budget.take() {
            Ok(permit) => permit,
            Err(refusal) => {
                self.stats.errors.inc();
                return (self.over_budget(refusal), false);
            }
        };
        let request = self
            .service
            .request(&self.client, &self.endpoint, &self.secret, search)
            .timeout(self.timeout);
        let started = Instant::now();
        let outcome = match tokio::time::timeout(self.timeout, send(request)).await {
            Ok(Ok(answer)) => self.service.read(answer),
            Ok(Err(error)) => Err(self.transport_failure(error)),
            Err(_) => Err(self
                .service
                .unanswered(NoAnswer::TimedOut, &self.timeout_message())),
        };
        self.stats
            .upstream_seconds
            .observe_nanos(started.elapsed().as_nanos() as u64);
        let (mut document, cacheable) = match outcome {
            Ok(document) => (document, true),
            Err(document) => (document, false),
        };
        match cacheable {
            true => self.stats.misses.inc(),
            false => self.stats.errors.inc(),
        }
        self.secret.scrub_json(&mut document);
        if !cacheable {
            tracing::warn!(
                "places: {} request failed: {}",
                S::NAME,
                self.service.summary(&document)
            );
        }
        (document, cacheable)
    }

    /// The document for a request not sent because of `refusal` (logged as every other
    /// document that did not come from the cache, by [`HttpProvider::search`]).
    fn over_budget(&self, refusal: Refusal) -> Value {
        let why = match refusal {
            Refusal::Rate => format!(
                "more than places.max_requests_per_s ({}) requests a second",
                self.budget.per_second()
            ),
            Refusal::InFlight => format!(
                "places.max_in_flight ({}) requests are already waiting for an answer",
                self.budget.max_in_flight()
            ),
        };
        let message = format!(
            "not sent to {}: this server's budget for it is spent ({why}); try again shortly",
            S::LABEL
        );
        self.service.unanswered(NoAnswer::OverBudget, &message)
    }

    fn timeout_message(&self) -> String {
        format!(
            "{} did not answer within {} ms ({})",
            S::LABEL,
            self.timeout.as_millis(),
            self.host()
        )
    }

    /// `host:port` of the endpoint, for messages (never a path or query string).
    fn host(&self) -> String {
        match (
            self.endpoint.host_str(),
            self.endpoint.port_or_known_default(),
        ) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            _ => "the endpoint".to_owned(),
        }
    }

    /// A reqwest error as the service's document, with a message that has no URL in it.
    fn transport_failure(&self, error: reqwest::Error) -> Value {
        if error.is_timeout() {
            return self
                .service
                .unanswered(NoAnswer::TimedOut, &self.timeout_message());
        }
        let what = if error.is_connect() {
            "cannot connect"
        } else if error.is_body() || error.is_decode() {
            "the answer broke off"
        } else {
            "request failed"
        };
        let error = error.without_url();
        let mut causes = Vec::new();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            let text = cause.to_string();
            if !causes.contains(&text) {
                causes.push(text);
            }
            source = cause.source();
        }
        let detail = match causes.last() {
            Some(root) => format!(": {root}"),
            None => String::new(),
        };
        let message = format!("{} request to {} {what}{detail}", S::LABEL, self.host());
        self.service.unanswered(NoAnswer::Failed, &message)
    }
}

/// Sends `request` and reads at most [`MAX_BODY_BYTES`] of the answer.
async fn send(request: RequestBuilder) -> Result<Answer, reqwest::Error> {
    let mut response = request.send().await?;
    let status = response.status();
    let headers = std::mem::take(response.headers_mut());
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Answer {
        status,
        headers,
        body,
    })
}

impl<S: Service> PlacesProvider for HttpProvider<S> {
    fn name(&self) -> &'static str {
        S::NAME
    }

    fn nearby(&self, query: NearbyQuery) -> PlacesFuture<'_> {
        Box::pin(self.search(query))
    }

    fn spend(&self) -> Spend {
        self.budget.spend()
    }

    fn stats(&self) -> Option<&super::PlacesStats> {
        Some(&self.stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_answer_keeps_the_text_of_each_bound_and_radius_it_was_asked_for() {
        let answered = Answered::new(json!({"results": [1, 2, 3, 4], "status": "OK"}));
        let renders = std::cell::Cell::new(0);
        let text = |bound: usize, radius_km: f64| {
            let query = NearbyQuery {
                lat: 1.0,
                lng: 2.0,
                radius_km,
                bound,
            };
            answered.text(&query, |document| {
                renders.set(renders.get() + 1);
                let mut document = document.clone();
                document["results"].as_array_mut().unwrap().truncate(bound);
                document["radius"] = json!(radius_km);
                Document::render(&document)
            })
        };
        let first = text(2, 10.0);
        assert!(first.as_str().contains("\"radius\": 10.0"), "{first:?}");
        assert_eq!(text(2, 10.0), first);
        assert_eq!(renders.get(), 1);
        // Another bound or radius is another text, rendered from the same document.
        assert_ne!(text(3, 10.0), first);
        assert_ne!(text(2, 10.5), first);
        assert_eq!(renders.get(), 3);
        // Only so many are kept; the rest are rendered each time, and still right.
        for bound in 4..20 {
            text(bound, 10.0);
        }
        assert_eq!(answered.renderings.lock().unwrap().len(), MAX_RENDERINGS);
        let before = renders.get();
        assert_eq!(text(19, 10.0), text(19, 10.0));
        assert_eq!(renders.get(), before + 2);
        assert_eq!(text(2, 10.0), first);
        assert_eq!(renders.get(), before + 2);
    }

    #[test]
    fn a_secret_never_shows() {
        let secret = Secret::new("TOKEN_VAR", "AAAASECRET%3D", "Bearer ").unwrap();
        assert_eq!(format!("{secret:?}"), "Secret(TOKEN_VAR: [redacted])");
        assert_eq!(secret.header().to_str().unwrap(), "Bearer AAAASECRET%3D");
        assert!(secret.header().is_sensitive());
        let mut doc = json!({
            "detail": "bad token AAAASECRET%3D",
            "x": ["AAAASECRET%3D!"],
            "AAAASECRET%3D": 1
        });
        secret.scrub_json(&mut doc);
        assert!(!doc.to_string().contains("SECRET"), "{doc}");
        assert_eq!(doc["detail"], "bad token [TOKEN_VAR]");
        assert!(Secret::new("V", "has space", "").is_err());
        assert!(Secret::new("V", "", "").is_err());
        assert!(Secret::new("V", "naïve", "").is_err());
    }
}
