//! The supervisor's control protocol: one JSON request line from the CLI, one JSON response
//! line back, over the unix socket in the run folder.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::lifecycle::State;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "lowercase")]
pub enum Request {
    Start {
        names: Vec<String>,
    },
    Stop {
        names: Vec<String>,
    },
    Kill {
        name: String,
    },
    /// SIGSTOP a running node; its silence is not held against it until it is resumed.
    Pause {
        name: String,
    },
    /// SIGCONT a paused node.
    Resume {
        name: String,
    },
    Status,
    /// Re-read the herd file and apply it (see `config_diff.rs`).
    Reload,
    /// Stop every node, then end the supervisor.
    Shutdown,
}

/// What the supervisor knows of one node: process facts from waitpid and the node's lock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    pub name: String,
    pub state: State,
    pub pid: Option<u32>,
    pub port: u16,
    pub uptime_ms: Option<u64>,
    pub restarts: u32,
    /// How the last process ended (status or signal), and why when the supervisor ended it.
    pub last_exit: Option<String>,
    /// The last line the last process wrote to its stderr.
    #[serde(default)]
    pub last_words: Option<String>,
    /// How long until a node in backoff is restarted.
    pub backoff_ms: Option<u64>,
    /// Crashes since the last start request (reset before the start is answered).
    pub crashes_this_start: u32,
    /// Health probes of the running process unanswered in a row.
    #[serde(default)]
    pub failed_probes: u32,
    /// Why the node is FATAL (a crash loop, a restart loop), while it is.
    #[serde(default)]
    pub fatal_reason: Option<String>,
    /// A start asked for while the node was stopping, carried out once it is gone.
    #[serde(default)]
    pub start_queued: bool,
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadReport {
    /// The digest of the herd file now applied (nodes report it in `HERD STATUS`).
    pub digest: String,
    /// What was done, one line per server (and one for the supervisor's own settings).
    pub actions: Vec<String>,
    /// Servers started or restarted: they come up on the new file.
    pub started: Vec<String>,
    /// Servers removed from the file: being stopped.
    pub removed: Vec<String>,
    /// Running servers told to re-read the file (SIGHUP).
    pub told: Vec<String>,
    pub nodes: Vec<NodeReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "response", rename_all = "lowercase")]
pub enum Response {
    Ok { nodes: Vec<NodeReport> },
    Reloaded(ReloadReport),
    Error { message: String },
}

/// Sends one request and reads one response.
pub async fn call(stream: UnixStream, request: &Request) -> anyhow::Result<Response> {
    let (reader, mut writer) = stream.into_split();
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    writer.write_all(line.as_bytes()).await?;
    let mut answer = String::new();
    BufReader::new(reader).read_line(&mut answer).await?;
    if answer.is_empty() {
        anyhow::bail!("the supervisor closed the connection without answering");
    }
    Ok(serde_json::from_str(&answer)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_as_json_lines() {
        for request in [
            Request::Start {
                names: vec!["Alford".into()],
            },
            Request::Stop { names: vec![] },
            Request::Kill {
                name: "Ball".into(),
            },
            Request::Pause {
                name: "Welsh".into(),
            },
            Request::Resume {
                name: "Welsh".into(),
            },
            Request::Status,
            Request::Reload,
            Request::Shutdown,
        ] {
            let text = serde_json::to_string(&request).unwrap();
            assert!(!text.contains('\n'));
            assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), request);
        }
    }
}
