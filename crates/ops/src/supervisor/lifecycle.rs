//! One node's lifecycle under the supervisor, as a pure state machine: events in, actions
//! out, time passed in. No OS calls here, so every path (crash loops, stops during backoff,
//! SIGKILL after the stop timeout) is unit-tested without processes.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use herd_config::config::SupervisorSettings;

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
    /// Frozen by `herdctl pause` (SIGSTOP): not probed, so not restarted for its silence,
    /// until `herdctl resume` (SIGCONT).
    Paused,
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
            State::Paused => "paused",
        }
    }
}

/// What the supervisor must do for the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Spawn,
    Terminate(u32),
    Kill(u32),
    /// SIGSTOP: freeze the process (`herdctl pause`).
    Pause(u32),
    /// SIGCONT: let a frozen process run again (`herdctl resume`).
    Resume(u32),
    /// SIGTERM, then SIGCONT: a frozen process must run to act on the SIGTERM.
    TerminatePaused(u32),
    /// Ask the node whether it answers as process `pid` (`HERD STATUS`), giving up after
    /// `timeout`; the answer comes back as [`Event::Probed`].
    Probe {
        pid: u32,
        timeout: Duration,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An operator asked for the node to run.
    Start,
    /// An operator asked for the node to stop (and stay stopped).
    Stop,
    /// An operator asked for a SIGKILL, as a simulated crash.
    Crash,
    /// An operator asked for the process to be frozen (SIGSTOP).
    Pause,
    /// An operator asked for a frozen process to run again (SIGCONT).
    Resume,
    /// The process was created.
    Spawned { pid: u32 },
    /// The process could not be created at all.
    SpawnFailed { reason: String },
    /// A node found already running (started by an earlier supervisor).
    /// A node found running (or frozen by SIGSTOP: `paused`) by a new supervisor.
    Adopted {
        pid: u32,
        started: Instant,
        paused: bool,
    },
    /// A probe finished: `answered` when the node answered as itself in time.
    Probed { answered: bool },
    /// The process ended; `how` says with what status or signal, when known, and
    /// `last_words` is the last line it wrote to stderr, if any.
    Exited {
        how: String,
        last_words: Option<String>,
    },
    /// Time passed.
    Tick,
}

/// More than `max_quick_crashes` deaths within this many `stable_after` periods is a restart
/// loop, even when each death came after a stable uptime: the node goes FATAL.
pub const RESTART_LOOP_WINDOW_FACTOR: u32 = 10;

/// A readiness probe of a starting node gives up after this long at most (a node that
/// listens answers in milliseconds; the next probe follows at once).
const MAX_READINESS_PROBE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct Lifecycle {
    pub state: State,
    pub pid: Option<u32>,
    /// When the current process started.
    pub since: Option<Instant>,
    /// Restarts the policy performed (not the operator's starts).
    pub restarts: u32,
    /// Crashes in a row without a stable uptime between them.
    pub quick_crashes: u32,
    /// How the last process ended, and why, when the supervisor ended it.
    pub last_exit: Option<String>,
    /// The last line the last process wrote to stderr.
    pub last_words: Option<String>,
    /// Crashes since the last operator start (an operator start resets it before replying,
    /// so `herdctl start` can tell a crash on start from an older one).
    pub crashes_since_start: u32,
    /// Health probes of the running process failed in a row.
    pub failed_probes: u32,
    /// Why the node is FATAL, while it is.
    pub fatal_reason: Option<String>,
    /// When the recent crashes happened (within [`RESTART_LOOP_WINDOW_FACTOR`] x
    /// `stable_after`): a node that dies just after each stable period is in a loop too.
    deaths: VecDeque<Instant>,
    /// Stop deadline, backoff end, or start deadline, by state.
    deadline: Option<Instant>,
    /// A start asked for while stopping: carried out once the process is gone.
    start_queued: bool,
    probe_in_flight: bool,
    next_probe: Option<Instant>,
    /// Why the supervisor itself killed the current process (health, start timeout,
    /// `herdctl kill`), added to how it exited.
    kill_reason: Option<String>,
    settings: SupervisorSettings,
}

impl Lifecycle {
    pub fn new(settings: SupervisorSettings) -> Lifecycle {
        Lifecycle {
            state: State::Stopped,
            pid: None,
            since: None,
            restarts: 0,
            quick_crashes: 0,
            last_exit: None,
            last_words: None,
            crashes_since_start: 0,
            failed_probes: 0,
            fatal_reason: None,
            deaths: VecDeque::new(),
            deadline: None,
            start_queued: false,
            probe_in_flight: false,
            next_probe: None,
            kill_reason: None,
            settings,
        }
    }

    /// New settings from a reload; they apply from the next timer each one sets.
    pub fn set_settings(&mut self, settings: SupervisorSettings) {
        self.settings = settings;
    }

    /// The delay before restart number `crashes` in a row: initial * 2^(crashes-1), capped.
    pub fn backoff_delay(&self, crashes: u32) -> Duration {
        let policy = herd_os::backoff::Backoff {
            initial: self.settings.backoff_initial,
            max: self.settings.backoff_max,
        };
        policy.delay(crashes.saturating_sub(1))
    }

    /// Whether a start was asked for while the node was stopping.
    pub fn start_queued(&self) -> bool {
        self.start_queued
    }

    /// Applies `event` at time `now`; returns what the supervisor must do.
    pub fn handle(&mut self, event: Event, now: Instant) -> Option<Action> {
        use State::*;
        match (self.state, event) {
            (Stopped | Fatal | Backoff, Event::Start) => {
                self.crashes_since_start = 0;
                self.fatal_reason = None;
                if self.state != Backoff {
                    self.quick_crashes = 0;
                    self.deaths.clear();
                }
                self.begin_start()
            }
            // Carried out when the old process is gone: dropping it would leave the node
            // stopped although the operator asked for it to run.
            (Stopping, Event::Start) => {
                self.crashes_since_start = 0;
                self.start_queued = true;
                None
            }
            (Starting | Running | Paused, Event::Start) => None,

            (Starting | Running, Event::Stop) => match self.pid {
                Some(pid) => {
                    self.state = Stopping;
                    self.deadline = Some(now + self.settings.stop_timeout);
                    Some(Action::Terminate(pid))
                }
                None => {
                    self.state = Stopped;
                    self.deadline = None;
                    None
                }
            },
            (Paused, Event::Stop) => match self.pid {
                Some(pid) => {
                    self.state = Stopping;
                    self.deadline = Some(now + self.settings.stop_timeout);
                    Some(Action::TerminatePaused(pid))
                }
                None => {
                    self.state = Stopped;
                    None
                }
            },
            (Stopping, Event::Stop) => {
                self.start_queued = false;
                None
            }
            (Backoff | Fatal, Event::Stop) => {
                self.state = Stopped;
                self.deadline = None;
                None
            }
            (Stopped, Event::Stop) => None,

            (Starting | Running | Paused, Event::Crash) => {
                let pid = self.pid?;
                self.kill_reason = Some("herdctl kill".into());
                Some(Action::Kill(pid))
            }
            (_, Event::Crash) => None,

            // Only a node that answers can be paused: one still starting has no probe
            // history worth keeping, and one stopping is on its way out.
            (Running, Event::Pause) => {
                let pid = self.pid?;
                self.state = Paused;
                self.probe_in_flight = false;
                self.failed_probes = 0;
                Some(Action::Pause(pid))
            }
            (_, Event::Pause) => None,
            (Paused, Event::Resume) => {
                let pid = self.pid?;
                // Probed again from a full interval on: the thawed process needs a moment
                // to drain what queued up while it was frozen.
                self.became_running(now);
                Some(Action::Resume(pid))
            }
            (_, Event::Resume) => None,

            (Starting, Event::Spawned { pid }) => {
                self.pid = Some(pid);
                self.since = Some(now);
                self.deadline = Some(now + self.settings.start_timeout);
                None
            }
            (_, Event::Spawned { pid }) => Some(Action::Kill(pid)), // not wanted any more
            (Starting, Event::SpawnFailed { reason }) => self.crashed(reason, now),
            (_, Event::SpawnFailed { .. }) => None,

            (
                _,
                Event::Adopted {
                    pid,
                    started,
                    paused,
                },
            ) => {
                self.pid = Some(pid);
                self.since = Some(started);
                self.became_running(now);
                if paused {
                    // Frozen by `herdctl pause` under an earlier supervisor: still paused,
                    // so its silence is not a hang and it is not probed until resumed.
                    self.state = State::Paused;
                    self.next_probe = None;
                }
                None
            }

            (Starting, Event::Probed { answered }) => {
                self.probe_in_flight = false;
                if answered {
                    self.became_running(now);
                }
                None
            }
            (Running, Event::Probed { answered }) => {
                self.probe_in_flight = false;
                if answered {
                    self.failed_probes = 0;
                    return None;
                }
                self.failed_probes += 1;
                if self.failed_probes < self.settings.health_failures || self.kill_reason.is_some()
                {
                    return None;
                }
                // Hung (stopped, deadlocked, overloaded past the interval): SIGKILL, as
                // SIGTERM would wait on the very thing that hangs. The exit then takes the
                // crash path, so the restart policy applies.
                self.kill_reason = Some(format!(
                    "{} health probes in a row unanswered within {} ms (supervisor.health_failures)",
                    self.failed_probes,
                    self.settings.health_interval.as_millis()
                ));
                self.pid.map(Action::Kill)
            }
            (_, Event::Probed { .. }) => {
                self.probe_in_flight = false;
                None
            }

            (state, Event::Exited { how, last_words }) => {
                // A stop that ended as asked (SIGTERM, exit 0) is no news: LAST EXIT says `-`.
                let clean = state == Stopping && is_clean_exit(&how) && self.kill_reason.is_none();
                let how = match self.kill_reason.take() {
                    Some(why) => format!("{how} ({why})"),
                    None => how,
                };
                self.last_words = last_words.filter(|_| !clean);
                match state {
                    Stopping => {
                        self.last_exit = Some(how).filter(|_| !clean);
                        self.pid = None;
                        self.since = None;
                        self.state = Stopped;
                        self.deadline = None;
                        if std::mem::take(&mut self.start_queued) {
                            return self.begin_start();
                        }
                        None
                    }
                    Starting | Running | Paused => {
                        let uptime = self.since.map(|s| now.saturating_duration_since(s));
                        if uptime.is_some_and(|u| u >= self.settings.stable_after) {
                            self.quick_crashes = 0;
                        }
                        self.crashed(how, now)
                    }
                    _ => {
                        self.last_exit = Some(how);
                        None
                    }
                }
            }

            (Starting, Event::Tick) => {
                let pid = self.pid?;
                if self.deadline.is_some_and(|d| now >= d) {
                    if self.kill_reason.is_some() {
                        return None; // SIGKILL sent; waiting for the exit
                    }
                    self.kill_reason = Some(format!(
                        "did not answer as itself within {} ms of starting \
                         (supervisor.start_timeout_ms)",
                        self.settings.start_timeout.as_millis()
                    ));
                    return Some(Action::Kill(pid));
                }
                if self.probe_in_flight {
                    return None;
                }
                self.probe_in_flight = true;
                Some(Action::Probe {
                    pid,
                    timeout: self.settings.health_interval.min(MAX_READINESS_PROBE),
                })
            }
            (Running, Event::Tick) => {
                let stable = self.since.is_some_and(|s| {
                    now.saturating_duration_since(s) >= self.settings.stable_after
                });
                if stable {
                    self.quick_crashes = 0;
                }
                let pid = self.pid?;
                if self.probe_in_flight
                    || self.kill_reason.is_some()
                    || self.next_probe.is_some_and(|t| now < t)
                {
                    return None;
                }
                self.probe_in_flight = true;
                self.next_probe = Some(now + self.settings.health_interval);
                Some(Action::Probe {
                    pid,
                    timeout: self.settings.health_interval,
                })
            }
            (Backoff, Event::Tick) if self.deadline.is_some_and(|d| now >= d) => {
                self.restarts += 1;
                self.begin_start()
            }
            (Stopping, Event::Tick) if self.deadline.is_some_and(|d| now >= d) => {
                // Still alive after SIGTERM's grace period: SIGKILL, once.
                self.deadline = None;
                self.pid.map(Action::Kill)
            }
            (_, Event::Tick) => None,
        }
    }

    fn begin_start(&mut self) -> Option<Action> {
        self.state = State::Starting;
        self.deadline = None;
        self.failed_probes = 0;
        self.probe_in_flight = false;
        self.kill_reason = None;
        Some(Action::Spawn)
    }

    fn became_running(&mut self, now: Instant) {
        self.state = State::Running;
        self.deadline = None;
        self.failed_probes = 0;
        self.next_probe = Some(now + self.settings.health_interval);
    }

    fn crashed(&mut self, how: String, now: Instant) -> Option<Action> {
        self.last_exit = Some(how);
        self.pid = None;
        self.since = None;
        self.probe_in_flight = false;
        self.quick_crashes += 1;
        self.crashes_since_start += 1;
        let window = self.settings.stable_after * RESTART_LOOP_WINDOW_FACTOR;
        self.deaths.push_back(now);
        while self
            .deaths
            .front()
            .is_some_and(|d| now.saturating_duration_since(*d) > window)
        {
            self.deaths.pop_front();
        }
        let max = self.settings.max_quick_crashes;
        let fatal = if self.quick_crashes > max {
            Some(format!(
                "{} crashes in a row, none after a stable uptime of {} s \
                 (supervisor.max_quick_crashes: {max})",
                self.quick_crashes,
                self.settings.stable_after.as_secs()
            ))
        } else if self.deaths.len() > max as usize {
            Some(format!(
                "restart loop: {} deaths within {} s (more than supervisor.max_quick_crashes: \
                 {max} within {RESTART_LOOP_WINDOW_FACTOR} x stable_after_s)",
                self.deaths.len(),
                window.as_secs()
            ))
        } else {
            None
        };
        if let Some(reason) = fatal {
            self.state = State::Fatal;
            self.deadline = None;
            self.fatal_reason = Some(reason);
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

/// How a process that ended as asked reads: exit 0, or an adopted node (not our child, so
/// its status is unknown) gone after SIGTERM.
fn is_clean_exit(how: &str) -> bool {
    how == "exit status 0" || how.starts_with("exited (adopted")
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

    fn exit(how: &str) -> Event {
        Event::Exited {
            how: how.into(),
            last_words: None,
        }
    }

    fn exited() -> Event {
        exit("exit status 1")
    }

    fn answered() -> Event {
        Event::Probed { answered: true }
    }

    fn unanswered() -> Event {
        Event::Probed { answered: false }
    }

    fn probe(pid: u32, timeout: Duration) -> Option<Action> {
        Some(Action::Probe { pid, timeout })
    }

    /// Start, spawn, and a first readiness probe that answers.
    fn start(m: &mut Lifecycle, now: Instant, pid: u32) {
        assert_eq!(m.handle(Event::Start, now), Some(Action::Spawn));
        assert_eq!(m.handle(Event::Spawned { pid }, now), None);
        assert_eq!(
            m.handle(Event::Tick, now),
            probe(pid, Duration::from_secs(1))
        );
        assert_eq!(m.handle(answered(), now), None);
        assert_eq!(m.state, State::Running);
    }

    #[test]
    fn start_then_stop_with_sigkill_after_the_timeout() {
        let t0 = Instant::now();
        let mut m = Lifecycle::new(settings());
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
        let mut m = Lifecycle::new(settings());
        start(&mut m, t0, 1);
        m.handle(Event::Stop, t0);
        m.handle(exited(), t0);
        for s in 1..100 {
            assert_eq!(m.handle(Event::Tick, t0 + Duration::from_secs(s)), None);
        }
        assert_eq!(m.state, State::Stopped);
    }

    #[test]
    fn a_start_while_stopping_is_queued_not_dropped() {
        let t0 = Instant::now();
        let mut m = Lifecycle::new(settings());
        start(&mut m, t0, 1);
        assert_eq!(m.handle(Event::Stop, t0), Some(Action::Terminate(1)));
        assert_eq!(
            m.handle(Event::Start, t0),
            None,
            "the old process still runs"
        );
        assert!(m.start_queued());
        assert_eq!(m.state, State::Stopping);
        // The old process ends: the queued start is carried out at once.
        assert_eq!(m.handle(exit("exit status 0"), t0), Some(Action::Spawn));
        assert_eq!(m.state, State::Starting);
        assert_eq!(m.restarts, 0, "an operator's start, not the policy's");
        assert_eq!(m.crashes_since_start, 0);

        m.handle(Event::Spawned { pid: 2 }, t0);
        m.handle(Event::Tick, t0);
        m.handle(answered(), t0);
        assert_eq!(m.state, State::Running);
        // A stop after the queued start cancels it again.
        m.handle(Event::Stop, t0);
        m.handle(Event::Start, t0);
        m.handle(Event::Stop, t0);
        assert_eq!(m.handle(exited(), t0), None);
        assert_eq!(m.state, State::Stopped);
    }

    #[test]
    fn crashes_back_off_exponentially_then_go_fatal() {
        let t0 = Instant::now();
        let mut m = Lifecycle::new(settings());
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
            m.handle(Event::Tick, now);
            m.handle(answered(), now);
        }
        assert_eq!(delays, [100, 200, 400]);
        assert_eq!(m.restarts, 3);
        m.handle(exited(), now);
        assert_eq!(
            m.state,
            State::Fatal,
            "a fourth quick crash is one too many"
        );
        assert!(m
            .fatal_reason
            .as_ref()
            .unwrap()
            .starts_with("4 crashes in a row"));
        assert_eq!(m.handle(Event::Tick, now + Duration::from_secs(60)), None);
        // An operator start clears FATAL.
        assert_eq!(m.handle(Event::Start, now), Some(Action::Spawn));
        assert_eq!(m.quick_crashes, 0);
    }

    #[test]
    fn deaths_after_each_stable_period_still_end_in_fatal() {
        // settings: stable_after 10 s, max_quick_crashes 3: a node killed every 12 s (just
        // past stable, as a busy node whose probes fail would be) is a restart loop.
        let t0 = Instant::now();
        let mut m = Lifecycle::new(settings());
        start(&mut m, t0, 1);
        let mut now = t0;
        for pid in 2..=4 {
            now += Duration::from_secs(12);
            m.handle(Event::Tick, now);
            assert_eq!(m.quick_crashes, 0, "stable by then");
            m.handle(exited(), now);
            assert_eq!(m.state, State::Backoff, "death {} of a loop", pid - 1);
            now += m.backoff_remaining(now).unwrap();
            assert_eq!(m.handle(Event::Tick, now), Some(Action::Spawn));
            m.handle(Event::Spawned { pid }, now);
            m.handle(Event::Tick, now);
            m.handle(answered(), now);
        }
        now += Duration::from_secs(12);
        m.handle(Event::Tick, now);
        m.handle(exited(), now);
        assert_eq!(m.state, State::Fatal, "a fourth death within 100 s");
        let why = m.fatal_reason.clone().unwrap();
        assert!(
            why.starts_with("restart loop: 4 deaths within 100 s"),
            "{why}"
        );
        assert_eq!(m.handle(Event::Tick, now + Duration::from_secs(600)), None);
        // An operator start clears it; deaths spread wider than the window never add up.
        m.handle(Event::Start, now);
        assert_eq!(m.fatal_reason, None);
        m.handle(Event::Spawned { pid: 9 }, now);
        m.handle(Event::Tick, now);
        m.handle(answered(), now);
        for pid in 10..20 {
            now += Duration::from_secs(40);
            m.handle(Event::Tick, now);
            m.handle(exited(), now);
            assert_eq!(m.state, State::Backoff);
            now += m.backoff_remaining(now).unwrap();
            m.handle(Event::Tick, now);
            m.handle(Event::Spawned { pid }, now);
            m.handle(Event::Tick, now);
            m.handle(answered(), now);
        }
    }

    #[test]
    fn stable_uptime_resets_the_crash_count() {
        let t0 = Instant::now();
        let mut m = Lifecycle::new(settings());
        start(&mut m, t0, 1);
        m.handle(exited(), t0);
        let back = t0 + Duration::from_millis(100);
        m.handle(Event::Tick, back);
        m.handle(Event::Spawned { pid: 2 }, back);
        m.handle(Event::Tick, back);
        m.handle(answered(), back);
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
        let m = Lifecycle::new(settings());
        assert_eq!(m.backoff_delay(1).as_millis(), 100);
        assert_eq!(m.backoff_delay(4).as_millis(), 800);
        assert_eq!(m.backoff_delay(5).as_millis(), 1000);
        assert_eq!(m.backoff_delay(500).as_millis(), 1000);
    }

    #[test]
    fn stop_during_backoff_cancels_the_restart() {
        let t0 = Instant::now();
        let mut m = Lifecycle::new(settings());
        start(&mut m, t0, 1);
        m.handle(exited(), t0);
        assert_eq!(m.handle(Event::Stop, t0), None);
        assert_eq!(m.state, State::Stopped);
        assert_eq!(m.handle(Event::Tick, t0 + Duration::from_secs(5)), None);
    }

    #[test]
    fn a_simulated_crash_is_restarted_by_policy() {
        let t0 = Instant::now();
        let mut m = Lifecycle::new(settings());
        start(&mut m, t0, 7);
        assert_eq!(m.handle(Event::Crash, t0), Some(Action::Kill(7)));
        m.handle(exit("killed by SIGKILL"), t0);
        assert_eq!(m.state, State::Backoff);
        assert_eq!(
            m.last_exit.as_deref(),
            Some("killed by SIGKILL (herdctl kill)")
        );
        assert_eq!(
            m.handle(Event::Tick, t0 + Duration::from_millis(100)),
            Some(Action::Spawn)
        );
        assert_eq!(m.restarts, 1);
    }

    #[test]
    fn a_crash_on_start_counts_and_is_visible_to_the_starter() {
        let t0 = Instant::now();
        let mut m = Lifecycle::new(settings());
        m.handle(Event::Start, t0);
        m.handle(Event::Spawned { pid: 3 }, t0);
        m.handle(
            Event::Exited {
                how: "exit status 1".into(),
                last_words: Some("Error: port in use".into()),
            },
            t0,
        );
        assert_eq!(m.crashes_since_start, 1);
        assert_eq!(m.last_exit.as_deref(), Some("exit status 1"));
        assert_eq!(m.last_words.as_deref(), Some("Error: port in use"));
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
        let mut m = Lifecycle::new(settings());
        let started = t0 - Duration::from_secs(30);
        m.handle(
            Event::Adopted {
                pid: 9,
                started,
                paused: false,
            },
            t0,
        );
        assert_eq!(
            (m.state, m.pid, m.since),
            (State::Running, Some(9), Some(started))
        );
        assert_eq!(m.handle(Event::Stop, t0), Some(Action::Terminate(9)));
    }

    #[test]
    fn a_node_adopted_while_frozen_stays_paused_unprobed_and_resumes() {
        let t0 = Instant::now();
        let mut m = Lifecycle::new(settings());
        let started = t0 - Duration::from_secs(30);
        let adopted = Event::Adopted {
            pid: 9,
            started,
            paused: true,
        };
        m.handle(adopted, t0);
        assert_eq!((m.state, m.pid), (State::Paused, Some(9)));
        for s in 1..60 {
            assert_eq!(m.handle(Event::Tick, t0 + Duration::from_secs(s)), None);
        }
        assert_eq!((m.state, m.failed_probes), (State::Paused, 0));
        let later = t0 + Duration::from_secs(60);
        assert_eq!(m.handle(Event::Resume, later), Some(Action::Resume(9)));
        assert_eq!(m.state, State::Running);
    }

    #[test]
    fn a_node_silent_past_the_start_timeout_is_killed_as_a_failed_start() {
        let t0 = Instant::now();
        let mut m = Lifecycle::new(settings());
        m.handle(Event::Start, t0);
        m.handle(Event::Spawned { pid: 5 }, t0);
        // It never answers: readiness probes keep failing, one at a time.
        let mut now = t0;
        while now < t0 + Duration::from_secs(20) {
            assert_eq!(m.handle(Event::Tick, now), probe(5, Duration::from_secs(1)));
            assert_eq!(m.handle(Event::Tick, now), None, "one probe at a time");
            m.handle(unanswered(), now);
            now += Duration::from_millis(500);
        }
        assert_eq!(m.state, State::Starting);
        assert_eq!(m.handle(Event::Tick, now), Some(Action::Kill(5)));
        assert_eq!(m.handle(Event::Tick, now), None, "SIGKILL once");
        m.handle(exit("killed by SIGKILL"), now);
        assert_eq!(m.state, State::Backoff);
        assert_eq!(m.crashes_since_start, 1, "a failed start, like a crash");
        let why = m.last_exit.clone().unwrap();
        assert!(
            why.starts_with("killed by SIGKILL (did not answer as itself within 20000 ms")
                && why.contains("start_timeout_ms"),
            "{why}"
        );
    }

    #[test]
    fn a_running_node_is_probed_every_interval() {
        let t0 = Instant::now();
        let mut m = Lifecycle::new(settings());
        start(&mut m, t0, 8);
        let second = Duration::from_secs(1);
        assert_eq!(m.handle(Event::Tick, t0 + second / 2), None, "not yet due");
        assert_eq!(m.handle(Event::Tick, t0 + second), probe(8, second));
        assert_eq!(m.handle(Event::Tick, t0 + 3 * second), None, "in flight");
        assert_eq!(m.handle(answered(), t0 + 3 * second), None);
        assert_eq!(m.handle(Event::Tick, t0 + 3 * second), probe(8, second));
    }

    #[test]
    fn a_hung_node_is_killed_after_failed_probes_and_restarted_by_policy() {
        let t0 = Instant::now();
        let mut m = Lifecycle::new(settings());
        start(&mut m, t0, 8);
        let mut now = t0;
        // Two failures, then an answer: the count starts over.
        for _ in 0..2 {
            now += Duration::from_secs(1);
            assert!(m.handle(Event::Tick, now).is_some());
            assert_eq!(m.handle(unanswered(), now), None);
        }
        assert_eq!(m.failed_probes, 2);
        now += Duration::from_secs(1);
        m.handle(Event::Tick, now);
        m.handle(answered(), now);
        assert_eq!(m.failed_probes, 0);
        // Three in a row: SIGKILL.
        for n in 1..=3 {
            now += Duration::from_secs(1);
            assert!(m.handle(Event::Tick, now).is_some());
            let action = m.handle(unanswered(), now);
            assert_eq!(action, (n == 3).then_some(Action::Kill(8)), "probe {n}");
        }
        now += Duration::from_secs(1);
        assert_eq!(m.handle(Event::Tick, now), None, "no probes while it dies");
        m.handle(exit("killed by SIGKILL"), now);
        assert_eq!(m.state, State::Backoff);
        let why = m.last_exit.clone().unwrap();
        assert!(
            why.contains("3 health probes in a row unanswered within 1000 ms")
                && why.contains("health_failures"),
            "{why}"
        );
        now += Duration::from_millis(100);
        assert_eq!(m.handle(Event::Tick, now), Some(Action::Spawn));
        assert_eq!(m.restarts, 1);
        assert_eq!(m.failed_probes, 0);
    }

    #[test]
    fn a_stop_is_not_reported_as_a_health_kill() {
        let t0 = Instant::now();
        let mut m = Lifecycle::new(settings());
        start(&mut m, t0, 8);
        m.handle(Event::Stop, t0);
        m.handle(exit("exit status 0"), t0);
        assert_eq!(
            m.last_exit, None,
            "a clean stop is no news: LAST EXIT shows -"
        );
        assert_eq!(m.last_words, None);
    }

    #[test]
    fn a_paused_node_is_not_probed_nor_killed_for_its_silence_and_resumes() {
        let t0 = Instant::now();
        let mut m = Lifecycle::new(settings());
        start(&mut m, t0, 8);
        let second = Duration::from_secs(1);
        assert_eq!(m.handle(Event::Pause, t0), Some(Action::Pause(8)));
        assert_eq!(m.state, State::Paused);
        assert_eq!(m.handle(Event::Pause, t0), None, "paused once");
        assert_eq!(m.handle(Event::Start, t0), None, "a start leaves it frozen");
        // Many probe intervals pass: nothing is probed, and a late answer of a probe sent
        // before the pause counts for nothing.
        m.handle(unanswered(), t0);
        for s in 1..30 {
            assert_eq!(m.handle(Event::Tick, t0 + s * second), None, "tick {s}");
        }
        assert_eq!((m.state, m.failed_probes), (State::Paused, 0));
        let back = t0 + 30 * second;
        assert_eq!(m.handle(Event::Resume, back), Some(Action::Resume(8)));
        assert_eq!(m.state, State::Running);
        assert_eq!(m.handle(Event::Resume, back), None, "resumed once");
        assert_eq!(m.handle(Event::Tick, back), None, "a full interval first");
        assert_eq!(m.handle(Event::Tick, back + second), probe(8, second));
    }

    #[test]
    fn a_paused_node_can_be_stopped_or_killed() {
        let t0 = Instant::now();
        let mut m = Lifecycle::new(settings());
        start(&mut m, t0, 8);
        m.handle(Event::Pause, t0);
        assert_eq!(m.handle(Event::Stop, t0), Some(Action::TerminatePaused(8)));
        assert_eq!(m.state, State::Stopping);
        m.handle(exit("exit status 0"), t0);
        assert_eq!(m.state, State::Stopped);
        assert_eq!(m.handle(Event::Pause, t0), None, "nothing to pause");

        start(&mut m, t0, 9);
        m.handle(Event::Pause, t0);
        assert_eq!(m.handle(Event::Crash, t0), Some(Action::Kill(9)));
        m.handle(exit("killed by SIGKILL"), t0);
        assert_eq!(m.state, State::Backoff, "a crash: restarted by policy");
    }
}
