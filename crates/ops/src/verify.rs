//! `herdctl verify [--json]`: does every server of the herd hold the same table? Each server
//! is asked for its table digest (the 1024 bucket hashes anti-entropy compares) over the
//! operator's control path; when they differ, the records of a few differing buckets are
//! fetched from every server to name clients, their newest record, and who lacks it.
//! Exit 0: the herd agrees; 1: it does not; 2: a server could not be asked.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::operator::{self, Answer};
use herd_config::config::{Environment, HerdConfig};
use herd_config::hosts::Endpoint;
use herd_wire::protocol::{ControlCommand, DIGEST_BUCKETS};
use herd_wire::record::AtRecord;

/// How long a server has to answer one question.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);
/// Differing buckets whose records are fetched to name examples.
const SAMPLE_BUCKETS: usize = 8;
/// Clients named in a report.
const SAMPLES: usize = 5;
/// How often the servers are asked when their digests were taken at different expiry
/// horizons, and the pause between: a horizon moves by one step at most once a second.
const HORIZON_TRIES: usize = 5;
const HORIZON_PAUSE: Duration = Duration::from_millis(300);

#[derive(Debug, Clone, Serialize)]
pub struct ServerDigest {
    pub name: String,
    /// Clients it holds (`None`: it could not be asked).
    pub clients: Option<usize>,
    /// Which digest it has: servers with the same group number hold the same table; group 0
    /// is the digest most servers have.
    pub group: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A client whose newest record not every server holds.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub client: String,
    /// The newest AT line any server holds for it.
    pub newest: String,
    pub held_by: Vec<String>,
    /// Servers without it, or with an older record.
    pub lacking: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Every server answered and all hold the same table.
    pub agree: bool,
    pub servers: Vec<ServerDigest>,
    /// Servers that could not be asked.
    pub unreachable: Vec<String>,
    /// Buckets (of 1024) where the servers that answered differ.
    pub differing_buckets: usize,
    pub samples: Vec<Sample>,
}

impl Report {
    pub fn exit_code(&self) -> u8 {
        match (self.unreachable.is_empty(), self.agree) {
            (false, _) => 2,
            (true, true) => 0,
            (true, false) => 1,
        }
    }
}

/// `herdctl verify [--json]`.
pub fn run(config_path: &Path, json: bool) -> Result<ExitCode> {
    let config = HerdConfig::load(config_path, &Environment::of_process())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime.block_on(check(&config))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", describe(&report));
    }
    Ok(ExitCode::from(report.exit_code()))
}

/// Asks every server of the herd and compares what they hold.
pub async fn check(config: &HerdConfig) -> Result<Report> {
    let endpoints = operator::endpoints(config)?;
    let mut answers = ask_digests(config, &endpoints).await;
    // Under `clients.ttl_s`, a server that has swept its last expiry step and one about to
    // hold different tables for a moment (as anti-entropy knows: it compares only digests
    // taken at the same horizons). Ask again until every answer is at one horizon; each
    // server sweeps every second.
    let mut tries = 1;
    while !at_one_horizon(&answers) && tries < HORIZON_TRIES {
        tokio::time::sleep(HORIZON_PAUSE).await;
        answers = ask_digests(config, &endpoints).await;
        tries += 1;
    }
    let mut digests: BTreeMap<String, (usize, String)> = BTreeMap::new();
    let mut servers = Vec::new();
    let mut unreachable = Vec::new();
    for (name, answer) in answers {
        let parsed = answer.and_then(|a| {
            let clients = a.done["clients"].as_u64().context("no client count")? as usize;
            let digest = a.done["digest"].as_str().context("no digest")?.to_owned();
            anyhow::ensure!(
                digest.len() == DIGEST_BUCKETS * 16,
                "a digest of another size"
            );
            Ok((clients, digest))
        });
        match parsed {
            Ok(found) => {
                digests.insert(name.clone(), found);
            }
            Err(e) => {
                unreachable.push(name.clone());
                servers.push(ServerDigest {
                    name,
                    clients: None,
                    group: None,
                    error: Some(format!("{e:#}")),
                });
            }
        }
    }
    // Groups of servers with one digest, the largest first.
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for (name, (_, digest)) in &digests {
        match groups.iter_mut().find(|(d, _)| d == digest) {
            Some((_, names)) => names.push(name.clone()),
            None => groups.push((digest.clone(), vec![name.clone()])),
        }
    }
    groups.sort_by_key(|(_, names)| std::cmp::Reverse(names.len()));
    for (name, (clients, digest)) in &digests {
        servers.push(ServerDigest {
            name: name.clone(),
            clients: Some(*clients),
            group: groups.iter().position(|(d, _)| d == digest),
            error: None,
        });
    }
    servers.sort_by(|a, b| a.name.cmp(&b.name));
    let differing: Vec<u16> = (0..DIGEST_BUCKETS)
        .filter(|&b| {
            let mut values = digests.values().map(|(_, d)| &d[b * 16..b * 16 + 16]);
            let first = values.next();
            values.any(|v| Some(v) != first)
        })
        .map(|b| b as u16)
        .collect();
    let samples = match differing.is_empty() {
        true => Vec::new(),
        false => {
            let sampled = &differing[..differing.len().min(SAMPLE_BUCKETS)];
            samples(config, &endpoints, digests.keys(), sampled).await
        }
    };
    Ok(Report {
        agree: unreachable.is_empty() && groups.len() <= 1,
        servers,
        unreachable,
        differing_buckets: differing.len(),
        samples,
    })
}

/// Every server's `DIGEST` answer, asked all at once.
async fn ask_digests(
    config: &HerdConfig,
    endpoints: &BTreeMap<String, Endpoint>,
) -> Vec<(String, Result<Answer>)> {
    let asks = endpoints.iter().map(|(name, endpoint)| async move {
        let answer =
            operator::ask(config, name, endpoint, &ControlCommand::Digest, ASK_TIMEOUT).await;
        (name.clone(), answer)
    });
    operator::join_all(asks.collect()).await
}

/// Whether the servers that answered took their digests at the same expiry horizons (a
/// server that does not say is taken to agree).
fn at_one_horizon(answers: &[(String, Result<Answer>)]) -> bool {
    let mut horizons = answers
        .iter()
        .filter_map(|(_, a)| a.as_ref().ok())
        .filter_map(|a| a.done.get("horizons"));
    let first = horizons.next();
    horizons.all(|h| Some(h) == first)
}

/// Fetches the records of `buckets` from every server in `names` and names the clients whose
/// newest record some server lacks.
async fn samples<'a>(
    config: &HerdConfig,
    endpoints: &BTreeMap<String, herd_config::hosts::Endpoint>,
    names: impl Iterator<Item = &'a String>,
    buckets: &[u16],
) -> Vec<Sample> {
    let list: Vec<String> = buckets.iter().map(u16::to_string).collect();
    let list = list.join(",");
    let command = ControlCommand::Records(&list);
    let mut held: BTreeMap<String, BTreeMap<String, AtRecord>> = BTreeMap::new();
    let names: Vec<&String> = names.collect();
    let asks = names.iter().map(|name| {
        let command = &command;
        async move { operator::ask(config, name, &endpoints[*name], command, ASK_TIMEOUT).await }
    });
    let answers = operator::join_all(asks.collect()).await;
    for (name, answer) in names.iter().zip(answers) {
        let Ok(answer) = answer else { continue };
        for record in answer.records {
            held.entry(record.client().to_owned())
                .or_default()
                .insert((*name).clone(), record);
        }
    }
    let mut out = Vec::new();
    for (client, by_server) in held {
        let Some(newest) = by_server
            .values()
            .reduce(|a, b| if b.is_newer_than(a) { b } else { a })
        else {
            continue;
        };
        let (holding, lacking): (Vec<String>, Vec<String>) = names
            .iter()
            .map(|n| (*n).clone())
            .partition(|n| by_server.get(n) == Some(newest));
        if lacking.is_empty() {
            continue;
        }
        out.push(Sample {
            client,
            newest: newest.line().to_owned(),
            held_by: holding,
            lacking,
        });
        if out.len() == SAMPLES {
            break;
        }
    }
    out
}

/// The report as text.
pub fn describe(report: &Report) -> String {
    let mut text = String::new();
    let answered: Vec<&ServerDigest> = report
        .servers
        .iter()
        .filter(|s| s.group.is_some())
        .collect();
    if report.agree {
        let clients = answered.first().and_then(|s| s.clients).unwrap_or(0);
        text += &format!(
            "the herd agrees: {} servers hold the same {clients} clients\n",
            answered.len()
        );
        return text;
    }
    let groups = answered
        .iter()
        .filter_map(|s| s.group)
        .max()
        .map_or(0, |g| g + 1);
    if groups > 1 {
        text += &format!(
            "the herd differs: {groups} different tables among {} servers; {} of \
             {DIGEST_BUCKETS} buckets differ\n",
            answered.len(),
            report.differing_buckets
        );
    } else if !answered.is_empty() {
        text += &format!(
            "the {} servers that answered agree, but not every server could be asked\n",
            answered.len()
        );
    }
    for group in 0..groups {
        let members: Vec<&str> = answered
            .iter()
            .filter(|s| s.group == Some(group))
            .map(|s| s.name.as_str())
            .collect();
        let clients = answered
            .iter()
            .find(|s| s.group == Some(group))
            .and_then(|s| s.clients)
            .unwrap_or(0);
        text += &format!("  {}: {clients} clients\n", members.join(", "));
    }
    for sample in &report.samples {
        text += &format!(
            "  client {}: newest {:?} held by {}; lacking: {}\n",
            sample.client,
            sample.newest,
            sample.held_by.join(", "),
            sample.lacking.join(", ")
        );
    }
    for server in report.servers.iter().filter(|s| s.error.is_some()) {
        text += &format!(
            "  {}: cannot be asked: {}\n",
            server.name,
            server.error.as_deref().unwrap_or_default()
        );
    }
    text
}
