//! `herdctl chaos`: a seeded run of IAMAT load and random faults, then a check in the manner
//! of Jepsen's set checker. Load goes to every server in turn (a new client id per update,
//! so every acknowledged update must end up on every server); faults are chosen from the
//! seed alone (the same seed gives the same schedule), applied with the herd's own levers
//! (`link`, `pause`/`resume`, `kill`, `restart`: this binary, run as a child), and all
//! healed at the end. Then: how long until `verify` agrees, whether any acknowledged update
//! is missing anywhere (`lost`), how many reads during the run answered older than an
//! acknowledged update (`stale_reads`), and flood lines per update.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;

use crate::operator;
use herd_config::config::{Environment, HerdConfig};
use herd_wire::protocol::{ControlCommand, DIGEST_BUCKETS};

/// `herdctl chaos`: how long, how hard, which faults, from which seed.
#[derive(Debug, Clone, Args)]
pub struct ChaosArgs {
    /// How long the load and the faults last, in seconds (the check follows).
    #[arg(long, value_name = "SECS")]
    pub duration: f64,
    /// The seed the fault schedule follows: the same seed, the same schedule.
    #[arg(long, value_name = "N")]
    pub seed: u64,
    /// IAMATs per second, spread over the servers.
    #[arg(long, value_name = "R", default_value_t = 20.0)]
    pub rate: f64,
    /// The fault kinds to draw from, comma-separated (empty: none).
    #[arg(
        long,
        value_name = "LIST",
        default_value = "cut,delay,loss,pause,kill,restart"
    )]
    pub faults: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The fault kinds a run may use.
pub const KINDS: [&str; 6] = ["cut", "delay", "loss", "pause", "kill", "restart"];
/// How long the herd has to agree after the heal.
const CONVERGE_DEADLINE: Duration = Duration::from_secs(30);
const IO_TIMEOUT: Duration = Duration::from_secs(1);

/// One fault of the schedule: `kind` on `target` from `at_s` to `until_s` (seconds into the
/// run; kill and restart are instants, the supervisor brings the server back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fault {
    pub at_ms: u64,
    pub until_ms: u64,
    pub kind: String,
    /// A server, or `A-B` for a link.
    pub target: String,
    /// delay: milliseconds; loss: percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<u32>,
}

/// splitmix64: the whole schedule follows from the seed.
struct Seeded(u64);

impl Seeded {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The faults of a run: one every `duration / (n + 1)`, each held for half its slot, the
/// kind, target and amount drawn from the seed. Pure, so a seed replays exactly.
///
/// Kinds are dealt like cards from a deck the seed shuffles (reshuffled when it runs out),
/// so every requested kind is drawn at least once whenever the run holds as many faults as
/// kinds; the run holds one fault per 3 s, and at least one per kind while that leaves each
/// slot a second or more. Link kinds are left out of the deck when the herd has no link.
pub fn schedule(
    seed: u64,
    duration: Duration,
    kinds: &[String],
    servers: &[String],
    links: &[(String, String)],
) -> Vec<Fault> {
    let mut dice = Seeded(seed);
    let is_link_kind = |kind: &str| matches!(kind, "cut" | "delay" | "loss");
    let usable: Vec<&String> = kinds
        .iter()
        .filter(|kind| !(is_link_kind(kind) && links.is_empty()))
        .collect();
    if usable.is_empty() || servers.is_empty() {
        return Vec::new();
    }
    let total = duration.as_millis() as u64;
    // One fault per 3 s, and one of each kind if slots of a second or more allow, leaving
    // the last slot quiet; at least one.
    let room = (total / 1000).saturating_sub(1);
    let count = (total / 3000).max((usable.len() as u64).min(room)).max(1);
    let slot = total / (count + 1);
    let mut deck: Vec<&String> = Vec::new();
    let mut faults = Vec::new();
    for i in 0..count {
        if deck.is_empty() {
            deck = usable.clone();
            // Fisher-Yates from the seed; cards are dealt from the end.
            for j in (1..deck.len()).rev() {
                deck.swap(j, dice.below(j as u64 + 1) as usize);
            }
        }
        let kind = deck.pop().expect("refilled above");
        let at_ms = slot * i + slot / 4;
        let target = match is_link_kind(kind) {
            true => {
                let (a, b) = &links[dice.below(links.len() as u64) as usize];
                format!("{a}-{b}")
            }
            false => servers[dice.below(servers.len() as u64) as usize].clone(),
        };
        let amount = match kind.as_str() {
            "delay" => Some(50 + dice.below(200) as u32),
            "loss" => Some(20 + dice.below(61) as u32),
            _ => None,
        };
        faults.push(Fault {
            at_ms,
            until_ms: at_ms + slot / 2,
            kind: kind.clone(),
            target,
            amount,
        });
    }
    faults
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub seed: u64,
    pub duration_s: f64,
    pub acked: usize,
    /// Acknowledged updates missing from some server once the herd converged.
    pub lost: usize,
    pub converged: bool,
    /// From the end of the heal until `verify` agreed.
    pub converge_s: Option<f64>,
    /// WHATSATs during the run that answered older than an update acknowledged before them.
    pub stale_reads: usize,
    pub reads: usize,
    /// Flood lines the servers wrote (counted by each process alive at the end) per update.
    pub flood_lines_per_update: f64,
    pub faults: Vec<Fault>,
}

/// `herdctl chaos ...`.
pub fn run(config_path: &Path, args: &ChaosArgs) -> Result<ExitCode> {
    let config = HerdConfig::load(config_path, &Environment::of_process())?;
    let report = chaos(&config, args)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", describe(&report));
    }
    Ok(match report.lost == 0 && report.converged {
        true => ExitCode::SUCCESS,
        false => ExitCode::FAILURE,
    })
}

fn kinds(args: &ChaosArgs) -> Result<Vec<String>> {
    let kinds: Vec<String> = args
        .faults
        .split(',')
        .map(|k| k.trim().to_owned())
        .filter(|k| !k.is_empty())
        .collect();
    if let Some(bad) = kinds.iter().find(|k| !KINDS.contains(&k.as_str())) {
        bail!(
            "--faults: no fault kind {bad:?}; give some of {}",
            KINDS.join(",")
        );
    }
    Ok(kinds)
}

fn chaos(config: &HerdConfig, args: &ChaosArgs) -> Result<Report> {
    if !(args.duration.is_finite()
        && args.duration > 0.0
        && args.rate.is_finite()
        && args.rate > 0.0)
    {
        bail!("--duration and --rate must be above 0");
    }
    let kinds = kinds(args)?;
    let servers: Vec<String> = config.servers.keys().cloned().collect();
    let links: Vec<(String, String)> = config
        .servers
        .values()
        .flat_map(|s| {
            s.neighbours
                .iter()
                .filter(|n| s.name < **n)
                .map(|n| (s.name.clone(), n.clone()))
        })
        .collect();
    let duration = Duration::from_secs_f64(args.duration);
    let faults = match kinds.is_empty() {
        true => Vec::new(),
        false => schedule(args.seed, duration, &kinds, &servers, &links),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let endpoints = operator::endpoints(config)?;
    let floods_before = floods_sent(config, &endpoints, &runtime);

    let load = {
        let config = config.clone();
        let endpoints = endpoints.clone();
        let (rate, seed) = (args.rate, args.seed);
        std::thread::spawn(move || load(&config, &endpoints, duration, rate, seed))
    };
    let began = Instant::now();
    let mut pending: Vec<&Fault> = faults.iter().collect();
    let mut active: Vec<&Fault> = Vec::new();
    while began.elapsed() < duration {
        let now = began.elapsed().as_millis() as u64;
        while let Some(f) = pending.first().filter(|f| f.at_ms <= now) {
            start_fault(config, f);
            active.push(f);
            pending.remove(0);
        }
        active.retain(|f| {
            let over = f.until_ms <= now;
            if over {
                end_fault(config, f);
            }
            !over
        });
        std::thread::sleep(Duration::from_millis(20));
    }
    let (acked, reads, stale_reads) = load.join().expect("the load thread does not panic");
    // Heal everything.
    for f in &active {
        end_fault(config, f);
    }
    herdctl(config, &["link", "heal", "all"]);
    herdctl(config, &["start", "all"]);
    let healed = Instant::now();
    let mut converged = false;
    while healed.elapsed() < CONVERGE_DEADLINE {
        if runtime
            .block_on(crate::verify::check(config))
            .is_ok_and(|r| r.agree)
        {
            converged = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let converge_s = converged.then(|| healed.elapsed().as_secs_f64());
    let lost = runtime.block_on(count_lost(config, &endpoints, &acked));
    let floods = floods_sent(config, &endpoints, &runtime).saturating_sub(floods_before);
    Ok(Report {
        seed: args.seed,
        duration_s: args.duration,
        acked: acked.len(),
        lost,
        converged,
        converge_s,
        stale_reads,
        reads,
        flood_lines_per_update: match acked.len() {
            0 => 0.0,
            n => floods as f64 / n as f64,
        },
        faults,
    })
}

/// Runs this herdctl with `args` on the same herd file, quietly.
fn herdctl(config: &HerdConfig, args: &[&str]) -> bool {
    let Ok(exe) = std::env::current_exe() else {
        return false;
    };
    std::process::Command::new(exe)
        .arg("--config")
        .arg(&config.path)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn link_ends(target: &str) -> (&str, &str) {
    target.split_once('-').unwrap_or((target, target))
}

fn start_fault(config: &HerdConfig, f: &Fault) {
    let (a, b) = link_ends(&f.target);
    let amount = f.amount.unwrap_or(0).to_string();
    match f.kind.as_str() {
        "cut" => herdctl(config, &["link", "cut", a, b]),
        "delay" => herdctl(config, &["link", "delay", a, b, &amount]),
        "loss" => herdctl(config, &["link", "loss", a, b, &amount]),
        "pause" => herdctl(config, &["pause", &f.target]),
        "kill" => herdctl(config, &["kill", &f.target]),
        _ => herdctl(config, &["restart", &f.target]),
    };
}

fn end_fault(config: &HerdConfig, f: &Fault) {
    let (a, b) = link_ends(&f.target);
    match f.kind.as_str() {
        "cut" | "delay" | "loss" => herdctl(config, &["link", "heal", a, b]),
        "pause" => herdctl(config, &["resume", &f.target]),
        _ => true,
    };
}

/// The load: IAMATs at `rate` per second, each to the next server, a new client each; every
/// fifth tick a WHATSAT at another server for an update acknowledged earlier. Returns the
/// acknowledged (client, AT line), the reads and the stale ones.
fn load(
    config: &HerdConfig,
    endpoints: &BTreeMap<String, herd_config::hosts::Endpoint>,
    duration: Duration,
    rate: f64,
    seed: u64,
) -> (Vec<(String, String)>, usize, usize) {
    let names: Vec<&String> = config.servers.keys().collect();
    let interval = Duration::from_secs_f64(1.0 / rate);
    let began = Instant::now();
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1_700_000_000, |d| d.as_secs());
    let mut acked = Vec::new();
    let (mut reads, mut stale) = (0, 0);
    let mut i: u64 = 0;
    while began.elapsed() < duration {
        let due = interval.mul_f64(i as f64);
        if let Some(wait) = due.checked_sub(began.elapsed()) {
            std::thread::sleep(wait);
        }
        let name = names[(i as usize) % names.len()];
        let client = format!("chaos-{seed}-{i}");
        let line = format!("IAMAT {client} +34.0-118.4 {base}.{i:09}\n");
        if let Some(reply) = exchange(&endpoints[name], &line) {
            if reply.starts_with("AT ") {
                acked.push((client, reply.trim_end().to_owned()));
            }
        }
        if i % 5 == 4 && acked.len() > 1 {
            // An update acknowledged a while ago (a tenth of the acks back), read elsewhere.
            let (client, at) = &acked[acked.len() - 1 - acked.len() / 10];
            let other = names[(i as usize + 2) % names.len()];
            if let Some(reply) = exchange(&endpoints[other], &format!("WHATSAT {client} 1 1\n")) {
                reads += 1;
                if reply.lines().next() != Some(at.as_str()) {
                    stale += 1;
                }
            }
        }
        i += 1;
    }
    (acked, reads, stale)
}

/// One line to a server and the first line of its answer, within a second (a paused or
/// dead server answers nothing: `None`).
fn exchange(endpoint: &herd_config::hosts::Endpoint, line: &str) -> Option<String> {
    let (mut stream, _) = endpoint.connect_blocking(IO_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(IO_TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(IO_TIMEOUT)).ok()?;
    stream.write_all(line.as_bytes()).ok()?;
    let mut reply = String::new();
    BufReader::new(&mut stream as &mut TcpStream)
        .read_line(&mut reply)
        .ok()?;
    Some(reply)
}

/// Flood lines written by the servers alive now, summed (`HERD STATUS`).
fn floods_sent(
    config: &HerdConfig,
    endpoints: &BTreeMap<String, herd_config::hosts::Endpoint>,
    runtime: &tokio::runtime::Runtime,
) -> u64 {
    let _ = config;
    runtime.block_on(async {
        let mut total = 0;
        for endpoint in endpoints.values() {
            if let Some(f) = crate::supervisor::ask_figures(endpoint.clone(), IO_TIMEOUT).await {
                total += f.floods_sent;
            }
        }
        total
    })
}

/// Acknowledged updates some server does not hold (each client had one update, so its
/// record must be that one everywhere).
async fn count_lost(
    config: &HerdConfig,
    endpoints: &BTreeMap<String, herd_config::hosts::Endpoint>,
    acked: &[(String, String)],
) -> usize {
    if acked.is_empty() {
        return 0;
    }
    let all: Vec<String> = (0..DIGEST_BUCKETS).map(|b| b.to_string()).collect();
    let all = all.join(",");
    let command = ControlCommand::Records(&all);
    let mut missing = std::collections::BTreeSet::new();
    for (name, endpoint) in endpoints {
        let held: BTreeMap<String, String> =
            match operator::ask(config, name, endpoint, &command, Duration::from_secs(30)).await {
                Ok(answer) => answer
                    .records
                    .iter()
                    .map(|r| (r.client().to_owned(), r.line().to_owned()))
                    .collect(),
                Err(_) => BTreeMap::new(),
            };
        for (client, at) in acked {
            if held.get(client) != Some(at) {
                missing.insert(client.clone());
            }
        }
    }
    missing.len()
}

pub fn describe(r: &Report) -> String {
    let mut text = format!(
        "chaos run, seed {}, {:.0} s, {} faults:\n",
        r.seed,
        r.duration_s,
        r.faults.len()
    );
    for f in &r.faults {
        text += &format!(
            "  {:>6.1}s-{:>5.1}s  {:<7} {}{}\n",
            f.at_ms as f64 / 1000.0,
            f.until_ms as f64 / 1000.0,
            f.kind,
            f.target,
            match (f.kind.as_str(), f.amount) {
                ("delay", Some(ms)) => format!(" {ms} ms"),
                ("loss", Some(p)) => format!(" {p}%"),
                _ => String::new(),
            }
        );
    }
    text += &format!(
        "acked {}, lost {}; converged: {}; stale reads {} of {}; flood lines per update {:.2}\n",
        r.acked,
        r.lost,
        match r.converge_s {
            Some(s) => format!("yes, {s:.1} s after the heal"),
            None => format!("NO within {} s", CONVERGE_DEADLINE.as_secs()),
        },
        r.stale_reads,
        r.reads,
        r.flood_lines_per_update
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        let kinds: Vec<String> = KINDS.iter().map(|k| k.to_string()).collect();
        let servers: Vec<String> = ["A", "B", "C"].iter().map(|s| s.to_string()).collect();
        let links = vec![
            ("A".to_owned(), "B".to_owned()),
            ("B".to_owned(), "C".to_owned()),
        ];
        let d = Duration::from_secs(30);
        let one = schedule(7, d, &kinds, &servers, &links);
        assert_eq!(one, schedule(7, d, &kinds, &servers, &links));
        assert_ne!(one, schedule(8, d, &kinds, &servers, &links));
        assert_eq!(one.len(), 10);
        for f in &one {
            assert!(f.until_ms > f.at_ms && f.until_ms <= 30_000, "{f:?}");
            assert!(KINDS.contains(&f.kind.as_str()));
        }
        // Faults do not overlap: each is over before the next starts.
        for pair in one.windows(2) {
            assert!(pair[0].until_ms <= pair[1].at_ms, "{pair:?}");
        }
    }

    #[test]
    fn every_requested_kind_is_drawn_when_the_run_has_room_for_it() {
        let kinds: Vec<String> = KINDS.iter().map(|k| k.to_string()).collect();
        let servers: Vec<String> = ["A", "B", "C"].iter().map(|s| s.to_string()).collect();
        let links = vec![("A".to_owned(), "B".to_owned())];
        for seed in 0..200 {
            // 15 s: five slots of 3 s would leave a kind out; six slots of ~2.1 s do not.
            let faults = schedule(seed, Duration::from_secs(15), &kinds, &servers, &links);
            assert_eq!(faults.len(), KINDS.len(), "seed {seed}");
            for kind in KINDS {
                assert!(
                    faults.iter().any(|f| f.kind == *kind),
                    "seed {seed} never drew {kind}: {faults:?}"
                );
            }
        }
        // Without links, only the process kinds are dealt.
        let faults = schedule(3, Duration::from_secs(15), &kinds, &servers, &[]);
        assert!(!faults.is_empty());
        assert!(faults
            .iter()
            .all(|f| matches!(f.kind.as_str(), "pause" | "kill" | "restart")));
        // A run too short for a slot of a second per kind still gets one fault.
        assert_eq!(
            schedule(3, Duration::from_secs(2), &kinds, &servers, &links).len(),
            1
        );
    }
}
