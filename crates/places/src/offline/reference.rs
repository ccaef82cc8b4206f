//! The offline provider's reply as it was built before it was rendered straight to text: a
//! `serde_json::Value` tree, `to_string_pretty`, then `format_whatsat_reply`. Kept for one
//! test, which checks that the typed rendering puts the same bytes on the wire for many
//! queries (radii, bounds, names that need escaping, both sources, empty and error documents).

use serde_json::{json, Map, Value};

use super::geonames::{is_region_code, line_at, parse_geonames_line, GeoNames, LOCALITY_TYPES};
use super::poi::Pois;
use super::tests::{embedded, poi_index, query};
use super::{chord_2_for_radius, unit_vector, OfflineIndex, Places};
use crate::{error_document, nearby_document, NearbyQuery};
use herd_wire::protocol::{format_whatsat_reply, push_whatsat_reply};
use herd_wire::rng::Rng;

/// The document for `query` as a `Value`, built the old way.
fn search(index: &OfflineIndex, query: NearbyQuery) -> Value {
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
    let results: Vec<Value> = index
        .tree
        .nearest_neighbor_iter_with_distance_2(unit_vector(lat, lng))
        .take_while(|&(_, chord_2)| chord_2 <= max_chord_2)
        .take(bound)
        .filter_map(|(entry, _)| match &index.places {
            Places::GeoNames(geonames) => geonames_result(geonames, entry.data),
            Places::Poi(pois) => poi_result(pois, entry.data),
        })
        .collect();
    nearby_document(results)
}

fn geonames_result(geonames: &GeoNames, offset: u32) -> Option<Value> {
    let line = line_at(geonames.text, offset as usize);
    let place = parse_geonames_line(line).ok()?;
    let mut vicinity = String::with_capacity(64);
    vicinity.push_str(place.name);
    if is_region_code(place.admin1) {
        vicinity.push_str(", ");
        vicinity.push_str(place.admin1);
    }
    let countries = &geonames.countries;
    if let Ok(i) = countries.binary_search_by(|(code, _)| (*code).cmp(place.country)) {
        vicinity.push_str(", ");
        vicinity.push_str(countries[i].1);
    }
    Some(result_value(
        place.lat,
        place.lng,
        place.name,
        format!("geonames:{}", place.id),
        LOCALITY_TYPES.iter().map(|t| Value::from(*t)).collect(),
        vicinity,
    ))
}

fn poi_result(pois: &Pois, index: u32) -> Option<Value> {
    let poi = pois.0.get(index as usize)?;
    Some(result_value(
        poi.lat,
        poi.lng,
        &poi.name,
        poi.place_id.clone(),
        poi.types.iter().map(|t| Value::from(t.as_str())).collect(),
        poi.vicinity.clone(),
    ))
}

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

/// The stored AT line a reply starts with.
const AT: &str =
    "AT Alford +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503";

/// Checks that `index` answers `query` with the old reply's bytes; returns the result count.
fn same_reply(index: &OfflineIndex, query: NearbyQuery) -> usize {
    let old_value = search(index, query);
    let old = format_whatsat_reply(AT, &serde_json::to_string_pretty(&old_value).unwrap());
    let mut new = Vec::new();
    push_whatsat_reply(&mut new, AT, index.search(query).as_str());
    assert!(
        old.as_bytes() == new,
        "{query:?}:\nold:\n{old}\nnew:\n{}",
        String::from_utf8_lossy(&new)
    );
    old_value["results"].as_array().map_or(0, Vec::len)
}

#[test]
fn embedded_replies_are_byte_for_byte_the_old_ones() {
    let index = embedded();
    let mut rng = Rng::new(12);
    let mut found = 0;
    let mut empty = 0;
    // Around the generator's cities (dense) and anywhere on the globe (mostly empty), every
    // bound, radii from metres to the protocol's 50 km, the poles and the antimeridian.
    let centres = [
        (34.068930, -118.445127),
        (51.507351, -0.127758),
        (35.689487, 139.691711),
        (-33.868820, 151.209290),
        (19.432608, -99.133209),
        (66.3, 179.95),
        (90.0, 0.0),
        (-90.0, 180.0),
    ];
    for i in 0..1500 {
        let (lat, lng) = if i % 3 == 0 {
            (rng.unit() * 180.0 - 90.0, rng.unit() * 360.0 - 180.0)
        } else {
            let (lat, lng) = centres[rng.below(centres.len() as u64) as usize];
            (
                (lat + (rng.unit() - 0.5) * 0.5).clamp(-90.0, 90.0),
                (lng + (rng.unit() - 0.5) * 0.5).clamp(-180.0, 180.0),
            )
        };
        let radius = match i % 4 {
            0 => 50.0,
            1 => 10.5,
            _ => (rng.unit() * 50.0).max(0.001),
        };
        let bound = 1 + rng.below(20) as usize;
        match same_reply(index, query(lat, lng, radius, bound)) {
            0 => empty += 1,
            n => found += n,
        }
    }
    assert!(
        found > 5_000 && empty > 300,
        "{found} results, {empty} empty"
    );
}

#[test]
fn error_documents_are_byte_for_byte_the_old_ones() {
    for q in [
        query(f64::NAN, 0.0, 1.0, 1),
        query(91.0, 0.0, 1.0, 1),
        query(-90.5, 0.0, 1.0, 1),
        query(0.0, 181.0, 1.0, 1),
        query(0.0, f64::NEG_INFINITY, 1.0, 1),
        query(0.0, 0.0, 0.0, 1),
        query(0.0, 0.0, -3.5, 1),
        query(0.0, 0.0, f64::NAN, 1),
        query(0.0, 0.0, 1.0, 0),
        query(0.0, -140.0, 5.0, 20), // ZERO_RESULTS, mid-Pacific
    ] {
        assert_eq!(same_reply(embedded(), q), 0);
    }
}

#[test]
fn poi_replies_with_awkward_strings_are_byte_for_byte_the_old_ones() {
    let index = poi_index(
        "id,name,lat,lon,types,vicinity\n\
         q1,\"Joe's \"\"Best\"\" Diner, Westwood\",34.06,-118.44,restaurant;food,\"1000 Gayley Ave\"\n\
         b\\s,C:\\path\\to\\cafe\\,34.0601,-118.4401,back\\slash,\\\\server\\share\n\
         u1,Café Ünïcödé 中文 🦀,34.0602,-118.4402,café;日本,Zürich\n\
         c1,\"bell\u{7}and\u{1b}[31mescape\u{1}\u{8}\u{c}\u{1f}\u{0}/\",34.0603,-118.4403,ctl\u{2},\"tab\there\"\n\
         n1,\"two\nlines\r\nand CRLF\",34.0604,-118.4404,,\"</script> \u{2028}\u{2029} \u{7f}\"\n\
         z1,Negative zero,-0,-0.000000000000001,a|b|c,\n\
         p1,Precise,34.123456789012345,-118.98765432109876,,\n\
         e1,Exponent,1e-7,2.5E-3,,\n\
         s1,  Spaces  around  ,34.0605,-118.4405, one ; two ,  \n",
    );
    let mut found = 0;
    for (lat, lng) in [(34.06, -118.44), (0.0, 0.0), (34.1, -118.9)] {
        for radius in [0.01, 0.5, 7.5, 50.0] {
            for bound in [1, 2, 3, 5, 20] {
                found += same_reply(&index, query(lat, lng, radius, bound));
            }
        }
    }
    assert!(found > 50, "{found}");
    // Every place at least once.
    assert_eq!(same_reply(&index, query(17.0, -59.0, 20_000.0, 20)), 9);
}
