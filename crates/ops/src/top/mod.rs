//! `herdctl top`: a live view of the whole herd from every server's admin endpoint,
//! refreshed every interval. On a terminal it is an interactive table (ratatui); otherwise
//! (a pipe, a file) it prints a plain table every interval, and with `--once` a single one.

pub mod model;
pub mod plain;
pub mod render;
pub mod samples;
pub mod scrape;
mod tui;

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Args;

use herd_config::config::{Environment, HerdConfig};
use model::Sort;
use render::View;
use scrape::{Scrape, Scraper};

/// `herdctl top`: how often, and whether just once.
#[derive(Debug, Clone, Args)]
pub struct TopArgs {
    /// Seconds between refreshes (rates are over this interval).
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    pub interval: f64,
    /// Print one plain table (two looks an interval apart, for the rates) and exit.
    #[arg(long)]
    pub once: bool,
}

/// The longest a server has to answer one scrape: longer would hold up every refresh.
const MAX_TIMEOUT: Duration = Duration::from_secs(1);

pub fn run(config_path: &Path, args: &TopArgs) -> Result<ExitCode> {
    if !(args.interval.is_finite() && (0.1..=3600.0).contains(&args.interval)) {
        bail!(
            "--interval {} is out of range: give seconds between 0.1 and 3600, e.g. --interval 2",
            args.interval
        );
    }
    let interval = Duration::from_secs_f64(args.interval);
    let config = HerdConfig::load(config_path, &Environment::of_process())?;
    let scraper = Scraper::new(&config, interval.min(MAX_TIMEOUT))?;
    if args.once {
        // Two looks an interval apart, so the snapshot has rates too.
        let first = scraper.scrape();
        std::thread::sleep(interval);
        let text = plain::table(&view(Some(&first), &scraper.scrape()));
        // A reader that closed the pipe early (`| head`) is no error.
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
        return Ok(ExitCode::SUCCESS);
    }
    if std::io::stdout().is_terminal() {
        tui::run(scraper, interval)?;
    } else {
        print_every(&scraper, interval);
    }
    Ok(ExitCode::SUCCESS)
}

/// Sorted rows of `now` (rates against `before`), by name.
pub fn view(before: Option<&Scrape>, now: &Scrape) -> View {
    let mut rows = model::rows(before, now);
    Sort::default().apply(&mut rows);
    View {
        rows,
        ..View::default()
    }
}

/// A plain table every interval, a blank line between them, until standard output closes.
fn print_every(scraper: &Scraper, interval: Duration) {
    let mut before = None;
    loop {
        let started = Instant::now();
        let now = scraper.scrape();
        let text = plain::table(&view(before.as_ref(), &now));
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{text}").and_then(|_| out.flush()).is_err() {
            return;
        }
        drop(out);
        before = Some(now);
        std::thread::sleep(interval.saturating_sub(started.elapsed()));
    }
}
