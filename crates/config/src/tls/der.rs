//! The two facts the herd reads back from a certificate: its subject's common name (a
//! server's identity) and when it expires. A small DER walk over the fixed start of an X.509
//! certificate, rather than a full parser crate: rustls has already checked the signature
//! chain of any certificate a peer presents before this runs.

/// What the herd needs of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    /// The subject's common name (`CN`), if it has one.
    pub common_name: Option<String>,
    /// `notAfter`, in seconds since the Unix epoch.
    pub not_after: i64,
    /// `notBefore`, in seconds since the Unix epoch.
    pub not_before: i64,
}

/// One DER element: its tag and contents, and what follows it.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let bytes = usize::from(first & 0x7f);
        if bytes == 0 || bytes > 4 || rest.len() < bytes {
            return None;
        }
        let length = rest[..bytes]
            .iter()
            .fold(0usize, |n, b| (n << 8) | usize::from(*b));
        (length, &rest[bytes..])
    };
    if rest.len() < length {
        return None;
    }
    Some((tag, &rest[..length], &rest[length..]))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
/// The `[0] EXPLICIT Version` of a v3 certificate.
const VERSION: u8 = 0xa0;
/// id-at-commonName, 2.5.4.3.
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// Reads a DER certificate's subject common name and validity, or `None` if it is not shaped
/// like an X.509 certificate.
pub fn cert_facts(der: &[u8]) -> Option<CertFacts> {
    let (SEQUENCE, certificate, _) = element(der)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = element(certificate)? else {
        return None;
    };
    let (tag, _, mut rest) = element(tbs)?;
    if tag == VERSION {
        (_, _, rest) = element(rest)?; // the serial number
    }
    let (_, _, rest) = element(rest)?; // the signature algorithm
    let (_, _, rest) = element(rest)?; // the issuer
    let (SEQUENCE, validity, rest) = element(rest)? else {
        return None;
    };
    let (SEQUENCE, subject, _) = element(rest)? else {
        return None;
    };
    let (before_tag, before, after) = element(validity)?;
    let (after_tag, after, _) = element(after)?;
    Some(CertFacts {
        common_name: common_name(subject),
        not_before: time(before_tag, before)?,
        not_after: time(after_tag, after)?,
    })
}

/// The first common name of a Name (a SEQUENCE OF SET OF SEQUENCE { OID, value }).
fn common_name(mut name: &[u8]) -> Option<String> {
    while !name.is_empty() {
        let (SET, mut set, rest) = element(name)? else {
            return None;
        };
        name = rest;
        while !set.is_empty() {
            let (SEQUENCE, pair, rest) = element(set)? else {
                return None;
            };
            set = rest;
            let (OID, oid, value) = element(pair)? else {
                return None;
            };
            if oid == COMMON_NAME {
                let (_, text, _) = element(value)?;
                return String::from_utf8(text.to_vec()).ok();
            }
        }
    }
    None
}

/// A UTCTime (`YYMMDDHHMMSSZ`, years 1950-2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) as
/// seconds since the Unix epoch.
fn time(tag: u8, text: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(text).ok()?.strip_suffix('Z')?;
    let (year, rest) = match (tag, text.len()) {
        (UTC_TIME, 12) => {
            let yy: i32 = text[..2].parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &text[2..])
        }
        (GENERALIZED_TIME, 14) => (text[..4].parse().ok()?, &text[4..]),
        _ => return None,
    };
    let field = |at: usize| rest.get(at..at + 2)?.parse::<u8>().ok();
    let month = time::Month::try_from(field(0)?).ok()?;
    let date = time::Date::from_calendar_date(year, month, field(2)?).ok()?;
    let clock = time::Time::from_hms(field(4)?, field(6)?, field(8)?).ok()?;
    Some(
        time::PrimitiveDateTime::new(date, clock)
            .assume_utc()
            .unix_timestamp(),
    )
}

/// Seconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn format_utc(seconds: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(seconds) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("{seconds} (seconds since 1970)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_name_and_validity_rcgen_wrote() {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Alford");
        params.not_before = time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        // After 2049: a GeneralizedTime.
        params.not_after = time::OffsetDateTime::from_unix_timestamp(2_600_000_000).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let facts = cert_facts(cert.der()).unwrap();
        assert_eq!(facts.common_name.as_deref(), Some("Alford"));
        assert_eq!(facts.not_before, 1_700_000_000);
        assert_eq!(facts.not_after, 2_600_000_000);
        assert_eq!(format_utc(1_700_000_000), "2023-11-14 22:13:20 UTC");
    }

    #[test]
    fn garbage_is_none_not_a_panic() {
        assert_eq!(cert_facts(b""), None);
        assert_eq!(cert_facts(&[0x30, 0x82, 0xff]), None);
        assert_eq!(cert_facts(&[0x30, 0x03, 0x30, 0x01, 0x02]), None);
        for cut in 0..64 {
            let _ = cert_facts(&[0x30; 64][..cut]);
        }
    }
}
