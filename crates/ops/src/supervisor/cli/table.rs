//! `herdctl status` as a table, fitted to the terminal.

use super::*;

/// `120`, or `120/1000` when the table is bounded (its fill).
pub(super) fn clients_column(r: &StatusRow) -> String {
    match (r.clients, r.clients_max) {
        (None, _) => "-".to_owned(),
        (Some(c), None) => c.to_string(),
        (Some(c), Some(max)) => format!("{c}/{max}"),
    }
}

/// `12 expired, 1 forgotten, 3 new clients refused (table full)`: the client lifecycle's
/// counts that are not zero.
pub(super) fn lifecycle_line(r: &StatusRow) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(n @ 1..) = r.expired {
        parts.push(format!("{n} expired"));
    }
    if let Some(n @ 1..) = r.forgotten {
        parts.push(format!("{n} forgotten"));
    }
    if let Some(n @ 1..) = r.refused_full {
        parts.push(format!("{n} new clients refused (table full: clients.max)"));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

pub(super) fn print_table(rows: &[StatusRow]) {
    let host_width = rows.iter().map(|r| r.host.len()).max().unwrap_or(0).max(4);
    let links: Vec<String> = rows.iter().map(links_column).collect();
    let links_width = links.iter().map(String::len).max().unwrap_or(0).max(5);
    let width = terminal_width();
    let header = format!(
        "{:<12} {:<host_width$} {:<5} {:<11} {:>8} {:>6} {:>9} {:>8} {:>8} {:<links_width$} {:>9} {:>7}  LAST EXIT",
        "NAME",
        "HOST",
        "LOCAL",
        "STATE",
        "PID",
        "PORT",
        "UPTIME",
        "RESTARTS",
        "CLIENTS",
        "LINKS",
        "RECOVERED",
        "SYNCED"
    );
    println!("{}", fit(&header, width));
    let dash = || "-".to_owned();
    for (r, links) in rows.iter().zip(&links) {
        let row = format!(
            "{:<12} {:<host_width$} {:<5} {:<11} {:>8} {:>6} {:>9} {:>8} {:>8} {:<links_width$} {:>9} {:>7}  {}",
            r.name,
            r.host,
            if r.local { "yes" } else { "no" },
            r.state,
            r.pid.map_or_else(dash, |p| p.to_string()),
            r.port,
            r.uptime_s.map_or_else(dash, format_uptime),
            r.restarts.map_or_else(dash, |n| n.to_string()),
            clients_column(r),
            links,
            r.recovered.map_or_else(dash, |n| n.to_string()),
            r.synced.map_or_else(dash, |n| n.to_string()),
            last_exit_column(r),
        );
        println!("{}", fit(&row, width));
    }
    // What needs the operator's attention, below the table (it does not fit a column).
    for r in rows {
        if let Some(line) = lifecycle_line(r) {
            println!("{}: {line}", r.name);
        }
        if let Some(why) = &r.fatal_reason {
            println!(
                "{}: FATAL: {why}; `herdctl start {}` tries again",
                r.name, r.name
            );
        }
        if let Some(holder) = &r.port_held_by {
            println!(
                "{}: {} but its port {} is held by {holder}, not by this herd",
                r.name, r.state, r.port
            );
        }
        if let Some(error) = &r.store_error {
            println!("{}: STORE UNHEALTHY: {error}", r.name);
        }
        for (peer, fault) in &r.faults {
            println!("{}: link to {peer}: {fault} (herdctl link heal)", r.name);
        }
        if let Some(tls) = tls_links_note(r) {
            println!("{}: {tls}", r.name);
        }
        if r.open_links == Some(true) {
            println!(
                "{}: OPEN LINKS: no herd secret (insecure_open_links: true); anyone who reaches \
                 its port can join the herd",
                r.name
            );
        }
        if let Some(dropped) = &r.peer_dropped {
            let reasons: Vec<String> = dropped.iter().map(|(k, v)| format!("{k} {v}")).collect();
            println!(
                "{}: refused from neighbours: {}",
                r.name,
                reasons.join(", ")
            );
        }
        if let Some(dropped @ 1..) = r.log_dropped {
            println!(
                "{}: {dropped} wire log lines dropped (its log writer fell behind)",
                r.name
            );
        }
    }
}

/// Which links run over TLS and when each neighbour's certificate expires
/// (`TLS links: Ball (certificate expires 2027-12-04 14:35:41 UTC, 364 days)`), and which
/// run in plain text on a herd that has TLS ones.
pub(super) fn tls_links_note(row: &StatusRow) -> Option<String> {
    let links = row.links.as_ref()?;
    let now = herd_config::tls::certs::now_secs();
    let tls: Vec<String> = links
        .iter()
        .filter(|l| l.encrypted == Some(true))
        .map(|l| match l.peer_cert_not_after {
            Some(at) => format!(
                "{} (certificate expires {}, {} days)",
                l.peer,
                herd_config::tls::der::format_utc(at),
                herd_config::tls::certs::days_left(at, now)
            ),
            None => l.peer.clone(),
        })
        .collect();
    if tls.is_empty() {
        return None;
    }
    let plain: Vec<&str> = links
        .iter()
        .filter(|l| l.encrypted == Some(false))
        .map(|l| l.peer.as_str())
        .collect();
    let mut note = format!("TLS links: {}", tls.join(", "));
    if !plain.is_empty() {
        note += &format!("; PLAIN-TEXT links: {}", plain.join(", "));
    }
    Some(note)
}

/// The LINKS column: up of total, then each neighbour that is not up and for how long
/// (`1/2 -Welsh 12s`), when the node's admin endpoint told.
pub(super) fn links_column(row: &StatusRow) -> String {
    let Some(up) = row.links_up else {
        return "-".to_owned();
    };
    let mut text = format!("{up}/{}", row.links_total);
    for link in row.links.iter().flatten().filter(|l| l.state != "up") {
        text += &format!(" -{} {}", link.peer, format_uptime(link.for_s));
    }
    text
}

/// The LAST EXIT column: how the last process ended and its last words, then what is
/// happening now (a restart pending, probes failing).
pub(super) fn last_exit_column(row: &StatusRow) -> String {
    let mut text = match (&row.last_exit, &row.last_words) {
        (Some(exit), Some(words)) => format!("{exit}: \"{words}\""),
        (Some(exit), None) => exit.clone(),
        (None, _) => "-".to_owned(),
    };
    if let Some(ms) = row.backoff_ms {
        text += &format!("; restart in {:.1}s", ms as f64 / 1000.0);
    }
    if row.failed_probes > 0 {
        text += &format!("; {} health probe(s) unanswered", row.failed_probes);
    }
    text
}

/// The width of the terminal on stdout, else `$COLUMNS`; `None` (no cut) for a pipe or
/// file with no `COLUMNS`, so scripts get whole rows (`--json` has every field anyway).
pub(super) fn terminal_width() -> Option<usize> {
    use nix::libc;
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into `size`, which lives across the call.
    let asked = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) };
    if asked == 0 && size.ws_col > 0 {
        return Some(size.ws_col.into());
    }
    std::env::var("COLUMNS")
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|w| *w > 0)
}

/// `line` cut to `width` characters, ending in `...` when cut.
pub(super) fn fit(line: &str, width: Option<usize>) -> String {
    let Some(width) = width else {
        return line.to_owned();
    };
    if line.chars().count() <= width {
        return line.to_owned();
    }
    let kept: String = line.chars().take(width.saturating_sub(3)).collect();
    format!("{kept}...")
}

pub(super) fn format_uptime(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptimes_read_well() {
        assert_eq!(format_uptime(5), "5s");
        assert_eq!(format_uptime(65), "1m05s");
        assert_eq!(format_uptime(3 * 3600 + 120), "3h02m");
        assert_eq!(format_uptime(2 * 86400 + 3600), "2d01h");
    }
}
