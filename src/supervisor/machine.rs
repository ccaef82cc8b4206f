//! One node's lifecycle under the supervisor, as a pure state machine: events in, actions
//! out, time passed in. No OS calls here, so every path (crash loops, stops during backoff,
//! SIGKILL after the stop timeout) is unit-tested without processes.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::SupervisorSettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Not running, and not wanted running.
    Stopped,
    /// Spawned, not yet answering on its port.
    Starting,
    /// Answering on its port.
    Running,
    /// SIGTERM sent; SIGKILL follows at the stop deadline.
    Stopping,
    /// Crashed; restarts when the backoff delay ends.
    Backoff,
    /// Crashed too often in a row; left down until started by hand.
    Fatal,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Stopped => "stopped",
            State::Starting => "starting",
            State::Running => "running",
            State::Stopping => "stopping",
            State::Backoff => "backoff",
            State::Fatal => "fatal",
        }
    }
}

/// What the supervisor must do for the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Spawn,
    Terminate(u32),
    Kill(u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An operator asked for the node to run.
    Start,
    /// An operator asked for the node to stop (and stay stopped).
    Stop,
    /// An operator asked for a SIGKILL, as a simulated crash.
    Crash,
    /// The process was created.
    Spawned { pid: u32 },
    /// The process could not be created at all.
    SpawnFailed { reason: String },
    /// A node found already running (started by an earlier supervisor).
    Adopted { pid: u32, started: Instant },
    /// The node answered on its port.
    Ready,
    /// The process ended; `how` says with what status or signal, when known.
    Exited { how: String },
    /// Time passed.
    Tick,
}

#[derive(Debug, Clone)]
pub struct NodeMachine {
    pub state: State,
    pub pid: Option<u32>,
    /// When the current process started.
    pub since: Option<Instant>,
    /// Restarts the policy performed (not the operator's starts).
    pub restarts: u32,
    /// Crashes in a row without a stable uptime between them.
    pub quick_crashes: u32,
    /// How the last process ended.
    pub last_exit: Option<String>,
    /// Crashes since the last operator start (an operator start resets it before replying,
    /// so `herdctl start` can tell a crash on start from an older one).
    pub crashes_since_start: u32,
    deadline: Option<Instant>,
    settings: SupervisorSettings,
}

impl NodeMachine {
    pub fn new(settings: SupervisorSettings) -> NodeMachine {
        NodeMachine {
            state: State::Stopped,
            pid: None,
            since: None,
            restarts: 0,
            quick_crashes: 0,
            last_exit: None,
            crashes_since_start: 0,
            deadline: None,
            settings,
        }
    }

    /// The delay before restart number `crashes` in a row: initial * 2^(crashes-1), capped.
    pub fn backoff_delay(&self, crashes: u32) -> Duration {
        let doublings = crashes.saturating_sub(1).min(20);
        (self.settings.backoff_initial * 2u32.pow(doublings)).min(self.settings.backoff_max)
    }

    /// Applies `event` at time `now`; returns what the supervisor must do.
    pub fn handle(&mut self, event: Event, now: Instant) -> Option<Action> {
        use State::*;
        match (self.state, event) {
            (Stopped | Fatal | Backoff, Event::Start) => {
                self.crashes_since_start = 0;
                if self.state != Backoff {
                    self.quick_crashes = 0;
                }
                self.state = Starting;
                self.deadline = None;
                Some(Action::Spawn)
            }
            (Starting | Running | Stopping, Event::Start) => None,

            (Starting | Running, Event::Stop) => {
                self.state = Stopping;
                self.deadline = Some(now + self.settings.stop_timeout);
                self.pid.map(Action::Terminate)
            }
            (Backoff | Fatal, Event::Stop) => {
                self.state = Stopped;
                self.deadline = None;
                None
            }
            (Stopped | Stopping, Event::Stop) => None,

            (Starting | Running, Event::Crash) => self.pid.map(Action::Kill),
            (_, Event::Crash) => None,

            (Starting, Event::Spawned { pid }) => {
                self.pid = Some(pid);
                self.since = Some(now);
                None
            }
            (_, Event::Spawned { pid }) => Some(Action::Kill(pid)), // not wanted any more
            (Starting, Event::SpawnFailed { reason }) => self.crashed(reason, now),
            (_, Event::SpawnFailed { .. }) => None,

            (_, Event::Adopted { pid, started }) => {
                self.pid = Some(pid);
                self.since = Some(started);
                self.state = Running;
                None
            }

            (Starting, Event::Ready) => {
                self.state = Running;
                None
            }
            (_, Event::Ready) => None,

            (Stopping, Event::Exited { how }) => {
                self.last_exit = Some(how);
                self.pid = None;
                self.since = None;
                self.state = Stopped;
                self.deadline = None;
                None
            }
            (Starting | Running, Event::Exited { how }) => {
                let uptime = self.since.map(|s| now.saturating_duration_since(s));
                if uptime.is_some_and(|u| u >= self.settings.stable_after) {
                    self.quick_crashes = 0;
                }
                self.crashed(how, now)
            }
            (_, Event::Exited { how }) => {
                self.last_exit = Some(how);
                None
            }

            (Running, Event::Tick) => {
                let stable = self.since.is_some_and(|s| {
                    now.saturating_duration_since(s) >= self.settings.stable_after
                });
                if stable {
                    self.quick_crashes = 0;
                }
                None
            }
            (Backoff, Event::Tick) if self.deadline.is_some_and(|d| now >= d) => {
                self.state = Starting;
                self.restarts += 1;
                self.deadline = None;
                Some(Action::Spawn)
            }
            (Stopping, Event::Tick) if self.deadline.is_some_and(|d| now >= d) => {
                // Still alive after SIGTERM's grace period: SIGKILL, once.
                self.deadline = None;
                self.pid.map(Action::Kill)
            }
            (_, Event::Tick) => None,
        }
    }

    fn crashed(&mut self, how: String, now: Instant) -> Option<Action> {
        self.last_exit = Some(how);
        self.pid = None;
        self.since = None;
        self.quick_crashes += 1;
        self.crashes_since_start += 1;
        if self.quick_crashes > self.settings.max_quick_crashes {
            self.state = State::Fatal;
            self.deadline = None;
        } else {
            self.state = State::Backoff;
            self.deadline = Some(now + self.backoff_delay(self.quick_crashes));
        }
        None
    }

    /// How long until the backoff ends, for status.
    pub fn backoff_remaining(&self, now: Instant) -> Option<Duration> {
        (self.state == State::Backoff)
            .then(|| self.deadline.map(|d| d.saturating_duration_since(now)))
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> SupervisorSettings {
        SupervisorSettings {
            stop_timeout: Duration::from_secs(5),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_millis(1000),
            stable_after: Duration::from_secs(10),
            max_quick_crashes: 3,
            start_timeout: Duration::from_secs(20),
            health_interval: Duration::from_secs(1),
            health_failures: 3,
        }
    }

    fn exited() -> Event {
        Event::Exited {
            how: "exit status 1".into(),
        }
    }

    fn start(m: &mut NodeMachine, now: Instant, pid: u32) {
        assert_eq!(m.handle(Event::Start, now), Some(Action::Spawn));
        assert_eq!(m.handle(Event::Spawned { pid }, now), None);
        assert_eq!(m.handle(Event::Ready, now), None);
        assert_eq!(m.state, State::Running);
    }

    #[test]
    fn start_then_stop_with_sigkill_after_the_timeout() {
        let t0 = Instant::now();
        let mut m = NodeMachine::new(settings());
        start(&mut m, t0, 42);
        assert_eq!(m.handle(Event::Stop, t0), Some(Action::Terminate(42)));
        assert_eq!(m.state, State::Stopping);
        assert_eq!(m.handle(Event::Tick, t0 + Duration::from_secs(4)), None);
        assert_eq!(
            m.handle(Event::Tick, t0 + Duration::from_secs(5)),
            Some(Action::Kill(42))
        );
        assert_eq!(
            m.handle(Event::Tick, t0 + Duration::from_secs(6)),
            None,
            "SIGKILL once"
        );
        assert_eq!(m.handle(exited(), t0 + Duration::from_secs(6)), None);
        assert_eq!((m.state, m.pid, m.restarts), (State::Stopped, None, 0));
    }

    #[test]
    fn a_stopped_node_stays_stopped() {
        let t0 = Instant::now();
        let mut m = NodeMachine::new(settings());
        start(&mut m, t0, 1);
        m.handle(Event::Stop, t0);
        m.handle(exited(), t0);
        for s in 1..100 {
            assert_eq!(m.handle(Event::Tick, t0 + Duration::from_secs(s)), None);
        }
        assert_eq!(m.state, State::Stopped);
    }

    #[test]
    fn crashes_back_off_exponentially_then_go_fatal() {
        let t0 = Instant::now();
        let mut m = NodeMachine::new(settings());
        start(&mut m, t0, 1);
        let mut now = t0;
        let mut delays = Vec::new();
        for pid in 2..=4 {
            assert_eq!(m.handle(exited(), now), None);
            assert_eq!(m.state, State::Backoff);
            let delay = m.backoff_remaining(now).unwrap();
            delays.push(delay.as_millis());
            assert_eq!(m.handle(Event::Tick, now + delay / 2), None, "too early");
            now += delay;
            assert_eq!(m.handle(Event::Tick, now), Some(Action::Spawn));
            m.handle(Event::Spawned { pid }, now);
            m.handle(Event::Ready, now);
        }
        assert_eq!(delays, [100, 200, 400]);
        assert_eq!(m.restarts, 3);
        m.handle(exited(), now);
        assert_eq!(
            m.state,
            State::Fatal,
            "a fourth quick crash is one too many"
        );
        assert_eq!(m.handle(Event::Tick, now + Duration::from_secs(60)), None);
        // An operator start clears FATAL.
        assert_eq!(m.handle(Event::Start, now), Some(Action::Spawn));
        assert_eq!(m.quick_crashes, 0);
    }

    #[test]
    fn stable_uptime_resets_the_crash_count() {
        let t0 = Instant::now();
        let mut m = NodeMachine::new(settings());
        start(&mut m, t0, 1);
        m.handle(exited(), t0);
        let back = t0 + Duration::from_millis(100);
        m.handle(Event::Tick, back);
        m.handle(Event::Spawned { pid: 2 }, back);
        m.handle(Event::Ready, back);
        assert_eq!(m.quick_crashes, 1);
        m.handle(Event::Tick, back + Duration::from_secs(11));
        assert_eq!(m.quick_crashes, 0);
        m.handle(exited(), back + Duration::from_secs(12));
        assert_eq!(
            m.backoff_remaining(back + Duration::from_secs(12))
                .unwrap()
                .as_millis(),
            100
        );
    }

    #[test]
    fn the_delay_is_capped() {
        let m = NodeMachine::new(settings());
        assert_eq!(m.backoff_delay(1).as_millis(), 100);
        assert_eq!(m.backoff_delay(4).as_millis(), 800);
        assert_eq!(m.backoff_delay(5).as_millis(), 1000);
        assert_eq!(m.backoff_delay(500).as_millis(), 1000);
    }

    #[test]
    fn stop_during_backoff_cancels_the_restart() {
        let t0 = Instant::now();
        let mut m = NodeMachine::new(settings());
        start(&mut m, t0, 1);
        m.handle(exited(), t0);
        assert_eq!(m.handle(Event::Stop, t0), None);
        assert_eq!(m.state, State::Stopped);
        assert_eq!(m.handle(Event::Tick, t0 + Duration::from_secs(5)), None);
    }

    #[test]
    fn a_simulated_crash_is_restarted_by_policy() {
        let t0 = Instant::now();
        let mut m = NodeMachine::new(settings());
        start(&mut m, t0, 7);
        assert_eq!(m.handle(Event::Crash, t0), Some(Action::Kill(7)));
        m.handle(
            Event::Exited {
                how: "killed by SIGKILL".into(),
            },
            t0,
        );
        assert_eq!(m.state, State::Backoff);
        assert_eq!(
            m.handle(Event::Tick, t0 + Duration::from_millis(100)),
            Some(Action::Spawn)
        );
        assert_eq!(m.restarts, 1);
    }

    #[test]
    fn a_crash_on_start_counts_and_is_visible_to_the_starter() {
        let t0 = Instant::now();
        let mut m = NodeMachine::new(settings());
        m.handle(Event::Start, t0);
        m.handle(Event::Spawned { pid: 3 }, t0);
        m.handle(exited(), t0);
        assert_eq!(m.crashes_since_start, 1);
        assert_eq!(m.last_exit.as_deref(), Some("exit status 1"));
        m.handle(
            Event::SpawnFailed {
                reason: "no such file".into(),
            },
            t0,
        );
        assert_eq!(m.state, State::Backoff);
    }

    #[test]
    fn an_adopted_node_is_running_with_its_real_start_time() {
        let t0 = Instant::now();
        let mut m = NodeMachine::new(settings());
        let started = t0 - Duration::from_secs(30);
        m.handle(Event::Adopted { pid: 9, started }, t0);
        assert_eq!(
            (m.state, m.pid, m.since),
            (State::Running, Some(9), Some(started))
        );
        assert_eq!(m.handle(Event::Stop, t0), Some(Action::Terminate(9)));
    }
}
