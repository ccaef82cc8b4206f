//! The wire contract (`docs/PROTOCOL.md`): pure parsing and formatting of every message.
//! No I/O here, so every rule is unit-testable and fuzzable.
//!
//! Lines arrive as bytes without their terminator. Client commands (`IAMAT`, `WHATSAT`) and
//! server-to-server messages (`HERD ...`) share one grammar: fields separated by ASCII white
//! space. Anything that is not a valid message is answered `? <the line as received>`.

/// The verb that starts every server-to-server message, so client commands and peer
/// messages can share one port and never be confused.
pub const PEER_VERB: &str = "HERD";

/// The server-to-server protocol version, sent in the handshake. Version 2: the dialler
/// proves the herd secret before the acceptor proves anything (`auth.rs`).
pub const PEER_PROTOCOL_VERSION: u32 = 2;

/// The version an acceptor puts in its `HERD WELCOME`: what its sessions speak. Version 3
/// adds the acknowledgement of updates (`HERD ACKS`, `HERD ACK <n>`). HELLO keeps saying
/// [`PEER_PROTOCOL_VERSION`], which acceptors check exactly; diallers never checked
/// WELCOME's version, so an older dialler links to a newer acceptor as before, and a newer
/// dialler asks for acknowledgements only from an acceptor that said 3.
pub const WELCOME_VERSION: u32 = 3;

/// The first WELCOME version whose sessions acknowledge updates on request.
pub const ACK_VERSION: u32 = 3;

/// Digits an ACK count may have: a u64 has at most 20.
const MAX_ACK_DIGITS: usize = 20;

/// Largest latitude magnitude, degrees.
const MAX_LATITUDE: f64 = 90.0;
/// Largest longitude magnitude, degrees.
const MAX_LONGITUDE: f64 = 180.0;
/// WHATSAT radius limit, kilometres.
pub const MAX_RADIUS_KM: f64 = 50.0;
/// WHATSAT bound limit, results.
pub const MAX_BOUND: usize = 20;

/// A client's POSIX time with nanosecond resolution, plus the exact text it was sent as
/// (replies echo the text byte for byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    pub secs: u64,
    pub nanos: u32,
}

impl Timestamp {
    /// Nanoseconds since the epoch, wide enough that no valid input overflows.
    #[inline]
    pub fn as_nanos(self) -> i128 {
        i128::from(self.secs) * 1_000_000_000 + i128::from(self.nanos)
    }

    /// Parses `\d+(\.\d+)?`. Fraction digits past the ninth are accepted and truncated
    /// (the protocol's resolution is the nanosecond); the text is kept by the caller.
    #[inline]
    pub fn parse(text: &str) -> Option<Timestamp> {
        let (int, frac) = split_decimal(text)?;
        let secs = digits_value(int)?;
        let kept = &frac.as_bytes()[..frac.len().min(9)];
        let nanos = kept
            .iter()
            .fold(0u32, |n, &digit| n * 10 + u32::from(digit - b'0'))
            * 10u32.pow(9 - kept.len() as u32);
        Some(Timestamp { secs, nanos })
    }
}

/// A location in ISO 6709 decimal degrees: `[+-]DD.dddd[+-]DDD.dddd`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Location {
    pub lat: f64,
    pub lng: f64,
}

impl Location {
    /// Parses a signed latitude immediately followed by a signed longitude, each with
    /// optional fraction, and checks their ranges.
    pub fn parse(text: &str) -> Option<Location> {
        let split = Location::check(text)?;
        let lat = parse_signed_degrees(&text[..split])?;
        let lng = parse_signed_degrees(&text[split..])?;
        Some(Location { lat, lng })
    }

    /// Whether `text` is a location [`Location::parse`] takes, checked on its digits alone
    /// (an IAMAT only echoes its location's text, so building the numbers would be wasted).
    pub fn is_valid(text: &str) -> bool {
        Location::check(text).is_some()
    }

    /// Checks `text` exactly as [`Location::parse`] does; returns where the longitude starts.
    fn check(text: &str) -> Option<usize> {
        let bytes = text.as_bytes();
        if !matches!(bytes.first(), Some(b'+' | b'-')) {
            return None;
        }
        // The longitude's sign is the first sign after the latitude's.
        let split = 1 + bytes[1..].iter().position(|b| matches!(b, b'+' | b'-'))?;
        let in_range = signed_degrees_at_most(&text[..split], MAX_LATITUDE as u64)
            && signed_degrees_at_most(&text[split..], MAX_LONGITUDE as u64);
        in_range.then_some(split)
    }
}

/// Whether `text` is `[+-]\d+(\.\d+)?` degrees, at most `max` in magnitude (compared on the
/// digits, so no rounding lets `90.00000000000000001` through). A decimal at most `max` (a
/// whole number an f64 holds exactly) never rounds to a float above it, so the float
/// [`parse_signed_degrees`] builds from it is in range and finite.
fn signed_degrees_at_most(text: &str, max: u64) -> bool {
    matches!(split_decimal(&text[1..]), Some((int, frac)) if decimal_at_most(int, frac, max))
}

/// The degrees of a `[+-]\d+(\.\d+)?` that [`signed_degrees_at_most`] accepted.
fn parse_signed_degrees(text: &str) -> Option<f64> {
    let (sign, rest) = text.split_at(1);
    let magnitude: f64 = rest.parse().ok()?;
    Some(if sign == "-" { -magnitude } else { magnitude })
}

/// Whether the decimal `int.frac` (ASCII digits, as split by [`split_decimal`]) is at most the
/// whole number `max`, exactly: any number of digits, no floating-point rounding.
fn decimal_at_most(int: &str, frac: &str, max: u64) -> bool {
    let Some(value) = digits_value(int) else {
        return false; // more than u64 can hold: far above any limit
    };
    value < max || (value == max && frac.bytes().all(|b| b == b'0'))
}

/// Splits `\d+(\.\d+)?` into integer and fraction digits; `None` for anything else (signs,
/// exponents, `inf`, `nan`, empty parts, non-ASCII digits).
/// One pass over the bytes: these fields are a few bytes long, too short for a memchr.
#[inline]
fn split_decimal(text: &str) -> Option<(&str, &str)> {
    let bytes = text.as_bytes();
    let int = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    if int == 0 {
        return None;
    }
    if int == bytes.len() {
        return Some((text, ""));
    }
    let frac = &bytes[int + 1..];
    if bytes[int] != b'.' || frac.is_empty() || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some((&text[..int], &text[int + 1..]))
}

/// The value of ASCII digits `digits` (as split by [`split_decimal`]); `None` past u64.
#[inline]
fn digits_value(digits: &str) -> Option<u64> {
    digits.bytes().try_fold(0u64, |value, digit| {
        value.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
    })
}

/// A client's location report, with the original text of every field.
#[derive(Debug, Clone, PartialEq)]
pub struct Iamat<'a> {
    pub client: &'a str,
    /// Checked ([`Location::is_valid`]); [`Iamat::location`] has its numbers.
    pub location_text: &'a str,
    pub time_text: &'a str,
    pub time: Timestamp,
}

impl Iamat<'_> {
    /// The location's numbers (the hot path only echoes its text, so they are built on demand).
    pub fn location(&self) -> Location {
        Location::parse(self.location_text).expect("an IAMAT's location was checked")
    }
}

/// A nearby-places query.
#[derive(Debug, Clone, PartialEq)]
pub struct Whatsat<'a> {
    pub client: &'a str,
    pub radius_km: f64,
    pub bound: usize,
}

/// A server-to-server message. Every one starts with [`PEER_VERB`].
#[derive(Debug, Clone, PartialEq)]
pub enum PeerMessage<'a> {
    /// `HERD HELLO <server> <version> <nonce>`: the dialling server introduces itself.
    Hello {
        server: &'a str,
        version: u32,
        nonce: &'a str,
    },
    /// `HERD CHALLENGE <nonce>`: the accepting server's answer to HELLO when links need the
    /// herd secret: the nonce the dialler's AUTH must prove it over.
    Challenge { nonce: &'a str },
    /// `HERD WELCOME <server> <version> <nonce> <proof|->`: the accepting server's last word,
    /// after a valid AUTH, proving it knows the herd secret too (`-` with open links, where
    /// it answers HELLO at once; see `auth.rs`).
    Welcome {
        server: &'a str,
        version: u32,
        nonce: &'a str,
        proof: Option<&'a str>,
    },
    /// `HERD AUTH <proof>`: the dialler's proof that it knows the herd secret.
    Auth { proof: &'a str },
    /// `HERD AT <AT line fields>`: a location update being flooded.
    Update(AtFields<'a>),
    /// `HERD SYNC <AT line fields>`: a record sent to repair a difference found by
    /// anti-entropy (applied like an update; counted apart so status can say what was synced).
    Sync(AtFields<'a>),
    /// `HERD DIGEST <n> <hex> [<live>/<tombstones>]`: the sender's table summarised as `n`
    /// bucket digests, and the expiry horizons it was taken at (see `node/table.rs`; absent
    /// from nodes before expiry: compared regardless).
    Digest(Vec<u64>, Option<Horizons>),
    /// `HERD WANT <bucket,bucket,...|->`: the buckets whose records the other side should send.
    Want(Vec<u16>),
    /// `HERD STATUS`: an operator tool asks for the node's figures (read-only).
    StatusQuery,
    /// `HERD OPERATOR <nonce>`: the operator's tool opens the control path (`operator.rs`);
    /// the node answers `HERD CHALLENGE`.
    Operator { nonce: &'a str },
    /// `HERD CONTROL <proof|-> <verb> [args]`: one operator command, proved with the herd
    /// secret over the node's challenge.
    Control {
        proof: Option<&'a str>,
        command: ControlCommand<'a>,
    },
    /// `HERD FAULT <id|->`: at the start of a peer session, the link fault this end holds
    /// (see `node/faults.rs`).
    Fault(Option<&'a str>),
    /// `HERD ACKS`: the dialler asks the acceptor to acknowledge the updates it sends on this
    /// connection (only after a WELCOME of [`ACK_VERSION`] or later).
    AckRequest,
    /// `HERD ACK <n>`: the acceptor has received and applied the first `n` `HERD AT` lines
    /// of this connection (cumulative).
    Ack(u64),
}

/// What the operator's control path can ask of a node (`HERD CONTROL <proof> ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlCommand<'a> {
    /// `DIGEST`: the table's bucket digests and client count (read-only).
    Digest,
    /// `RECORDS <buckets>`: the records in those buckets, as `HERD SYNC` lines (read-only).
    Records(&'a str),
    /// `CUT <peer> <id>`: cut the link to `peer`.
    Cut { peer: &'a str, id: &'a str },
    /// `DELAY <peer> <ms> <jitter_ms> <id>`: hold every line sent on the link this long.
    Delay {
        peer: &'a str,
        ms: u32,
        jitter_ms: u32,
        id: &'a str,
    },
    /// `LOSS <peer> <percent> <id>`: drop this share of the flooded lines sent on the link.
    Loss {
        peer: &'a str,
        percent: u8,
        id: &'a str,
    },
    /// `HEAL <peer|*>`: clear the faults of one link, or of every link.
    Heal(&'a str),
    /// `FORGET <client> <reason|->`: `herdctl forget`: a tombstone for the client, flooded
    /// like an update. The reason is hex-encoded UTF-8 (so it is one field of any text),
    /// for the node's log.
    Forget { client: &'a str, reason: &'a str },
}

/// The longest `herdctl forget --reason`, in bytes.
pub const MAX_FORGET_REASON_BYTES: usize = 200;

impl ControlCommand<'_> {
    /// Whether the command changes the node (so it needs the herd secret, never `-`).
    pub fn changes_the_node(&self) -> bool {
        !matches!(self, ControlCommand::Digest | ControlCommand::Records(_))
    }

    /// The command's words as the proof covers them: single spaces, no proof.
    pub fn text(&self) -> String {
        match self {
            ControlCommand::Digest => "DIGEST".into(),
            ControlCommand::Records(buckets) => format!("RECORDS {buckets}"),
            ControlCommand::Cut { peer, id } => format!("CUT {peer} {id}"),
            ControlCommand::Delay {
                peer,
                ms,
                jitter_ms,
                id,
            } => format!("DELAY {peer} {ms} {jitter_ms} {id}"),
            ControlCommand::Loss { peer, percent, id } => format!("LOSS {peer} {percent} {id}"),
            ControlCommand::Heal(peer) => format!("HEAL {peer}"),
            ControlCommand::Forget { client, reason } => format!("FORGET {client} {reason}"),
        }
    }
}

/// Largest link delay the control path takes, in milliseconds (a minute: past that, links
/// are better cut).
pub const MAX_LINK_DELAY_MS: u32 = 60_000;

/// A forget reason on the wire: `-`, or lowercase hex of at most
/// [`MAX_FORGET_REASON_BYTES`] bytes.
fn is_valid_reason(text: &str) -> bool {
    text == "-"
        || (text.len() % 2 == 0
            && text.len() <= 2 * MAX_FORGET_REASON_BYTES
            && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// A fault id: 1 to 32 lowercase hex digits.
pub fn is_valid_fault_id(text: &str) -> bool {
    (1..=32).contains(&text.len()) && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn parse_control<'a>(args: &[&'a str]) -> Option<ControlCommand<'a>> {
    let number = |text: &str| -> Option<u32> {
        if !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        text.parse().ok()
    };
    let peer_ok = |peer: &str| is_valid_server_name(peer);
    match args {
        ["DIGEST"] => Some(ControlCommand::Digest),
        ["RECORDS", buckets] => {
            parse_want(buckets)?;
            Some(ControlCommand::Records(buckets))
        }
        ["CUT", peer, id] if peer_ok(peer) && is_valid_fault_id(id) => {
            Some(ControlCommand::Cut { peer, id })
        }
        ["DELAY", peer, ms, jitter, id] if peer_ok(peer) && is_valid_fault_id(id) => {
            let (ms, jitter_ms) = (number(ms)?, number(jitter)?);
            if ms > MAX_LINK_DELAY_MS || jitter_ms > ms {
                return None;
            }
            Some(ControlCommand::Delay {
                peer,
                ms,
                jitter_ms,
                id,
            })
        }
        ["LOSS", peer, percent, id] if peer_ok(peer) && is_valid_fault_id(id) => {
            let percent = number(percent)?;
            if percent > 100 {
                return None;
            }
            Some(ControlCommand::Loss {
                peer,
                percent: percent as u8,
                id,
            })
        }
        ["HEAL", peer] if *peer == "*" || peer_ok(peer) => Some(ControlCommand::Heal(peer)),
        ["FORGET", client, reason] if is_valid_client_id(client) && is_valid_reason(reason) => {
            Some(ControlCommand::Forget { client, reason })
        }
        _ => None,
    }
}

/// Everything a line can be.
#[derive(Debug, Clone, PartialEq)]
pub enum Command<'a> {
    Iamat(Iamat<'a>),
    Whatsat(Whatsat<'a>),
    Peer(PeerMessage<'a>),
}

/// ASCII white space as the protocol means it (Rust's `is_ascii_whitespace` omits the
/// vertical tab).
fn is_field_separator(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

/// [`is_field_separator`] on a byte of UTF-8: the separators are ASCII, and an ASCII byte
/// in UTF-8 is always a character of its own.
fn is_separator_byte(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

/// Splits a line into fields on runs of ASCII white space (byte by byte: see
/// [`is_separator_byte`]).
fn fields(line: &str) -> impl Iterator<Item = &str> {
    let mut rest = line;
    std::iter::from_fn(move || {
        let start = rest.bytes().position(|b| !is_separator_byte(b))?;
        let len = rest.as_bytes()[start..]
            .iter()
            .position(|&b| is_separator_byte(b))
            .unwrap_or(rest.len() - start);
        let field = &rest[start..start + len];
        rest = &rest[start + len..];
        Some(field)
    })
}

/// Whether UTF-8 `line` holds a control character (Unicode's Cc: C0, DEL, C1) other than a
/// field separator. A C1 control (U+0080 to U+009F) is encoded 0xC2 0x80 to 0xC2 0x9F, and
/// 0xC2 starts no other character in that range, so bytes tell without decoding.
fn has_control(line: &str) -> bool {
    let bytes = line.as_bytes();
    // Eight bytes at a time while they are printable ASCII (0x20 to 0x7e: what nearly every
    // line is); from the first word that is not, byte by byte.
    let mut at = 0;
    while at + 8 <= bytes.len() {
        let word = u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        if !is_printable_ascii(word) {
            break;
        }
        at += 8;
    }
    bytes[at..].iter().enumerate().any(|(i, &b)| match b {
        0x7f => true,
        0..0x20 => !is_separator_byte(b),
        0xc2 => bytes.get(at + i + 1).is_some_and(|&next| next < 0xa0),
        _ => false,
    })
}

/// Whether all eight bytes of `word` are printable ASCII (0x20 to 0x7e). Exact: a byte
/// below 0x20 or at 0x7f, 0x80 or above, sets the high bit of its lane in one of the three
/// tests (a borrow can only set higher lanes' bits once a lower lane already failed).
#[inline]
fn is_printable_ascii(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word;
    let del = (word ^ (ONES * 0x7f)).wrapping_sub(ONES) & !(word ^ (ONES * 0x7f));
    (word | below_space | del) & HIGH == 0
}

/// The client id whose record the next buffered line would look up, if it looks like an
/// `IAMAT`, a `WHATSAT` or a flooded `HERD AT`: found by counting single spaces, nothing
/// parsed or checked. Only a hint for [`crate::record::AtRecord::prefetch`]-style
/// look-ahead (a wrong answer costs a wasted prefetch, never a wrong result): the line is
/// parsed in full when its turn comes. `buffer` may hold more than one line; the search
/// stops at the first line's end.
pub fn client_hint(buffer: &[u8]) -> Option<&str> {
    let (skip, rest) = if let Some(rest) = buffer.strip_prefix(b"IAMAT ") {
        (0, rest)
    } else if let Some(rest) = buffer.strip_prefix(b"WHATSAT ") {
        (0, rest)
    } else if let Some(rest) = buffer.strip_prefix(b"HERD AT ") {
        (2, rest) // origin and skew come first
    } else {
        return None;
    };
    let mut start = 0;
    for _ in 0..skip {
        start += 1 + rest[start..]
            .iter()
            .position(|&b| b == b' ' || b == b'\n')?;
    }
    let len = rest[start..]
        .iter()
        .position(|&b| b == b' ' || b == b'\n')?;
    // A client id is never the line's last field: a space must follow it.
    if len == 0 || rest[start + len] != b' ' || rest[..start].contains(&b'\n') {
        return None;
    }
    std::str::from_utf8(&rest[start..start + len]).ok()
}

/// Parses one line (without its `\n`). `None` means "invalid: answer `? <line>`".
pub fn parse_line(line: &[u8]) -> Option<Command<'_>> {
    let line = std::str::from_utf8(line).ok()?;
    // NUL, escape sequences, DEL, C1 controls...: no valid message holds any.
    if has_control(line) {
        return None;
    }
    let mut it = fields(line);
    let verb = it.next()?;
    let mut args: [&str; 7] = [""; 7];
    let mut count = 0;
    for field in it {
        if count == args.len() {
            return None;
        }
        args[count] = field;
        count += 1;
    }
    let args = &args[..count];
    match verb {
        "IAMAT" => parse_iamat(args).map(Command::Iamat),
        "WHATSAT" => parse_whatsat(args).map(Command::Whatsat),
        PEER_VERB => parse_peer(args).map(Command::Peer),
        _ => None,
    }
}

fn parse_iamat<'a>(args: &[&'a str]) -> Option<Iamat<'a>> {
    let &[client, location_text, time_text] = args else {
        return None;
    };
    if !Location::is_valid(location_text) {
        return None;
    }
    Some(Iamat {
        client,
        location_text,
        time_text,
        time: Timestamp::parse(time_text)?,
    })
}

fn parse_whatsat<'a>(args: &[&'a str]) -> Option<Whatsat<'a>> {
    let &[client, radius, bound] = args else {
        return None;
    };
    let (int, frac) = split_decimal(radius)?;
    if !decimal_at_most(int, frac, MAX_RADIUS_KM as u64) {
        return None;
    }
    let radius_km: f64 = radius.parse().ok()?;
    // Zero, or too small for an f64 (it would round to zero), is out of range.
    if !(radius_km > 0.0 && radius_km <= MAX_RADIUS_KM) {
        return None;
    }
    if !bound.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Leading zeros are digits like any other; a bound too long for usize is out of range.
    let bound: usize = bound.parse().ok()?;
    if bound == 0 || bound > MAX_BOUND {
        return None;
    }
    Some(Whatsat {
        client,
        radius_km,
        bound,
    })
}

fn parse_peer<'a>(args: &[&'a str]) -> Option<PeerMessage<'a>> {
    match args {
        ["HELLO", server, version, nonce] if is_valid_nonce(nonce) => Some(PeerMessage::Hello {
            server,
            version: parse_version(version)?,
            nonce,
        }),
        ["WELCOME", server, version, nonce, proof]
            if is_valid_nonce(nonce) && is_valid_proof(proof) =>
        {
            Some(PeerMessage::Welcome {
                server,
                version: parse_version(version)?,
                nonce,
                proof: (*proof != "-").then_some(*proof),
            })
        }
        ["CHALLENGE", nonce] if is_valid_nonce(nonce) => Some(PeerMessage::Challenge { nonce }),
        ["AUTH", proof] if *proof != "-" && is_valid_proof(proof) => {
            Some(PeerMessage::Auth { proof })
        }
        ["STATUS"] => Some(PeerMessage::StatusQuery),
        ["OPERATOR", nonce] if is_valid_nonce(nonce) => Some(PeerMessage::Operator { nonce }),
        ["CONTROL", proof, command @ ..] if is_valid_proof(proof) => Some(PeerMessage::Control {
            proof: (*proof != "-").then_some(*proof),
            command: parse_control(command)?,
        }),
        ["FAULT", id] if *id == "-" || is_valid_fault_id(id) => {
            Some(PeerMessage::Fault((*id != "-").then_some(*id)))
        }
        ["DIGEST", count, hex] => Some(PeerMessage::Digest(parse_digest(count, hex)?, None)),
        ["DIGEST", count, hex, horizons] => Some(PeerMessage::Digest(
            parse_digest(count, hex)?,
            Some(parse_horizons(horizons)?),
        )),
        ["WANT", buckets] => parse_want(buckets).map(PeerMessage::Want),
        ["ACKS"] => Some(PeerMessage::AckRequest),
        ["ACK", count] => parse_ack(count).map(PeerMessage::Ack),
        ["SYNC", origin, skew, client, location, time] => Some(PeerMessage::Sync(AtFields::check(
            origin, skew, client, location, time,
        )?)),
        ["AT", origin, skew, client, location, time] => Some(PeerMessage::Update(AtFields::check(
            origin, skew, client, location, time,
        )?)),
        _ => None,
    }
}

/// An ACK's count: plain digits that fit a u64 (no sign, at most 20 digits).
fn parse_ack(count: &str) -> Option<u64> {
    if count.is_empty()
        || count.len() > MAX_ACK_DIGITS
        || !count.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    count.parse().ok()
}

/// Number of buckets in a table digest: enough that a few changes touch few buckets, small
/// enough that a digest is one 16 KiB line.
pub const DIGEST_BUCKETS: usize = 1024;

fn parse_digest(count: &str, hex: &str) -> Option<Vec<u64>> {
    if count.parse::<usize>().ok()? != DIGEST_BUCKETS || hex.len() != DIGEST_BUCKETS * 16 {
        return None;
    }
    // from_str_radix alone would take a `+` sign.
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..DIGEST_BUCKETS)
        .map(|i| u64::from_str_radix(hex.get(i * 16..i * 16 + 16)?, 16).ok())
        .collect()
}

/// A bucket list as WANT and `RECORDS` carry it: `b1,b2,...` or `-`.
pub fn parse_want(buckets: &str) -> Option<Vec<u16>> {
    if buckets == "-" {
        return Some(Vec::new());
    }
    buckets
        .split(',')
        .map(|b| {
            // Digits only (`str::parse` would take a `+` sign).
            if !b.bytes().all(|d| d.is_ascii_digit()) {
                return None;
            }
            b.parse::<u16>()
                .ok()
                .filter(|&b| usize::from(b) < DIGEST_BUCKETS)
        })
        .collect()
}

/// The expiry horizons a digest was taken at: live records', tombstones' (whole seconds;
/// `i64::MIN` for none).
pub type Horizons = (i64, i64);

/// `<live>/<tombstones>`, each a number or `-` (no horizon).
fn parse_horizons(text: &str) -> Option<Horizons> {
    let one = |t: &str| -> Option<i64> {
        match t {
            "-" => Some(i64::MIN),
            t if !t.is_empty()
                && t.trim_start_matches('-')
                    .bytes()
                    .all(|b| b.is_ascii_digit()) =>
            {
                t.parse().ok()
            }
            _ => None,
        }
    };
    let (live, tomb) = text.split_once('/')?;
    Some((one(live)?, one(tomb)?))
}

fn format_horizon(h: i64) -> String {
    match h {
        i64::MIN => "-".to_owned(),
        h => h.to_string(),
    }
}

/// `HERD DIGEST <n> <hex> <live>/<tombstones>\n`: a digest and the horizons it was taken at.
pub fn format_digest_at(digest: &[u64], horizons: Horizons) -> String {
    let mut line = format_digest(digest);
    line.pop();
    line.push_str(&format!(
        " {}/{}\n",
        format_horizon(horizons.0),
        format_horizon(horizons.1)
    ));
    line
}

/// `HERD DIGEST <n> <hex>\n`.
pub fn format_digest(digest: &[u64]) -> String {
    let mut line = format!("{PEER_VERB} DIGEST {} ", digest.len());
    for d in digest {
        line.push_str(&format!("{d:016x}"));
    }
    line.push('\n');
    line
}

/// `HERD WANT <buckets|->\n`.
pub fn format_want(buckets: &[u16]) -> String {
    if buckets.is_empty() {
        return format!("{PEER_VERB} WANT -\n");
    }
    let list: Vec<String> = buckets.iter().map(u16::to_string).collect();
    format!("{PEER_VERB} WANT {}\n", list.join(","))
}

fn parse_version(text: &str) -> Option<u32> {
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Server receive time minus client time, formatted as the protocol's skew:
/// always signed, nine digits after the point.
pub fn format_skew(received_nanos: i128, client: Timestamp) -> String {
    let mut skew = String::with_capacity(24);
    write_skew(&mut skew, received_nanos, client);
    skew
}

/// [`format_skew`], appended to `out` (the hot path builds a record's line in one buffer).
pub fn write_skew(out: &mut String, received_nanos: i128, client: Timestamp) {
    let diff = received_nanos - client.as_nanos();
    out.push(if diff < 0 { '-' } else { '+' });
    let abs = diff.unsigned_abs();
    match u64::try_from(abs) {
        // Any skew under 584 years: digits by hand, in 64 bits (`fmt` on a u128 divides in
        // 128 bits, digit by digit).
        Ok(abs) => {
            push_decimal(out, abs / 1_000_000_000, 1);
            out.push('.');
            push_decimal(out, abs % 1_000_000_000, 9);
        }
        Err(_) => {
            use std::fmt::Write as _;
            let _ = write!(out, "{}.{:09}", abs / 1_000_000_000, abs % 1_000_000_000);
        }
    }
}

/// Appends `value` in decimal, zero-padded to at least `min_digits` (at most 20).
fn push_decimal(out: &mut String, mut value: u64, min_digits: usize) {
    let mut digits = [b'0'; 20];
    let mut at = digits.len();
    while value > 0 {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
    }
    at = at.min(digits.len() - min_digits);
    out.push_str(std::str::from_utf8(&digits[at..]).expect("ASCII digits"));
}

/// The skew field of an AT line in nanoseconds (the origin's receipt time minus the
/// client's time), or `None` if it is not one.
pub fn skew_nanos(text: &str) -> Option<i128> {
    if !is_valid_skew(text) {
        return None;
    }
    let negative = text.starts_with('-');
    let (int, frac) = split_decimal(&text[1..])?;
    // Whole seconds past u64 (584 billion years) are still a skew: parsed wide.
    let secs = match digits_value(int) {
        Some(secs) => i128::from(secs),
        None => int.parse::<i128>().ok()?,
    };
    let nanos = secs * 1_000_000_000 + i128::from(digits_value(frac)?);
    Some(if negative { -nanos } else { nanos })
}

/// `[+-]\d+\.\d{9}`: the skew field of an AT line.
fn is_valid_skew(text: &str) -> bool {
    let Some(rest) = text.strip_prefix(['+', '-']) else {
        return false;
    };
    matches!(split_decimal(rest), Some((_, frac)) if frac.len() == 9)
}

/// A nonce as it may appear on the wire: 32 lowercase hex digits.
pub fn is_valid_nonce(text: &str) -> bool {
    text.len() == 32 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A proof as it may appear on the wire: 64 lowercase hex digits, or `-` for none.
pub fn is_valid_proof(text: &str) -> bool {
    text == "-"
        || (text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// A client id as IAMAT, WHATSAT and flooded records carry it: non-empty, no ASCII white
/// space, no control characters (any other Unicode is allowed).
pub fn is_valid_client_id(id: &str) -> bool {
    !id.is_empty() && !id.chars().any(|c| is_field_separator(c) || c.is_control())
}

/// A server name as it may appear on the wire and in `herd.yaml`: letters, digits, `-`, `_`,
/// starting with a letter.
pub fn is_valid_server_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The six fields of an AT line (`AT <origin> <skew> <client> <location> <time>`), each
/// checked, borrowed from the line they were parsed from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AtFields<'a> {
    pub origin: &'a str,
    pub skew: &'a str,
    pub client: &'a str,
    pub location: &'a str,
    pub time_text: &'a str,
    pub time: Timestamp,
}

impl<'a> AtFields<'a> {
    /// Checks every field of a flooded or stored AT line.
    pub fn check(
        origin: &'a str,
        skew: &'a str,
        client: &'a str,
        location: &'a str,
        time_text: &'a str,
    ) -> Option<AtFields<'a>> {
        if !is_valid_server_name(origin) || !is_valid_skew(skew) || !is_valid_client_id(client) {
            return None;
        }
        // `-`: a tombstone (`herdctl forget`), only ever made by a server; peer lines come
        // from proved neighbours only, and an IAMAT's location is parsed on its own path.
        if location != crate::record::TOMBSTONE_LOCATION && !Location::is_valid(location) {
            return None;
        }
        Some(AtFields {
            origin,
            skew,
            client,
            location,
            time_text,
            time: Timestamp::parse(time_text)?,
        })
    }
}

/// Parses an AT line as a server replied with it (and as stores keep it).
pub fn parse_at_line(line: &str) -> Option<AtFields<'_>> {
    let mut it = fields(line);
    if it.next()? != "AT" {
        return None;
    }
    let (origin, skew, client, location, time) =
        (it.next()?, it.next()?, it.next()?, it.next()?, it.next()?);
    if it.next().is_some() {
        return None;
    }
    AtFields::check(origin, skew, client, location, time)
}

/// `HERD AT ...\n`: the server-to-server message that floods an AT line.
pub fn format_update(at_line: &str) -> String {
    let mut out = String::with_capacity(PEER_VERB.len() + at_line.len() + 2);
    push_update(&mut out, at_line);
    out
}

/// Appends `HERD <AT line>\n` to `out`: the form the links write, many to one buffer.
pub fn push_update(out: &mut String, at_line: &str) {
    out.push_str(PEER_VERB);
    out.push(' ');
    out.push_str(at_line);
    out.push('\n');
}

/// `HERD SYNC ...\n`: the anti-entropy form of an AT line.
pub fn format_sync(at_line: &str) -> String {
    let mut out = String::with_capacity(PEER_VERB.len() + at_line.len() + 7);
    push_sync(&mut out, at_line);
    out
}

/// Appends `HERD SYNC <the AT line's fields>\n` to `out` (anti-entropy writes them in chunks).
pub fn push_sync(out: &mut String, at_line: &str) {
    let fields = at_line.strip_prefix("AT ").unwrap_or(at_line);
    out.push_str(PEER_VERB);
    out.push_str(" SYNC ");
    out.push_str(fields);
    out.push('\n');
}

/// `HERD HELLO <server> <version> <nonce>\n`.
pub fn format_hello(server: &str, nonce: &str) -> String {
    format!("{PEER_VERB} HELLO {server} {PEER_PROTOCOL_VERSION} {nonce}\n")
}

/// `HERD WELCOME <server> <version> <nonce> <proof|->\n`, with [`WELCOME_VERSION`].
pub fn format_welcome(server: &str, nonce: &str, proof: Option<&str>) -> String {
    let proof = proof.unwrap_or("-");
    format!("{PEER_VERB} WELCOME {server} {WELCOME_VERSION} {nonce} {proof}\n")
}

/// `HERD ACKS\n`: the dialler asks for acknowledgements.
pub fn format_ack_request() -> String {
    format!("{PEER_VERB} ACKS\n")
}

/// `HERD ACK <n>\n`.
pub fn format_ack(count: u64) -> String {
    format!("{PEER_VERB} ACK {count}\n")
}

/// `HERD CHALLENGE <nonce>\n`: an acceptor's answer to a neighbour's HELLO (the operator
/// path's challenge, [`format_challenge`], also names the node and carries its proof).
pub fn format_peer_challenge(nonce: &str) -> String {
    format!("{PEER_VERB} CHALLENGE {nonce}\n")
}

/// `HERD AUTH <proof>\n`.
pub fn format_auth(proof: &str) -> String {
    format!("{PEER_VERB} AUTH {proof}\n")
}

/// `HERD OPERATOR <nonce>\n`.
pub fn format_operator(nonce: &str) -> String {
    format!("{PEER_VERB} OPERATOR {nonce}\n")
}

/// `HERD CHALLENGE <server> <nonce> <proof|->\n`: the node's answer to `HERD OPERATOR`.
pub fn format_challenge(server: &str, nonce: &str, proof: Option<&str>) -> String {
    let proof = proof.unwrap_or("-");
    format!("{PEER_VERB} CHALLENGE {server} {nonce} {proof}\n")
}

/// Reads a `HERD CHALLENGE` line: (server, nonce, proof).
pub fn parse_challenge(line: &str) -> Option<(&str, &str, Option<&str>)> {
    let mut it = fields(line);
    let words: Vec<&str> = it.by_ref().take(6).collect();
    match words.as_slice() {
        [PEER_VERB, "CHALLENGE", server, nonce, proof]
            if is_valid_server_name(server) && is_valid_nonce(nonce) && is_valid_proof(proof) =>
        {
            Some((server, nonce, (*proof != "-").then_some(*proof)))
        }
        _ => None,
    }
}

/// `HERD CONTROL <proof|-> <command>\n`.
pub fn format_control(proof: Option<&str>, command: &ControlCommand<'_>) -> String {
    format!(
        "{PEER_VERB} CONTROL {} {}\n",
        proof.unwrap_or("-"),
        command.text()
    )
}

/// `HERD DONE <json>\n`: the end of the answer to a control command.
pub fn format_done(json: &serde_json::Value) -> String {
    format!("{PEER_VERB} DONE {json}\n")
}

/// Reads a `HERD DONE <json>` line.
pub fn parse_done(line: &str) -> Option<serde_json::Value> {
    let json = line
        .trim()
        .strip_prefix(PEER_VERB)?
        .trim_start()
        .strip_prefix("DONE")?;
    serde_json::from_str(json).ok()
}

/// `HERD FAULT <id|->\n`.
pub fn format_fault(id: Option<&str>) -> String {
    format!("{PEER_VERB} FAULT {}\n", id.unwrap_or("-"))
}

/// A node's own figures, the answer to `HERD STATUS`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeFigures {
    pub name: String,
    pub pid: u32,
    pub clients: usize,
    pub links_up: usize,
    pub links_total: usize,
    pub uptime_ms: u64,
    /// Clients read back from the node's store when it started (absent from older nodes).
    #[serde(default)]
    pub recovered: usize,
    /// Records anti-entropy brought in since start-up.
    #[serde(default)]
    pub synced: u64,
    /// The digest of the herd file the node runs (see `HerdConfig::digest`).
    #[serde(default)]
    pub config: Option<String>,
    /// The store's last write or flush error while it is unhealthy (`None`: healthy, or no
    /// store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_error: Option<String>,
    /// Wire log lines dropped because the log writer fell behind.
    #[serde(default)]
    pub log_dropped: u64,
    /// WHATSATs waiting on the places provider right now (a slow or hung upstream shows here).
    #[serde(default)]
    pub places_waiting: u64,
    /// The node runs without a herd secret (`insecure_open_links: true`).
    #[serde(default)]
    pub open_links: bool,
    /// What neighbours sent that the node refused, by reason (see `node/peer_input.rs`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub peer_dropped: std::collections::BTreeMap<String, u64>,
    /// Upstream requests not sent because the node's budget for a paid places service was
    /// spent (`places.max_requests_per_s`, `places.max_in_flight`): their WHATSATs (and any
    /// identical ones waiting on them) got an over-limit document instead.
    #[serde(default)]
    pub places_refused: u64,
    /// Link faults set on purpose (`herdctl link`): neighbour -> what (`cut`, `delay 100 ms`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub faults: std::collections::BTreeMap<String, String>,
    /// Flooded lines (`HERD AT`) this node wrote to its neighbours since it started.
    #[serde(default)]
    pub floods_sent: u64,
    /// `clients.max`, when the table is bounded (`clients` out of it is the fill).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clients_max: Option<usize>,
    /// Records that expired here since the start (`clients.ttl_s`).
    #[serde(default)]
    pub expired: u64,
    /// Clients forgotten (`herdctl forget`) whose tombstones the node holds now.
    #[serde(default)]
    pub forgotten: usize,
    /// New clients refused since the start because the table was full (`clients.max`).
    #[serde(default)]
    pub refused_full: u64,
    /// Updates the table accepted for the store since start-up (0 without a store).
    #[serde(default)]
    pub store_accepted: u64,
    /// How many of them are on disk, fdatasynced (the store's durable point): equal to
    /// `store_accepted` once everything is durable, whatever the durability mode.
    #[serde(default)]
    pub store_durable: u64,
}

/// `HERD STATUS <json>\n`.
pub fn format_status(figures: &NodeFigures) -> String {
    let json = serde_json::to_string(figures).expect("figures always serialize");
    format!("{PEER_VERB} STATUS {json}\n")
}

/// Reads a `HERD STATUS <json>` answer.
pub fn parse_status(line: &str) -> Option<NodeFigures> {
    let json = line
        .trim()
        .strip_prefix(PEER_VERB)?
        .trim_start()
        .strip_prefix("STATUS")?;
    serde_json::from_str(json).ok()
}

/// `? <line as received>\n`: the answer to anything invalid.
pub fn format_invalid(line: &[u8]) -> Vec<u8> {
    let mut reply = Vec::with_capacity(line.len() + 3);
    push_invalid(&mut reply, line);
    reply
}

/// Appends [`format_invalid`]'s answer to `out` (straight into a connection's reply buffer).
pub fn push_invalid(out: &mut Vec<u8>, line: &[u8]) {
    out.extend_from_slice(b"? ");
    out.extend_from_slice(line);
    out.push(b'\n');
}

/// The WHATSAT reply: the AT line, a newline, the JSON document with every run of two or
/// more newlines collapsed into one and no trailing newline, then two newlines. The rule
/// written out, for tests: a server sends [`push_whatsat_reply`]'s copy of a places
/// document, which has no blank line by construction.
pub fn format_whatsat_reply(at_line: &str, places_json: &str) -> String {
    let mut reply = String::with_capacity(at_line.len() + places_json.len() + 3);
    reply.push_str(at_line);
    reply.push('\n');
    push_collapsed(&mut reply, places_json);
    reply.push_str("\n\n");
    reply
}

/// Appends `text` with every run of two or more newlines collapsed into one and its
/// trailing newlines dropped (the rule for the JSON in a WHATSAT reply).
pub fn push_collapsed(out: &mut String, text: &str) {
    // Copy whole stretches; at each run of newlines keep the first and skip the rest.
    let mut rest = text.trim_end_matches('\n');
    while let Some(run) = rest.find("\n\n") {
        out.push_str(&rest[..=run]);
        rest = rest[run..].trim_start_matches('\n');
    }
    out.push_str(rest);
}

/// Appends the WHATSAT reply for `at_line` and `places` to `out` ([`format_whatsat_reply`]'s
/// bytes) for a document that already keeps the newline rule (no blank line, no trailing
/// newline: what `places::Document` guarantees), so this is three copies.
pub fn push_whatsat_reply(out: &mut Vec<u8>, at_line: &str, places: &str) {
    out.reserve(at_line.len() + places.len() + 3);
    out.extend_from_slice(at_line.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(places.as_bytes());
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn the_word_check_agrees_with_the_byte_check_on_every_byte_in_every_lane() {
        let printable = |b: u8| (0x20..0x7f).contains(&b);
        for lane in 0..8 {
            for b in 0..=255u8 {
                let mut bytes = [b'a'; 8];
                bytes[lane] = b;
                let word = u64::from_le_bytes(bytes);
                assert_eq!(
                    is_printable_ascii(word),
                    printable(b),
                    "byte {b:#x} in lane {lane}"
                );
            }
        }
        // Two lanes at once, so a borrow out of one lane meets another.
        let edges = [
            0x00, 0x09, 0x1f, 0x20, 0x21, 0x7e, 0x7f, 0x80, 0xa0, 0xc2, 0xff,
        ];
        for (i, j) in (0..8).flat_map(|i| (i + 1..8).map(move |j| (i, j))) {
            for (&a, &b) in edges.iter().flat_map(|a| edges.iter().map(move |b| (a, b))) {
                let mut bytes = [b'~'; 8];
                (bytes[i], bytes[j]) = (a, b);
                let word = u64::from_le_bytes(bytes);
                assert_eq!(is_printable_ascii(word), printable(a) && printable(b));
            }
        }
        // A control byte after printable words, and one in the tail that no word covers.
        assert!(has_control("IAMAT kiwi.cs.ucla.edu +34\x01-118 1.5"));
        assert!(has_control("IAMAT kiwi.cs.ucla.edu +34-118 1.5\x1b"));
        assert!(has_control("IAMAT kiwi.cs.ucla.edu +34-118 1.5 \u{85}"));
        assert!(!has_control(
            "IAMAT kiwi.cs.ucla.edu\t+34-118 1.5 caf\u{e9}"
        ));
    }

    pub(crate) const KIWI: &str =
        "IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503";

    /// The IAMAT `line` parses to (the test fails if it is not one).
    pub(crate) fn iamat(line: &str) -> Iamat<'_> {
        match parse_line(line.as_bytes()) {
            Some(Command::Iamat(i)) => i,
            other => panic!("{line:?} should be an IAMAT, got {other:?}"),
        }
    }

    fn whatsat(line: &str) -> Whatsat<'_> {
        match parse_line(line.as_bytes()) {
            Some(Command::Whatsat(w)) => w,
            other => panic!("{line:?} should be a WHATSAT, got {other:?}"),
        }
    }

    fn invalid(line: &str) {
        assert_eq!(
            parse_line(line.as_bytes()),
            None,
            "{line:?} should be invalid"
        );
    }

    #[test]
    fn parses_the_spec_example() {
        let i = iamat(KIWI);
        assert_eq!(i.client, "kiwi.cs.ucla.edu");
        assert_eq!(i.location_text, "+34.068930-118.445127");
        assert_eq!(
            i.location(),
            Location {
                lat: 34.06893,
                lng: -118.445127
            }
        );
        assert_eq!(i.time_text, "1621464827.959498503");
        assert_eq!(
            i.time,
            Timestamp {
                secs: 1621464827,
                nanos: 959498503
            }
        );
    }

    #[test]
    fn skew_is_signed_with_nine_digits() {
        let t = Timestamp {
            secs: 1621464827,
            nanos: 959498503,
        };
        let received = t.as_nanos() + 263_873_386;
        assert_eq!(format_skew(received, t), "+0.263873386");
        assert_eq!(format_skew(t.as_nanos(), t), "+0.000000000");
        assert_eq!(format_skew(t.as_nanos() - 1, t), "-0.000000001");
        assert_eq!(
            format_skew(t.as_nanos() - 12_500_000_000, t),
            "-12.500000000"
        );
        assert_eq!(
            format_skew(t.as_nanos() + 86_400_000_000_007, t),
            "+86400.000000007"
        );
        // Around the 64-bit fast path's edge, and far beyond it, the same as `fmt` writes.
        let zero = Timestamp { secs: 0, nanos: 0 };
        for diff in [
            i128::from(u64::MAX) - 1,
            i128::from(u64::MAX),
            i128::from(u64::MAX) + 1,
            -i128::from(u64::MAX) - 1,
            i128::from(u64::MAX) * 1_000_000_000 + 7,
            -i128::from(u64::MAX) * 1_000_000_000,
        ] {
            let abs = diff.unsigned_abs();
            let sign = if diff < 0 { '-' } else { '+' };
            let expected = format!("{sign}{}.{:09}", abs / 1_000_000_000, abs % 1_000_000_000);
            assert_eq!(format_skew(diff, zero), expected);
        }
    }

    /// The byte-wise control check and field split are the char-wise definitions, for every
    /// character between two others.
    #[test]
    fn byte_checks_agree_with_the_char_definitions() {
        for c in (0..=0x10ffff).filter_map(char::from_u32) {
            let text = format!("a{c}b \u{a0}{c}");
            assert_eq!(
                has_control(&text),
                text.chars()
                    .any(|c| c.is_control() && !is_field_separator(c)),
                "{c:?}"
            );
            let by_chars: Vec<&str> = text
                .split(is_field_separator)
                .filter(|f| !f.is_empty())
                .collect();
            assert_eq!(fields(&text).collect::<Vec<_>>(), by_chars, "{c:?}");
        }
        assert_eq!(fields(" \t a  b\r\n").collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(fields(" ").count(), 0);
    }

    #[test]
    fn timestamps_keep_nanoseconds_and_truncate_beyond() {
        assert_eq!(Timestamp::parse("0"), Some(Timestamp { secs: 0, nanos: 0 }));
        assert_eq!(
            Timestamp::parse("12.5"),
            Some(Timestamp {
                secs: 12,
                nanos: 500_000_000
            })
        );
        assert_eq!(
            Timestamp::parse("1.0000000019"),
            Some(Timestamp { secs: 1, nanos: 1 })
        );
        for bad in [
            "", "-1", "+1", "1.", ".5", "1e9", "inf", "nan", "1.5.6", "１２", "0x10",
        ] {
            assert_eq!(Timestamp::parse(bad), None, "{bad:?}");
        }
        // Overflowing seconds are invalid, not wrapped.
        assert_eq!(Timestamp::parse("99999999999999999999999"), None);
    }

    #[test]
    fn iso6709_edge_cases() {
        let ok = |s: &str| {
            assert!(Location::is_valid(s), "{s:?} should be valid");
            Location::parse(s).unwrap_or_else(|| panic!("{s:?} should parse"))
        };
        assert_eq!(
            ok("+90-180"),
            Location {
                lat: 90.0,
                lng: -180.0
            }
        );
        assert_eq!(
            ok("-90.000+180.0"),
            Location {
                lat: -90.0,
                lng: 180.0
            }
        );
        assert_eq!(ok("+0+0"), Location { lat: 0.0, lng: 0.0 });
        assert_eq!(
            ok("-0.5-0.25"),
            Location {
                lat: -0.5,
                lng: -0.25
            }
        );
        for bad in [
            "",
            "34.068930-118.445127",    // latitude sign is mandatory
            "+34.068930118.445127",    // longitude sign is mandatory
            "+34.068930-118.445127+1", // a third coordinate
            "+90.0001+0",
            "-90.5+0",
            "+0+180.0001",
            "+0-181",
            "+34.-118.4",
            "+.5-118.4",
            "+34.0-118.4e1",
            "+inf-118",
            "+nan+0",
            "++34-118",
            "+34--118",
            "+34,5-118",
            "+999999999999999999999999999999999999-118",
            "+90.00000000000000000001+0",
            "+0-180.000000000000000000000001",
            "+0000000000000000000000000090.1+0",
        ] {
            assert_eq!(Location::parse(bad), None, "{bad:?}");
            assert!(!Location::is_valid(bad), "{bad:?}");
            assert_eq!(parse_line(format!("IAMAT kiwi {bad} 1").as_bytes()), None);
        }
    }

    #[test]
    fn radius_and_bound_limits() {
        assert_eq!(whatsat("WHATSAT kiwi 10 5").radius_km, 10.0);
        assert_eq!(whatsat("WHATSAT kiwi 10.5 5").radius_km, 10.5);
        assert_eq!(whatsat("WHATSAT kiwi 50 20").bound, 20);
        assert_eq!(whatsat("WHATSAT kiwi 0.001 1").bound, 1);
        assert_eq!(whatsat("WHATSAT kiwi 050.0 05").bound, 5);
        for bad in [
            "WHATSAT kiwi 51 5",
            "WHATSAT kiwi 50.0001 5",
            "WHATSAT kiwi 0 5",
            "WHATSAT kiwi 0.0 5",
            "WHATSAT kiwi -1 5",
            "WHATSAT kiwi +10 5",
            "WHATSAT kiwi 10 0",
            "WHATSAT kiwi 10 21",
            "WHATSAT kiwi 10 5.0",
            "WHATSAT kiwi 10 -5",
            "WHATSAT kiwi 1e1 5",
            "WHATSAT kiwi inf 5",
            "WHATSAT kiwi 10 99999999999999999999999999",
            "WHATSAT kiwi 10",
            "WHATSAT kiwi 10 5 extra",
            "WHATSAT kiwi 50.00000000000000000001 5",
            "WHATSAT kiwi 99999999999999999999999999999999 5",
        ] {
            invalid(bad);
        }
    }

    #[test]
    fn white_space_rules() {
        let i = iamat("  IAMAT\tkiwi \x0b +1+2\x0c  3  \r");
        assert_eq!(
            (i.client, i.location_text, i.time_text),
            ("kiwi", "+1+2", "3")
        );
        // Non-ASCII white space is part of a field, not a separator.
        let i = iamat("IAMAT a\u{a0}b +1+2 3");
        assert_eq!(i.client, "a\u{a0}b");
        invalid("IAMAT\u{a0}kiwi +1+2 3");
    }

    #[test]
    fn unicode_client_ids() {
        assert_eq!(iamat("IAMAT 🐑.herd +1+2 3").client, "🐑.herd");
        assert_eq!(whatsat("WHATSAT クライアント 1 1").client, "クライアント");
    }

    #[test]
    fn invalid_lines() {
        for bad in [
            "",
            "   ",
            "iamat kiwi +1+2 3",
            "IAMAT kiwi +1+2",
            "IAMAT kiwi +1+2 3 4",
            "IAMAT kiwi 1+2 3",
            "HELLO",
            "AT Alford +0.1 kiwi +1+2 3",
            "HERD",
            "HERD HELLO",
            "HERD HELLO Alford x",
            "HERD AT Alford 0.1 kiwi +1+2 3",
            "HERD AT Alford +0.1 kiwi +1+2 3",
            "HERD AT Al/ford +0.100000000 kiwi +1+2 3",
        ] {
            invalid(bad);
        }
        assert_eq!(parse_line(b"IAMAT \xff +1+2 3"), None);
        for control in [
            &b"IAMAT ki\0wi +1+2 3"[..],
            b"IAMAT k\x1b[2J +1+2 3",
            b"IAMAT k\x7f +1+2 3",
        ] {
            assert_eq!(parse_line(control), None, "{control:?}");
        }
        assert_eq!(
            parse_line("WHATSAT k\u{85} 1 1".as_bytes()),
            None,
            "C1 control"
        );
        assert_eq!(parse_line(b"HERD WANT +5"), None);
        assert!(AtFields::check("A", "+0.000000000", "", "+1+1", "1").is_none());
        assert!(AtFields::check("A", "+0.000000000", "a b", "+1+1", "1").is_none());
        assert!(AtFields::check("A", "+0.000000000", "a\0", "+1+1", "1").is_none());
        assert!(AtFields::check("A", "0.000000000", "a", "+1+1", "1").is_none());
        assert!(AtFields::check("A", "+0.00000000", "a", "+1+1", "1").is_none());
        assert!(AtFields::check("1A", "+0.000000000", "a", "+1+1", "1").is_none());
        assert_eq!(
            format_invalid(b"WHATSAT kiwi 51 5"),
            b"? WHATSAT kiwi 51 5\n"
        );
    }

    #[test]
    fn peer_messages_round_trip() {
        fn parse(line: &str) -> PeerMessage<'_> {
            match parse_line(line.as_bytes()) {
                Some(Command::Peer(m)) => m,
                other => panic!("{line:?}: {other:?}"),
            }
        }
        let nonce = "0123456789abcdef0123456789abcdef";
        let proof = "ab".repeat(32);
        assert_eq!(
            parse(format_hello("Ball", nonce).trim_end()),
            PeerMessage::Hello {
                server: "Ball",
                version: PEER_PROTOCOL_VERSION,
                nonce
            }
        );
        assert_eq!(
            parse(format_welcome("Welsh", nonce, None).trim_end()),
            PeerMessage::Welcome {
                server: "Welsh",
                version: WELCOME_VERSION,
                nonce,
                proof: None
            }
        );
        assert_eq!(
            parse(format_welcome("Welsh", nonce, Some(&proof)).trim_end()),
            PeerMessage::Welcome {
                server: "Welsh",
                version: WELCOME_VERSION,
                nonce,
                proof: Some(&proof)
            }
        );
        assert_eq!(
            parse(format_auth(&proof).trim_end()),
            PeerMessage::Auth { proof: &proof }
        );
        assert_eq!(
            parse(format_peer_challenge(nonce).trim_end()),
            PeerMessage::Challenge { nonce }
        );
        for bad in [
            "HERD CHALLENGE",
            "HERD CHALLENGE 0123",
            "HERD HELLO Ball 1",
            "HERD HELLO Ball 1 XYZ",
            "HERD AUTH -",
            "HERD AUTH abc",
            "HERD WELCOME Welsh 1 0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(parse_line(bad.as_bytes()), None, "{bad}");
        }
        let at =
            "AT Alford -0.000000005 kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503";
        let fields = parse_at_line(at).unwrap();
        assert_eq!(fields.origin, "Alford");
        assert_eq!(fields.skew, "-0.000000005");
        assert_eq!(fields.client, "kiwi.cs.ucla.edu");
        assert_eq!(fields.location, "+34.068930-118.445127");
        assert_eq!(fields.time_text, "1621464827.959498503");
        assert_eq!(
            parse(format_update(at).trim_end()),
            PeerMessage::Update(fields)
        );
        assert_eq!(parse(format_sync(at).trim_end()), PeerMessage::Sync(fields));
        assert_eq!(parse_at_line(&format!("{at} extra")), None);
        assert_eq!(parse_at_line(&at[1..]), None);
        assert_eq!(parse("HERD STATUS"), PeerMessage::StatusQuery);
        assert_eq!(
            parse(format_ack_request().trim_end()),
            PeerMessage::AckRequest
        );
        assert_eq!(parse(format_ack(0).trim_end()), PeerMessage::Ack(0));
        assert_eq!(
            parse(format_ack(u64::MAX).trim_end()),
            PeerMessage::Ack(u64::MAX)
        );
        for bad in [
            "HERD ACK",
            "HERD ACK -1",
            "HERD ACK +1",
            "HERD ACK 1.0",
            "HERD ACK 0x10",
            "HERD ACK 18446744073709551616",
            "HERD ACK 000000000000000000001",
            "HERD ACK 1 2",
            "HERD ACKS 1",
        ] {
            assert_eq!(parse_line(bad.as_bytes()), None, "{bad}");
        }
        let figures = NodeFigures {
            name: "Ball".into(),
            pid: 7,
            clients: 3,
            links_up: 1,
            links_total: 2,
            uptime_ms: 99,
            recovered: 2,
            synced: 1,
            config: Some("0123456789abcdef".into()),
            store_error: Some("fdatasync: No space left on device".into()),
            log_dropped: 4,
            places_waiting: 2,
            open_links: true,
            peer_dropped: [("future_time".to_owned(), 3)].into(),
            places_refused: 5,
            faults: [("Welsh".to_owned(), "cut".to_owned())].into(),
            floods_sent: 12,
            clients_max: Some(10),
            expired: 6,
            forgotten: 1,
            refused_full: 2,
            store_accepted: 7,
            store_durable: 6,
        };
        assert_eq!(parse_status(&format_status(&figures)), Some(figures));
        // Figures from a node that predates a field still parse.
        let old = r#"HERD STATUS {"name":"A","pid":1,"clients":0,"links_up":0,"links_total":0,"uptime_ms":5}"#;
        assert_eq!(parse_status(old).unwrap().synced, 0);

        let digest: Vec<u64> = (0..DIGEST_BUCKETS as u64)
            .map(|i| i.wrapping_mul(0x9e3779b97f4a7c15))
            .collect();
        assert_eq!(
            parse(format_digest(&digest).trim_end()),
            PeerMessage::Digest(digest.clone(), None)
        );
        for horizons in [(1_700_000_000, -5), (i64::MIN, 1_699_000_000)] {
            assert_eq!(
                parse(format_digest_at(&digest, horizons).trim_end()),
                PeerMessage::Digest(digest.clone(), Some(horizons))
            );
        }
        let bad = format_digest(&digest).trim_end().to_owned();
        for tail in [" 5", " 5/", " +5/6", " a/b", " 5/6/7"] {
            assert_eq!(
                parse_line(format!("{bad}{tail}").as_bytes()),
                None,
                "{tail}"
            );
        }
        assert_eq!(
            parse(format_want(&[]).trim_end()),
            PeerMessage::Want(vec![])
        );
        assert_eq!(
            parse(format_want(&[3, 1023]).trim_end()),
            PeerMessage::Want(vec![3, 1023])
        );
        assert_eq!(parse_line(b"HERD WANT 1024"), None);
        assert_eq!(parse_line(b"HERD WANT 1,,2"), None);
        assert_eq!(
            parse_line(b"HERD DIGEST 2 00000000000000010000000000000002"),
            None
        );
    }

    #[test]
    fn whatsat_reply_collapses_newlines() {
        let reply = format_whatsat_reply("AT x", "{\n\n\n  \"a\": 1\n}\n\n");
        assert_eq!(reply, "AT x\n{\n  \"a\": 1\n}\n\n");
        assert_eq!(format_whatsat_reply("AT x", "{}"), "AT x\n{}\n\n");
        assert_eq!(
            format_whatsat_reply("AT x", "\n\na\n\n\nb\nc\n\nd"),
            "AT x\n\na\nb\nc\nd\n\n"
        );
    }

    #[test]
    fn server_names() {
        for ok in ["Alford", "a", "node-1", "B_2"] {
            assert!(is_valid_server_name(ok), "{ok}");
        }
        for bad in ["", "1a", "-a", "a b", "Ålford", "a/b", "a.b"] {
            assert!(!is_valid_server_name(bad), "{bad}");
        }
    }

    #[test]
    fn control_commands_parse_only_in_their_shape() {
        let proof = "ab".repeat(32);
        let control =
            |text: &str| match parse_line(format!("HERD CONTROL {proof} {text}").as_bytes()) {
                Some(Command::Peer(PeerMessage::Control { command, .. })) => Some(command.text()),
                _ => None,
            };
        for good in [
            "DIGEST",
            "RECORDS 1,2,1023",
            "CUT Ball 0f",
            "DELAY Ball 100 20 0f",
            "LOSS Ball 30 0f",
            "HEAL Ball",
            "HEAL *",
        ] {
            assert_eq!(control(good).as_deref(), Some(good));
        }
        for bad in [
            "DIGEST x",
            "RECORDS 1024",
            "CUT 9ball 0f",
            "CUT Ball XYZ",
            "DELAY Ball 100 200 0f",
            "DELAY Ball 60001 0 0f",
            "DELAY Ball +1 0 0f",
            "LOSS Ball 101 0f",
            "HEAL",
            "SHUTDOWN",
        ] {
            assert_eq!(control(bad), None, "{bad}");
        }
        assert!(matches!(
            parse_line(b"HERD CONTROL - DIGEST"),
            Some(Command::Peer(PeerMessage::Control { proof: None, .. }))
        ));
        assert_eq!(parse_line(b"HERD CONTROL x DIGEST"), None);
        assert_eq!(parse_line(b"HERD OPERATOR short"), None);
        assert_eq!(
            parse_line(b"HERD FAULT -"),
            Some(Command::Peer(PeerMessage::Fault(None)))
        );
        assert_eq!(parse_line(b"HERD FAULT 0G"), None);
        let challenge = format_challenge("Ball", &"0".repeat(32), None);
        assert_eq!(
            parse_challenge(&challenge),
            Some(("Ball", "0".repeat(32).as_str(), None))
        );
    }
}

#[cfg(test)]
mod skew_tests {
    use super::skew_nanos;

    #[test]
    fn skews_read_back_in_nanoseconds() {
        assert_eq!(skew_nanos("+0.263873386"), Some(263_873_386));
        assert_eq!(skew_nanos("-2.000000001"), Some(-2_000_000_001));
        assert_eq!(skew_nanos("0.1"), None);
        assert_eq!(skew_nanos("+1.5"), None);
        // Past u64's seconds, still read exactly.
        assert_eq!(
            skew_nanos("-100000000000000000000.000000007"),
            Some(-(100_000_000_000_000_000_000 * 1_000_000_000 + 7))
        );
    }
}

#[cfg(test)]
mod client_hint_tests {
    use super::{client_hint, parse_line, Command, PeerMessage};

    #[test]
    fn the_hint_is_the_client_a_valid_line_updates() {
        let iamat = b"IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503";
        let at = b"HERD AT Alford +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503";
        assert_eq!(client_hint(iamat), Some("kiwi.cs.ucla.edu"));
        assert_eq!(client_hint(at), Some("kiwi.cs.ucla.edu"));
        assert_eq!(
            client_hint(b"WHATSAT kiwi.cs.ucla.edu 10 5"),
            Some("kiwi.cs.ucla.edu")
        );
        // What the full parse finds, for the lines it accepts.
        match parse_line(iamat) {
            Some(Command::Iamat(iamat)) => assert_eq!(iamat.client, "kiwi.cs.ucla.edu"),
            other => panic!("{other:?}"),
        }
        match parse_line(at) {
            Some(Command::Peer(PeerMessage::Update(f))) => assert_eq!(f.client, "kiwi.cs.ucla.edu"),
            other => panic!("{other:?}"),
        }
        // Only the first of several buffered lines is read.
        assert_eq!(client_hint(b"IAMAT a +1+1 1\nIAMAT b +1+1 1\n"), Some("a"));
    }

    #[test]
    fn lines_that_update_no_client_give_no_hint() {
        for line in [
            &b"WHATSAT kiwi"[..],
            b"IAMAT",
            b"IAMAT ",
            b"IAMAT kiwi",
            b"IAMAT kiwi\nIAMAT b +1+1 1",
            b"HERD AT Alford +0.1",
            b"HERD AT Alford +0.1 kiwi",
            b"HERD SYNC Alford +0.1 kiwi +1+1 1",
            b"IAMAT \xff\xfe +1+1 1",
            b"",
        ] {
            assert_eq!(
                client_hint(line),
                None,
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }
}
