//! What a new herd file changes for a running herd, and who must restart to take it: the
//! one place that decides, used by the supervisor (to plan `herdctl reload`) and by a node
//! (to refuse a live reload it cannot apply). Pure: two configs in, a plan out.
//!
//! - A node restarts when its own settings change (its address: port or host) or when a
//!   setting it reads only at start-up changes (`data_dir`, `durability`, `node_threads`,
//!   `places`, `secret`).
//! - Everything else a node uses is applied live: its links (added and dropped without a
//!   restart, and its neighbours' addresses), `limits`, `links`, `reconnect` and `logs`.
//! - `supervisor:` settings are the supervisor's own; `run_dir` cannot change under a
//!   running supervisor (its socket and the nodes' locks live there).

use std::collections::BTreeMap;

use anyhow::{bail, Result};

use crate::config::{HerdConfig, ServerConfig};

/// What `herdctl reload` does, server by server.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// In the new file only: started.
    pub added: Vec<String>,
    /// In the old file only: stopped.
    pub removed: Vec<String>,
    /// Restarted, with why.
    pub restart: BTreeMap<String, String>,
    /// Told the new file while running, with what changes for each (possibly nothing).
    pub live: BTreeMap<String, Vec<String>>,
    /// `supervisor:` settings changed.
    pub supervisor: bool,
}

/// Plans the move from `old` to `new`; an error when it cannot be done live at all.
pub fn plan(old: &HerdConfig, new: &HerdConfig) -> Result<Plan> {
    if old.run_dir != new.run_dir {
        bail!(
            "run_dir changed ({} -> {}): the supervisor's socket and the servers' locks live \
             there; run `herdctl stop all`, then `herdctl start all`",
            old.run_dir.display(),
            new.run_dir.display()
        );
    }
    let mut plan = Plan {
        supervisor: old.supervisor != new.supervisor,
        ..Plan::default()
    };
    for name in old.servers.keys() {
        if !new.servers.contains_key(name) {
            plan.removed.push(name.clone());
        }
    }
    for name in new.servers.keys() {
        if !old.servers.contains_key(name) {
            plan.added.push(name.clone());
        } else if let Some(why) = restart_reason(old, new, name) {
            plan.restart.insert(name.clone(), why);
        } else {
            plan.live.insert(name.clone(), live_changes(old, new, name));
        }
    }
    Ok(plan)
}

/// Why server `name` must restart to run `new` instead of `old`, if it must. `name` must
/// be in both.
pub fn restart_reason(old: &HerdConfig, new: &HerdConfig, name: &str) -> Option<String> {
    let (was, now) = (&old.servers[name], &new.servers[name]);
    let (from, to) = (old.endpoint(was), new.endpoint(now));
    if from != to {
        return Some(format!("its address changed ({from} -> {to})"));
    }
    if own_settings(was) != own_settings(now) {
        return Some("its settings changed".to_owned());
    }
    let read_at_start = [
        ("data_dir", old.data_dir != new.data_dir),
        ("durability", old.durability != new.durability),
        ("node_threads", old.node_threads != new.node_threads),
        ("places", old.places != new.places),
        ("secret", old.secret != new.secret),
        ("links.tls", old.tls != new.tls),
    ];
    read_at_start
        .iter()
        .find(|(_, changed)| *changed)
        .map(|(key, _)| format!("{key} changed (read at start-up)"))
}

/// A server's own settings, without its links (those change live).
fn own_settings(server: &ServerConfig) -> ServerConfig {
    ServerConfig {
        neighbours: Default::default(),
        ..server.clone()
    }
}

/// What changes live for server `name`, for the operator: links added and dropped, moved
/// neighbours, and the herd-wide sections that differ.
pub fn live_changes(old: &HerdConfig, new: &HerdConfig, name: &str) -> Vec<String> {
    let (was, now) = (&old.servers[name], &new.servers[name]);
    let mut changes = Vec::new();
    let added: Vec<&str> = now
        .neighbours
        .difference(&was.neighbours)
        .map(String::as_str)
        .collect();
    let dropped: Vec<&str> = was
        .neighbours
        .difference(&now.neighbours)
        .map(String::as_str)
        .collect();
    if !added.is_empty() {
        changes.push(format!("link to {} added", added.join(", ")));
    }
    if !dropped.is_empty() {
        changes.push(format!("link to {} dropped", dropped.join(", ")));
    }
    let moved: Vec<&str> = was
        .neighbours
        .intersection(&now.neighbours)
        .filter(|n| old.endpoint(&old.servers[*n]) != new.endpoint(&new.servers[*n]))
        .map(String::as_str)
        .collect();
    if !moved.is_empty() {
        changes.push(format!("new address for {}", moved.join(", ")));
    }
    let sections = [
        ("limits", old.limits != new.limits),
        ("links", old.links != new.links),
        ("reconnect", old.reconnect != new.reconnect),
        ("logs", old.logs != new.logs),
        ("clients", old.clients != new.clients),
    ];
    for (section, changed) in sections {
        if changed {
            changes.push(format!("{section} settings"));
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const BASE: &str = "\
servers:
  A: { port: 1, peers: [B] }
  B: { port: 2 }
  C: { port: 3, peers: [B] }
";

    fn config(text: &str) -> HerdConfig {
        HerdConfig::parse(
            text,
            Path::new("/h/herd.yaml"),
            &crate::config::Environment::default(),
        )
        .unwrap()
    }

    fn plan_for(new: &str) -> Plan {
        plan(&config(BASE), &config(new)).unwrap()
    }

    #[test]
    fn the_same_file_changes_nothing_but_is_still_told() {
        let p = plan_for(BASE);
        assert!(p.added.is_empty() && p.removed.is_empty() && p.restart.is_empty());
        assert!(!p.supervisor);
        assert_eq!(p.live.len(), 3);
        assert!(p.live.values().all(Vec::is_empty));
    }

    #[test]
    fn servers_added_removed_and_moved() {
        let p = plan_for(
            "servers:\n  A: { port: 1, peers: [B, D] }\n  B: { port: 20 }\n  D: { port: 4 }\n",
        );
        assert_eq!(p.added, ["D"]);
        assert_eq!(p.removed, ["C"]);
        assert_eq!(
            p.restart["B"],
            "its address changed (127.0.0.1:2 -> 127.0.0.1:20)"
        );
        assert_eq!(p.live["A"], ["link to D added", "new address for B"]);
        assert!(!p.live.contains_key("B"));
    }

    #[test]
    fn links_change_live_on_both_ends() {
        let p = plan_for(
            "servers:\n  A: { port: 1 }\n  B: { port: 2 }\n  C: { port: 3, peers: [B, A] }\n",
        );
        assert!(p.restart.is_empty());
        assert_eq!(p.live["A"], ["link to C added", "link to B dropped"]);
        assert_eq!(p.live["B"], ["link to A dropped"]);
        assert_eq!(p.live["C"], ["link to A added"]);
    }

    #[test]
    fn herd_wide_settings_restart_or_apply_live() {
        let p = plan_for(&format!("{BASE}durability: strict\n"));
        assert_eq!(p.restart.len(), 3);
        assert_eq!(p.restart["A"], "durability changed (read at start-up)");
        let p = plan_for(&format!("{BASE}node_threads: 2\n"));
        assert_eq!(p.restart["B"], "node_threads changed (read at start-up)");
        let p = plan_for(&format!("{BASE}host: 127.0.0.2\n"));
        assert!(p.restart["C"].starts_with("its address changed"));
        let p = plan_for(&format!(
            "{BASE}limits: {{ max_connections: 5 }}\nlogs: {{ keep: 2 }}\n"
        ));
        assert!(p.restart.is_empty());
        assert_eq!(p.live["B"], ["limits settings", "logs settings"]);
        let p = plan_for(&format!("{BASE}supervisor: {{ health_failures: 9 }}\n"));
        assert!(p.supervisor && p.restart.is_empty());
    }

    #[test]
    fn run_dir_cannot_move_under_a_running_supervisor() {
        let e = plan(
            &config(BASE),
            &config(&format!("{BASE}run_dir: /elsewhere\n")),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("run_dir changed") && e.contains("stop all"),
            "{e}"
        );
    }
}
