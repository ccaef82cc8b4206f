//! One look at the whole herd: every server's `/status` and `/metrics` from its admin
//! endpoint (all servers at once, each with its own timeout), and what this machine's
//! supervisor says of its servers (restarts, down or paused), when one runs.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::samples::Page;
use crate::admin::{self, LinkStatus, NodeStatus};
use crate::supervisor::control::{self, NodeReport, Request, Response};
use crate::supervisor::RunPaths;
use herd_config::config::HerdConfig;
use herd_config::hosts::{Endpoint, Locality};
use herd_wire::protocol::NodeFigures;

/// What one server answered (or not) at one moment.
#[derive(Debug, Clone)]
pub struct NodeScrape {
    pub name: String,
    pub host: String,
    /// `None`: its admin endpoint did not answer `/status` in time, as itself.
    pub status: Option<NodeFigures>,
    /// Its links, from `/status` (empty from a node that does not list them).
    pub links: Vec<LinkStatus>,
    pub metrics: Option<Page>,
    /// This machine's supervisor's report, for a server it runs.
    pub supervised: Option<NodeReport>,
    /// Why it did not answer: refused, timeout, an HTTP status.
    pub error: Option<String>,
}

/// Every server of the herd, at one moment.
#[derive(Debug, Clone)]
pub struct Scrape {
    pub at: Instant,
    pub nodes: Vec<NodeScrape>,
}

/// Where each server is asked, and with what token; owns the runtime its requests run on.
pub struct Scraper {
    runtime: tokio::runtime::Runtime,
    targets: Vec<(String, String, Endpoint)>,
    token: Option<String>,
    supervisor: RunPaths,
    timeout: Duration,
}

impl Scraper {
    /// Resolves once which servers are on this machine (asked on their local address) and
    /// which elsewhere; `timeout` bounds each request.
    pub fn new(config: &HerdConfig, timeout: Duration) -> Result<Scraper> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let here = Locality::look_up(config.hosts())?;
        let targets = config
            .servers
            .values()
            .map(|server| {
                let endpoint = config.reach(server, &here, false).admin;
                (server.name.clone(), server.host.to_string(), endpoint)
            })
            .collect();
        Ok(Scraper {
            runtime,
            targets,
            token: admin::token(config),
            supervisor: RunPaths::new(config),
            timeout,
        })
    }

    pub fn scrape(&self) -> Scrape {
        self.runtime.block_on(self.scrape_all())
    }

    async fn scrape_all(&self) -> Scrape {
        let asks: Vec<_> = self
            .targets
            .iter()
            .map(|(name, host, endpoint)| {
                let (name, host, endpoint) = (name.clone(), host.clone(), endpoint.clone());
                let (token, timeout) = (self.token.clone(), self.timeout);
                tokio::spawn(async move { scrape_node(name, host, endpoint, token, timeout).await })
            })
            .collect();
        let mut supervised = self.supervisor_reports().await;
        let mut nodes = Vec::with_capacity(asks.len());
        for ask in asks {
            if let Ok(mut node) = ask.await {
                node.supervised = supervised.remove(&node.name);
                nodes.push(node);
            }
        }
        Scrape {
            at: Instant::now(),
            nodes,
        }
    }

    /// The supervisor's reports by server, or none when no supervisor answers here.
    async fn supervisor_reports(&self) -> BTreeMap<String, NodeReport> {
        let ask = async {
            let stream = tokio::net::UnixStream::connect(&self.supervisor.socket)
                .await
                .ok()?;
            match control::call(stream, &Request::Status).await.ok()? {
                Response::Ok { nodes } => Some(nodes),
                _ => None,
            }
        };
        let nodes = tokio::time::timeout(self.timeout, ask)
            .await
            .ok()
            .flatten()
            .unwrap_or_default();
        nodes.into_iter().map(|n| (n.name.clone(), n)).collect()
    }
}

async fn scrape_node(
    name: String,
    host: String,
    endpoint: Endpoint,
    token: Option<String>,
    timeout: Duration,
) -> NodeScrape {
    let token = token.as_deref();
    let (status, metrics) = tokio::join!(
        admin::get(&endpoint, "/status", token, timeout),
        admin::get(&endpoint, "/metrics", token, timeout)
    );
    let mut error = None;
    let status = match status {
        None => {
            error = Some(format!("no answer from {endpoint}"));
            None
        }
        Some(r) if r.status != 200 => {
            error = Some(format!(
                "{endpoint} answered {}: {}",
                r.status,
                r.body.trim()
            ));
            None
        }
        // Only an answer in the server's own name counts.
        Some(r) => serde_json::from_str::<NodeStatus>(&r.body)
            .map(|s| (s.figures, s.links))
            .or_else(|_| serde_json::from_str::<NodeFigures>(&r.body).map(|f| (f, Vec::new())))
            .ok()
            .filter(|(f, _)| f.name == name),
    };
    let (status, links) = match status {
        Some((figures, links)) => (Some(figures), links),
        None => (None, Vec::new()),
    };
    let metrics = metrics
        .filter(|r| r.status == 200 && status.is_some())
        .map(|r| Page::new(&r.body));
    NodeScrape {
        name,
        host,
        status,
        links,
        metrics,
        supervised: None,
        error,
    }
}
