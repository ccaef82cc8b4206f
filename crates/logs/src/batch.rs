//! Wire lines formatted into one buffer for one hand-over to the writer.

use std::ops::Range;
use std::sync::Arc;

use super::escape::push_capped;
use super::redact::Redactor;
use herd_wire::clock::push_timestamp;

/// Wire lines formatted for one hand-over to the writer.
pub struct LogBatch {
    pub(crate) bytes: Vec<u8>,
    pub(crate) lines: u64,
    max_line_bytes: usize,
    pub(crate) redactor: Option<Arc<Redactor>>,
}

impl LogBatch {
    pub(crate) fn new(max_line_bytes: usize, redactor: Option<Arc<Redactor>>) -> LogBatch {
        LogBatch {
            bytes: Vec::new(),
            lines: 0,
            max_line_bytes,
            redactor,
        }
    }

    /// Appends one wire line: `<timestamp>  INFO <who> <arrow> <text>`, the text escaped (see
    /// [`push_capped`]) and capped. `total` is the text's real length when `text` is only its
    /// start (an over-long line). Returns where the line sits in the batch.
    pub fn line(
        &mut self,
        at_nanos: i128,
        who: &str,
        arrow: &str,
        text: &[u8],
        total: Option<usize>,
    ) -> Range<usize> {
        let start = self.bytes.len();
        push_timestamp(&mut self.bytes, at_nanos);
        self.bytes.extend_from_slice(b"  INFO ");
        self.bytes.extend_from_slice(who.as_bytes());
        self.bytes.push(b' ');
        self.bytes.extend_from_slice(arrow.as_bytes());
        self.bytes.push(b' ');
        let redacted;
        let text = match &self.redactor {
            Some(redactor) => {
                redacted = redactor.text(text);
                &redacted[..]
            }
            None => text,
        };
        push_capped(&mut self.bytes, text, total, self.max_line_bytes);
        self.bytes.push(b'\n');
        self.lines += 1;
        start..self.bytes.len()
    }

    /// Replaces the lines at `ranges` (ascending, from [`LogBatch::line`]) with `lines`.
    pub fn replace(&mut self, ranges: &[Range<usize>], lines: &[Vec<u8>]) {
        let mut rebuilt = Vec::with_capacity(self.bytes.len());
        let mut from = 0;
        for (range, line) in ranges.iter().zip(lines) {
            rebuilt.extend_from_slice(&self.bytes[from..range.start]);
            rebuilt.extend_from_slice(line);
            from = range.end;
        }
        rebuilt.extend_from_slice(&self.bytes[from..]);
        self.bytes = rebuilt;
    }

    /// A line formatted apart from the batch (to go into it with [`LogBatch::replace`]).
    pub fn format_line(&self, at_nanos: i128, who: &str, arrow: &str, text: &[u8]) -> Vec<u8> {
        let mut single = LogBatch::new(self.max_line_bytes, self.redactor.clone());
        single.line(at_nanos, who, arrow, text, None);
        single.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The formatted lines (for tests).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

#[cfg(test)]
mod tests {
    use crate::WireLog;

    #[test]
    fn a_batch_formats_lines_like_tracing_and_can_replace_them() {
        let log = WireLog::discard();
        let mut batch = log.batch();
        let at = 1_621_464_827_959_498_503;
        batch.line(at, "127.0.0.1:5", "<", b"IAMAT x", None);
        let reply = batch.line(at, "127.0.0.1:5", ">", b"AT y\n", None);
        assert_eq!(
            String::from_utf8_lossy(batch.as_bytes()),
            "2021-05-19T22:53:47.959498Z  INFO 127.0.0.1:5 < IAMAT x\n\
             2021-05-19T22:53:47.959498Z  INFO 127.0.0.1:5 > AT y\n"
        );
        let refused = batch.format_line(at, "127.0.0.1:5", ">", b"? IAMAT x");
        batch.replace(&[reply], &[refused]);
        assert!(String::from_utf8_lossy(batch.as_bytes()).ends_with("> ? IAMAT x\n"));
        // Submitting to a log without a writer neither blocks nor fails.
        log.submit(&mut batch);
        assert!(batch.is_empty());
        assert_eq!(log.dropped(), 0);
    }
}
