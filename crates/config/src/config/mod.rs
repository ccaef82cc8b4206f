//! `herd.yaml`: the file model, its validation, and the resolved herd the rest of the code
//! uses. Validation errors name the file, the line, and the fix.
//!
//! - `model.rs`: the file as written (serde types, with spans for line numbers).
//! - `settings.rs`: the resolved settings the rest of the code reads.
//! - `defaults.rs`: every default and bound.
//! - `parse.rs`: text to [`HerdConfig`], checking `servers.rs`, `sections.rs`, `places.rs`.
//! - here: the resolved herd, reading its file, and where each server is reached.

mod defaults;
mod environment;
mod model;
mod parse;
mod places;
mod reach;
mod sections;
mod servers;
mod settings;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

pub use defaults::*;
pub use environment::Environment;
pub use reach::Reach;
pub use settings::*;

use crate::auth::SecretSource;

/// The whole herd, validated, with every path absolute (relative paths in the file resolve
/// against the file's folder, so the herd behaves the same from any working directory).
#[derive(Debug, Clone)]
pub struct HerdConfig {
    pub path: PathBuf,
    pub servers: BTreeMap<String, ServerConfig>,
    pub logs: LogSettings,
    pub data_dir: PathBuf,
    /// When each node's store is flushed.
    pub durability: Durability,
    /// Under strict durability, the longest an IAMAT reply waits for its flush; past it the
    /// IAMAT is refused (`? <line>`) rather than acknowledged.
    pub strict_wait: Duration,
    /// `node_threads`: the threads each node answers its connections on; `None`: one fewer
    /// than the cores of the machine it runs on ([`HerdConfig::node_threads_here`]).
    pub node_threads: Option<usize>,
    pub places: PlacesConfig,
    pub reconnect: ReconnectSettings,
    /// Where the supervisor keeps its socket and the nodes their locks.
    pub run_dir: PathBuf,
    /// Where the secret every server shares to authenticate peer links comes from
    /// (`HERD_SECRET`, `secret:`, `secret_file:`, `herd.secret` beside the file); open links
    /// only with `insecure_open_links: true`.
    pub secret: SecretSource,
    pub supervisor: SupervisorSettings,
    /// Per-node resource limits against hostile or broken clients.
    pub limits: Limits,
    /// What a link to a neighbour may queue, and how long it may stall.
    pub links: LinkSettings,
    /// `links.tls`: links are mutual TLS under the herd CA (see `tls/`).
    pub tls: Option<TlsFiles>,
    /// Who may read the admin endpoint.
    pub admin: AdminSettings,
    /// How long clients' locations and tombstones are kept, and how many clients a node
    /// holds.
    pub clients: ClientsSettings,
    /// A fingerprint of the file's text without its secret. Nodes report it in
    /// `HERD STATUS` (answered to anyone), so the supervisor can tell that they run the herd
    /// file it applied.
    pub digest: String,
    /// Things worth telling the operator that do not stop the herd (a disconnected graph).
    pub warnings: Vec<String>,
}

impl HerdConfig {
    /// The threads a node started here answers its connections on: `node_threads`, else
    /// the machine's cores less one, at least one. A node has two more busy threads of its
    /// own (the log writer, the store's writer and compactor), so a runtime thread per core
    /// makes them all share the cores; and a client table that two cores update moves its
    /// cache lines between them. On 2 cores, one runtime thread took ~10% less CPU per IAMAT
    /// and answered ~5% more IAMATs a second than two (README: Benchmarks).
    pub fn node_threads_here(&self) -> usize {
        self.node_threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map_or(1, |cores| cores.get().saturating_sub(1))
                .max(1)
        })
    }

    /// The lock file a running node `name` holds (`pidlock`): who holds it is the node's pid.
    pub fn node_lock_path(&self, name: &str) -> PathBuf {
        self.run_dir.join(format!("{name}.lock"))
    }

    /// Reads and validates a herd file, `env` being the environment it is read in.
    pub fn load(path: &Path, env: &Environment) -> Result<HerdConfig> {
        Ok(HerdConfig::load_with_text(path, env)?.0)
    }

    /// Reads and validates a herd file; also returns the text it read.
    pub fn load_with_text(path: &Path, env: &Environment) -> Result<(HerdConfig, String)> {
        let text = crate::config_errors::read_text(path)?;
        let config = HerdConfig::parse_file(&text, &absolute(path)?, env)?;
        Ok((config, text))
    }

    /// Validates the text in `copy` (the supervisor's copy of the herd file it applied) as
    /// if it were the file at `path`: errors name `path`, relative paths resolve against its
    /// folder.
    pub fn load_copy(copy: &Path, path: &Path, env: &Environment) -> Result<HerdConfig> {
        let text = std::fs::read_to_string(copy)
            .with_context(|| format!("cannot read the applied herd file {}", copy.display()))?;
        HerdConfig::parse_file(&text, &absolute(path)?, env)
    }

    /// [`HerdConfig::parse`], and a warning when `path`, whose text holds the secret, can be
    /// read by other users.
    fn parse_file(text: &str, path: &Path, env: &Environment) -> Result<HerdConfig> {
        let (mut config, secret_in_text) = HerdConfig::parse_with(text, path, env)?;
        if secret_in_text {
            if let Some(warning) = readable_by_others_warning(path) {
                config.warnings.insert(0, warning);
            }
        }
        Ok(config)
    }

    /// The server called `name`, or an error listing the ones that exist.
    pub fn server(&self, name: &str) -> Result<&ServerConfig> {
        self.servers.get(name).ok_or_else(|| {
            anyhow!(
                "no server named {name:?} in {}; known servers: {}",
                self.path.display(),
                self.server_names().join(", ")
            )
        })
    }

    pub fn server_names(&self) -> Vec<&str> {
        self.servers.keys().map(String::as_str).collect()
    }
}

/// A warning when the herd file, which holds the secret, can be read by other users.
fn readable_by_others_warning(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o044 != 0).then(|| {
        format!(
            "{} holds the herd secret and other users can read it (mode {:o}); make it private \
             with: chmod 600 {}, or move the secret to secret_file:",
            path.display(),
            mode & 0o777,
            path.display()
        )
    })
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))
}

/// The first 64 bits of the text's SHA-256, in hex: enough to tell herd files apart.
pub fn text_digest(text: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The herd files unit tests parse, and how they parse them.
#[cfg(test)]
mod test_herd {
    use std::path::Path;

    use anyhow::Result;

    use super::{Environment, HerdConfig};

    pub(super) const CLASSIC: &str = "\
servers:
  Alford:   { port: 12000, peers: [Hamilton, Welsh] }
  Ball:     { port: 12001, peers: [Holiday, Welsh] }
  Hamilton: { port: 12002, peers: [Holiday] }
  Holiday:  { port: 12003 }
  Welsh:    { port: 12004 }
";

    pub(super) fn parse(text: &str) -> Result<HerdConfig> {
        HerdConfig::parse(
            text,
            Path::new("/etc/herd/herd.yaml"),
            &Environment::default(),
        )
    }

    pub(super) fn error(text: &str) -> String {
        format!("{:#}", parse(text).expect_err("should be rejected"))
    }
}

#[cfg(test)]
mod tests {
    use super::test_herd::{parse, CLASSIC};
    use super::*;

    #[test]
    fn a_readable_file_holding_the_secret_is_a_warning_of_load_not_parse() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herd.yaml");
        let text = format!("{CLASSIC}secret: {}\n", "k".repeat(40));
        std::fs::write(&path, &text).unwrap();
        let env = Environment::default();
        let readable = |c: &HerdConfig| c.warnings.iter().any(|w| w.contains("chmod 600"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(readable(&HerdConfig::load(&path, &env).unwrap()));
        assert!(!readable(&HerdConfig::parse(&text, &path, &env).unwrap()));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(!readable(&HerdConfig::load(&path, &env).unwrap()));
        // Without a secret in it, who reads the file does not matter.
        std::fs::write(&path, CLASSIC).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(!readable(&HerdConfig::load(&path, &env).unwrap()));
    }

    #[test]
    fn unknown_server_lists_the_known_ones() {
        let c = parse(CLASSIC).unwrap();
        let e = c.server("Bal").unwrap_err().to_string();
        assert!(e.contains("Alford, Ball, Hamilton, Holiday, Welsh"), "{e}");
    }
}
