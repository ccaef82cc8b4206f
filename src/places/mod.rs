//! Places providers: answer "what is near (lat, lng) within radius" with the JSON document
//! WHATSAT puts on the wire: the Google Places Nearby Search (legacy web service) shape for
//! the offline and google providers, the X API's recent search shape for the x provider.
//!
//! A provider never fails from the caller's point of view: when it cannot answer it returns a
//! document saying so (for the Google shape: empty `results`, a non-OK `status` and an
//! `error_message`, see [`error_document`]), because the protocol requires a reply, never a
//! hang or a dropped connection.

pub mod cache;
pub mod google;
pub mod http;
pub mod offline;
pub mod x;

use std::future::Future;
use std::pin::Pin;

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
pub type PlacesFuture<'a> = Pin<Box<dyn Future<Output = Value> + Send + 'a>>;

/// Something that can answer a nearby search.
pub trait PlacesProvider: Send + Sync {
    /// A short name for logs and status ("offline", "google", "x").
    fn name(&self) -> &'static str;

    /// The JSON document for `query`, cut to `query.bound` results. In the Google shape:
    /// `results` nearest first, `status` one of Google's status strings.
    fn nearby(&self, query: NearbyQuery) -> PlacesFuture<'_>;
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
