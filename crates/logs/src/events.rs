//! tracing's events (lifecycle, warnings, a panic's report) into the same queue as wire
//! lines, so a log file keeps one format and one order.

use super::sink::{WireLog, MAX_QUEUED_BYTES};

/// tracing-subscriber's writer for the log file: each event is formatted into one buffer
/// and queued whole when the writer is dropped.
pub struct EventWriter<'a> {
    log: &'a WireLog,
    bytes: Vec<u8>,
}

impl std::io::Write for EventWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter<'_> {
    fn drop(&mut self) {
        if !self.bytes.is_empty() {
            let bytes = std::mem::take(&mut self.bytes);
            self.log.push(bytes, 2 * MAX_QUEUED_BYTES, true);
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for WireLog {
    type Writer = EventWriter<'a>;

    fn make_writer(&'a self) -> EventWriter<'a> {
        EventWriter {
            log: self,
            bytes: Vec::new(),
        }
    }
}
