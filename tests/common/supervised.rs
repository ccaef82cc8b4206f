//! A herd run by the real supervisor, for black-box tests. Dropping it stops everything and
//! SIGKILLs whatever still holds a lock, so no process outlives a test, pass or fail.

use std::process::Output;

use herdctl::pidlock::PidLock;

use super::{exchange, run_to_end, Herd, CLASSIC};

pub struct Supervised {
    pub herd: Herd,
}

/// Quick restarts and stops, for tests.
const SUPERVISOR: &str = "backoff_initial_ms: 100, backoff_max_ms: 400, stop_timeout_ms: 3000, \
                          stable_after_s: 5, max_quick_crashes: 5";

impl Supervised {
    /// The classic herd.
    pub fn new() -> Supervised {
        Supervised::with("", "")
    }

    /// The classic herd with more `supervisor:` settings and more herd-file lines.
    pub fn with(supervisor: &str, extra: &str) -> Supervised {
        Supervised::herd(CLASSIC, supervisor, extra)
    }

    /// `servers` (name, peers) with more `supervisor:` settings and herd-file lines.
    pub fn herd(servers: &[(&str, &[&str])], supervisor: &str, extra: &str) -> Supervised {
        Supervised {
            herd: Herd::configure(servers, &supervisor_yaml(supervisor, extra)),
        }
    }

    pub fn run(&self, args: &[&str]) -> Output {
        run_to_end(self.herd.herdctl().args(args), b"")
    }

    /// Runs a command with an environment variable set (a supervisor it starts, and so its
    /// nodes, inherit it).
    pub fn run_with_env(&self, args: &[&str], key: &str, value: &str) -> Output {
        run_to_end(self.herd.herdctl().args(args).env(key, value), b"")
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "herdctl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn status(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.ok(&["status", "--json"])).unwrap()
    }

    pub fn node(&self, name: &str) -> serde_json::Value {
        self.status()
            .into_iter()
            .find(|n| n["name"] == name)
            .unwrap_or_else(|| panic!("{name} is not in the status"))
    }

    fn lock_holder(&self, file: &str) -> Option<u32> {
        PidLock::holder(&self.herd.path().join("run").join(file)).unwrap()
    }

    pub fn daemon_pid(&self) -> Option<u32> {
        self.lock_holder("supervisor.lock")
    }

    pub fn node_pid(&self, name: &str) -> Option<u32> {
        self.lock_holder(&format!("{name}.lock"))
    }

    pub fn serves(&self, name: &str) -> bool {
        self.serves_on(name, self.herd.port(name))
    }

    /// Whether `name` answers an IAMAT on `port` as itself.
    pub fn serves_on(&self, name: &str, port: u16) -> bool {
        let reply = exchange(port, b"IAMAT probe +1+1 1\n");
        reply.starts_with(format!("AT {name} ").as_bytes())
    }
}

/// The `supervisor:` line with test settings, then `extra`.
pub fn supervisor_yaml(supervisor: &str, extra: &str) -> String {
    format!("supervisor: {{ {SUPERVISOR}{supervisor} }}\n{extra}")
}

impl Drop for Supervised {
    fn drop(&mut self) {
        let _ = self.run(&["stop", "all"]);
        // Whatever still holds a lock: nodes (including ones a test added) and the daemon.
        let locks = std::fs::read_dir(self.herd.path().join("run"))
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_else(|_| Vec::new());
        for lock in locks
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "lock"))
        {
            if let Ok(Some(pid)) = PidLock::holder(lock) {
                let _ = std::process::Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .status();
            }
        }
    }
}
