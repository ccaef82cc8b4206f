//! How a wire line is written into a log: escaped so it is one event that cannot forge
//! another or drive a terminal, and capped at `logs.max_line_bytes`.

use std::io::Write as _;

/// Appends a line of wire traffic as it goes into a log: the text verbatim, except that bytes
/// that are not valid UTF-8 and control characters (other than tabs; a newline inside a
/// multi-line reply as `\n`) are escaped, so a log line is one event and can never forge another or drive a terminal;
/// trailing newlines dropped. At most `cap` bytes of it are written: a longer one is cut and
/// ends `... (<n> bytes)`, n being its real length (`total`, or the text's own).
///
/// Wire text is almost all printable ASCII (a WHATSAT reply is kilobytes of it), so runs of
/// such bytes are found a word at a time and copied whole; only the stretches between them
/// (control bytes, non-ASCII text, invalid UTF-8) are decoded. A stretch starts and ends next
/// to an ASCII byte, which no UTF-8 sequence spans, so decoding it alone finds the same
/// characters and invalid bytes as decoding the whole text.
pub fn push_capped(out: &mut Vec<u8>, text: &[u8], total: Option<usize>, cap: usize) {
    let mut text = text;
    while let [rest @ .., b'\n'] = text {
        text = rest;
    }
    let total = total.unwrap_or(text.len());
    let mut line = CappedLine {
        start: out.len(),
        cap,
        cut: total > text.len(),
    };
    let mut rest = text;
    while !rest.is_empty() {
        // No need to look further than the room left: a longer run is cut there anyway.
        let room = line.room(out);
        let scan = &rest[..rest.len().min(room.saturating_add(1))];
        let plain = plain_prefix(scan);
        if plain > room {
            out.extend_from_slice(&rest[..room]);
            line.cut = true;
            break;
        }
        out.extend_from_slice(&rest[..plain]);
        rest = &rest[plain..];
        let other = rest.iter().position(|&b| is_plain(b)).unwrap_or(rest.len());
        if !line.push_decoded(out, &rest[..other]) {
            break;
        }
        rest = &rest[other..];
    }
    if line.cut {
        let _ = write!(out, "... ({total} bytes)");
    }
}

/// Printable ASCII or a tab: a byte a log line keeps as it is.
#[inline]
fn is_plain(b: u8) -> bool {
    (b.wrapping_sub(0x20) < 0x5f) | (b == b'\t')
}

/// How a control character is written into a log line: a newline as `\n` (a multi-line
/// reply stays one log event per line; `herdctl tail` shows it as lines again unless
/// `--raw`), any other as `\u{..}`.
fn escape_control(c: char) -> String {
    match c {
        '\n' => "\\n".to_owned(),
        c => format!("\\u{{{:x}}}", c as u32),
    }
}

/// How many bytes at the start of `bytes` are [`is_plain`]. Whole blocks are checked
/// without an early exit, which the compiler turns into vector instructions.
fn plain_prefix(bytes: &[u8]) -> usize {
    const BLOCK: usize = 32;
    let mut at = 0;
    for block in bytes.chunks_exact(BLOCK) {
        if !block.iter().fold(true, |all, &b| all & is_plain(b)) {
            break;
        }
        at += BLOCK;
    }
    at + bytes[at..]
        .iter()
        .position(|&b| !is_plain(b))
        .unwrap_or(bytes.len() - at)
}

/// A log line being written by [`push_capped`]: where it starts in the buffer, its cap, and
/// whether it has been cut.
struct CappedLine {
    start: usize,
    cap: usize,
    cut: bool,
}

impl CappedLine {
    fn room(&self, out: &[u8]) -> usize {
        self.cap.saturating_sub(out.len() - self.start)
    }

    /// Appends `piece` unless it would take the line past the cap (then records the cut).
    fn fits(&mut self, out: &mut Vec<u8>, piece: &[u8]) -> bool {
        if out.len() - self.start + piece.len() > self.cap {
            self.cut = true;
            return false;
        }
        out.extend_from_slice(piece);
        true
    }

    /// Appends a stretch with no plain ASCII in it (other than what decoding keeps): its
    /// characters, with control characters as `\u{..}` and invalid bytes as `\x..`. False
    /// once the line is cut.
    fn push_decoded(&mut self, out: &mut Vec<u8>, text: &[u8]) -> bool {
        for chunk in text.utf8_chunks() {
            let mut rest = chunk.valid();
            while !rest.is_empty() {
                // Copy the stretch up to the next character to escape in one go.
                let (run, escaped) = match rest
                    .char_indices()
                    .find(|&(_, c)| c.is_control() && c != '\t')
                {
                    Some((at, c)) => (&rest[..at], Some(c)),
                    None => (rest, None),
                };
                let room = self.room(out);
                if run.len() > room {
                    let mut end = room;
                    while !run.is_char_boundary(end) {
                        end -= 1;
                    }
                    out.extend_from_slice(&run.as_bytes()[..end]);
                    self.cut = true;
                    return false;
                }
                out.extend_from_slice(run.as_bytes());
                rest = &rest[run.len()..];
                if let Some(c) = escaped {
                    if !self.fits(out, escape_control(c).as_bytes()) {
                        return false;
                    }
                    rest = &rest[c.len_utf8()..];
                }
            }
            for &b in chunk.invalid() {
                if !self.fits(out, format!("\\x{b:02x}").as_bytes()) {
                    return false;
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`push_capped`] as it was before its byte-level fast path (the proptest's reference).
    /// Appends a line of wire traffic as it goes into a log: the text verbatim, except that bytes
    /// that are not valid UTF-8 and control characters (other than newlines inside a multi-line
    /// reply, and tabs) are escaped, so a log line can never forge another or drive a terminal;
    /// trailing newlines dropped. At most `cap` bytes of it are written: a longer one is cut and
    /// ends `... (<n> bytes)`, n being its real length (`total`, or the text's own).
    fn push_capped_reference(out: &mut Vec<u8>, text: &[u8], total: Option<usize>, cap: usize) {
        let mut text = text;
        while let [rest @ .., b'\n'] = text {
            text = rest;
        }
        let total = total.unwrap_or(text.len());
        let clean_ascii = text
            .iter()
            .all(|&b| (0x20..0x7f).contains(&b) || b == b'\t');
        if clean_ascii && text.len() <= cap && total == text.len() {
            out.extend_from_slice(text);
            return;
        }
        let start = out.len();
        let mut cut = total > text.len();
        // Appends `piece` unless it would take the line past the cap (then records the cut).
        let mut fits = |out: &mut Vec<u8>, piece: &[u8]| -> bool {
            if out.len() - start + piece.len() > cap {
                cut = true;
                return false;
            }
            out.extend_from_slice(piece);
            true
        };
        'text: for chunk in text.utf8_chunks() {
            let mut rest = chunk.valid();
            while !rest.is_empty() {
                // Copy the stretch up to the next character to escape in one go.
                let (run, escaped) = match rest
                    .char_indices()
                    .find(|&(_, c)| c.is_control() && c != '\t')
                {
                    Some((at, c)) => (&rest[..at], Some(c)),
                    None => (rest, None),
                };
                let room = cap.saturating_sub(out.len() - start);
                if run.len() > room {
                    let mut end = room;
                    while !run.is_char_boundary(end) {
                        end -= 1;
                    }
                    out.extend_from_slice(&run.as_bytes()[..end]);
                    cut = true;
                    break 'text;
                }
                out.extend_from_slice(run.as_bytes());
                rest = &rest[run.len()..];
                if let Some(c) = escaped {
                    if !fits(out, escape_control(c).as_bytes()) {
                        break 'text;
                    }
                    rest = &rest[c.len_utf8()..];
                }
            }
            for &b in chunk.invalid() {
                if !fits(out, format!("\\x{b:02x}").as_bytes()) {
                    break 'text;
                }
            }
        }
        if cut {
            let _ = write!(out, "... ({total} bytes)");
        }
    }

    /// Bytes that exercise every path: plain ASCII, newlines and tabs, control bytes, DEL,
    /// C1 controls, multi-byte characters (whole and split), invalid and truncated sequences.
    fn wire_bytes() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let piece = prop_oneof![
            4 => proptest::collection::vec(0x20u8..0x7f, 0..80),
            2 => Just(b"\n".to_vec()),
            1 => Just(b"\t".to_vec()),
            2 => any::<u8>().prop_map(|b| vec![b]),
            1 => (0u8..0x20).prop_map(|b| vec![b]),
            1 => Just(vec![0x7f]),
            1 => Just("\u{85}\u{9f}".as_bytes().to_vec()),
            2 => any::<char>().prop_map(|c| c.to_string().into_bytes()),
            1 => Just("é中🦀".as_bytes().to_vec()),
            1 => Just(vec![0xe2, 0x82]),
            1 => Just(vec![0xf0, 0x9f, 0xa6]),
            1 => Just(vec![0xed, 0xa0, 0x80]),
        ];
        proptest::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        #[test]
        fn the_fast_path_writes_what_the_reference_writes(
            text in wire_bytes(),
            cap in proptest::prop_oneof![0usize..40, 0usize..4000, proptest::strategy::Just(usize::MAX)],
            extra in proptest::option::of(0usize..1000),
            prefix in proptest::collection::vec(0x20u8..0x7f, 0..8),
        ) {
            let total = extra.map(|e| text.len() + e);
            let (mut fast, mut reference) = (prefix.clone(), prefix);
            push_capped(&mut fast, &text, total, cap);
            push_capped_reference(&mut reference, &text, total, cap);
            proptest::prop_assert_eq!(
                String::from_utf8_lossy(&fast),
                String::from_utf8_lossy(&reference)
            );
            proptest::prop_assert_eq!(fast, reference);
        }

        #[test]
        fn arbitrary_bytes_are_written_as_the_reference_writes_them(
            text in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            cap in 0usize..400,
        ) {
            let (mut fast, mut reference) = (Vec::new(), Vec::new());
            push_capped(&mut fast, &text, None, cap);
            push_capped_reference(&mut reference, &text, None, cap);
            proptest::prop_assert_eq!(fast, reference);
        }
    }

    fn capped(text: &[u8], total: Option<usize>, cap: usize) -> String {
        let mut out = Vec::new();
        push_capped(&mut out, text, total, cap);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn lines_are_escaped_like_printable() {
        for text in [
            &b"IAMAT kiwi +1+2 3"[..],
            "AT x\n{\n}\n\n".as_bytes(),
            "üñí\tcode".as_bytes(),
            b"a\x00b\x1b[31m\r",
            b"bad \xff\xfe",
        ] {
            assert_eq!(capped(text, None, 1000), super::super::printable(text));
        }
    }

    #[test]
    fn long_lines_are_cut_with_their_length() {
        assert_eq!(capped(b"0123456789", None, 10), "0123456789");
        assert_eq!(capped(b"0123456789\n", None, 4), "0123... (10 bytes)");
        assert_eq!(
            capped(b"0123", Some(1_000_000), 100),
            "0123... (1000000 bytes)"
        );
        // Escapes count in the cap and are never split.
        assert_eq!(capped(b"ab\x1bcd", None, 6), "ab... (5 bytes)");
        assert_eq!(capped("ééé".as_bytes(), None, 3), "é... (6 bytes)");
        // A hostile line costs at most the cap, however it escapes.
        let hostile = vec![0x1b; 100_000];
        assert!(capped(&hostile, None, 4096).len() < 4096 + 32);
    }
}
