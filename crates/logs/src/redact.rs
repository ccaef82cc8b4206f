//! `logs.redact`: what the wire log keeps of clients' ids and locations.
//!
//! Lines are redacted as they are formatted into a log batch, before anything reaches a
//! file: with `locations`, every ISO 6709 location on a protocol line (IAMAT, the AT line of
//! a reply or a flood, `? ` copies of them) is rounded to 0.1 degree (about 11 km); with
//! `ids`, also the client id is replaced by `#` and a keyed hash of it (HMAC with the herd
//! secret, 16 hex digits: the same on every server, so one client's lines can still be
//! followed, but not named without the secret). Other lines (JSON documents, handshakes)
//! hold neither and are kept as they are.

use std::borrow::Cow;
use std::sync::Arc;

use herd_config::auth::HerdSecret;
use herd_config::config::Redact;
use herd_wire::protocol::Location;

pub struct Redactor {
    level: Redact,
    /// Keys the id hash (`ids` needs it; the herd file is refused without one).
    secret: Option<HerdSecret>,
}

impl Redactor {
    /// The redactor for `level`; `None` when nothing is redacted.
    pub fn new(level: Redact, secret: Option<HerdSecret>) -> Option<Arc<Redactor>> {
        (level != Redact::None).then(|| Arc::new(Redactor { level, secret }))
    }

    /// A client id as this log shows it.
    pub fn client_id(&self, id: &str) -> String {
        match (&self.level, &self.secret) {
            (Redact::Ids, Some(secret)) => format!("#{}", secret.log_id(id)),
            (Redact::Ids, None) => "#".to_owned(),
            _ => id.to_owned(),
        }
    }

    /// `text` (one wire line, or a multi-line reply) as the log keeps it.
    pub fn text<'a>(&self, text: &'a [u8]) -> Cow<'a, [u8]> {
        let text = String::from_utf8_lossy(text);
        let mut out = String::with_capacity(text.len());
        let mut changed = false;
        for (i, segment) in text.split('\n').enumerate() {
            if i > 0 {
                out.push('\n');
            }
            match self.segment(segment) {
                Some(redacted) => {
                    out.push_str(&redacted);
                    changed = true;
                }
                None => out.push_str(segment),
            }
        }
        match (changed, text) {
            (false, Cow::Borrowed(original)) => Cow::Borrowed(original.as_bytes()),
            _ => Cow::Owned(out.into_bytes()),
        }
    }

    /// One line of a protocol message, redacted; `None` when it is not one (left as it is).
    fn segment(&self, line: &str) -> Option<String> {
        let mut tokens: Vec<Cow<'_, str>> = line.split(' ').map(Cow::Borrowed).collect();
        let start = usize::from(tokens.first().is_some_and(|t| t == "?"));
        let word = |i: usize| tokens.get(i).map(|t| t.as_ref());
        let id_at = match word(start)? {
            "IAMAT" | "WHATSAT" => start + 1,
            "AT" => start + 3,
            "HERD" => match (word(start + 1), word(start + 3)) {
                (Some("AT" | "SYNC"), _) => start + 4,
                (Some("CONTROL"), Some("FORGET")) => start + 4,
                _ => return None,
            },
            _ => return None,
        };
        for token in tokens.iter_mut().skip(start + 1) {
            if let Some(location) = Location::parse(token) {
                *token = Cow::Owned(format!("{:+.1}{:+.1}", location.lat, location.lng));
            }
        }
        if self.level == Redact::Ids {
            if let Some(id) = tokens.get_mut(id_at) {
                *id = Cow::Owned(self.client_id(id));
            }
        }
        Some(tokens.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redact(level: Redact, line: &str) -> String {
        let secret = HerdSecret::new("0123456789abcdef0123456789abcdef".into());
        let r = Redactor::new(level, Some(secret)).unwrap();
        String::from_utf8(r.text(line.as_bytes()).into_owned()).unwrap()
    }

    #[test]
    fn locations_are_rounded_and_ids_hashed_on_protocol_lines_only() {
        let iamat = "IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503";
        assert_eq!(
            redact(Redact::Locations, iamat),
            "IAMAT kiwi.cs.ucla.edu +34.1-118.4 1621464827.959498503"
        );
        let hashed = redact(Redact::Ids, iamat);
        assert!(
            !hashed.contains("kiwi") && !hashed.contains("34.068930"),
            "{hashed}"
        );
        assert!(
            hashed.starts_with("IAMAT #") && hashed.ends_with(" +34.1-118.4 1621464827.959498503")
        );
        // The same id hashes the same way on every line (and every server).
        let at = "AT Alford +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.9";
        let id = hashed.split(' ').nth(1).unwrap();
        assert_eq!(
            redact(Redact::Ids, at),
            format!("AT Alford +0.263873386 {id} +34.1-118.4 1621464827.9")
        );
        for line in [
            format!("HERD {at} (new, flooded)"),
            format!("HERD SYNC {}", &at[3..]),
            format!("? {iamat}"),
            "WHATSAT kiwi.cs.ucla.edu 10 5".to_owned(),
            format!("{at}\n{{\n  \"results\": []\n}}"),
            "HERD CONTROL 00 FORGET kiwi.cs.ucla.edu -".to_owned(),
        ] {
            let out = redact(Redact::Ids, &line);
            assert!(
                !out.contains("kiwi") && !out.contains("068930"),
                "{line:?} -> {out:?}"
            );
            assert!(out.contains(id), "{out}");
        }
        // Lines that are not protocol messages stay as they are.
        for line in [
            "HERD HELLO Ball 2 abcd",
            "{\"lat\": 34.068930}",
            "? nonsense",
        ] {
            assert_eq!(redact(Redact::Ids, line), line);
        }
        assert!(Redactor::new(Redact::None, None).is_none());
    }
}
