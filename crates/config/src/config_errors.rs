//! Turning what the YAML parser and the file system say about a herd file into one line
//! in the herd's words: the field, the value, and the fix (not a library's advice).

use std::path::Path;

use anyhow::{bail, Result};

/// The herd file's text. A missing file says how to point herdctl at one; a file that is
/// there but not UTF-8 says where the first bad byte is.
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "cannot read {}: no such file; pass --config PATH or set HERD_CONFIG to your herd.yaml",
            path.display()
        ),
        Err(e) => bail!("cannot read {}: {e}", path.display()),
    };
    String::from_utf8(bytes).or_else(|e| {
        let offset = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..offset]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1;
        bail!(
            "{} is not UTF-8 text: byte offset {offset} (line {line}) is not valid UTF-8; save \
             the file as UTF-8",
            path.display()
        )
    })
}

/// The parser's `message` for an error at `line`/`column` (1-based) of `text`, said in
/// terms of the field it is about when the parser's own words do not name it.
pub fn explain(message: &str, text: &str, line: usize, column: usize) -> String {
    if let Some(rest) = message.strip_prefix("duplicate mapping key") {
        let key = rest
            .strip_prefix(": ")
            .and_then(|r| r.split(", set DuplicateKeyPolicy").next())
            .unwrap_or("a key");
        return format!(
            "{key} appears twice in the same section (a server or setting written twice); \
             keep one of them"
        );
    }
    let (key, value) = field_at(text, line, column);
    let key = key.unwrap_or_else(|| "this value".to_owned());
    if is_bad_whole_number(message) {
        let value = value.map(|v| format!(" {v}")).unwrap_or_default();
        let example = match key.as_str() {
            "port" => "a port number 1-65535",
            _ => "a whole number of 0 or more, e.g. 100",
        };
        return format!("{key} has{value}, which is not a whole number; use {example}");
    }
    if message.starts_with("expected sequence start") {
        return match key.as_str() {
            "peers" => "peers must be a list of server names, e.g. peers: [Ball, Welsh]".into(),
            _ => format!("{key} must be a list, e.g. {key}: [a, b]"),
        };
    }
    if message.starts_with("expected mapping start") {
        return format!("{key} must be a mapping of settings, e.g. {key}: {{ name: value }}");
    }
    message.to_owned()
}

/// `invalid u32`, `invalid usize`, ...: serde's words for a number that did not parse.
fn is_bad_whole_number(message: &str) -> bool {
    let Some(kind) = message.strip_prefix("invalid ") else {
        return false;
    };
    let kind = kind.split_whitespace().next().unwrap_or_default();
    kind.len() > 1
        && (kind.starts_with('u') || kind.starts_with('i'))
        && (kind[1..].chars().all(|c| c.is_ascii_digit()) || kind[1..] == *"size")
}

/// The key a value at `line`/`column` belongs to (`port` in `{ port: -1 }`, or the key of
/// an earlier line ending in `:`), and the value's text as written.
fn field_at(text: &str, line: usize, column: usize) -> (Option<String>, Option<String>) {
    let lines: Vec<&str> = text.lines().collect();
    let Some(here) = line.checked_sub(1).and_then(|i| lines.get(i)) else {
        return (None, None);
    };
    let chars: Vec<char> = here.chars().collect();
    let at = column.saturating_sub(1).min(chars.len());
    let before: String = chars[..at].iter().collect();
    let value: String = chars[at..]
        .iter()
        .take_while(|c| !matches!(c, ',' | '}' | ']' | '#'))
        .collect();
    let value = Some(value.trim().to_owned()).filter(|v| !v.is_empty());
    let key = key_ending(&before).or_else(|| {
        // A value on its own line: the key is the nearest earlier line ending in `key:`.
        lines[..line - 1]
            .iter()
            .rev()
            .map(|l| l.split('#').next().unwrap_or_default())
            .find(|l| !l.trim().is_empty())
            .and_then(key_ending)
    });
    (key, value)
}

/// `port` from text ending in `port:` (white space allowed around the colon).
fn key_ending(text: &str) -> Option<String> {
    let before_colon = text.trim_end().strip_suffix(':')?.trim_end();
    let key: String = before_colon
        .chars()
        .rev()
        .take_while(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '"' | '\''))
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let key = key.trim_matches(|c| c == '"' || c == '\'').to_owned();
    (!key.is_empty()).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_number_names_its_field_and_value() {
        let text = "servers:\n  Alford: { port: \"12000x\" }\n";
        let said = explain("invalid u32", text, 2, 19);
        assert_eq!(
            said,
            "port has \"12000x\", which is not a whole number; use a port number 1-65535"
        );
        let text = "limits:\n  max_connections:\n    -3\n";
        let said = explain("invalid usize", text, 3, 5);
        assert!(said.starts_with("max_connections has -3,"), "{said}");
    }

    #[test]
    fn a_list_written_as_a_word_says_how_to_write_a_list() {
        let text = "servers:\n  A: { port: 1, peers: Ball }\n";
        assert_eq!(
            explain("expected sequence start", text, 2, 24),
            "peers must be a list of server names, e.g. peers: [Ball, Welsh]"
        );
    }

    #[test]
    fn a_duplicate_key_is_said_without_the_librarys_advice() {
        let said = explain(
            "duplicate mapping key: Alford, set DuplicateKeyPolicy in Options if acceptable",
            "",
            3,
            3,
        );
        assert!(said.starts_with("Alford appears twice"), "{said}");
        assert!(!said.contains("DuplicateKeyPolicy"), "{said}");
    }

    #[test]
    fn other_messages_pass_through() {
        assert_eq!(
            explain("unknown field `x`", "a: 1\n", 1, 1),
            "unknown field `x`"
        );
    }
}
