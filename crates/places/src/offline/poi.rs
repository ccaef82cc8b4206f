//! A user's points-of-interest CSV file (`places: { provider: offline, file: pois.csv }`):
//! its R-tree entries, and the result object of an entry when a query returns it.
//!
//! The format is described at [`OfflineIndex::from_csv_path`](super::OfflineIndex::from_csv_path).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{anyhow, Context as _};

use super::render::PlaceResult;
use super::{parse_coordinate, unit_vector, Entry};

/// Types of a point of interest whose file has no `types` for it.
const DEFAULT_POI_TYPES: [&str; 2] = ["point_of_interest", "establishment"];

/// A user's points of interest, in file order; an index's entries hold positions in it.
pub(super) struct Pois(pub(super) Vec<Poi>);

/// One point of interest from a user's CSV file, ready to be put in a reply.
pub(super) struct Poi {
    pub(super) lat: f64,
    pub(super) lng: f64,
    pub(super) name: String,
    pub(super) place_id: String,
    pub(super) types: Vec<String>,
    pub(super) vicinity: String,
}

impl Pois {
    /// Reads and parses the file at `path`; errors name the file (and the line).
    pub(super) fn read(path: &Path) -> anyhow::Result<(Pois, Vec<Entry>)> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let text = String::from_utf8(bytes)
            .map_err(|e| anyhow!("{}: not UTF-8 text: {}", path.display(), e.utf8_error()))?;
        parse(&text, &path.display().to_string())
    }

    /// The Google-shaped result for the point of interest at `index`, borrowing its strings.
    pub(super) fn result(&self, index: u32) -> Option<PoiResult<'_>> {
        let poi = self.0.get(index as usize)?;
        Some(PlaceResult {
            lat: poi.lat,
            lng: poi.lng,
            name: &poi.name,
            place_id: poi.place_id.as_str(),
            types: &poi.types,
            vicinity: poi.vicinity.as_str(),
        })
    }
}

/// A point-of-interest result.
pub(super) type PoiResult<'a> = PlaceResult<'a, &'a str, String, &'a str>;

/// A CSV record and the line it starts on, or the line and a description of what is wrong.
type CsvRecord = Result<(usize, Vec<String>), (usize, String)>;

/// Splits CSV text into records (RFC 4180 plus some leniency: whitespace around fields and
/// around quoted fields is ignored, a quote inside an unquoted field is kept as text, LF or
/// CRLF line endings).
///
/// Written here rather than taken from the `csv` crate (1.4), which was tried: its record
/// line numbers are wrong after a blank line and in CRLF files (rust-csv issues 208 and 395),
/// and those numbers are both the default `poi:<line>` ids and the lines errors name; it also
/// reads an unclosed quote or text after a closing quote silently into other fields, where
/// this names the problem and its line.
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
pub(super) fn parse(text: &str, label: &str) -> anyhow::Result<(Pois, Vec<Entry>)> {
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
    Ok((Pois(pois), entries))
}

/// An empty line parses as a single empty field.
fn is_blank(fields: &[String]) -> bool {
    fields.len() == 1 && fields[0].is_empty()
}
#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::tests::{names, poi_index, query, results};
    use super::super::OfflineIndex;
    use super::*;

    fn csv_error(csv: &str) -> String {
        parse(csv, "pois.csv")
            .err()
            .expect("test CSV is rejected")
            .to_string()
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
        let doc = index.search_value(query(34.06, -118.44, 10.0, 20));
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
    fn csv_line_numbers_count_blank_lines_and_crlf() {
        let err = csv_error("name,lat,lng\r\n\r\nok,3,4\r\n\r\n\r\nbad,95,0\r\n");
        assert_eq!(
            err,
            "pois.csv line 6: latitude 95 is out of range [-90, 90]"
        );
        let index = poi_index("name,lat,lng\n\nfirst,3,4\r\n \nsecond,5,6\n");
        let doc = index.search_value(query(3.0, 4.0, 500.0, 5));
        let ids: Vec<&str> = results(&doc)
            .iter()
            .map(|r| r["place_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["poi:3", "poi:5"]);
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
        let doc = index.search_value(query(1.0, 2.0, 50.0, 20));
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
        let doc = index.search_value(query(34.068930, -118.445127, 1.0, 5));
        assert_eq!(names(&doc), ["Royce Hall"]);
        assert_eq!(
            doc["results"][0]["types"],
            json!(["tourist_attraction", "point_of_interest"])
        );

        let missing = std::env::temp_dir().join("herdctl-offline-test-does-not-exist.csv");
        let err = OfflineIndex::from_csv_path(&missing).unwrap_err();
        assert!(format!("{err:#}").contains("cannot read"), "{err:#}");
    }
}
