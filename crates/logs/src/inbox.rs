//! The log writer's inbox: what threads hand the writer, and when the writer wakes for it.
//!
//! The writer holds lines for `logs.order_window_ms` anyway (`reorder.rs`), so a wire batch
//! need not wake it: while it holds lines it sleeps until the next of them is due (at most a
//! tick, [`super::reorder::TICK_NANOS`], under load) and takes everything queued then.
//! Waking it for every batch (a connection's batch of pipelined lines, a few thousand a
//! second under load) cost the node more than sorting the lines. A batch wakes the writer
//! only when it holds nothing (it then sleeps without a deadline); tracing's events (a
//! warning is written within [`super::reorder::URGENT_HOLD_NANOS`]), a switch of files and a
//! stop always wake it.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use herd_wire::clock::now_nanos;

/// What the writer is asked to do.
pub enum Message {
    Lines(Vec<u8>),
    /// A reload's new files: what was queued before goes to the old ones.
    Files(super::files::LogFiles),
    Stop,
}

/// Messages for the writer, and whether sending one must wake it.
pub struct Inbox {
    state: Mutex<State>,
    ready: Condvar,
}

#[derive(Default)]
struct State {
    messages: Vec<Message>,
    /// The writer sleeps until a message comes (it holds nothing).
    idle: bool,
    /// A message that must be taken at once is queued.
    urgent: bool,
    /// Nobody takes messages (the writer stopped, or a log that discards).
    closed: bool,
}

impl Inbox {
    /// An inbox for a writer.
    pub fn new() -> Inbox {
        Inbox {
            state: Mutex::default(),
            ready: Condvar::new(),
        }
    }

    /// An inbox nobody reads: every send fails.
    pub fn closed() -> Inbox {
        let inbox = Inbox::new();
        inbox.close();
        inbox
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `message`; `None` if nobody will take it. An `urgent` one wakes the writer;
    /// any other wakes it only when it holds nothing. Returns whether it woke the writer.
    pub fn send(&self, message: Message, urgent: bool) -> Option<bool> {
        let mut state = self.lock();
        if state.closed {
            return None;
        }
        state.messages.push(message);
        state.urgent |= urgent;
        let wake = urgent || state.idle;
        if wake {
            state.idle = false;
        }
        drop(state);
        if wake {
            self.ready.notify_one();
        }
        Some(wake)
    }

    /// The writer's wait: until a message comes (`until` is `None`: it holds nothing), or
    /// until `until` (nanoseconds since the epoch) or an urgent message. Moves what is
    /// queued into `into` (which should be empty).
    pub fn take(&self, until: Option<i128>, into: &mut Vec<Message>) {
        let mut state = self.lock();
        loop {
            let due = until.is_some_and(|at| now_nanos() >= at);
            if state.urgent || due || (until.is_none() && !state.messages.is_empty()) {
                state.urgent = false;
                state.idle = false;
                std::mem::swap(&mut state.messages, into);
                return;
            }
            state = match until {
                None => {
                    state.idle = true;
                    self.ready.wait(state).unwrap_or_else(|e| e.into_inner())
                }
                Some(at) => {
                    let wait = Duration::from_nanos((at - now_nanos()).max(0) as u64);
                    self.ready
                        .wait_timeout(state, wait)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }

    /// From now on sends fail (the writer is gone).
    pub fn close(&self) {
        self.lock().closed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines() -> Message {
        Message::Lines(b"x\n".to_vec())
    }

    #[test]
    fn a_batch_wakes_the_writer_only_when_it_holds_nothing() {
        let inbox = Inbox::new();
        // The writer holds lines and sleeps until one is due: batches queue up silently.
        assert!(!inbox.send(lines(), false).unwrap());
        assert!(!inbox.send(lines(), false).unwrap());
        let mut taken = Vec::new();
        inbox.take(Some(0), &mut taken);
        assert_eq!(taken.len(), 2, "everything queued is taken when due");
        // An urgent message (a tracing event, a stop) always wakes it.
        assert!(inbox.send(lines(), true).unwrap());
        taken.clear();
        inbox.take(Some(i128::MAX), &mut taken);
        assert_eq!(
            taken.len(),
            1,
            "an urgent message is taken before the deadline"
        );
    }

    #[test]
    fn an_idle_writer_is_woken_by_the_first_batch() {
        let inbox = std::sync::Arc::new(Inbox::new());
        let writer = {
            let inbox = std::sync::Arc::clone(&inbox);
            std::thread::spawn(move || {
                let mut taken = Vec::new();
                inbox.take(None, &mut taken);
                taken.len()
            })
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !inbox.lock().idle {
            assert!(
                std::time::Instant::now() < deadline,
                "the writer never slept"
            );
            std::thread::yield_now();
        }
        assert!(
            inbox.send(lines(), false).unwrap(),
            "an idle writer is woken"
        );
        assert_eq!(writer.join().unwrap(), 1);
    }

    #[test]
    fn a_closed_inbox_refuses_messages() {
        let inbox = Inbox::closed();
        assert!(inbox.send(lines(), true).is_none());
    }
}
