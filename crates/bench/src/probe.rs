//! `--propagation NAME`: the probe that times how long an update takes to reach NAME.

use anyhow::{Context, Result};
use tokio::io::AsyncWriteExt;
use tokio::time::{sleep_until, Instant};

use crate::generator::{iamat_line, Kind, Rng};
use crate::load::Replies;
use crate::stats::Histogram;
use crate::{Dial, PROBE_INTERVAL, PROBE_TIMEOUT};

/// Where the propagation probe sends and where it looks.
pub(crate) struct Probe {
    pub(crate) target: Dial,
    pub(crate) to: Dial,
    pub(crate) name: String,
    pub(crate) prefix: String,
}

pub(crate) struct ProbeFigures {
    pub(crate) name: String,
    pub(crate) latency: Histogram,
    pub(crate) poll_rtt: Histogram,
    pub(crate) lost: u64,
}

/// The propagation probe (see the module documentation).
pub(crate) async fn run_probe(probe: Probe, start: Instant, end: Instant) -> Result<ProbeFigures> {
    let (target_read, mut target_write) = probe
        .target
        .connect()
        .await
        .context("probe: cannot connect to the target")?;
    let (other_read, mut other_write) = probe
        .to
        .connect()
        .await
        .with_context(|| format!("probe: cannot connect to {}", probe.name))?;
    let mut target_replies = Replies::new(target_read);
    let mut other_replies = Replies::new(other_read);
    let mut figures = ProbeFigures {
        name: probe.name,
        latency: Histogram::new(),
        poll_rtt: Histogram::new(),
        lost: 0,
    };
    let mut rng = Rng::new(0x9a0be);
    let mut next = start + PROBE_INTERVAL / 2;
    let mut count = 0u64;
    while next < end {
        sleep_until(next).await;
        next += PROBE_INTERVAL;
        let id = format!("{}probe{count}", probe.prefix);
        count += 1;
        let mut line = Vec::new();
        iamat_line(&mut line, &id, &mut rng);
        target_write.write_all(&line).await?;
        target_write.flush().await?;
        if !target_replies.next(Kind::Iamat).await? {
            figures.lost += 1;
            continue;
        }
        let acked = Instant::now();
        let poll = format!("WHATSAT {id} 1 1\n");
        loop {
            let sent = Instant::now();
            other_write.write_all(poll.as_bytes()).await?;
            other_write.flush().await?;
            let visible = other_replies.next(Kind::Whatsat).await?;
            let now = Instant::now();
            figures.poll_rtt.record((now - sent).as_nanos() as u64);
            if visible {
                figures.latency.record((now - acked).as_nanos() as u64);
                break;
            }
            if now - acked > PROBE_TIMEOUT {
                figures.lost += 1;
                break;
            }
        }
    }
    Ok(figures)
}
