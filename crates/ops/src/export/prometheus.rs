//! `herdctl export prometheus`: a Prometheus scrape configuration for the whole herd, one
//! target per server's admin endpoint, labelled with its `server` name and `host`.
//!
//! `/metrics` needs the herd's admin token unless `admin: { open: true }`: the config then
//! reads it from `--token-file` (Prometheus's `authorization.credentials_file`), which
//! `--write-token` creates (0600). The token is never printed.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use serde_json::json;

use herd_config::config::{Environment, HerdConfig};

/// `herdctl export prometheus [--token-file F [--write-token]]`: prints the config.
pub fn export(
    config_path: &Path,
    token_file: Option<&Path>,
    write_token: bool,
) -> Result<ExitCode> {
    let config = HerdConfig::load(config_path, &Environment::of_process())?;
    let token_file = match token_file {
        Some(file) => Some(
            std::path::absolute(file)
                .with_context(|| format!("cannot make {} an absolute path", file.display()))?,
        ),
        None => None,
    };
    if write_token {
        let Some(file) = &token_file else {
            bail!("--write-token needs --token-file FILE: where to write the admin token");
        };
        let Some(token) = crate::admin::token(&config) else {
            bail!(
                "this herd has no secret, so no admin token to write: set admin: {{ open: true }} \
                 in {} to serve /metrics without one",
                config.path.display()
            );
        };
        super::kubernetes::write_private(file, &format!("{token}\n"))?;
    }
    print!("{}", scrape_config(&config, token_file.as_deref())?);
    Ok(ExitCode::SUCCESS)
}

/// The `scrape_configs:` for every server of the herd.
pub fn scrape_config(config: &HerdConfig, token_file: Option<&Path>) -> Result<String> {
    let needs_token = !config.admin.open;
    if needs_token && token_file.is_none() {
        bail!(
            "/metrics needs the herd's admin token: pass --token-file FILE (with --write-token to \
             create it, 0600), or set admin: {{ open: true }} in {}",
            config.path.display()
        );
    }
    let targets: Vec<_> = config
        .servers
        .values()
        .map(|server| {
            json!({
                "targets": [config.admin_endpoint(server).to_string()],
                "labels": { "server": server.name, "host": server.host.to_string() },
            })
        })
        .collect();
    let mut job = json!({
        "job_name": "herd",
        "metrics_path": "/metrics",
        "scheme": "http",
        "static_configs": targets,
    });
    if let (true, Some(file)) = (needs_token, token_file) {
        job["authorization"] = json!({
            "type": "Bearer",
            "credentials_file": file.display().to_string(),
        });
    }
    let document = json!({ "scrape_configs": [job] });
    let yaml = serde_saphyr::to_string(&document).context("cannot write YAML")?;
    Ok(format!(
        "# Prometheus scrape configuration for the herd in {} (herdctl export prometheus)\n{yaml}",
        config.path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HERD: &str = "servers:\n  Alford: { port: 12000, peers: [Welsh] }\n  \
                        Welsh: { port: 12004, admin_port: 14004 }\n\
                        secret: \"a-secret-for-a-prometheus-export-test\"\n";

    #[test]
    fn every_server_is_a_target_with_its_labels_and_the_token_file() {
        let config =
            HerdConfig::parse(HERD, Path::new("/h/herd.yaml"), &Environment::default()).unwrap();
        let text = scrape_config(&config, Some(Path::new("/h/token"))).unwrap();
        let parsed: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        let job = &parsed["scrape_configs"][0];
        assert_eq!(job["static_configs"][0]["targets"][0], "127.0.0.1:13000");
        assert_eq!(job["static_configs"][0]["labels"]["server"], "Alford");
        assert_eq!(job["static_configs"][1]["targets"][0], "127.0.0.1:14004");
        assert_eq!(job["static_configs"][1]["labels"]["host"], "127.0.0.1");
        assert_eq!(job["authorization"]["credentials_file"], "/h/token");
        assert!(!text.contains("a-secret"), "{text}");
        let error = scrape_config(&config, None).unwrap_err().to_string();
        assert!(error.contains("--token-file"), "{error}");
        let open = HerdConfig::parse(
            &format!("{HERD}admin: {{ open: true }}\n"),
            Path::new("/h/herd.yaml"),
            &Environment::default(),
        )
        .unwrap();
        let text = scrape_config(&open, None).unwrap();
        assert!(!text.contains("authorization"), "{text}");
    }
}
