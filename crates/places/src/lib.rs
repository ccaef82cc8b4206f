//! Places providers: answer "what is near (lat, lng) within radius" with the JSON document
//! WHATSAT puts on the wire: the Google Places Nearby Search (legacy web service) shape for
//! the offline and google providers, the X API's recent search shape for the x provider.
//!
//! A provider never fails from the caller's point of view: when it cannot answer it returns a
//! document saying so (for the Google shape: empty `results`, a non-OK `status` and an
//! `error_message`, see [`error_document`]), because the protocol requires a reply, never a
//! hang or a dropped connection.

mod budget;
mod cache;
pub mod deferred;
pub mod google;
mod http;
pub mod offline;
pub mod x;

use std::future::Future;
use std::pin::Pin;

use serde::Serialize;
use serde_json::{json, Value};

/// One nearby-search request, already validated by the protocol layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NearbyQuery {
    /// Latitude in decimal degrees, in [-90, 90].
    pub lat: f64,
    /// Longitude in decimal degrees, in [-180, 180].
    pub lng: f64,
    /// Search radius in kilometres, in (0, 50].
    pub radius_km: f64,
    /// Most results wanted, in 1..=20.
    pub bound: usize,
}

/// A boxed future so providers can be used behind `dyn PlacesProvider`.
pub type PlacesFuture<'a> = Pin<Box<dyn Future<Output = Document> + Send + 'a>>;

/// A places document as it goes on the wire after the AT line: JSON text with no blank line
/// (no run of two or more newlines) and no trailing newline, so a WHATSAT reply is the AT
/// line, this text and an empty line, copied as they are ([`herd_wire::protocol::push_whatsat_reply`]).
///
/// Every way to make one keeps that rule: [`Document::render`] writes pretty JSON, which
/// never has a blank line (an escaped string cannot hold a raw newline, an empty array or
/// object is written `[]` or `{}`), and so does the offline provider's own writer. (Tests
/// check documents against the protocol's rule written out, `Document::from_text`.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document(String);

impl Document {
    /// `document` (a `serde_json::Value`, or anything serializable) as pretty JSON: two-space
    /// indent, the fields in `document`'s own order.
    pub fn render<T: Serialize + ?Sized>(document: &T) -> Document {
        let mut text = Vec::with_capacity(4096);
        // Writing into a Vec cannot fail, and our documents have string keys only.
        serde_json::to_writer_pretty(&mut text, document)
            .expect("a places document always serializes");
        // serde_json writes valid UTF-8 (it escapes nothing into invalid bytes).
        let text = String::from_utf8(text).expect("serde_json writes UTF-8");
        debug_assert!(!text.contains("\n\n") && !text.ends_with('\n'));
        Document(text)
    }

    /// Text its maker guarantees is such a document (the offline provider's own writer).
    pub(crate) fn rendered(text: String) -> Document {
        debug_assert!(!text.contains("\n\n") && !text.ends_with('\n'));
        Document(text)
    }

    /// Any text as a document: every run of two or more newlines becomes one newline and
    /// trailing newlines go (the protocol's rule for the JSON in a WHATSAT reply).
    #[cfg(test)]
    pub fn from_text(text: &str) -> Document {
        let mut collapsed = String::with_capacity(text.len());
        herd_wire::protocol::push_collapsed(&mut collapsed, text);
        Document(collapsed)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Something that can answer a nearby search.
pub trait PlacesProvider: Send + Sync {
    /// A short name for logs and status ("offline", "google", "x").
    fn name(&self) -> &'static str;

    /// The JSON document for `query`, cut to `query.bound` results, as wire text. In the
    /// Google shape: `results` nearest first, `status` one of Google's status strings.
    fn nearby(&self, query: NearbyQuery) -> PlacesFuture<'_>;

    /// What the provider has spent on a paid upstream service (nothing for offline).
    fn spend(&self) -> budget::Spend {
        budget::Spend::default()
    }

    /// Cache outcomes and upstream latencies, for providers with an upstream (`None`:
    /// offline, which answers from memory).
    fn stats(&self) -> Option<&PlacesStats> {
        None
    }
}

/// What a provider with an upstream service counts for `/metrics`.
pub struct PlacesStats {
    /// Answered from the cache (or from another request's fetch in flight).
    pub hits: herd_metrics::Counter,
    /// Fetched from the service, and a good answer.
    pub misses: herd_metrics::Counter,
    /// Fetched, or not sent (over budget), and answered with an error document.
    pub errors: herd_metrics::Counter,
    /// How long each request to the service took.
    pub upstream_seconds: herd_metrics::Histogram,
}

impl Default for PlacesStats {
    fn default() -> PlacesStats {
        PlacesStats {
            hits: Default::default(),
            misses: Default::default(),
            errors: Default::default(),
            upstream_seconds: herd_metrics::Histogram::new(herd_metrics::LATENCY_BOUNDS),
        }
    }
}

/// The document for a search that found `results` (nearest first, already cut to the
/// bound): status OK, or ZERO_RESULTS when empty. Builds the map by hand because `json!`
/// would serialize the results array again instead of moving it.
pub fn nearby_document(results: Vec<Value>) -> Value {
    let status = if results.is_empty() {
        "ZERO_RESULTS"
    } else {
        "OK"
    };
    let mut document = serde_json::Map::new();
    document.insert("html_attributions".into(), Value::Array(Vec::new()));
    document.insert("results".into(), Value::Array(results));
    document.insert("status".into(), status.into());
    Value::Object(document)
}

/// The document a provider returns when it cannot answer: empty results, a non-OK status
/// and a human-readable reason.
pub fn error_document(status: &str, message: &str) -> Value {
    json!({
        "error_message": message,
        "html_attributions": [],
        "results": [],
        "status": status,
    })
}

#[cfg(test)]
mod document_tests {
    use super::Document;
    use herd_wire::protocol::{format_whatsat_reply, push_whatsat_reply};

    #[test]
    fn whatsat_reply_from_a_document_is_the_formatted_one() {
        for text in [
            "{\n\n\n  \"a\": 1\n}\n\n",
            "{}",
            "\n\na\n\n\nb\nc\n\nd",
            "x\n",
        ] {
            let mut out = Vec::new();
            push_whatsat_reply(&mut out, "AT x", Document::from_text(text).as_str());
            assert_eq!(
                out,
                format_whatsat_reply("AT x", text).as_bytes(),
                "{text:?}"
            );
        }
        // Pretty JSON never has a blank line, so a rendered document is copied as it is.
        let value = serde_json::json!({"a": [], "b": {}, "c": "x\n\ny", "d": [{"e": []}]});
        let document = Document::render(&value);
        let pretty = serde_json::to_string_pretty(&value).unwrap();
        assert_eq!(document.as_str(), pretty);
        let mut out = Vec::new();
        push_whatsat_reply(&mut out, "AT x", document.as_str());
        assert_eq!(out, format_whatsat_reply("AT x", &pretty).as_bytes());
    }
}
