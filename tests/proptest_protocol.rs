//! Property tests of the wire protocol (`herdctl::protocol`): what is formatted parses back
//! to the same thing, and no input, however hostile, makes the parser panic. Case counts are
//! modest so CI stays fast; `PROPTEST_CASES=100000` runs more.

use herdctl::protocol::{
    format_digest, format_invalid, format_sync, format_update, format_want, is_valid_client_id,
    parse_line, Command, Location, PeerMessage, Timestamp, DIGEST_BUCKETS,
};
use herdctl::record::AtRecord;
use proptest::prelude::*;

/// Client ids: any non-control, non-ASCII-white-space characters (Unicode allowed).
fn client_id() -> impl Strategy<Value = String> {
    prop::collection::vec(
        any::<char>().prop_filter("no separators or controls", |c| {
            !c.is_control() && !c.is_ascii_whitespace() && *c != '\x0b'
        }),
        1..40,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

/// `[+-]DD.dddd` text for a degree value within `max`, with 0 to 12 fraction digits.
fn degrees(max: f64) -> impl Strategy<Value = String> {
    (-max..=max, 0usize..12).prop_map(|(v, precision)| format!("{v:+.precision$}"))
}

fn location() -> impl Strategy<Value = String> {
    (degrees(90.0), degrees(180.0)).prop_map(|(lat, lng)| format!("{lat}{lng}"))
}

/// `\d+(\.\d+)?` with any u64 of seconds and 1 to 12 fraction digits (past 9 truncated).
fn time() -> impl Strategy<Value = (String, u64, Option<String>)> {
    (any::<u64>(), prop::option::of("[0-9]{1,12}")).prop_map(|(secs, frac)| {
        let text = match &frac {
            Some(f) => format!("{secs}.{f}"),
            None => secs.to_string(),
        };
        (text, secs, frac)
    })
}

fn server_name() -> impl Strategy<Value = String> {
    "[A-Za-z][A-Za-z0-9_-]{0,15}"
}

/// Separators the protocol accepts between fields.
fn separator() -> impl Strategy<Value = String> {
    "[ \t\x0b\x0c]{1,3}"
}

/// Tokens that reach deep into the parser when strung together at random.
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("IAMAT".to_owned()),
        Just("WHATSAT".to_owned()),
        Just("HERD".to_owned()),
        Just("AT".to_owned()),
        Just("SYNC".to_owned()),
        Just("DIGEST".to_owned()),
        Just("WANT".to_owned()),
        Just("ACK".to_owned()),
        Just("ACKS".to_owned()),
        Just("HELLO".to_owned()),
        Just("WELCOME".to_owned()),
        Just("STATUS".to_owned()),
        Just("1024".to_owned()),
        "[+-]?[0-9]{0,25}(\\.[0-9]{0,25})?([eE][+-]?[0-9]{1,4})?",
        "[+-][0-9.]{0,12}[+-][0-9.]{0,12}",
        "[0-9a-fA-F,+-]{0,40}",
        "(inf|nan|NaN|-inf|\\+inf|Infinity)",
        "\\PC{0,12}",
        ".{0,8}",
    ]
}

/// 512 cases a property, unless `PROPTEST_CASES` asks for another number.
fn config() -> ProptestConfig {
    let default = ProptestConfig::default();
    ProptestConfig {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            default.cases
        } else {
            512
        },
        ..default
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn iamat_lines_round_trip(
        id in client_id(),
        loc in location(),
        (time_text, secs, frac) in time(),
        seps in prop::collection::vec(separator(), 3),
        origin in server_name(),
        received in any::<i64>(),
    ) {
        let line = format!("IAMAT{}{id}{}{loc}{}{time_text}", seps[0], seps[1], seps[2]);
        let Some(Command::Iamat(iamat)) = parse_line(line.as_bytes()) else {
            panic!("{line:?} should be a valid IAMAT");
        };
        prop_assert_eq!(iamat.client, id.as_str());
        prop_assert_eq!(iamat.location_text, loc.as_str());
        prop_assert_eq!(iamat.time_text, time_text.as_str());
        prop_assert_eq!(iamat.time.secs, secs);
        let nanos = frac.map_or(0, |f| format!("{:0<9}", &f[..f.len().min(9)]).parse().unwrap());
        prop_assert_eq!(iamat.time.nanos, nanos);
        prop_assert!(iamat.location().lat.abs() <= 90.0 && iamat.location().lng.abs() <= 180.0);
        prop_assert_eq!(Some(iamat.location()), Location::parse(&loc));

        // The AT record the origin makes: parses back from its line and from its peer forms.
        let record = AtRecord::from_iamat(&origin, i128::from(received), &iamat);
        prop_assert_eq!(record.origin(), origin.as_str());
        prop_assert_eq!(record.client(), id.as_str());
        prop_assert_eq!(record.location(), iamat.location());
        prop_assert_eq!(AtRecord::parse(record.line()), Some(record.clone()));
        let peer = format_update(record.line());
        match parse_line(peer.trim_end_matches('\n').as_bytes()) {
            Some(Command::Peer(PeerMessage::Update(f))) => {
                prop_assert_eq!(AtRecord::from_fields(&f), record.clone())
            }
            other => prop_assert!(false, "{peer:?} parsed as {other:?}"),
        }
        let sync = format_sync(record.line());
        match parse_line(sync.trim_end_matches('\n').as_bytes()) {
            Some(Command::Peer(PeerMessage::Sync(f))) => {
                prop_assert_eq!(AtRecord::from_fields(&f), record)
            }
            other => prop_assert!(false, "{sync:?} parsed as {other:?}"),
        }
    }

    #[test]
    fn whatsat_lines_in_range_parse(
        id in client_id(),
        radius in 0.001f64..=50.0,
        precision in 0usize..6,
        bound in 1usize..=20,
    ) {
        let radius_text = format!("{radius:.precision$}");
        let line = format!("WHATSAT {id} {radius_text} {bound}");
        let expected: f64 = radius_text.parse().unwrap();
        match parse_line(line.as_bytes()) {
            Some(Command::Whatsat(w)) => {
                prop_assert_eq!(w.client, id.as_str());
                prop_assert_eq!(w.radius_km, expected);
                prop_assert_eq!(w.bound, bound);
            }
            // Rounded to zero decimals, a small radius is 0: out of range.
            None => prop_assert_eq!(expected, 0.0),
            other => panic!("{line:?}: {other:?}"),
        }
    }

    #[test]
    fn digests_round_trip(seed in any::<u64>()) {
        let digest: Vec<u64> = (0..DIGEST_BUCKETS as u64)
            .map(|i| seed.wrapping_mul(i.wrapping_add(1)).rotate_left((i % 64) as u32))
            .collect();
        let line = format_digest(&digest);
        prop_assert_eq!(
            parse_line(line.trim_end_matches('\n').as_bytes()),
            Some(Command::Peer(PeerMessage::Digest(digest, None)))
        );
    }

    #[test]
    fn wants_round_trip(buckets in prop::collection::vec(0..DIGEST_BUCKETS as u16, 0..64)) {
        let line = format_want(&buckets);
        prop_assert_eq!(
            parse_line(line.trim_end_matches('\n').as_bytes()),
            Some(Command::Peer(PeerMessage::Want(buckets)))
        );
    }

    #[test]
    fn no_bytes_panic_the_parser(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        check_any_line(&bytes)?;
    }

    #[test]
    fn no_token_soup_panics_the_parser(
        tokens in prop::collection::vec(token(), 0..9),
        sep in separator(),
    ) {
        check_any_line(tokens.join(&sep).as_bytes())?;
        let peer = format!("HERD{sep}{}", tokens.join(&sep));
        check_any_line(peer.as_bytes())?;
    }

    #[test]
    fn number_parsers_never_panic(text in "\\PC{0,40}", numeric in "[+-]?[0-9.eE+-]{0,40}") {
        for t in [&text, &numeric] {
            if let Some(l) = Location::parse(t) {
                prop_assert!(l.lat.abs() <= 90.0 && l.lng.abs() <= 180.0, "{t:?}");
            }
            if Timestamp::parse(t).is_some() {
                prop_assert!(t.bytes().all(|b| b.is_ascii_digit() || b == b'.'), "{t:?}");
            }
            let _ = AtRecord::parse(t);
        }
    }

    #[test]
    fn format_invalid_echoes_the_line(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let mut expected = b"? ".to_vec();
        expected.extend_from_slice(&bytes);
        expected.push(b'\n');
        prop_assert_eq!(format_invalid(&bytes), expected);
    }
}

/// Parses `bytes` (must not panic); whatever is accepted must be valid on its face.
fn check_any_line(bytes: &[u8]) -> Result<(), TestCaseError> {
    match parse_line(bytes) {
        None => {}
        Some(command) => {
            let text = std::str::from_utf8(bytes).expect("accepted lines are UTF-8");
            prop_assert!(
                !text
                    .chars()
                    .any(|c| c.is_control() && !"\t\n\x0b\x0c\r".contains(c)),
                "accepted a control character: {text:?}"
            );
            match command {
                Command::Iamat(i) => {
                    prop_assert!(is_valid_client_id(i.client));
                    prop_assert!(i.location().lat.abs() <= 90.0 && i.location().lng.abs() <= 180.0);
                }
                Command::Whatsat(w) => {
                    prop_assert!(is_valid_client_id(w.client));
                    prop_assert!(w.radius_km > 0.0 && w.radius_km <= 50.0);
                    prop_assert!((1..=20).contains(&w.bound));
                }
                Command::Peer(PeerMessage::Update(f) | PeerMessage::Sync(f)) => {
                    let r = AtRecord::from_fields(&f);
                    prop_assert_eq!(AtRecord::parse(r.line()), Some(r.clone()));
                }
                Command::Peer(_) => {}
            }
        }
    }
    Ok(())
}
