//! The offline places provider: the default one, with no key and no network.
//!
//! It answers from GeoNames populated places (population >= 1000, CC-BY 4.0, see
//! `assets/geonames/ATTRIBUTION.md`), embedded in the binary (`geonames`), or from a user's
//! own points-of-interest CSV file (`poi`, [`OfflineIndex::from_csv_path`]). This module is
//! the index and the provider; the two submodules only turn their source into R-tree entries
//! and, for the few entries a query returns, into result objects.
//!
//! Each place is stored in an R-tree as a point on the unit sphere (x, y, z). The straight-line
//! (chord) distance between two such points grows monotonically with their great-circle
//! distance, so the R-tree's nearest-neighbour iteration yields places nearest first by
//! great-circle distance, with no special cases at the antimeridian or the poles. A query stops
//! at the first place whose chord exceeds the chord of the radius, or after `bound` places.

mod geonames;
mod poi;
#[cfg(test)]
mod reference;
mod render;

use std::path::Path;

use super::{Document, NearbyQuery, PlacesFuture, PlacesProvider};
use geonames::GeoNames;
use poi::Pois;
use rstar::primitives::GeomWithData;
use rstar::RTree;

/// Mean Earth radius in kilometres (IUGG), used to turn a radius into an angle.
pub const EARTH_RADIUS_KM: f64 = 6371.0088;

/// An R-tree entry: a unit vector and an index (a byte offset for GeoNames, a position in the
/// points-of-interest list otherwise).
type Entry = GeomWithData<[f64; 3], u32>;

/// A places index answering nearby searches without the network.
pub struct OfflineIndex {
    tree: RTree<Entry>,
    places: Places,
}

/// Where the places behind the R-tree entries come from.
enum Places {
    /// The embedded GeoNames data; entries hold the byte offset of their line.
    GeoNames(GeoNames),
    /// A user's points of interest; entries hold an index into the list.
    Poi(Pois),
}

impl std::fmt::Debug for OfflineIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match self.places {
            Places::GeoNames(_) => "geonames",
            Places::Poi(_) => "poi",
        };
        f.debug_struct("OfflineIndex")
            .field("source", &source)
            .field("places", &self.len())
            .finish()
    }
}

impl OfflineIndex {
    /// The index of the GeoNames places embedded in the binary.
    ///
    /// A malformed line in the embedded data is a bug (a unit test checks the file parses
    /// fully); here it is skipped with a warning rather than stopping the node.
    pub fn embedded() -> OfflineIndex {
        let (geonames, entries) = GeoNames::embedded();
        OfflineIndex::new(entries, Places::GeoNames(geonames))
    }

    /// The index of a user's points-of-interest CSV file.
    ///
    /// The header row names the columns (any order, case-insensitive): `name`, `lat` (or
    /// `latitude`) and `lon` (or `lng`, `longitude`) are required; `types` (separated by `;` or
    /// `|`), `vicinity` and `id` are optional. Fields may be double-quoted (RFC 4180: commas,
    /// newlines and doubled quotes inside). A file with only a header is allowed.
    /// Errors name the file and line, e.g. `pois.csv line 7: latitude 95 is out of range [-90, 90]`.
    pub fn from_csv_path(path: &Path) -> anyhow::Result<OfflineIndex> {
        let (pois, entries) = Pois::read(path)?;
        Ok(OfflineIndex::new(entries, Places::Poi(pois)))
    }

    fn new(entries: Vec<Entry>, places: Places) -> OfflineIndex {
        OfflineIndex {
            tree: RTree::bulk_load(entries),
            places,
        }
    }

    /// How many places the index holds.
    pub fn len(&self) -> usize {
        self.tree.size()
    }

    /// Whether the index holds no place at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The Google Nearby Search (legacy) document for `query`, computed synchronously and
    /// rendered straight to its wire text (no `serde_json::Value` in between).
    pub fn search(&self, query: NearbyQuery) -> Document {
        let NearbyQuery {
            lat,
            lng,
            radius_km,
            bound,
        } = query;
        if !(lat.is_finite() && (-90.0..=90.0).contains(&lat)) {
            return render::invalid_request(&format!("latitude {lat} is out of range"));
        }
        if !(lng.is_finite() && (-180.0..=180.0).contains(&lng)) {
            return render::invalid_request(&format!("longitude {lng} is out of range"));
        }
        if radius_km.is_nan() || radius_km <= 0.0 {
            return render::invalid_request(&format!("radius {radius_km} km is not positive"));
        }
        if bound == 0 {
            return render::invalid_request("bound must be at least 1");
        }

        let max_chord_2 = chord_2_for_radius(radius_km);
        let hits = self
            .tree
            .nearest_neighbor_iter_with_distance_2(unit_vector(lat, lng))
            .take_while(|&(_, chord_2)| chord_2 <= max_chord_2)
            .take(bound)
            .map(|(entry, _)| entry.data);
        match &self.places {
            Places::GeoNames(geonames) => render::nearby(
                &hits
                    .filter_map(|at| geonames.result(at))
                    .collect::<Vec<_>>(),
            ),
            Places::Poi(pois) => {
                render::nearby(&hits.filter_map(|at| pois.result(at)).collect::<Vec<_>>())
            }
        }
    }
}

impl PlacesProvider for OfflineIndex {
    fn name(&self) -> &'static str {
        "offline"
    }

    fn nearby(&self, query: NearbyQuery) -> PlacesFuture<'_> {
        // CPU-only and fast (microseconds): computed when the future is first polled.
        Box::pin(async move { self.search(query) })
    }
}

/// The point on the unit sphere for a latitude and longitude in degrees.
fn unit_vector(lat: f64, lng: f64) -> [f64; 3] {
    let (sin_lat, cos_lat) = lat.to_radians().sin_cos();
    let (sin_lng, cos_lng) = lng.to_radians().sin_cos();
    [cos_lat * cos_lng, cos_lat * sin_lng, sin_lat]
}

/// The squared chord (on the unit sphere) of a great-circle distance of `radius_km`.
fn chord_2_for_radius(radius_km: f64) -> f64 {
    let angle = radius_km / EARTH_RADIUS_KM;
    if angle >= std::f64::consts::PI {
        // Everything on the sphere (the antipode's squared chord is 4) plus rounding slack.
        return 4.5;
    }
    let chord = 2.0 * (angle / 2.0).sin();
    chord * chord
}

/// Parses a latitude (`limit` 90) or longitude (`limit` 180) in decimal degrees.
fn parse_coordinate(text: &str, what: &str, limit: f64) -> Result<f64, String> {
    let value = text
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite())
        .ok_or_else(|| format!("{what} {text:?} is not a number"))?;
    if !(-limit..=limit).contains(&value) {
        return Err(format!("{what} {text} is out of range [-{limit}, {limit}]"));
    }
    Ok(value)
}

/// The index's tests; the `pub(super)` helpers are shared with the submodules' tests.
#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    impl OfflineIndex {
        /// The rendered document parsed back, for tests that look at its fields.
        pub(crate) fn search_value(&self, query: NearbyQuery) -> Value {
            serde_json::from_str(self.search(query).as_str()).expect("a document is JSON")
        }
    }

    /// Independent great-circle distance (haversine), in km.
    fn haversine_km(lat1: f64, lng1: f64, lat2: f64, lng2: f64) -> f64 {
        let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
        let dp = p2 - p1;
        let dl = (lng2 - lng1).to_radians();
        let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_KM * a.sqrt().min(1.0).asin()
    }

    pub(super) fn query(lat: f64, lng: f64, radius_km: f64, bound: usize) -> NearbyQuery {
        NearbyQuery {
            lat,
            lng,
            radius_km,
            bound,
        }
    }

    pub(super) fn results(doc: &Value) -> &Vec<Value> {
        doc["results"].as_array().expect("results is an array")
    }

    fn location(result: &Value) -> (f64, f64) {
        let loc = &result["geometry"]["location"];
        (loc["lat"].as_f64().unwrap(), loc["lng"].as_f64().unwrap())
    }

    pub(super) fn names(doc: &Value) -> Vec<&str> {
        results(doc)
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect()
    }

    pub(super) fn embedded() -> &'static OfflineIndex {
        static INDEX: std::sync::OnceLock<OfflineIndex> = std::sync::OnceLock::new();
        INDEX.get_or_init(OfflineIndex::embedded)
    }

    /// All embedded places as (distance from the point, geonameid), nearest first, by brute force.
    fn brute_force(lat: f64, lng: f64, radius_km: f64) -> Vec<(f64, String)> {
        let mut all: Vec<(f64, String)> = geonames::EMBEDDED_CITIES
            .lines()
            .map(|line| {
                let f: Vec<&str> = line.split('\t').collect();
                let d = haversine_km(lat, lng, f[2].parse().unwrap(), f[3].parse().unwrap());
                (d, format!("geonames:{}", f[0]))
            })
            .filter(|(d, _)| *d <= radius_km)
            .collect();
        all.sort_by(|a, b| a.0.total_cmp(&b.0));
        all
    }

    pub(super) fn poi_index(csv: &str) -> OfflineIndex {
        let (pois, entries) = poi::parse(csv, "test.csv").expect("test CSV parses");
        OfflineIndex::new(entries, Places::Poi(pois))
    }

    #[test]
    fn ucla_within_10_km_nearest_first() {
        let (lat, lng) = (34.068930, -118.445127);
        let doc = embedded().search_value(query(lat, lng, 10.0, 20));
        assert_eq!(doc["status"], "OK");
        assert_eq!(doc["html_attributions"], json!([]));
        let got = results(&doc);
        let got_names = names(&doc);
        for expected in ["Westwood", "Beverly Hills", "Santa Monica", "Culver City"] {
            assert!(
                got_names.contains(&expected),
                "{expected} missing from {got_names:?}"
            );
        }
        // Bel Air (about 1.6 km away) is the nearest populated place, then Westwood (1.9 km).
        assert_eq!(got_names[..2], ["Bel Air", "Westwood"]);
        assert_eq!(got[0]["place_id"], "geonames:5327259");
        assert_eq!(
            got[1],
            json!({
                "geometry": {"location": {"lat": 34.05612, "lng": -118.43063}},
                "name": "Westwood",
                "place_id": "geonames:5408522",
                "types": ["locality", "political"],
                "vicinity": "Westwood, CA, United States",
            })
        );

        let distances: Vec<f64> = got
            .iter()
            .map(|r| {
                let (plat, plng) = location(r);
                haversine_km(lat, lng, plat, plng)
            })
            .collect();
        assert!(
            distances.windows(2).all(|w| w[0] <= w[1] + 1e-9),
            "{distances:?}"
        );
        assert!(distances.iter().all(|&d| d <= 10.0), "{distances:?}");

        // Same places as a brute-force scan of the whole file.
        let expected = brute_force(lat, lng, 10.0);
        let expected_ids: Vec<&str> = expected
            .iter()
            .take(20)
            .map(|(_, id)| id.as_str())
            .collect();
        let got_ids: Vec<&str> = got
            .iter()
            .map(|r| r["place_id"].as_str().unwrap())
            .collect();
        assert_eq!(got_ids, expected_ids);
    }

    #[test]
    fn radius_is_exact_against_brute_force() {
        // Dense areas and a sparse one; every radius, compared with a full scan.
        for (lat, lng) in [
            (51.5074, -0.1278),
            (35.6812, 139.7671),
            (34.0522, -118.2437),
            (-33.87, 151.21),
            (64.1, -21.9),
        ] {
            for radius in [0.5, 3.0, 7.5, 50.0] {
                let doc = embedded().search_value(query(lat, lng, radius, 20));
                let expected = brute_force(lat, lng, radius);
                assert_eq!(
                    results(&doc).len(),
                    expected.len().min(20),
                    "({lat}, {lng}) r={radius}"
                );
                for r in results(&doc) {
                    let (plat, plng) = location(r);
                    assert!(haversine_km(lat, lng, plat, plng) <= radius);
                }
            }
        }
    }

    #[test]
    fn bound_cuts_results() {
        let (lat, lng) = (34.068930, -118.445127);
        let one = embedded().search_value(query(lat, lng, 50.0, 1));
        assert_eq!(names(&one), ["Bel Air"]);
        let twenty = embedded().search_value(query(lat, lng, 50.0, 20));
        assert_eq!(results(&twenty).len(), 20);
        assert_eq!(results(&twenty)[0], results(&one)[0]);
        assert!(brute_force(lat, lng, 50.0).len() > 100);
        let five = embedded().search_value(query(lat, lng, 50.0, 5));
        assert_eq!(results(&five)[..], results(&twenty)[..5]);
    }

    #[test]
    fn zero_results_mid_pacific() {
        let doc = embedded().search_value(query(0.0, -140.0, 5.0, 20));
        assert_eq!(
            doc,
            json!({"html_attributions": [], "results": [], "status": "ZERO_RESULTS"})
        );
    }

    #[test]
    fn invalid_queries_get_an_error_document() {
        for q in [
            query(f64::NAN, 0.0, 1.0, 1),
            query(91.0, 0.0, 1.0, 1),
            query(0.0, 181.0, 1.0, 1),
            query(0.0, 0.0, 0.0, 1),
            query(0.0, 0.0, f64::NAN, 1),
            query(0.0, 0.0, 1.0, 0),
        ] {
            let doc = embedded().search_value(q);
            assert_eq!(doc["status"], "INVALID_REQUEST", "{q:?}");
            assert!(doc["error_message"].is_string());
            assert_eq!(doc["results"], json!([]));
        }
    }

    #[test]
    fn antimeridian_embedded() {
        // Egvekinot, Chukotka, is at (66.32321, -179.11838); ask from the other side of 180.
        let doc = embedded().search_value(query(66.3, 179.95, 50.0, 20));
        assert!(names(&doc).contains(&"Egvekinot"), "{:?}", names(&doc));
        let doc = embedded().search_value(query(66.3, -180.0, 50.0, 20));
        assert!(names(&doc).contains(&"Egvekinot"), "{:?}", names(&doc));
    }

    #[test]
    fn antimeridian_and_poles_with_pois() {
        let index = poi_index(
            "name,lat,lon\n\
             East,0,-179.99\n\
             West,0,179.99\n\
             North A,89.99,0\n\
             North B,89.99,180\n\
             South,-90,45\n",
        );
        let doc = index.search_value(query(0.0, 179.99, 5.0, 20));
        assert_eq!(names(&doc), ["West", "East"]);
        let doc = index.search_value(query(0.0, -180.0, 1.2, 20));
        let mut got = names(&doc);
        got.sort();
        assert_eq!(got, ["East", "West"]);
        // Across the north pole: 0.02 degrees of arc, about 2.2 km.
        let doc = index.search_value(query(89.99, 0.0, 3.0, 20));
        assert_eq!(names(&doc), ["North A", "North B"]);
        // From the pole both are 0.01 degrees away (a tie, in either order).
        let doc = index.search_value(query(90.0, 123.0, 1.2, 20));
        let mut got = names(&doc);
        got.sort();
        assert_eq!(got, ["North A", "North B"]);
        let doc = index.search_value(query(-89.9999, -170.0, 1.0, 20));
        assert_eq!(names(&doc), ["South"]);
    }

    #[test]
    fn radius_boundary_is_exact() {
        // Places due north of (10, 20), along its meridian, at 49.9 km and 50.1 km.
        let deg = |km: f64| (km / EARTH_RADIUS_KM).to_degrees();
        let csv = format!(
            "name,lat,lon\nin,{},20\nout,{},20\n",
            10.0 + deg(49.9),
            10.0 + deg(50.1)
        );
        let index = poi_index(&csv);
        let doc = index.search_value(query(10.0, 20.0, 50.0, 20));
        assert_eq!(names(&doc), ["in"]);
        let doc = index.search_value(query(10.0, 20.0, 50.2, 20));
        assert_eq!(names(&doc), ["in", "out"]);

        let csv = format!("name,lat,lon\nin,0,{}\nout,0,{}\n", -deg(49.99), deg(50.01));
        let index = poi_index(&csv);
        let doc = index.search_value(query(0.0, 0.0, 50.0, 20));
        assert_eq!(names(&doc), ["in"]);
        for r in results(&doc) {
            let (plat, plng) = location(r);
            assert!(haversine_km(0.0, 0.0, plat, plng) < 50.0);
        }
    }

    #[test]
    fn provider_trait() {
        let index = embedded();
        assert_eq!(PlacesProvider::name(index), "offline");
        let doc = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(index.nearby(query(34.068930, -118.445127, 10.0, 3)));
        let doc: Value = serde_json::from_str(doc.as_str()).unwrap();
        assert_eq!(names(&doc).len(), 3);
        assert_eq!(names(&doc)[..2], ["Bel Air", "Westwood"]);
    }
}
