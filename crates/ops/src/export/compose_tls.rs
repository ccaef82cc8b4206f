//! The certificates of a Compose project (`links.tls`): copied into the project's `tls/`
//! folder (0700) and bind-mounted read-only, file by file, at `/etc/herd-tls` of each
//! container: the herd CA and the server's own certificate and key, no other server's key.
//!
//! Compose bind-mounts files with their owner and mode on this machine (its `secrets:` ignore
//! `uid`/`mode` outside Swarm), and the containers run as user 65532: each key is copied
//! 0400 and given to that user, which needs root; run as another user, the export says what
//! to run. A renewed certificate needs the export again (and `up -d`).

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use super::kubernetes::USER_ID;
use super::kubernetes_tls::TLS_DIR;
use herd_config::config::{HerdConfig, ServerConfig};

/// The project's folder of certificates.
pub const FOLDER: &str = "tls";

/// One file to copy into the project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsCopy {
    /// Where it comes from (the herd's certificate folder).
    pub from: PathBuf,
    /// Its name in the project's `tls/` folder and at `/etc/herd-tls`.
    pub name: String,
    /// A private key: given to the containers' user only.
    pub key: bool,
}

/// Every file the project needs (the CA once, each server's certificate and key).
pub fn copies(config: &HerdConfig) -> Vec<TlsCopy> {
    let Some(files) = &config.tls else {
        return Vec::new();
    };
    let mut copies = vec![TlsCopy {
        from: files.ca.clone(),
        name: "ca.pem".into(),
        key: false,
    }];
    for name in config.servers.keys() {
        copies.push(TlsCopy {
            from: files.cert_for(name),
            name: format!("{name}.pem"),
            key: false,
        });
        copies.push(TlsCopy {
            from: files.key_for(name),
            name: format!("{name}.key"),
            key: true,
        });
    }
    copies
}

/// Server `server`'s read-only mounts: the CA, its certificate and its key.
pub fn mounts(server: &ServerConfig) -> Vec<Value> {
    [
        "ca.pem".to_owned(),
        format!("{}.pem", server.name),
        format!("{}.key", server.name),
    ]
    .iter()
    .map(|file| json!(format!("./{FOLDER}/{file}:{TLS_DIR}/{file}:ro")))
    .collect()
}

/// Copies `copies` into `dir/tls`; notes for the operator (what to run when this user cannot
/// give the keys to the containers' user).
pub fn write(dir: &Path, copies: &[TlsCopy]) -> Result<(Vec<PathBuf>, Vec<String>)> {
    if copies.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let folder = dir.join(FOLDER);
    herd_os::private::folder(&folder, "the project's certificate folder")?;
    let root = nix::unistd::geteuid().is_root();
    let mut written = Vec::new();
    for copy in copies {
        let to = folder.join(&copy.name);
        let content = match copy.key {
            // As `herdctl certs` made it: this user's, private.
            true => herd_config::tls::certs::read_private_text(&copy.from)
                .map(String::into_bytes)
                .context("links.tls key")?,
            false => std::fs::read(&copy.from).with_context(|| {
                format!(
                    "cannot read {} (links.tls); make it with `herdctl certs init` or `certs \
                     issue NAME`",
                    copy.from.display()
                )
            })?,
        };
        // Anew each time: an earlier copy may be the containers' user's, read-only.
        let mut file = herd_os::private::create_new(&to)
            .with_context(|| format!("cannot write {}", to.display()))?;
        file.write_all(&content)
            .with_context(|| format!("cannot write {}", to.display()))?;
        let mode = match copy.key {
            true => 0o400,
            // Certificates are public; the folder keeps them from other users anyway.
            false => 0o644,
        };
        if copy.key && root {
            std::os::unix::fs::fchown(&file, Some(USER_ID), Some(USER_ID))
                .with_context(|| format!("cannot give {} to user {USER_ID}", to.display()))?;
        }
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot set the mode of {}", to.display()))?;
        written.push(to);
    }
    let mut notes = Vec::new();
    if !root {
        notes.push(format!(
            "the containers run as user {USER_ID}, which cannot read the keys copied into {} \
             (yours, 0400): give them to it with: sudo chown {USER_ID}:{USER_ID} {}/*.key",
            folder.display(),
            folder.display()
        ));
    }
    Ok((written, notes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_server_mounts_the_ca_and_its_own_certificate_and_key_only() {
        let config = HerdConfig::parse(
            "servers:\n  A: { port: 1 }\n  B: { port: 2 }\nlinks:\n  tls: { ca: c/ca.pem, \
             cert: \"c/{name}.pem\", key: \"c/{name}.key\" }\n",
            Path::new("/h/herd.yaml"),
            &herd_config::config::Environment::default(),
        )
        .unwrap();
        let names: Vec<(String, bool)> = copies(&config)
            .into_iter()
            .map(|c| (c.name, c.key))
            .collect();
        assert_eq!(
            names,
            [
                ("ca.pem".into(), false),
                ("A.pem".into(), false),
                ("A.key".into(), true),
                ("B.pem".into(), false),
                ("B.key".into(), true)
            ]
        );
        assert_eq!(copies(&config)[2].from, Path::new("/h/c/A.key"));
        assert_eq!(
            mounts(&config.servers["B"]),
            [
                json!("./tls/ca.pem:/etc/herd-tls/ca.pem:ro"),
                json!("./tls/B.pem:/etc/herd-tls/B.pem:ro"),
                json!("./tls/B.key:/etc/herd-tls/B.key:ro"),
            ]
        );
    }

    #[test]
    fn keys_are_copied_private_and_a_readable_key_is_refused() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("A.key");
        std::fs::write(&source, "KEY").unwrap();
        std::fs::set_permissions(&source, std::fs::Permissions::from_mode(0o600)).unwrap();
        let project = dir.path().join("project");
        std::fs::create_dir(&project).unwrap();
        let copy = TlsCopy {
            from: source.clone(),
            name: "A.key".into(),
            key: true,
        };
        // Twice: the second replaces a read-only copy.
        for _ in 0..2 {
            write(&project, std::slice::from_ref(&copy)).unwrap();
        }
        let meta = std::fs::metadata(project.join("tls/A.key")).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o400);
        assert_eq!(
            std::fs::metadata(project.join("tls")).unwrap().mode() & 0o777,
            0o700
        );
        if nix::unistd::geteuid().is_root() {
            assert_eq!(meta.uid(), USER_ID);
        }
        std::fs::set_permissions(&source, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = format!("{:#}", write(&project, &[copy]).unwrap_err());
        assert!(e.contains("chmod 600"), "{e}");
    }
}
