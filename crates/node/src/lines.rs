//! Reading protocol lines from a byte stream, with a bound on line length so one client
//! cannot make a node hold unbounded memory.

use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

/// The longest line a node buffers unless `limits.max_line_bytes` says otherwise, and the
/// bound on lines from a neighbour's link (a digest is a 16 KiB line). A longer line is
/// answered with a truncated copy.
pub const MAX_LINE_BYTES: usize = herd_config::config::DEFAULT_MAX_LINE_BYTES;

/// One line as read from the wire.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A complete line, without its `\n` or `\r\n`. The last line before EOF may lack a
    /// terminator; it is still a line.
    Complete(Vec<u8>),
    /// A line longer than the limit: its first `max` bytes, and its whole length (without
    /// the terminator); the rest was discarded as it arrived, so an endless line costs no
    /// more memory than `max`.
    TooLong(Vec<u8>, usize),
}

/// Writes `bytes`, giving up (an error: the caller drops the connection) if the other end
/// does not take them within `timeout`, so a reader that stalls cannot pin a task, its
/// replies or a link's queue.
pub async fn write_within<W: AsyncWrite + Unpin>(
    writer: &mut W,
    bytes: &[u8],
    timeout: Duration,
) -> anyhow::Result<()> {
    tokio::time::timeout(timeout, writer.write_all(bytes))
        .await
        .map_err(|_| {
            anyhow::anyhow!("the other end took nothing for {} ms", timeout.as_millis())
        })??;
    Ok(())
}

/// Reads the next line; `Ok(None)` at EOF with nothing pending.
pub async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> std::io::Result<Option<Line>> {
    let mut line = Vec::new();
    let mut overflowed = false;
    let mut length = 0;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            // EOF: a final line without newline still counts.
            return Ok(match (line.is_empty() && !overflowed, overflowed) {
                (true, _) => None,
                (false, true) => Some(Line::TooLong(line, length)),
                (false, false) => Some(Line::Complete(strip_cr(line))),
            });
        }
        let (chunk, found_newline) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], Some(i + 1)),
            None => (available, None),
        };
        length += chunk.len();
        let room = max.saturating_sub(line.len());
        if chunk.len() > room {
            overflowed = true;
        }
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let consumed = found_newline.unwrap_or(available.len());
        reader.consume(consumed);
        if found_newline.is_some() {
            return Ok(Some(if overflowed {
                Line::TooLong(line, length)
            } else {
                Line::Complete(strip_cr(line))
            }));
        }
    }
}

/// Takes the next line into `line` (its old content dropped) if the whole of it is already
/// in `reader`'s buffer, as pipelined lines are: no read, so no deadline to set (a clock read
/// and a timer per line cost more than parsing it), and no allocation. False when the buffer
/// holds no whole line, or only one longer than `max` ([`read_line`] takes those).
pub fn take_buffered_line<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    max: usize,
    line: &mut Vec<u8>,
) -> bool {
    let buffer = reader.buffer();
    let Some(end) = memchr::memchr(b'\n', buffer) else {
        return false;
    };
    if end > max {
        return false;
    }
    line.clear();
    line.extend_from_slice(&buffer[..end]);
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    reader.consume(end + 1);
    true
}

/// `\r\n` is accepted as a terminator.
fn strip_cr(mut line: Vec<u8>) -> Vec<u8> {
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    line
}

/// Whether a whole line is already buffered, so its reply can share a write with this one.
pub fn has_buffered_line(buffer: &[u8]) -> bool {
    buffer.contains(&b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn all_lines(input: &[u8], max: usize) -> Vec<Line> {
        let mut reader = tokio::io::BufReader::with_capacity(4, input);
        let mut lines = Vec::new();
        while let Some(line) = read_line(&mut reader, max).await.unwrap() {
            lines.push(line);
        }
        lines
    }

    fn complete(s: &str) -> Line {
        Line::Complete(s.as_bytes().to_vec())
    }

    #[tokio::test]
    async fn splits_on_newline_and_accepts_crlf_and_a_final_unterminated_line() {
        let lines = all_lines(b"one\r\ntwo\n\nlast", 100).await;
        assert_eq!(
            lines,
            [
                complete("one"),
                complete("two"),
                complete(""),
                complete("last")
            ]
        );
        assert!(all_lines(b"", 100).await.is_empty());
        assert_eq!(all_lines(b"a\n", 100).await, [complete("a")]);
    }

    #[tokio::test]
    async fn buffered_lines_are_taken_without_a_read_and_the_rest_left_to_read_line() {
        let input: &[u8] = b"one\r\ntwo\n0123456789\nlast";
        let mut reader = BufReader::with_capacity(64, input);
        let mut line = b"old".to_vec();
        assert!(
            !take_buffered_line(&mut reader, 5, &mut line),
            "nothing read yet"
        );
        reader.fill_buf().await.unwrap();
        assert!(take_buffered_line(&mut reader, 5, &mut line));
        assert_eq!(line, b"one");
        assert!(take_buffered_line(&mut reader, 5, &mut line));
        assert_eq!(line, b"two");
        // Over the limit: left for read_line, which cuts it.
        assert!(!take_buffered_line(&mut reader, 5, &mut line));
        assert_eq!(
            read_line(&mut reader, 5).await.unwrap(),
            Some(Line::TooLong(b"01234".to_vec(), 10))
        );
        // No newline: not a whole line yet.
        assert!(!take_buffered_line(&mut reader, 5, &mut line));
        assert_eq!(
            read_line(&mut reader, 5).await.unwrap(),
            Some(complete("last"))
        );
    }

    #[tokio::test]
    async fn long_lines_are_cut_and_the_rest_discarded() {
        let lines = all_lines(b"0123456789\nok\n0123456789", 5).await;
        assert_eq!(
            lines,
            [
                Line::TooLong(b"01234".to_vec(), 10),
                complete("ok"),
                Line::TooLong(b"01234".to_vec(), 10)
            ]
        );
    }
}
