//! What `top` shows, one row per server, computed from two successive scrapes: rates are
//! the counters' growth between them divided by the time between them; p99 is read from
//! the request-duration histogram's growth over the same time.

use std::cmp::Ordering;

use super::samples::{quantile, Page};
use super::scrape::{NodeScrape, Scrape};
use crate::supervisor::lifecycle::State as Supervised;

/// Whether a server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    /// Its admin endpoint answered as itself.
    Up,
    /// Frozen by `herdctl pause` (this machine's supervisor says so).
    Paused,
    /// Not running, by this machine's supervisor (stopped, crashed, given up on).
    Down,
    /// No answer, and no supervisor here that knows why.
    Unreachable,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Up => "up",
            State::Paused => "paused",
            State::Down => "down",
            State::Unreachable => "unreachable",
        }
    }
}

/// The commands whose rates get their own column (the rest are summed as `other`).
pub const COMMANDS: [&str; 2] = ["IAMAT", "WHATSAT"];

/// One server's line.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub name: String,
    pub host: String,
    pub state: State,
    pub uptime_s: Option<u64>,
    /// Restarts by this machine's supervisor (unknown for another machine's servers).
    pub restarts: Option<u32>,
    pub clients: Option<usize>,
    /// Requests per second: IAMAT, WHATSAT, then every other command (`None`: no earlier
    /// scrape of the same process to compare with).
    pub rates: Option<[f64; 3]>,
    /// The 99th percentile of request latency over the last interval, in seconds (`None`:
    /// no requests then, or no earlier scrape).
    pub p99_s: Option<f64>,
    pub floods_in: Option<f64>,
    pub floods_out: Option<f64>,
    pub links_up: Option<usize>,
    pub links_total: Option<usize>,
    /// The neighbours whose link is not up, by name.
    pub missing: Vec<String>,
    /// How long each of `missing` has been down (same order; `None`: not known).
    pub missing_for_s: Vec<Option<u64>>,
    /// `Some(true)`: the store writes without error; `None`: no store, or no answer.
    pub store_ok: Option<bool>,
    pub log_dropped: Option<u64>,
}

/// The rows of `now`, with rates against `before` (the previous scrape, if any).
pub fn rows(before: Option<&Scrape>, now: &Scrape) -> Vec<Row> {
    now.nodes
        .iter()
        .map(|node| {
            let earlier = before.and_then(|b| {
                let dt = now.at.saturating_duration_since(b.at).as_secs_f64();
                let same = b.nodes.iter().find(|n| n.name == node.name)?;
                // Another process (restarted) starts its counters again: no rate.
                let same_pid = same.status.as_ref()?.pid == node.status.as_ref()?.pid;
                (same_pid && dt > 0.0).then_some((same.metrics.as_ref()?, dt))
            });
            row(node, earlier)
        })
        .collect()
}

fn row(node: &NodeScrape, earlier: Option<(&Page, f64)>) -> Row {
    let status = node.status.as_ref();
    let supervised = node.supervised.as_ref();
    let state = match (status, supervised.map(|s| s.state)) {
        (Some(_), Some(Supervised::Paused)) | (None, Some(Supervised::Paused)) => State::Paused,
        (Some(_), _) => State::Up,
        (None, Some(Supervised::Running | Supervised::Starting)) | (None, None) => {
            State::Unreachable
        }
        (None, Some(_)) => State::Down,
    };
    let metrics = node.metrics.as_ref();
    let rate = |name: &str, matching: &[(&str, &str)]| {
        let (page, dt) = earlier?;
        let now = metrics?.sum(name, matching);
        Some(((now - page.sum(name, matching)) / dt).max(0.0))
    };
    let rates = rate("herd_requests_total", &[]).map(|all| {
        let iamat = rate("herd_requests_total", &[("command", COMMANDS[0])]).unwrap_or(0.0);
        let whatsat = rate("herd_requests_total", &[("command", COMMANDS[1])]).unwrap_or(0.0);
        [iamat, whatsat, (all - iamat - whatsat).max(0.0)]
    });
    let p99_s = earlier.zip(metrics).and_then(|((before, _), now)| {
        let name = "herd_request_duration_seconds";
        quantile(&before.buckets(name), &now.buckets(name), 0.99)
    });
    // From `/status`'s links when it lists them (with how long each is down), else from
    // the metrics' `herd_link_up`.
    let mut missing: Vec<(String, Option<u64>)> = if node.links.is_empty() {
        metrics
            .map(|m| {
                m.named("herd_link_up")
                    .filter(|s| s.value < 1.0)
                    .filter_map(|s| s.label("peer").map(|p| (p.to_owned(), None)))
                    .collect()
            })
            .unwrap_or_default()
    } else {
        node.links
            .iter()
            .filter(|l| l.state != "up")
            .map(|l| (l.peer.clone(), Some(l.for_s)))
            .collect()
    };
    missing.sort();
    let (missing, missing_for_s) = missing.into_iter().unzip();
    let store_ok = match (status, metrics.and_then(|m| m.get("herd_store_healthy"))) {
        (Some(f), _) if f.store_error.is_some() => Some(false),
        (_, Some(healthy)) => Some(healthy >= 1.0),
        _ => None,
    };
    Row {
        name: node.name.clone(),
        host: node.host.clone(),
        state,
        uptime_s: status
            .map(|f| f.uptime_ms / 1000)
            .or_else(|| supervised.and_then(|s| s.uptime_ms).map(|ms| ms / 1000)),
        restarts: supervised.map(|s| s.restarts),
        clients: status.map(|f| f.clients),
        rates,
        p99_s,
        floods_in: rate("herd_floods_received_total", &[]),
        floods_out: rate("herd_floods_sent_total", &[]),
        links_up: status.map(|f| f.links_up),
        links_total: status.map(|f| f.links_total),
        missing,
        missing_for_s,
        store_ok,
        log_dropped: status.map(|f| f.log_dropped),
    }
}

/// The columns, in order: their heading, and whether numbers sort largest first.
pub const COLUMNS: [(&str, bool); 15] = [
    ("NAME", false),
    ("HOST", false),
    ("STATE", false),
    ("UPTIME", true),
    ("RESTARTS", true),
    ("CLIENTS", true),
    ("IAMAT/s", true),
    ("WHATSAT/s", true),
    ("OTHER/s", true),
    ("P99", true),
    ("FLOOD IN/s", true),
    ("FLOOD OUT/s", true),
    ("STORE", false),
    ("LOG DROPS", true),
    ("LINKS", false),
];

/// How rows are ordered: a column of [`COLUMNS`], and whether reversed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sort {
    pub column: usize,
    pub reversed: bool,
}

impl Sort {
    /// The next column (what the `s` key does).
    pub fn next(self) -> Sort {
        Sort {
            column: (self.column + 1) % COLUMNS.len(),
            reversed: false,
        }
    }

    pub fn apply(self, rows: &mut [Row]) {
        let (_, largest_first) = COLUMNS[self.column];
        rows.sort_by(|a, b| {
            let order = compare(self.column, a, b);
            let order = if largest_first {
                order.reverse()
            } else {
                order
            };
            let order = if self.reversed {
                order.reverse()
            } else {
                order
            };
            // Ties keep the herd file's (name) order.
            order.then_with(|| a.name.cmp(&b.name))
        });
    }
}

fn compare(column: usize, a: &Row, b: &Row) -> Ordering {
    let f = |x: Option<f64>, y: Option<f64>| x.partial_cmp(&y).unwrap_or(Ordering::Equal);
    let rate = |r: &Row, i: usize| r.rates.map(|rates| rates[i]);
    match column {
        0 => a.name.cmp(&b.name),
        1 => a.host.cmp(&b.host),
        2 => a.state.cmp(&b.state),
        3 => a.uptime_s.cmp(&b.uptime_s),
        4 => a.restarts.cmp(&b.restarts),
        5 => a.clients.cmp(&b.clients),
        6..=8 => f(rate(a, column - 6), rate(b, column - 6)),
        9 => f(a.p99_s, b.p99_s),
        10 => f(a.floods_in, b.floods_in),
        11 => f(a.floods_out, b.floods_out),
        12 => a.store_ok.cmp(&b.store_ok),
        13 => a.log_dropped.cmp(&b.log_dropped),
        _ => (a.missing.len(), &a.missing).cmp(&(b.missing.len(), &b.missing)),
    }
}

/// A row's cells as text, in [`COLUMNS`] order (shared by the live view and the plain
/// table, so both say the same).
pub fn cells(row: &Row) -> Vec<String> {
    let dash = || "-".to_owned();
    let rate = |r: Option<f64>| r.map_or_else(dash, format_rate);
    vec![
        row.name.clone(),
        row.host.clone(),
        row.state.as_str().to_owned(),
        row.uptime_s.map_or_else(dash, format_uptime),
        row.restarts.map_or_else(dash, |n| n.to_string()),
        row.clients.map_or_else(dash, |n| n.to_string()),
        rate(row.rates.map(|r| r[0])),
        rate(row.rates.map(|r| r[1])),
        rate(row.rates.map(|r| r[2])),
        row.p99_s.map_or_else(dash, format_seconds),
        rate(row.floods_in),
        rate(row.floods_out),
        match row.store_ok {
            Some(true) => "ok".to_owned(),
            Some(false) => "FAILING".to_owned(),
            None => dash(),
        },
        row.log_dropped.map_or_else(dash, |n| n.to_string()),
        match (row.links_up, row.links_total) {
            (Some(up), Some(total)) => {
                let mut text = format!("{up}/{total}");
                for (peer, for_s) in row.missing.iter().zip(&row.missing_for_s) {
                    text += &format!(" -{peer}");
                    if let Some(s) = for_s {
                        text += &format!(" {}", format_uptime(*s));
                    }
                }
                text
            }
            _ => dash(),
        },
    ]
}

fn format_rate(r: f64) -> String {
    if r >= 100.0 || r == 0.0 {
        format!("{r:.0}")
    } else {
        format!("{r:.1}")
    }
}

/// A latency bound as a person reads it: `250µs`, `2.5ms`, `1s`, `>10s`.
fn format_seconds(s: f64) -> String {
    if s.is_infinite() {
        ">10s".to_owned()
    } else if s < 0.001 {
        format!("{}µs", (s * 1e6).round())
    } else if s < 1.0 {
        format!("{}ms", (s * 1e4).round() / 10.0)
    } else {
        format!("{s}s")
    }
}

fn format_uptime(s: u64) -> String {
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// Each column's width in characters: its widest cell's, or its heading's if wider.
pub fn column_widths(texts: &[Vec<String>]) -> Vec<usize> {
    COLUMNS
        .iter()
        .enumerate()
        .map(|(i, (heading, _))| {
            let widest = texts
                .iter()
                .map(|t| t[i].chars().count())
                .max()
                .unwrap_or(0);
            widest.max(heading.len())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_as_people_read_them() {
        assert_eq!(format_seconds(0.00025), "250µs");
        assert_eq!(format_seconds(0.0025), "2.5ms");
        assert_eq!(format_seconds(f64::INFINITY), ">10s");
        assert_eq!(format_uptime(3725), "1h02m");
        assert_eq!(format_rate(0.0), "0");
        assert_eq!(format_rate(12.34), "12.3");
        assert_eq!(format_rate(1234.5), "1234");
    }
}
