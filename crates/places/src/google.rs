//! The Google Places provider: a proxy to Nearby Search, legacy or Places API (New).
//!
//! - legacy: `GET <endpoint>?location=LAT,LNG&radius=METRES&key=KEY`; Google's document is kept
//!   as it is (its non-OK statuses pass through) apart from `results`, cut to the bound.
//! - new: `POST <endpoint>` with `X-Goog-Api-Key` and `X-Goog-FieldMask` and a
//!   `locationRestriction` circle; each place is mapped to the legacy result shape
//!   ([`legacy_from_new`]) so the wire format stays the protocol's.
//!
//! Caching, single-flight, the timeout and keeping the key out of every message are
//! [`super::http`]'s; only OK and ZERO_RESULTS answers are cached. When Google cannot answer,
//! the document is an [`error_document`] with a non-OK status.

use reqwest::header::{HeaderValue, CONTENT_TYPE};
use reqwest::{Client, RequestBuilder, StatusCode, Url};
use serde_json::{json, Map, Value};

use super::http::{Answer, HttpProvider, NoAnswer, Search, Secret, Service, MAX_RESULTS};
use super::{error_document, nearby_document, NearbyQuery};
use herd_config::config::{GoogleApi, GoogleSettings};

/// The environment variable that holds the API key.
pub const API_KEY_ENV: &str = "GOOGLE_PLACES_API_KEY";

/// Fields asked of Places API (New): what the legacy result shape can carry. rating,
/// userRatingCount, priceLevel and opening hours put a request in Google's "Enterprise" SKU.
pub const NEW_FIELD_MASK: &str = "places.id,places.displayName,places.location,places.viewport,\
places.types,places.formattedAddress,places.shortFormattedAddress,places.businessStatus,\
places.plusCode,places.iconMaskBaseUri,places.iconBackgroundColor,places.rating,\
places.userRatingCount,places.priceLevel,places.currentOpeningHours.openNow";

/// The google provider: Google Places behind the shared cache and single-flight.
pub type GoogleProvider = HttpProvider<Google>;

/// Google Places' request and answer formats, for one of its two APIs.
#[derive(Debug, Clone, Copy)]
pub struct Google {
    api: GoogleApi,
}

impl Google {
    /// The provider for `settings`, with the key from [`API_KEY_ENV`] (read by the caller
    /// with [`Google::key_from_env`]).
    pub fn provider(settings: &GoogleSettings, key: Secret) -> anyhow::Result<GoogleProvider> {
        HttpProvider::new(Google { api: settings.api }, &settings.upstream, key)
    }

    /// The key from `GOOGLE_PLACES_API_KEY`, or an error naming the variable.
    pub fn key_from_env() -> anyhow::Result<Secret> {
        Secret::from_env(API_KEY_ENV, "google", "your key", "")
    }
}

impl Service for Google {
    const NAME: &'static str = "google";
    const LABEL: &'static str = "Google Places";
    const RADIUS_UNIT: &'static str = "m";

    /// Metres (the radius comes rounded to 0.1 km, so whole metres).
    fn radius(&self, radius_km: f64) -> f64 {
        radius_metres(radius_km)
    }

    fn request(
        &self,
        client: &Client,
        endpoint: &Url,
        key: &Secret,
        search: Search,
    ) -> RequestBuilder {
        let Search { lat, lng, radius } = search;
        match self.api {
            GoogleApi::Legacy => {
                let mut url = endpoint.clone();
                url.query_pairs_mut()
                    .append_pair("location", &format!("{lat},{lng}"))
                    .append_pair("radius", &radius.to_string())
                    .append_pair("key", key.expose());
                client.get(url)
            }
            GoogleApi::New => client
                .post(endpoint.clone())
                .header("X-Goog-Api-Key", key.header())
                .header("X-Goog-FieldMask", HeaderValue::from_static(NEW_FIELD_MASK))
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(new_request_body(lat, lng, radius).to_string()),
        }
    }

    fn read(&self, answer: Answer) -> Result<Value, Value> {
        let parsed = answer.json();
        if !answer.status.is_success() {
            return Err(http_failure(self.api, answer.status, parsed.as_ref()).document());
        }
        let Some(parsed) = parsed else {
            return Err(Failure {
                status: "UNKNOWN_ERROR",
                message: format!(
                    "Google Places answered HTTP {} with a body that is not JSON ({} bytes)",
                    answer.status,
                    answer.body.len()
                ),
            }
            .document());
        };
        let document = match self.api {
            GoogleApi::Legacy => legacy_document(parsed),
            GoogleApi::New => legacy_from_new(&parsed),
        }
        .map_err(Failure::document)?;
        // Google's own failures (REQUEST_DENIED, ...) pass through, but are not cached.
        match document["status"].as_str() {
            Some("OK" | "ZERO_RESULTS") => Ok(document),
            _ => Err(document),
        }
    }

    fn unanswered(&self, why: NoAnswer, message: &str) -> Value {
        let status = match why {
            NoAnswer::OverBudget => "OVER_QUERY_LIMIT",
            NoAnswer::TimedOut | NoAnswer::Failed => "UNKNOWN_ERROR",
        };
        error_document(status, message)
    }

    fn summary(&self, document: &Value) -> String {
        let status = document["status"].as_str().unwrap_or("?");
        match document["error_message"].as_str() {
            Some(message) => format!("{status}: {message}"),
            None => status.to_owned(),
        }
    }

    fn finish(&self, mut document: Value, query: &NearbyQuery, _search: Search) -> Value {
        if let Some(results) = document.get_mut("results").and_then(Value::as_array_mut) {
            results.truncate(query.bound);
        }
        document
    }
}

/// Why Google gave no usable answer.
#[derive(Debug)]
pub struct Failure {
    /// A Google status string (never "OK").
    pub status: &'static str,
    /// What went wrong.
    pub message: String,
}

impl Failure {
    fn document(self) -> Value {
        error_document(self.status, &self.message)
    }
}

/// Kilometres to metres, to the millimetre (`10.5` -> `10500`; printed without a fraction
/// when whole).
pub fn radius_metres(radius_km: f64) -> f64 {
    (radius_km * 1_000_000.0).round() / 1000.0
}

/// The Places API (New) `searchNearby` body.
pub fn new_request_body(lat: f64, lng: f64, metres: f64) -> Value {
    json!({
        "maxResultCount": MAX_RESULTS,
        "locationRestriction": {
            "circle": {
                "center": {"latitude": lat, "longitude": lng},
                "radius": metres,
            }
        }
    })
}

/// Google's legacy status strings.
const LEGACY_STATUSES: [&str; 7] = [
    "OK",
    "ZERO_RESULTS",
    "INVALID_REQUEST",
    "OVER_QUERY_LIMIT",
    "REQUEST_DENIED",
    "UNKNOWN_ERROR",
    "NOT_FOUND",
];

/// A legacy answer, checked: an object with a known `status` and a `results` array (filled
/// in when a non-OK answer leaves it out).
fn legacy_document(parsed: Value) -> Result<Value, Failure> {
    let Value::Object(mut document) = parsed else {
        return Err(bad_shape("the answer is not a JSON object"));
    };
    let status = match document.get("status") {
        Some(Value::String(s)) if LEGACY_STATUSES.contains(&s.as_str()) => s.clone(),
        _ => return Err(bad_shape("the answer has no known \"status\"")),
    };
    match document.get("results") {
        Some(Value::Array(_)) => {}
        None if status != "OK" => {
            document.insert("results".into(), json!([]));
        }
        _ => return Err(bad_shape("the answer has no \"results\" list")),
    }
    document
        .entry("html_attributions")
        .or_insert_with(|| json!([]));
    Ok(Value::Object(document))
}

fn bad_shape(what: &str) -> Failure {
    Failure {
        status: "UNKNOWN_ERROR",
        message: format!("Google Places answered with an unexpected document: {what}"),
    }
}

/// A non-2xx answer as a failure, with Google's reason when the body carries one: a legacy
/// document's `status`/`error_message`, or a Google API error (`{"error": {"code",
/// "message", "status"}}`, as Places API (New) sends).
fn http_failure(api: GoogleApi, status: StatusCode, body: Option<&Value>) -> Failure {
    let google_error = body.and_then(|b| b.get("error"));
    let (mapped, reason) = match (google_error, body) {
        (Some(error), _) => {
            let rpc = error.get("status").and_then(Value::as_str).unwrap_or("");
            let mapped = match rpc {
                "PERMISSION_DENIED" | "UNAUTHENTICATED" => "REQUEST_DENIED",
                "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" => "INVALID_REQUEST",
                "RESOURCE_EXHAUSTED" => "OVER_QUERY_LIMIT",
                _ => status_for_http(status),
            };
            let message = error.get("message").and_then(Value::as_str).unwrap_or("");
            let reason = match (rpc, message) {
                ("", "") => String::new(),
                ("", m) => format!(": {m}"),
                (r, "") => format!(": {r}"),
                (r, m) => format!(": {r}: {m}"),
            };
            (mapped, reason)
        }
        (None, Some(doc)) if api == GoogleApi::Legacy && doc.get("status").is_some() => {
            let s = doc["status"].as_str().unwrap_or("");
            let mapped = LEGACY_STATUSES
                .iter()
                .find(|known| **known == s && s != "OK")
                .copied()
                .unwrap_or_else(|| status_for_http(status));
            let reason = doc
                .get("error_message")
                .and_then(Value::as_str)
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            (mapped, reason)
        }
        _ => (status_for_http(status), String::new()),
    };
    Failure {
        status: mapped,
        message: format!("Google Places answered HTTP {status}{reason}"),
    }
}

fn status_for_http(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "INVALID_REQUEST",
        401 | 403 => "REQUEST_DENIED",
        429 => "OVER_QUERY_LIMIT",
        _ => "UNKNOWN_ERROR",
    }
}

/// A Places API (New) `searchNearby` answer (`{"places": [...]}`, or `{}` when nothing is
/// near) in the legacy Nearby Search shape.
pub fn legacy_from_new(answer: &Value) -> Result<Value, Failure> {
    let Some(object) = answer.as_object() else {
        return Err(bad_shape("the answer is not a JSON object"));
    };
    let places = match object.get("places") {
        None => &[][..],
        Some(Value::Array(places)) => &places[..],
        Some(_) => return Err(bad_shape("\"places\" is not a list")),
    };
    Ok(nearby_document(
        places.iter().filter_map(legacy_place).collect(),
    ))
}

/// One New place as a legacy result; `None` for one with no location (it cannot be placed).
fn legacy_place(place: &Value) -> Option<Value> {
    let point = |p: &Value| -> Option<Value> {
        Some(json!({
            "lat": p.get("latitude")?.as_f64()?,
            "lng": p.get("longitude")?.as_f64()?,
        }))
    };
    let mut geometry = Map::new();
    geometry.insert("location".into(), point(place.get("location")?)?);
    if let Some(v) = place.get("viewport") {
        if let (Some(ne), Some(sw)) = (v.get("high").and_then(point), v.get("low").and_then(point))
        {
            let mut viewport = Map::new();
            viewport.insert("northeast".into(), ne);
            viewport.insert("southwest".into(), sw);
            geometry.insert("viewport".into(), Value::Object(viewport));
        }
    }
    let mut result = Map::new();
    result.insert("geometry".into(), Value::Object(geometry));
    let text = |field: &str| place.get(field).and_then(Value::as_str);
    let name = place
        .get("displayName")
        .and_then(|d| d.get("text"))
        .and_then(Value::as_str)
        .unwrap_or("");
    result.insert("name".into(), json!(name));
    if let Some(id) = text("id") {
        result.insert("place_id".into(), json!(id));
        // The legacy `reference` field is deprecated in favour of place_id, which it equals.
        result.insert("reference".into(), json!(id));
    }
    result.insert(
        "types".into(),
        match place.get("types") {
            Some(Value::Array(t)) => Value::Array(t.clone()),
            _ => json!([]),
        },
    );
    if let Some(vicinity) = text("shortFormattedAddress").or_else(|| text("formattedAddress")) {
        result.insert("vicinity".into(), json!(vicinity));
    }
    if let Some(business) = text("businessStatus") {
        result.insert("business_status".into(), json!(business));
    }
    if let Some(rating) = place.get("rating").filter(|r| r.is_number()) {
        result.insert("rating".into(), rating.clone());
    }
    if let Some(count) = place.get("userRatingCount").filter(|c| c.is_number()) {
        result.insert("user_ratings_total".into(), count.clone());
    }
    if let Some(level) = text("priceLevel").and_then(price_level) {
        result.insert("price_level".into(), json!(level));
    }
    let open_now = ["currentOpeningHours", "regularOpeningHours"]
        .iter()
        .find_map(|f| place.get(*f)?.get("openNow")?.as_bool());
    if let Some(open) = open_now {
        result.insert("opening_hours".into(), json!({"open_now": open}));
    }
    if let Some(uri) = text("iconMaskBaseUri") {
        result.insert("icon_mask_base_uri".into(), json!(uri));
    }
    if let Some(colour) = text("iconBackgroundColor") {
        result.insert("icon_background_color".into(), json!(colour));
    }
    if let Some(plus) = place.get("plusCode") {
        let mut code = Map::new();
        if let Some(g) = plus.get("globalCode").and_then(Value::as_str) {
            code.insert("global_code".into(), json!(g));
        }
        if let Some(c) = plus.get("compoundCode").and_then(Value::as_str) {
            code.insert("compound_code".into(), json!(c));
        }
        if !code.is_empty() {
            result.insert("plus_code".into(), Value::Object(code));
        }
    }
    Some(Value::Object(result))
}

/// Places API (New) `priceLevel` as the legacy 0-4 `price_level`.
fn price_level(level: &str) -> Option<u8> {
    Some(match level {
        "PRICE_LEVEL_FREE" => 0,
        "PRICE_LEVEL_INEXPENSIVE" => 1,
        "PRICE_LEVEL_MODERATE" => 2,
        "PRICE_LEVEL_EXPENSIVE" => 3,
        "PRICE_LEVEL_VERY_EXPENSIVE" => 4,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Places API (New) answer in Google's documented shape.
    const NEW_ANSWER: &str = r##"{
      "places": [
        {
          "id": "ChIJ3S-JXmauEmsRUcIaWtf4MzE",
          "types": ["cafe", "food", "point_of_interest", "establishment"],
          "formattedAddress": "1 Circular Quay, Sydney NSW 2000, Australia",
          "shortFormattedAddress": "1 Circular Quay, Sydney",
          "location": {"latitude": -33.8614, "longitude": 151.2108},
          "viewport": {
            "low": {"latitude": -33.8627, "longitude": 151.2095},
            "high": {"latitude": -33.8600, "longitude": 151.2122}
          },
          "rating": 4.4,
          "userRatingCount": 1234,
          "priceLevel": "PRICE_LEVEL_MODERATE",
          "businessStatus": "OPERATIONAL",
          "currentOpeningHours": {"openNow": true},
          "plusCode": {"globalCode": "4RRH46Q6+F8", "compoundCode": "46Q6+F8 Sydney"},
          "iconMaskBaseUri": "https://maps.gstatic.com/mapfiles/place_api/icons/v2/cafe_pinlet",
          "iconBackgroundColor": "#FF9E67",
          "displayName": {"text": "Harbour Cafe", "languageCode": "en"}
        },
        {
          "id": "ChIJx",
          "formattedAddress": "Opera House, Sydney",
          "location": {"latitude": -33.8568, "longitude": 151.2153},
          "displayName": {"text": "Opera House"}
        },
        {"id": "no-location", "displayName": {"text": "Nowhere"}}
      ]
    }"##;

    #[test]
    fn new_places_map_to_the_legacy_shape() {
        let answer: Value = serde_json::from_str(NEW_ANSWER).unwrap();
        let doc = legacy_from_new(&answer).unwrap();
        assert_eq!(doc["status"], "OK");
        assert_eq!(doc["html_attributions"], json!([]));
        let results = doc["results"].as_array().unwrap();
        assert_eq!(results.len(), 2, "a place with no location is dropped");
        assert_eq!(
            results[0],
            json!({
                "geometry": {
                    "location": {"lat": -33.8614, "lng": 151.2108},
                    "viewport": {
                        "northeast": {"lat": -33.86, "lng": 151.2122},
                        "southwest": {"lat": -33.8627, "lng": 151.2095}
                    }
                },
                "name": "Harbour Cafe",
                "place_id": "ChIJ3S-JXmauEmsRUcIaWtf4MzE",
                "reference": "ChIJ3S-JXmauEmsRUcIaWtf4MzE",
                "types": ["cafe", "food", "point_of_interest", "establishment"],
                "vicinity": "1 Circular Quay, Sydney",
                "business_status": "OPERATIONAL",
                "rating": 4.4,
                "user_ratings_total": 1234,
                "price_level": 2,
                "opening_hours": {"open_now": true},
                "icon_mask_base_uri": "https://maps.gstatic.com/mapfiles/place_api/icons/v2/cafe_pinlet",
                "icon_background_color": "#FF9E67",
                "plus_code": {"global_code": "4RRH46Q6+F8", "compound_code": "46Q6+F8 Sydney"}
            })
        );
        assert_eq!(
            results[1],
            json!({
                "geometry": {"location": {"lat": -33.8568, "lng": 151.2153}},
                "name": "Opera House",
                "place_id": "ChIJx",
                "reference": "ChIJx",
                "types": [],
                "vicinity": "Opera House, Sydney"
            }),
            "formattedAddress stands in for a missing shortFormattedAddress"
        );
    }

    #[test]
    fn an_empty_new_answer_is_zero_results() {
        let doc = legacy_from_new(&json!({})).unwrap();
        assert_eq!(
            doc,
            json!({"html_attributions": [], "results": [], "status": "ZERO_RESULTS"})
        );
        assert!(legacy_from_new(&json!([])).is_err());
        assert!(legacy_from_new(&json!({"places": 3})).is_err());
    }

    #[test]
    fn legacy_documents_are_checked_and_completed() {
        let denied = legacy_document(json!({
            "error_message": "The provided API key is invalid.",
            "html_attributions": [],
            "status": "REQUEST_DENIED"
        }))
        .unwrap();
        assert_eq!(denied["results"], json!([]));
        assert_eq!(denied["status"], "REQUEST_DENIED");
        assert!(legacy_document(json!({"status": "OK"})).is_err());
        assert!(legacy_document(json!({"status": "MAYBE", "results": []})).is_err());
        assert!(legacy_document(json!([1])).is_err());
    }

    #[test]
    fn http_errors_map_to_google_statuses() {
        let body = json!({"error": {"code": 403, "message": "API key not valid.",
                                     "status": "PERMISSION_DENIED"}});
        let f = http_failure(GoogleApi::New, StatusCode::FORBIDDEN, Some(&body));
        assert_eq!(f.status, "REQUEST_DENIED");
        assert!(
            f.message.contains("403") && f.message.contains("API key not valid"),
            "{f:?}"
        );
        let f = http_failure(GoogleApi::Legacy, StatusCode::INTERNAL_SERVER_ERROR, None);
        assert_eq!(f.status, "UNKNOWN_ERROR");
        let f = http_failure(GoogleApi::New, StatusCode::TOO_MANY_REQUESTS, None);
        assert_eq!(f.status, "OVER_QUERY_LIMIT");
    }

    #[test]
    fn radius_and_body() {
        assert_eq!(radius_metres(10.0).to_string(), "10000");
        assert_eq!(radius_metres(10.5).to_string(), "10500");
        assert_eq!(radius_metres(0.1).to_string(), "100");
        assert_eq!(radius_metres(0.0005).to_string(), "0.5");
        assert_eq!(
            new_request_body(34.06893, -118.445127, 10000.0),
            json!({"maxResultCount": 20, "locationRestriction": {"circle": {
                "center": {"latitude": 34.06893, "longitude": -118.445127},
                "radius": 10000.0}}})
        );
    }
}
