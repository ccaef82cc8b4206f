//! `herdctl run --log-stdout`: a lossy copy of the log on standard output.

use std::io::Write as _;
use std::thread::JoinHandle;

/// A copy of the log on standard output (`herdctl run --log-stdout`, for a container engine
/// that collects it). Lossy: the files are the record, so a collector that falls behind
/// loses lines from this copy rather than stalling the log writer.
pub(crate) struct StdoutCopy {
    queue: std::sync::mpsc::SyncSender<Vec<u8>>,
    thread: JoinHandle<()>,
}

impl StdoutCopy {
    pub(crate) fn start() -> StdoutCopy {
        let (queue, lines) = std::sync::mpsc::sync_channel::<Vec<u8>>(1024);
        let thread = std::thread::Builder::new()
            .name("log-stdout".into())
            .spawn(move || {
                let mut out = std::io::stdout().lock();
                while let Ok(bytes) = lines.recv() {
                    if out.write_all(&bytes).and_then(|()| out.flush()).is_err() {
                        return;
                    }
                }
            })
            .expect("cannot start the log-stdout thread");
        StdoutCopy { queue, thread }
    }

    pub(crate) fn send(&self, bytes: &[u8]) {
        let _ = self.queue.try_send(bytes.to_vec());
    }

    /// Writes out what is queued and stops.
    pub(crate) fn finish(self) {
        drop(self.queue);
        let _ = self.thread.join();
    }
}
