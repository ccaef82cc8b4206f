//! [`HerdConfig::parse`]: herd-file text to the resolved herd. The file model is read with
//! spans, then each part is checked in turn (`servers.rs`, `sections.rs`, `places.rs`), so
//! an error names the first thing wrong, its line, and the fix.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use serde_saphyr::Spanned;

use super::defaults::DEFAULT_STRICT_WAIT_MS;
use super::model::{RawConfig, RawTls};
use super::places::places_config;
use super::sections::*;
use super::servers::{disconnected_warning, servers};
use super::settings::{AdminSettings, Redact, TlsFiles};
use super::{text_digest, Environment, HerdConfig};
use crate::auth::SecretSource;

impl HerdConfig {
    /// Validates herd-file text; `path` names the file in errors and anchors relative paths,
    /// `env` is what the environment sets (the caller reads it). No I/O: a file's own
    /// warnings (who may read it) are `load`'s.
    pub fn parse(text: &str, path: &Path, env: &Environment) -> Result<HerdConfig> {
        Ok(HerdConfig::parse_with(text, path, env)?.0)
    }

    /// [`HerdConfig::parse`], and whether the text itself holds the secret (`secret:`).
    pub(super) fn parse_with(
        text: &str,
        path: &Path,
        env: &Environment,
    ) -> Result<(HerdConfig, bool)> {
        let shown = path.display().to_string();
        let raw = file_model(text, &shown)?;
        let folder = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: Option<PathBuf>, default: &str| {
            let p = p.unwrap_or_else(|| PathBuf::from(default));
            if p.is_absolute() {
                p
            } else {
                folder.join(p)
            }
        };

        let servers = servers(&raw, &shown)?;
        let logs = logs_config(&raw.logs, resolve(raw.log_dir, "logs"), &shown)?;
        let places = places_config(raw.places, &shown, |f| resolve(Some(f), ""))?;
        let reconnect = reconnect_config(&raw.reconnect, &shown)?;
        let supervisor = supervisor_config(&raw.supervisor, &shown)?;

        let inline_secret = raw.secret.as_ref().map(|s| s.value.clone());
        let secret = secret_source(
            raw.secret,
            raw.secret_file.map(|f| Spanned {
                value: resolve(Some(f.value), ""),
                referenced: f.referenced,
                defined: f.defined,
            }),
            raw.insecure_open_links,
            env,
            folder,
            &shown,
        )?;
        let mut warnings = Vec::new();
        let limits = limits_config(raw.limits, &shown)?;
        let tls = tls_files(raw.links.tls.as_ref(), servers.len(), &shown, |p| {
            resolve(Some(p), "")
        })?;
        let links = links_config(raw.links, &shown)?;
        let clients = clients_config(&raw.clients, &shown)?;
        if logs.redact == Redact::Ids && matches!(secret, SecretSource::Open) {
            bail!(
                "{shown}: logs.redact: ids hashes client ids with the herd secret, and this herd \
                 has none (insecure_open_links: true); remove insecure_open_links, or use \
                 logs.redact: locations"
            );
        }

        warnings.extend(disconnected_warning(&servers));
        let config = HerdConfig {
            path: path.to_path_buf(),
            servers,
            logs,
            data_dir: resolve(raw.data_dir, "data"),
            durability: raw.durability.unwrap_or_default(),
            // Zero would refuse every strict update.
            strict_wait: nonzero(
                &shown,
                "strict_wait_ms",
                raw.strict_wait_ms,
                DEFAULT_STRICT_WAIT_MS,
                &format!("use e.g. {DEFAULT_STRICT_WAIT_MS}"),
            )
            .map(Duration::from_millis)?,
            node_threads: node_threads(raw.node_threads, &shown)?,
            places,
            reconnect,
            run_dir: resolve(raw.run_dir, "run"),
            secret,
            supervisor,
            limits,
            links,
            tls,
            admin: AdminSettings {
                open: raw.admin.open.unwrap_or(false),
            },
            clients,
            digest: text_digest(&match &inline_secret {
                // The digest is shown to anyone who asks: nothing of the secret goes in.
                Some(secret) if !secret.is_empty() => text.replace(secret.as_str(), ""),
                _ => text.to_owned(),
            }),
            warnings,
        };
        Ok((config, inline_secret.is_some()))
    }
}

/// The text as the file model; a YAML error names its line once, with a hint when one fits
/// (`config_errors.rs`).
fn file_model(text: &str, shown: &str) -> Result<RawConfig> {
    serde_saphyr::from_str(text).map_err(|e| {
        let message = yaml_message(&e);
        match e.location() {
            Some(at) => {
                let message = crate::config_errors::explain(
                    &message,
                    text,
                    at.line() as usize,
                    at.column() as usize,
                );
                anyhow!("{shown} line {}: {message}", at.line())
            }
            None => anyhow!("{shown}: {message}"),
        }
    })
}

/// `links.tls:` with its paths resolved; with several servers, cert and key must name each
/// server's own (`{name}`).
fn tls_files(
    raw: Option<&Spanned<RawTls>>,
    servers: usize,
    shown: &str,
    resolve: impl Fn(PathBuf) -> PathBuf,
) -> Result<Option<TlsFiles>> {
    let Some(t) = raw else {
        return Ok(None);
    };
    let path = |p: &str| resolve(PathBuf::from(p)).to_string_lossy().into_owned();
    let files = TlsFiles {
        ca: resolve(t.value.ca.clone()),
        cert: path(&t.value.cert),
        key: path(&t.value.key),
    };
    if servers > 1 && (!files.cert.contains("{name}") || !files.key.contains("{name}")) {
        bail!(
            "{shown} line {}: links.tls cert and key must contain {{name}} (each server has its \
             own), e.g. cert: certs/{{name}}.pem, key: certs/{{name}}.key",
            t.referenced.line()
        );
    }
    Ok(Some(files))
}

/// The most threads `node_threads` may ask for: more than any machine this runs on has cores
/// is a typo, not a plan.
const MAX_NODE_THREADS: usize = 1024;

/// `node_threads`, checked: 1 to [`MAX_NODE_THREADS`].
fn node_threads(value: Option<usize>, shown: &str) -> Result<Option<usize>> {
    match value {
        Some(n) if n == 0 || n > MAX_NODE_THREADS => bail!(
            "{shown}: node_threads is {n}; use 1 to {MAX_NODE_THREADS} (or leave it out: one \
             fewer than the machine's cores)"
        ),
        other => Ok(other),
    }
}

/// The YAML parser's message alone: its own rendering repeats the line and column, which
/// our error already names.
fn yaml_message(error: &serde_saphyr::Error) -> String {
    use serde_saphyr::MessageFormatter;
    let message = serde_saphyr::DefaultMessageFormatter.format_message(error.without_snippet());
    message.lines().next().unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::test_herd::{error, parse, CLASSIC};
    use crate::config::*;

    #[test]
    fn classic_herd_links_are_bidirectional() {
        let c = parse(CLASSIC).unwrap();
        let n = |s: &str| c.servers[s].neighbours.iter().cloned().collect::<Vec<_>>();
        assert_eq!(n("Alford"), ["Hamilton", "Welsh"]);
        assert_eq!(n("Ball"), ["Holiday", "Welsh"]);
        assert_eq!(n("Hamilton"), ["Alford", "Holiday"]);
        assert_eq!(n("Holiday"), ["Ball", "Hamilton"]);
        assert_eq!(n("Welsh"), ["Alford", "Ball"]);
        assert!(c.warnings.is_empty());
        assert!(c
            .servers
            .values()
            .all(|s| s.host.to_string() == "127.0.0.1" && s.listen.is_none()));
        assert_eq!(c.logs.dir, Path::new("/etc/herd/logs"));
        assert_eq!(c.data_dir, Path::new("/etc/herd/data"));
        assert_eq!(c.places, PlacesConfig::Offline { file: None });
        assert_eq!(c.durability, Durability::Relaxed, "the default");
    }

    #[test]
    fn durability_is_relaxed_or_strict() {
        let c = parse(&format!("{CLASSIC}durability: strict\n")).unwrap();
        assert_eq!(c.durability, Durability::Strict);
        let c = parse(&format!("{CLASSIC}durability: relaxed\n")).unwrap();
        assert_eq!(c.durability, Durability::Relaxed);
        let e = error(&format!("{CLASSIC}durability: always\n"));
        assert!(e.contains("line 7") && e.contains("relaxed, strict"), "{e}");
    }

    #[test]
    fn node_threads_is_a_count_or_left_to_the_machine() {
        let c = parse(CLASSIC).unwrap();
        assert_eq!(c.node_threads, None, "the default");
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(c.node_threads_here(), (cores - 1).max(1));
        let c = parse(&format!("{CLASSIC}node_threads: 3\n")).unwrap();
        assert_eq!((c.node_threads, c.node_threads_here()), (Some(3), 3));
        for bad in ["0", "1025"] {
            let e = error(&format!("{CLASSIC}node_threads: {bad}\n"));
            assert!(
                e.contains(&format!("node_threads is {bad}; use 1 to 1024")),
                "{e}"
            );
        }
    }

    #[test]
    fn relative_and_absolute_paths() {
        let c = parse(&format!(
            "{CLASSIC}log_dir: /var/log/herd\ndata_dir: state/db\n"
        ))
        .unwrap();
        assert_eq!(c.logs.dir, Path::new("/var/log/herd"));
        assert_eq!(c.data_dir, Path::new("/etc/herd/state/db"));
    }

    #[test]
    fn a_yaml_error_names_its_line_once() {
        let e = error("servers:\n  A: { port: x }\n");
        assert!(e.starts_with("/etc/herd/herd.yaml line 2: "), "{e}");
        assert_eq!(e.matches("line").count(), 1, "{e}");
        assert!(!e.contains("error:") && !e.contains("column"), "{e}");
        let e = error("servers:\n  A: { port: 1, peers: [B] foo }\n");
        assert_eq!(e.matches("line 2").count(), 1, "{e}");
    }

    #[test]
    fn the_digest_tells_texts_apart() {
        let a = parse(CLASSIC).unwrap().digest;
        assert_eq!(a.len(), 16);
        assert_eq!(a, parse(CLASSIC).unwrap().digest);
        assert_ne!(a, parse(&format!("{CLASSIC}# a comment\n")).unwrap().digest);
    }
}
