//! The GeoNames populated places and country names embedded in the binary: their R-tree
//! entries at start-up, and the result object of an entry when a query returns it.
//!
//! The index keeps only each place's unit vector and the byte offset of its line in the
//! embedded text; the few lines a query returns are split again when the reply is built. That
//! keeps start-up to one pass over the text and one bulk load.

use super::render::{push_escaped, JsonText, PlaceResult};
use super::{parse_coordinate, unit_vector, Entry};

/// GeoNames places: geonameid, name, latitude, longitude, country code, admin1 code,
/// population; tab-separated, one per line (see `scripts/make_geonames.py`).
pub(super) const EMBEDDED_CITIES: &str = include_str!("../../../../assets/geonames/cities1000.tsv");

/// ISO 3166-1 alpha-2 code, country name; tab-separated, one per line.
const EMBEDDED_COUNTRIES: &str = include_str!("../../../../assets/geonames/countries.tsv");

/// Types of a GeoNames populated place, as Google reports a town or city.
pub(super) const LOCALITY_TYPES: [&str; 2] = ["locality", "political"];

/// The embedded GeoNames data an index's entries point into.
pub(super) struct GeoNames {
    pub(super) text: &'static str,
    /// (ISO code, country name), sorted by code.
    pub(super) countries: Vec<(&'static str, &'static str)>,
    /// The country names by two-letter code (`AA` is 0, `AB` 1, ...), for a lookup per result
    /// without string comparisons.
    by_code: Vec<Option<&'static str>>,
}

/// Where a two-letter upper-case ISO code sits in [`GeoNames::by_code`].
fn code_index(code: &str) -> Option<usize> {
    match code.as_bytes() {
        &[a @ b'A'..=b'Z', b @ b'A'..=b'Z'] => {
            Some(usize::from(a - b'A') * 26 + usize::from(b - b'A'))
        }
        _ => None,
    }
}

impl GeoNames {
    /// The embedded data and its R-tree entries (each holding the byte offset of its line).
    ///
    /// A malformed line is a bug (a unit test checks the file parses fully); here it is
    /// skipped with a warning rather than stopping the node.
    pub(super) fn embedded() -> (GeoNames, Vec<Entry>) {
        let (entries, errors) = parse_geonames(EMBEDDED_CITIES);
        if !errors.is_empty() {
            tracing::warn!(
                skipped = errors.len(),
                first = %errors[0],
                "embedded GeoNames data has malformed lines; they are skipped"
            );
        }
        let countries = parse_countries(EMBEDDED_COUNTRIES);
        let mut by_code = vec![None; 26 * 26];
        for &(code, name) in &countries {
            if let Some(i) = code_index(code) {
                by_code[i] = Some(name);
            }
        }
        let geonames = GeoNames {
            text: EMBEDDED_CITIES,
            countries,
            by_code,
        };
        (geonames, entries)
    }

    /// The Google-shaped result for the place whose line starts at byte `offset`, borrowing
    /// its strings from the embedded text (nothing is allocated until it is rendered).
    pub(super) fn result(&self, offset: u32) -> Option<GeoResult<'static>> {
        // The line was checked when the index was built: only split it and read the numbers.
        let [id, name, lat, lng, country, admin1, _] = fields_at(self.text, offset as usize)?;
        Some(PlaceResult {
            lat: lat.parse().ok()?,
            lng: lng.parse().ok()?,
            name,
            place_id: PlaceId(id),
            types: &LOCALITY_TYPES,
            vicinity: Vicinity {
                name,
                region: is_region_code(admin1).then_some(admin1),
                country: self.country_name(country),
            },
        })
    }

    /// The name of the country with ISO code `code`, if known.
    fn country_name(&self, code: &str) -> Option<&'static str> {
        match code_index(code) {
            Some(i) => self.by_code[i],
            None => {
                let countries = &self.countries;
                let i = countries.binary_search_by(|(c, _)| (*c).cmp(code)).ok()?;
                Some(countries[i].1)
            }
        }
    }
}

/// The tab-separated fields of the line starting at byte `offset` of `text`, in one pass;
/// `None` unless there are exactly [`GEONAMES_FIELDS`].
fn fields_at(text: &str, offset: usize) -> Option<[&str; GEONAMES_FIELDS]> {
    let bytes = text.as_bytes();
    let mut fields = [""; GEONAMES_FIELDS];
    let mut count = 0;
    let mut from = offset;
    for at in offset..=bytes.len() {
        let end = match bytes.get(at) {
            Some(b'\t') => false,
            Some(b'\n') | None => true,
            Some(_) => continue,
        };
        let field = fields.get_mut(count)?;
        // Tabs and newlines are ASCII: these are char boundaries.
        *field = text.get(from..at)?;
        count += 1;
        from = at + 1;
        if end {
            break;
        }
    }
    if count != GEONAMES_FIELDS {
        return None;
    }
    let last = &mut fields[GEONAMES_FIELDS - 1];
    *last = last.strip_suffix('\r').unwrap_or(last);
    Some(fields)
}

/// A GeoNames result: its id and vicinity are written out as it is rendered.
pub(super) type GeoResult<'a> = PlaceResult<'a, PlaceId<'a>, &'static str, Vicinity<'a>>;

/// `geonames:<geonameid>`.
pub(super) struct PlaceId<'a>(&'a str);

impl JsonText for PlaceId<'_> {
    fn push_escaped(&self, out: &mut String) {
        out.push_str("geonames:");
        push_escaped(out, self.0);
    }
}

/// `<name>[, <region code>][, <country name>]`.
pub(super) struct Vicinity<'a> {
    name: &'a str,
    region: Option<&'a str>,
    country: Option<&'a str>,
}

impl JsonText for Vicinity<'_> {
    fn push_escaped(&self, out: &mut String) {
        push_escaped(out, self.name);
        for part in [self.region, self.country].into_iter().flatten() {
            out.push_str(", ");
            push_escaped(out, part);
        }
    }
}

/// Whether an admin1 code is a human-readable region code such as `CA` or `ENG` (letters
/// only), rather than a number (`03`) or an opaque code (`ESYE12`, `A2`).
pub(super) fn is_region_code(code: &str) -> bool {
    !code.is_empty() && code.bytes().all(|b| b.is_ascii_alphabetic())
}

/// The line starting at byte `offset` of `text`, without its line ending.
#[cfg(test)]
pub(super) fn line_at(text: &str, offset: usize) -> &str {
    let rest = text.get(offset..).unwrap_or("");
    let line = rest.split('\n').next().unwrap_or("");
    line.strip_suffix('\r').unwrap_or(line)
}

/// One GeoNames line, split.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct GeoPlace<'a> {
    pub(super) id: &'a str,
    pub(super) name: &'a str,
    pub(super) lat: f64,
    pub(super) lng: f64,
    pub(super) country: &'a str,
    pub(super) admin1: &'a str,
}

/// The number of tab-separated fields on a GeoNames line.
const GEONAMES_FIELDS: usize = 7;

/// Splits and checks one GeoNames line (without its line ending).
pub(super) fn parse_geonames_line(line: &str) -> Result<GeoPlace<'_>, String> {
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

#[cfg(test)]
mod tests {
    use super::super::tests::{embedded, query};
    use super::*;

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

        // A reply splits a line again, without the checks: it finds what the checks found.
        let (geonames, _) = GeoNames::embedded();
        for entry in &entries {
            let checked = parse_geonames_line(line_at(EMBEDDED_CITIES, entry.data as usize));
            let checked = checked.unwrap();
            let [id, name, lat, lng, country, admin1, _] =
                fields_at(EMBEDDED_CITIES, entry.data as usize).unwrap();
            assert_eq!(
                (id, name, country, admin1),
                (checked.id, checked.name, checked.country, checked.admin1)
            );
            assert_eq!(
                (lat.parse(), lng.parse()),
                (Ok(checked.lat), Ok(checked.lng))
            );
        }
        assert_eq!(fields_at("1\t2\t3\t4\t5\t6\t7\r\nx", 0).unwrap()[6], "7");
        assert_eq!(fields_at("1\t2\t3\t4\t5\t6", 0), None);
        assert_eq!(fields_at("1\t2\t3\t4\t5\t6\t7\t8", 0), None);

        let countries = parse_countries(EMBEDDED_COUNTRIES);
        assert!(countries.len() > 240);
        for &(code, name) in &countries {
            assert_eq!(geonames.country_name(code), Some(name), "{code}");
        }
        assert_eq!(geonames.country_name("ZZZ"), None);
        assert_eq!(geonames.country_name("zz"), None);
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
    fn vicinity_uses_letter_region_codes_only() {
        // Beverly Hills, CA; a Greek place with an opaque admin1 code (ESYE..) gets none.
        let doc = embedded().search_value(query(34.07362, -118.40036, 0.1, 1));
        assert_eq!(
            doc["results"][0]["vicinity"],
            "Beverly Hills, CA, United States"
        );
        assert!(is_region_code("ENG"));
        assert!(!is_region_code("03"));
        assert!(!is_region_code("ESYE12"));
        assert!(!is_region_code(""));
        let doc = embedded().search_value(query(37.98376, 23.72784, 3.0, 1)); // central Athens
        let vicinity = doc["results"][0]["vicinity"].as_str().unwrap();
        assert!(
            vicinity.ends_with(", Greece") && !vicinity.contains("ESYE"),
            "{vicinity}"
        );
    }
}
