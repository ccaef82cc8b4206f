//! The offline places provider: the default one, with no key and no network.
//!
//! It answers from GeoNames populated places (population >= 1000, CC-BY 4.0, see
//! `assets/geonames/ATTRIBUTION.md`), embedded in the binary, or from a user's own
//! points-of-interest CSV file ([`OfflineIndex::from_csv_path`]).
//!
//! Each place is stored in an R-tree as a point on the unit sphere (x, y, z). The straight-line
//! (chord) distance between two such points grows monotonically with their great-circle
//! distance, so the R-tree's nearest-neighbour iteration yields places nearest first by
//! great-circle distance, with no special cases at the antimeridian or the poles. A query stops
//! at the first place whose chord exceeds the chord of the radius, or after `bound` places.
//!
//! For the embedded data the index keeps only each place's unit vector and the byte offset of
//! its line in the embedded text; the few lines a query returns are split again when the reply
//! is built. That keeps start-up to one pass over the text and one bulk load.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{anyhow, Context as _};
use rstar::primitives::GeomWithData;
use rstar::RTree;
use serde_json::{json, Map, Value};

use super::{error_document, nearby_document, NearbyQuery, PlacesFuture, PlacesProvider};

/// Mean Earth radius in kilometres (IUGG), used to turn a radius into an angle.
pub const EARTH_RADIUS_KM: f64 = 6371.0088;

/// GeoNames places: geonameid, name, latitude, longitude, country code, admin1 code,
/// population; tab-separated, one per line (see `scripts/make_geonames.py`).
const EMBEDDED_CITIES: &str = include_str!("../../assets/geonames/cities1000.tsv");

/// ISO 3166-1 alpha-2 code, country name; tab-separated, one per line.
const EMBEDDED_COUNTRIES: &str = include_str!("../../assets/geonames/countries.tsv");

/// Types of a GeoNames populated place, as Google reports a town or city.
const LOCALITY_TYPES: [&str; 2] = ["locality", "political"];

/// Types of a point of interest whose file has no `types` for it.
const DEFAULT_POI_TYPES: [&str; 2] = ["point_of_interest", "establishment"];

/// An R-tree entry: a unit vector and an index (a byte offset for GeoNames, a position in the
/// points-of-interest list otherwise).
type Entry = GeomWithData<[f64; 3], u32>;

/// A places index answering nearby searches without the network.
pub struct OfflineIndex {
    tree: RTree<Entry>,
    places: Places,
}

enum Places {
    /// The embedded GeoNames data; entries hold the byte offset of their line in `text`.
    GeoNames {
        text: &'static str,
        /// (ISO code, country name), sorted by code.
        countries: Vec<(&'static str, &'static str)>,
    },
    /// A user's points of interest; entries hold an index into this list.
    Poi(Vec<Poi>),
}

/// One point of interest from a user's CSV file, ready to be put in a reply.
struct Poi {
    lat: f64,
    lng: f64,
    name: String,
    place_id: String,
    types: Vec<String>,
    vicinity: String,
}

impl std::fmt::Debug for OfflineIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match self.places {
            Places::GeoNames { .. } => "geonames",
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
        let (entries, errors) = parse_geonames(EMBEDDED_CITIES);
        if !errors.is_empty() {
            tracing::warn!(
                skipped = errors.len(),
                first = %errors[0],
                "embedded GeoNames data has malformed lines; they are skipped"
            );
        }
        OfflineIndex {
            tree: RTree::bulk_load(entries),
            places: Places::GeoNames {
                text: EMBEDDED_CITIES,
                countries: parse_countries(EMBEDDED_COUNTRIES),
            },
        }
    }

    /// The index of a user's points-of-interest CSV file.
    ///
    /// The header row names the columns (any order, case-insensitive): `name`, `lat` (or
    /// `latitude`) and `lon` (or `lng`, `longitude`) are required; `types` (separated by `;` or
    /// `|`), `vicinity` and `id` are optional. Fields may be double-quoted (RFC 4180: commas,
    /// newlines and doubled quotes inside). A file with only a header is allowed.
    /// Errors name the file and line, e.g. `pois.csv line 7: latitude 95 is out of range [-90, 90]`.
    pub fn from_csv_path(path: &Path) -> anyhow::Result<OfflineIndex> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let text = String::from_utf8(bytes)
            .map_err(|e| anyhow!("{}: not UTF-8 text: {}", path.display(), e.utf8_error()))?;
        parse_poi_csv(&text, &path.display().to_string())
    }

    /// How many places the index holds.
    pub fn len(&self) -> usize {
        self.tree.size()
    }

    /// Whether the index holds no place at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The Google Nearby Search (legacy) document for `query`, computed synchronously.
    pub fn search(&self, query: NearbyQuery) -> Value {
        let NearbyQuery {
            lat,
            lng,
            radius_km,
            bound,
        } = query;
        if !(lat.is_finite() && (-90.0..=90.0).contains(&lat)) {
            return error_document(
                "INVALID_REQUEST",
                &format!("latitude {lat} is out of range"),
            );
        }
        if !(lng.is_finite() && (-180.0..=180.0).contains(&lng)) {
            return error_document(
                "INVALID_REQUEST",
                &format!("longitude {lng} is out of range"),
            );
        }
        if radius_km.is_nan() || radius_km <= 0.0 {
            return error_document(
                "INVALID_REQUEST",
                &format!("radius {radius_km} km is not positive"),
            );
        }
        if bound == 0 {
            return error_document("INVALID_REQUEST", "bound must be at least 1");
        }

        let max_chord_2 = chord_2_for_radius(radius_km);
        let results: Vec<Value> = self
            .tree
            .nearest_neighbor_iter_with_distance_2(unit_vector(lat, lng))
            .take_while(|&(_, chord_2)| chord_2 <= max_chord_2)
            .take(bound)
            .filter_map(|(entry, _)| self.result(entry.data))
            .collect();

        nearby_document(results)
    }

    /// The Google-shaped result for one index entry.
    fn result(&self, data: u32) -> Option<Value> {
        match &self.places {
            Places::GeoNames { text, countries } => {
                let line = line_at(text, data as usize);
                // The line parsed when the index was built, so this does not fail.
                let place = parse_geonames_line(line).ok()?;
                let mut vicinity = String::with_capacity(64);
                vicinity.push_str(place.name);
                if is_region_code(place.admin1) {
                    vicinity.push_str(", ");
                    vicinity.push_str(place.admin1);
                }
                if let Ok(i) = countries.binary_search_by(|(code, _)| (*code).cmp(place.country)) {
                    vicinity.push_str(", ");
                    vicinity.push_str(countries[i].1);
                }
                let mut place_id = String::with_capacity(20);
                let _ = write!(place_id, "geonames:{}", place.id);
                Some(result_value(
                    place.lat,
                    place.lng,
                    place.name,
                    place_id,
                    LOCALITY_TYPES.iter().map(|t| Value::from(*t)).collect(),
                    vicinity,
                ))
            }
            Places::Poi(pois) => {
                let poi = pois.get(data as usize)?;
                Some(result_value(
                    poi.lat,
                    poi.lng,
                    &poi.name,
                    poi.place_id.clone(),
                    poi.types.iter().map(|t| Value::from(t.as_str())).collect(),
                    poi.vicinity.clone(),
                ))
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

/// One result object. Keys are inserted in alphabetical order, so the output is the same
/// whether or not serde_json's `preserve_order` feature is enabled somewhere in the build.
fn result_value(
    lat: f64,
    lng: f64,
    name: &str,
    place_id: String,
    types: Vec<Value>,
    vicinity: String,
) -> Value {
    let mut map = Map::new();
    map.insert(
        "geometry".into(),
        json!({ "location": { "lat": lat, "lng": lng } }),
    );
    map.insert("name".into(), Value::from(name));
    map.insert("place_id".into(), Value::String(place_id));
    map.insert("types".into(), Value::Array(types));
    map.insert("vicinity".into(), Value::String(vicinity));
    Value::Object(map)
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

/// Whether an admin1 code is a human-readable region code such as `CA` or `ENG` (letters
/// only), rather than a number (`03`) or an opaque code (`ESYE12`, `A2`).
fn is_region_code(code: &str) -> bool {
    !code.is_empty() && code.bytes().all(|b| b.is_ascii_alphabetic())
}

/// The line starting at byte `offset` of `text`, without its line ending.
fn line_at(text: &str, offset: usize) -> &str {
    let rest = text.get(offset..).unwrap_or("");
    let line = rest.split('\n').next().unwrap_or("");
    line.strip_suffix('\r').unwrap_or(line)
}

/// One GeoNames line, split.
#[derive(Debug, Clone, Copy, PartialEq)]
struct GeoPlace<'a> {
    id: &'a str,
    name: &'a str,
    lat: f64,
    lng: f64,
    country: &'a str,
    admin1: &'a str,
}

/// The number of tab-separated fields on a GeoNames line.
const GEONAMES_FIELDS: usize = 7;

/// Splits and checks one GeoNames line (without its line ending).
fn parse_geonames_line(line: &str) -> Result<GeoPlace<'_>, String> {
    let mut fields = [""; GEONAMES_FIELDS];
    let mut split = line.split('\t');
    for field in &mut fields {
        *field = split.next().ok_or("fewer than 7 fields")?;
    }
    if split.next().is_some() {
        return Err("more than 7 fields".into());
    }
    check_geonames_fields(fields)
}

/// Checks the fields of one GeoNames line: geonameid, name, latitude, longitude, country
/// code, admin1 code, population.
fn check_geonames_fields(fields: [&str; GEONAMES_FIELDS]) -> Result<GeoPlace<'_>, String> {
    let [id, name, lat_text, lng_text, country, admin1, population] = fields;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("geonameid {id:?} is not a number"));
    }
    if name.trim().is_empty() {
        return Err("empty name".into());
    }
    let lat = parse_coordinate(lat_text, "latitude", 90.0)?;
    let lng = parse_coordinate(lng_text, "longitude", 180.0)?;
    if !population.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("population {population:?} is not a number"));
    }
    Ok(GeoPlace {
        id,
        name,
        lat,
        lng,
        country,
        admin1,
    })
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

/// The R-tree entries for a GeoNames TSV text, and a message for each malformed line.
///
/// This runs at every node start-up, so it scans bytes directly rather than going through
/// `lines()` and `split()`; each line is checked exactly as [`parse_geonames_line`] checks it.
fn parse_geonames(text: &str) -> (Vec<Entry>, Vec<String>) {
    assert!(
        u32::try_from(text.len()).is_ok(),
        "GeoNames text over 4 GiB"
    );
    let bytes = text.as_bytes();
    let mut entries = Vec::with_capacity(text.len() / 45);
    let mut errors = Vec::new();
    let mut start = 0;
    let mut line_number = 0;
    while start < bytes.len() {
        line_number += 1;
        // One pass over the line: its end and the positions of its first tabs.
        let mut tabs = [0usize; GEONAMES_FIELDS];
        let mut tab_count = 0;
        let mut end = start;
        while end < bytes.len() && bytes[end] != b'\n' {
            if bytes[end] == b'\t' {
                if tab_count < GEONAMES_FIELDS {
                    tabs[tab_count] = end;
                }
                tab_count += 1;
            }
            end += 1;
        }
        let next = end + 1;
        if end > start && bytes[end - 1] == b'\r' {
            end -= 1;
        }
        if end > start {
            // Tabs and newlines are ASCII, so these are all char boundaries.
            let parsed = if tab_count == GEONAMES_FIELDS - 1 {
                let mut fields = [""; GEONAMES_FIELDS];
                let mut from = start;
                for (i, field) in fields.iter_mut().enumerate() {
                    let to = if i < GEONAMES_FIELDS - 1 {
                        tabs[i]
                    } else {
                        end
                    };
                    *field = &text[from..to];
                    from = to + 1;
                }
                check_geonames_fields(fields)
            } else {
                parse_geonames_line(&text[start..end])
            };
            match parsed {
                Ok(place) => {
                    entries.push(Entry::new(unit_vector(place.lat, place.lng), start as u32))
                }
                Err(e) => errors.push(format!("line {line_number}: {e}: {:?}", &text[start..end])),
            }
        }
        start = next;
    }
    (entries, errors)
}

/// (ISO code, country name) pairs, sorted by code for binary search.
fn parse_countries(text: &'static str) -> Vec<(&'static str, &'static str)> {
    let mut countries: Vec<_> = text
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .map(|(code, name)| (code.trim(), name.trim()))
        .filter(|(code, name)| !code.is_empty() && !name.is_empty())
        .collect();
    countries.sort_unstable();
    countries
}

/// A CSV record and the line it starts on, or the line and a description of what is wrong.
type CsvRecord = Result<(usize, Vec<String>), (usize, String)>;

/// Splits CSV text into records (RFC 4180 plus some leniency: whitespace around fields and
/// around quoted fields is ignored, a quote inside an unquoted field is kept as text, LF or
/// CRLF line endings).
struct CsvRecords<'a> {
    text: &'a str,
    pos: usize,
    /// The 1-based line number at `pos`.
    line: usize,
}

impl<'a> CsvRecords<'a> {
    fn new(text: &'a str) -> Self {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        CsvRecords {
            text,
            pos: 0,
            line: 1,
        }
    }

    /// The next record and the line it starts on; `Err((line, message))` on malformed input.
    fn next_record(&mut self) -> Option<CsvRecord> {
        let bytes = self.text.as_bytes();
        let len = bytes.len();
        if self.pos >= len {
            return None;
        }
        let start_line = self.line;
        let mut fields = Vec::new();
        let mut p = self.pos;
        loop {
            while p < len && (bytes[p] == b' ' || bytes[p] == b'\t') {
                p += 1;
            }
            if p < len && bytes[p] == b'"' {
                // A quoted field: up to the closing quote, with "" standing for one quote.
                let quote_line = self.line;
                p += 1;
                let mut field = String::new();
                let mut segment = p;
                loop {
                    if p >= len {
                        return Some(Err((quote_line, "a quoted field is not closed".into())));
                    }
                    match bytes[p] {
                        b'"' if p + 1 < len && bytes[p + 1] == b'"' => {
                            field.push_str(&self.text[segment..=p]);
                            p += 2;
                            segment = p;
                        }
                        b'"' => {
                            field.push_str(&self.text[segment..p]);
                            p += 1;
                            break;
                        }
                        b'\n' => {
                            self.line += 1;
                            p += 1;
                        }
                        _ => p += 1,
                    }
                }
                fields.push(field);
                while p < len && (bytes[p] == b' ' || bytes[p] == b'\t' || bytes[p] == b'\r') {
                    p += 1;
                }
                if p < len && bytes[p] != b',' && bytes[p] != b'\n' {
                    return Some(Err((
                        self.line,
                        "unexpected text after a closing quote (a quote inside a quoted field \
                         must be doubled)"
                            .into(),
                    )));
                }
            } else {
                let end = self.text[p..].find([',', '\n']).map_or(len, |i| p + i);
                fields.push(self.text[p..end].trim().to_string());
                p = end;
            }
            // Now at a comma, a newline or the end.
            if p < len && bytes[p] == b',' {
                p += 1;
                continue;
            }
            if p < len {
                // A newline ends the record.
                p += 1;
                self.line += 1;
            }
            self.pos = p;
            return Some(Ok((start_line, fields)));
        }
    }
}

/// Column positions in a points-of-interest file.
struct Columns {
    count: usize,
    name: usize,
    lat: usize,
    lng: usize,
    types: Option<usize>,
    vicinity: Option<usize>,
    id: Option<usize>,
}

impl Columns {
    fn from_header(header: &[String]) -> Result<Columns, String> {
        let names: Vec<String> = header
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .collect();
        let find = |aliases: &[&str], what: &str| -> Result<Option<usize>, String> {
            let found: Vec<usize> = (0..names.len())
                .filter(|&i| aliases.contains(&names[i].as_str()))
                .collect();
            match found.as_slice() {
                [] => Ok(None),
                [i] => Ok(Some(*i)),
                [i, j, ..] => Err(format!(
                    "columns `{}` and `{}` both give the {what}; keep one",
                    header[*i].trim(),
                    header[*j].trim(),
                )),
            }
        };
        let required = |aliases: &[&str], what: &str| -> Result<usize, String> {
            find(aliases, what)?.ok_or_else(|| {
                let mut message = format!("missing column `{}`", aliases[0]);
                if aliases.len() > 1 {
                    let others: Vec<String> =
                        aliases[1..].iter().map(|a| format!("`{a}`")).collect();
                    let _ = write!(message, " (or {})", others.join(", "));
                }
                message.push_str(" in the header");
                message
            })
        };
        Ok(Columns {
            count: header.len(),
            name: required(&["name"], "name")?,
            lat: required(&["lat", "latitude"], "latitude")?,
            lng: required(&["lon", "lng", "longitude"], "longitude")?,
            types: find(&["types"], "types")?,
            vicinity: find(&["vicinity"], "vicinity")?,
            id: find(&["id"], "id")?,
        })
    }
}

/// Parses a points-of-interest CSV text; `label` names the file in error messages.
fn parse_poi_csv(text: &str, label: &str) -> anyhow::Result<OfflineIndex> {
    let fail = |line: usize, message: String| anyhow!("{label} line {line}: {message}");
    let mut records = CsvRecords::new(text);
    let columns = loop {
        match records.next_record() {
            None => {
                return Err(anyhow!(
                    "{label}: empty file (no header row with name, lat, lon)"
                ))
            }
            Some(Err((line, message))) => return Err(fail(line, message)),
            Some(Ok((_, fields))) if is_blank(&fields) => continue,
            Some(Ok((line, header))) => {
                break Columns::from_header(&header).map_err(|m| fail(line, m))?
            }
        }
    };

    let mut pois = Vec::new();
    let mut entries = Vec::new();
    let mut ids: HashMap<String, usize> = HashMap::new();
    while let Some(record) = records.next_record() {
        let (line, fields) = record.map_err(|(line, message)| fail(line, message))?;
        if is_blank(&fields) {
            continue;
        }
        if fields.len() != columns.count {
            return Err(fail(
                line,
                format!(
                    "{} fields, but the header has {} (a field containing a comma must be quoted)",
                    fields.len(),
                    columns.count
                ),
            ));
        }
        let name = fields[columns.name].trim();
        if name.is_empty() {
            return Err(fail(line, "the name is empty".into()));
        }
        let lat = parse_coordinate(fields[columns.lat].trim(), "latitude", 90.0)
            .map_err(|m| fail(line, m))?;
        let lng = parse_coordinate(fields[columns.lng].trim(), "longitude", 180.0)
            .map_err(|m| fail(line, m))?;
        let mut types: Vec<String> = columns
            .types
            .map(|i| {
                fields[i]
                    .split([';', '|'])
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        if types.is_empty() {
            types = DEFAULT_POI_TYPES.iter().map(|t| t.to_string()).collect();
        }
        let vicinity = columns
            .vicinity
            .map(|i| fields[i].trim())
            .filter(|v| !v.is_empty())
            .unwrap_or(name)
            .to_string();
        let id = columns
            .id
            .map(|i| fields[i].trim())
            .filter(|id| !id.is_empty())
            .map_or_else(|| line.to_string(), str::to_string);
        if let Some(first) = ids.insert(id.clone(), line) {
            return Err(fail(
                line,
                format!("id {id:?} is already used on line {first}"),
            ));
        }
        let index = u32::try_from(pois.len()).map_err(|_| fail(line, "too many places".into()))?;
        entries.push(Entry::new(unit_vector(lat, lng), index));
        pois.push(Poi {
            lat,
            lng,
            name: name.to_string(),
            place_id: format!("poi:{id}"),
            types,
            vicinity,
        });
    }
    Ok(OfflineIndex {
        tree: RTree::bulk_load(entries),
        places: Places::Poi(pois),
    })
}

/// An empty line parses as a single empty field.
fn is_blank(fields: &[String]) -> bool {
    fields.len() == 1 && fields[0].is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Independent great-circle distance (haversine), in km.
    fn haversine_km(lat1: f64, lng1: f64, lat2: f64, lng2: f64) -> f64 {
        let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
        let dp = p2 - p1;
        let dl = (lng2 - lng1).to_radians();
        let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_KM * a.sqrt().min(1.0).asin()
    }

    fn query(lat: f64, lng: f64, radius_km: f64, bound: usize) -> NearbyQuery {
        NearbyQuery {
            lat,
            lng,
            radius_km,
            bound,
        }
    }

    fn results(doc: &Value) -> &Vec<Value> {
        doc["results"].as_array().expect("results is an array")
    }

    fn location(result: &Value) -> (f64, f64) {
        let loc = &result["geometry"]["location"];
        (loc["lat"].as_f64().unwrap(), loc["lng"].as_f64().unwrap())
    }

    fn names(doc: &Value) -> Vec<&str> {
        results(doc)
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect()
    }

    fn embedded() -> &'static OfflineIndex {
        static INDEX: std::sync::OnceLock<OfflineIndex> = std::sync::OnceLock::new();
        INDEX.get_or_init(OfflineIndex::embedded)
    }

    /// All embedded places as (distance from the point, geonameid), nearest first, by brute force.
    fn brute_force(lat: f64, lng: f64, radius_km: f64) -> Vec<(f64, String)> {
        let mut all: Vec<(f64, String)> = EMBEDDED_CITIES
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

    fn poi_index(csv: &str) -> OfflineIndex {
        parse_poi_csv(csv, "test.csv").expect("test CSV parses")
    }

    fn csv_error(csv: &str) -> String {
        parse_poi_csv(csv, "pois.csv")
            .expect_err("test CSV is rejected")
            .to_string()
    }

    #[test]
    fn malformed_geonames_lines_are_reported_and_skipped() {
        let text = "1\tA\t1.5\t2.5\tUS\tCA\t1000\r\n\
                    2\tB\t95\t2.5\tUS\tCA\t1000\n\
                    \n\
                    3\tC\t1.5\t2.5\tUS\tCA\n\
                    4\tD\t1.5\t2.5\tUS\tCA\t1000\textra\n\
                    x5\tE\t1.5\t2.5\tUS\tCA\t1000\n\
                    6\t \t1.5\t2.5\tUS\tCA\t1000\n\
                    7\tG\t-1.5\t-2.5\tFR\t11\t";
        let (entries, errors) = parse_geonames(text);
        assert_eq!(entries.len(), 2, "{errors:?}");
        assert_eq!(entries[0].data, 0);
        assert_eq!(
            line_at(text, entries[1].data as usize),
            "7\tG\t-1.5\t-2.5\tFR\t11\t"
        );
        assert_eq!(line_at(text, 0), "1\tA\t1.5\t2.5\tUS\tCA\t1000");
        let lines: Vec<&str> = errors
            .iter()
            .map(|e| e.split(':').next().unwrap())
            .collect();
        assert_eq!(
            lines,
            ["line 2", "line 4", "line 5", "line 6", "line 7"],
            "{errors:?}"
        );
        assert!(
            errors[0].contains("latitude 95 is out of range [-90, 90]"),
            "{errors:?}"
        );
        // The slow path (used when a reply is built) agrees with the fast one.
        for line in text.lines() {
            let fast = parse_geonames(line).0.len() == 1;
            assert_eq!(
                parse_geonames_line(line.trim_end_matches('\r')).is_ok(),
                fast,
                "{line:?}"
            );
        }
    }

    #[test]
    fn embedded_file_parses_completely() {
        let (entries, errors) = parse_geonames(EMBEDDED_CITIES);
        assert!(
            errors.is_empty(),
            "malformed embedded lines: {:?}",
            &errors[..errors.len().min(10)]
        );
        let lines = EMBEDDED_CITIES.lines().filter(|l| !l.is_empty()).count();
        assert_eq!(entries.len(), lines);
        assert!(entries.len() > 100_000, "only {} places", entries.len());
        assert_eq!(embedded().len(), lines);

        let countries = parse_countries(EMBEDDED_COUNTRIES);
        assert!(countries.len() > 240);
        // Every place's country has a name.
        for line in EMBEDDED_CITIES.lines() {
            let place = parse_geonames_line(line).unwrap();
            assert!(
                countries
                    .binary_search_by(|(c, _)| (*c).cmp(place.country))
                    .is_ok(),
                "no country name for {line:?}"
            );
        }
        // Sorted by geonameid, as the generator promises.
        let ids: Vec<u64> = EMBEDDED_CITIES
            .lines()
            .map(|l| l.split('\t').next().unwrap().parse().unwrap())
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn ucla_within_10_km_nearest_first() {
        let (lat, lng) = (34.068930, -118.445127);
        let doc = embedded().search(query(lat, lng, 10.0, 20));
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
                let doc = embedded().search(query(lat, lng, radius, 20));
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
        let one = embedded().search(query(lat, lng, 50.0, 1));
        assert_eq!(names(&one), ["Bel Air"]);
        let twenty = embedded().search(query(lat, lng, 50.0, 20));
        assert_eq!(results(&twenty).len(), 20);
        assert_eq!(results(&twenty)[0], results(&one)[0]);
        assert!(brute_force(lat, lng, 50.0).len() > 100);
        let five = embedded().search(query(lat, lng, 50.0, 5));
        assert_eq!(results(&five)[..], results(&twenty)[..5]);
    }

    #[test]
    fn zero_results_mid_pacific() {
        let doc = embedded().search(query(0.0, -140.0, 5.0, 20));
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
            let doc = embedded().search(q);
            assert_eq!(doc["status"], "INVALID_REQUEST", "{q:?}");
            assert!(doc["error_message"].is_string());
            assert_eq!(doc["results"], json!([]));
        }
    }

    #[test]
    fn antimeridian_embedded() {
        // Egvekinot, Chukotka, is at (66.32321, -179.11838); ask from the other side of 180.
        let doc = embedded().search(query(66.3, 179.95, 50.0, 20));
        assert!(names(&doc).contains(&"Egvekinot"), "{:?}", names(&doc));
        let doc = embedded().search(query(66.3, -180.0, 50.0, 20));
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
        let doc = index.search(query(0.0, 179.99, 5.0, 20));
        assert_eq!(names(&doc), ["West", "East"]);
        let doc = index.search(query(0.0, -180.0, 1.2, 20));
        let mut got = names(&doc);
        got.sort();
        assert_eq!(got, ["East", "West"]);
        // Across the north pole: 0.02 degrees of arc, about 2.2 km.
        let doc = index.search(query(89.99, 0.0, 3.0, 20));
        assert_eq!(names(&doc), ["North A", "North B"]);
        // From the pole both are 0.01 degrees away (a tie, in either order).
        let doc = index.search(query(90.0, 123.0, 1.2, 20));
        let mut got = names(&doc);
        got.sort();
        assert_eq!(got, ["North A", "North B"]);
        let doc = index.search(query(-89.9999, -170.0, 1.0, 20));
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
        let doc = index.search(query(10.0, 20.0, 50.0, 20));
        assert_eq!(names(&doc), ["in"]);
        let doc = index.search(query(10.0, 20.0, 50.2, 20));
        assert_eq!(names(&doc), ["in", "out"]);

        let csv = format!("name,lat,lon\nin,0,{}\nout,0,{}\n", -deg(49.99), deg(50.01));
        let index = poi_index(&csv);
        let doc = index.search(query(0.0, 0.0, 50.0, 20));
        assert_eq!(names(&doc), ["in"]);
        for r in results(&doc) {
            let (plat, plng) = location(r);
            assert!(haversine_km(0.0, 0.0, plat, plng) < 50.0);
        }
    }

    #[test]
    fn csv_quotes_types_and_defaults() {
        let csv = "\u{feff}ID,Name,Latitude,Longitude,Types,Vicinity,Extra\r\n\
                   a1,\"Joe's \"\"Best\"\" Diner, Westwood\",34.06,-118.44,restaurant;food | point_of_interest;establishment,\"1000 Gayley Ave, Los Angeles\",x\r\n\
                   \r\n\
                   , Plain Cafe ,34.07,-118.45,,,\r\n\
                   b2,\"Multi\nline\",34.08,-118.46,  ,\"\",\"\"\r\n";
        let index = poi_index(csv);
        assert_eq!(index.len(), 3);
        let doc = index.search(query(34.06, -118.44, 10.0, 20));
        assert_eq!(doc["status"], "OK");
        let got = results(&doc);
        assert_eq!(
            got[0],
            json!({
                "geometry": {"location": {"lat": 34.06, "lng": -118.44}},
                "name": "Joe's \"Best\" Diner, Westwood",
                "place_id": "poi:a1",
                "types": ["restaurant", "food", "point_of_interest", "establishment"],
                "vicinity": "1000 Gayley Ave, Los Angeles",
            })
        );
        // No id: the line number; no types: the defaults; no vicinity: the name.
        assert_eq!(
            got[1],
            json!({
                "geometry": {"location": {"lat": 34.07, "lng": -118.45}},
                "name": "Plain Cafe",
                "place_id": "poi:4",
                "types": ["point_of_interest", "establishment"],
                "vicinity": "Plain Cafe",
            })
        );
        assert_eq!(got[2]["name"], "Multi\nline");
        assert_eq!(got[2]["place_id"], "poi:b2");
        assert_eq!(
            got[2]["types"],
            json!(["point_of_interest", "establishment"])
        );
    }

    #[test]
    fn csv_line_numbers_follow_multiline_fields() {
        let err = csv_error("name,lat,lng\n\"two\nlines\",1,2\nok,3,4\nbad,95,0\n");
        assert_eq!(
            err,
            "pois.csv line 5: latitude 95 is out of range [-90, 90]"
        );
    }

    #[test]
    fn csv_errors_name_file_line_and_problem() {
        let good = "name,lat,lon\n";
        assert_eq!(
            csv_error(&format!(
                "{good}a,1,2\nb,2,3\nc,3,4\nd,4,5\ne,5,6\nf,95,7\n"
            )),
            "pois.csv line 7: latitude 95 is out of range [-90, 90]"
        );
        assert_eq!(
            csv_error(&format!("{good}a,1,-180.5\n")),
            "pois.csv line 2: longitude -180.5 is out of range [-180, 180]"
        );
        assert_eq!(
            csv_error(&format!("{good}a,north,2\n")),
            "pois.csv line 2: latitude \"north\" is not a number"
        );
        assert_eq!(
            csv_error(&format!("{good}a,NaN,2\n")),
            "pois.csv line 2: latitude \"NaN\" is not a number"
        );
        assert_eq!(
            csv_error(&format!("{good},1,2\n")),
            "pois.csv line 2: the name is empty"
        );
        assert_eq!(
            csv_error(&format!("{good}Cafe, Bar,1,2\n")),
            "pois.csv line 2: 4 fields, but the header has 3 (a field containing a comma must be quoted)"
        );
        assert_eq!(
            csv_error(&format!("{good}\"open,1,2\n")),
            "pois.csv line 2: a quoted field is not closed"
        );
        assert_eq!(
            csv_error(&format!("{good}\"a\"b,1,2\n")),
            "pois.csv line 2: unexpected text after a closing quote (a quote inside a quoted field must be doubled)"
        );
        assert_eq!(
            csv_error("name,latitude,lng,id\na,1,2,x\nb,1,2,x\n"),
            "pois.csv line 3: id \"x\" is already used on line 2"
        );
    }

    #[test]
    fn csv_missing_column_is_named() {
        assert_eq!(
            csv_error("name,lon\nx,1\n"),
            "pois.csv line 1: missing column `lat` (or `latitude`) in the header"
        );
        assert_eq!(
            csv_error("name,lat\n"),
            "pois.csv line 1: missing column `lon` (or `lng`, `longitude`) in the header"
        );
        assert_eq!(
            csv_error("title,lat,lon\n"),
            "pois.csv line 1: missing column `name` in the header"
        );
        assert_eq!(
            csv_error("name,lat,latitude,lon\n"),
            "pois.csv line 1: columns `lat` and `latitude` both give the latitude; keep one"
        );
        assert_eq!(
            csv_error(""),
            "pois.csv: empty file (no header row with name, lat, lon)"
        );
    }

    #[test]
    fn csv_header_only_is_an_empty_index() {
        let index = poi_index("name,lat,lon\n");
        assert!(index.is_empty());
        let doc = index.search(query(1.0, 2.0, 50.0, 20));
        assert_eq!(doc["status"], "ZERO_RESULTS");
        assert_eq!(results(&doc).len(), 0);
    }

    #[test]
    fn from_csv_path_reads_a_file() {
        let path =
            std::env::temp_dir().join(format!("herdctl-offline-test-{}.csv", std::process::id()));
        std::fs::write(&path, "name,lat,lon,types\n\"Royce Hall\",34.0729,-118.4422,tourist_attraction|point_of_interest\n").unwrap();
        let index = OfflineIndex::from_csv_path(&path);
        let _ = std::fs::remove_file(&path);
        let index = index.unwrap();
        let doc = index.search(query(34.068930, -118.445127, 1.0, 5));
        assert_eq!(names(&doc), ["Royce Hall"]);
        assert_eq!(
            doc["results"][0]["types"],
            json!(["tourist_attraction", "point_of_interest"])
        );

        let missing = std::env::temp_dir().join("herdctl-offline-test-does-not-exist.csv");
        let err = OfflineIndex::from_csv_path(&missing).unwrap_err();
        assert!(format!("{err:#}").contains("cannot read"), "{err:#}");
    }

    #[test]
    fn provider_trait() {
        let index = embedded();
        assert_eq!(PlacesProvider::name(index), "offline");
        let doc = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(index.nearby(query(34.068930, -118.445127, 10.0, 3)));
        assert_eq!(names(&doc).len(), 3);
        assert_eq!(names(&doc)[..2], ["Bel Air", "Westwood"]);
    }

    #[test]
    fn vicinity_uses_letter_region_codes_only() {
        // Beverly Hills, CA; a Greek place with an opaque admin1 code (ESYE..) gets none.
        let doc = embedded().search(query(34.07362, -118.40036, 0.1, 1));
        assert_eq!(
            doc["results"][0]["vicinity"],
            "Beverly Hills, CA, United States"
        );
        assert!(is_region_code("ENG"));
        assert!(!is_region_code("03"));
        assert!(!is_region_code("ESYE12"));
        assert!(!is_region_code(""));
        let doc = embedded().search(query(37.98376, 23.72784, 3.0, 1)); // central Athens
        let vicinity = doc["results"][0]["vicinity"].as_str().unwrap();
        assert!(
            vicinity.ends_with(", Greece") && !vicinity.contains("ESYE"),
            "{vicinity}"
        );
    }
}
