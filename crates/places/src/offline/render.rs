//! The offline provider's documents written straight to their wire text: the exact bytes
//! serde_json's pretty printer writes for them (two-space indent, fields in alphabetical
//! order, serde_json's own string escapes and float formatting), without going through its
//! serializer: the shape is fixed, so every key, bracket and indent between two values is one
//! constant copied at once, and a value that is several strings (a vicinity) is escaped piece
//! by piece instead of being built first. `reference.rs` checks the bytes against
//! `serde_json::to_string_pretty` of the same document built as a `serde_json::Value`.

use serde_json::ser::{CompactFormatter, Formatter as _};

use super::super::Document;

/// A string value in a result, written escaped without being built first.
pub(super) trait JsonText {
    /// Appends the string's JSON-escaped contents (no quotes).
    fn push_escaped(&self, out: &mut String);
}

impl JsonText for &str {
    fn push_escaped(&self, out: &mut String) {
        push_escaped(out, self);
    }
}

impl JsonText for String {
    fn push_escaped(&self, out: &mut String) {
        push_escaped(out, self);
    }
}

/// One result object: `geometry.location`, `name`, `place_id`, `types`, `vicinity`.
pub(super) struct PlaceResult<'a, Id, Type, Vicinity> {
    pub(super) lat: f64,
    pub(super) lng: f64,
    pub(super) name: &'a str,
    pub(super) place_id: Id,
    pub(super) types: &'a [Type],
    pub(super) vicinity: Vicinity,
}

/// The bytes a rendered result takes, about (a GeoNames one is ~320): enough that a full
/// page is written without its buffer growing.
const RESULT_BYTES: usize = 400;

/// The document for `results` (nearest first, already cut to the bound): status OK, or
/// ZERO_RESULTS when empty.
pub(super) fn nearby<Id, Type, Vicinity>(
    results: &[PlaceResult<'_, Id, Type, Vicinity>],
) -> Document
where
    Id: JsonText,
    Type: AsRef<str>,
    Vicinity: JsonText,
{
    let mut out = String::with_capacity(128 + results.len() * RESULT_BYTES);
    out.push_str("{\n  \"html_attributions\": [],\n  \"results\": [");
    if results.is_empty() {
        out.push_str("],\n  \"status\": \"ZERO_RESULTS\"\n}");
        return Document::rendered(out);
    }
    for (i, result) in results.iter().enumerate() {
        out.push_str(if i == 0 { "\n    {\n" } else { ",\n    {\n" });
        out.push_str("      \"geometry\": {\n        \"location\": {\n          \"lat\": ");
        push_f64(&mut out, result.lat);
        out.push_str(",\n          \"lng\": ");
        push_f64(&mut out, result.lng);
        out.push_str("\n        }\n      },\n      \"name\": ");
        push_string(&mut out, &result.name);
        out.push_str(",\n      \"place_id\": ");
        push_string(&mut out, &result.place_id);
        out.push_str(",\n      \"types\": [");
        for (j, kind) in result.types.iter().enumerate() {
            out.push_str(if j == 0 { "\n        " } else { ",\n        " });
            push_string(&mut out, &kind.as_ref());
        }
        if !result.types.is_empty() {
            out.push_str("\n      ");
        }
        out.push_str("],\n      \"vicinity\": ");
        push_string(&mut out, &result.vicinity);
        out.push_str("\n    }");
    }
    out.push_str("\n  ],\n  \"status\": \"OK\"\n}");
    Document::rendered(out)
}

/// The document of a query that cannot be answered: status INVALID_REQUEST and why.
pub(super) fn invalid_request(message: &str) -> Document {
    let mut out = String::with_capacity(128 + message.len());
    out.push_str("{\n  \"error_message\": ");
    push_string(&mut out, &message);
    out.push_str(
        ",\n  \"html_attributions\": [],\n  \"results\": [],\n  \"status\": \"INVALID_REQUEST\"\n}",
    );
    Document::rendered(out)
}

/// Appends `text` as a JSON string.
fn push_string(out: &mut String, text: &impl JsonText) {
    out.push('"');
    text.push_escaped(out);
    out.push('"');
}

/// Appends the JSON escape of `text` (no quotes) as serde_json writes it: `\"`, `\\`, the
/// short escapes for backspace, tab, newline, form feed and carriage return, `\u00xx` (lower
/// case) for the other control bytes; everything else as it is.
pub(super) fn push_escaped(out: &mut String, text: &str) {
    let mut run = 0;
    for (at, byte) in text.bytes().enumerate() {
        let short = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            b'\t' => "\\t",
            b'\n' => "\\n",
            0x0c => "\\f",
            b'\r' => "\\r",
            0x00..=0x1f => "",
            _ => continue,
        };
        // Escaped bytes are ASCII, so `run..at` lies on char boundaries.
        out.push_str(&text[run..at]);
        run = at + 1;
        if short.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        } else {
            out.push_str(short);
        }
    }
    out.push_str(&text[run..]);
}

/// Appends a finite `value` as serde_json writes a float (its own formatter, so the digits
/// are the same: the shortest that read back to `value`).
fn push_f64(out: &mut String, value: f64) {
    let mut buffer = [0u8; 32];
    let mut free = &mut buffer[..];
    // 32 bytes hold any f64 (at most 24 characters), so neither of these fails.
    if CompactFormatter.write_f64(&mut free, value).is_ok() {
        let written = 32 - free.len();
        if let Ok(digits) = std::str::from_utf8(&buffer[..written]) {
            out.push_str(digits);
        }
    }
}
