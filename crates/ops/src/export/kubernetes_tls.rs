//! The certificates of the Kubernetes export (`links.tls`): each pod mounts at
//! `/etc/herd-tls` the herd CA (Secret `herd-tls-ca`) and its own server's certificate and
//! key (Secret `herd-<name>-tls`, one per server, so no pod holds another server's key).
//! The export writes no private key: it prints how to make the Secrets from the certificate
//! folder, with `kubectl` reading the files itself.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use herd_config::config::{HerdConfig, TlsFiles};

/// Where a pod (or a container) finds `ca.pem`, its own `<Name>.pem` and `<Name>.key`.
/// Not under CONFIG_DIR: a mount inside a ConfigMap's read-only volume needs a mount point
/// the runtime cannot make there.
pub(crate) const TLS_DIR: &str = "/etc/herd-tls";
/// The Secret holding the herd CA's certificate (never its key).
const TLS_CA_SECRET: &str = "herd-tls-ca";
/// A Secret volume's files are root's; with the pod's fsGroup the kubelet adds group read
/// (kubernetes/kubernetes#57923), which the node accepts for root's keys (`tls::key_file`).
const TLS_FILE_MODE: u32 = 0o400;

/// The Secret of server `server`'s certificate and key (`object`: its objects' name).
fn tls_secret_name(object: &str) -> String {
    format!("{object}-tls")
}

/// One pod's certificates: the herd CA and its own server's certificate and key, from
/// their Secrets (each file named, so a Secret that lacks one fails the pod's start
/// visibly), read-only.
pub(super) fn tls_volume(server: &str, object: &str) -> Value {
    let item = |file: String| json!({ "key": file, "path": file });
    json!({
        "name": "tls",
        "projected": {
            "defaultMode": TLS_FILE_MODE,
            "sources": [
                { "secret": { "name": TLS_CA_SECRET, "items": [item("ca.pem".into())] } },
                { "secret": {
                    "name": tls_secret_name(object),
                    "items": [item(format!("{server}.pem")), item(format!("{server}.key"))],
                } },
            ],
        },
    })
}

/// How to make the Secrets the pods' certificates come from, from the certificate folder:
/// `kubectl` reads the files itself, so no key is copied anywhere on the way. The same
/// commands replace a renewed certificate (`create --dry-run | apply`).
pub(super) fn tls_secret_commands(
    config: &HerdConfig,
    files: &TlsFiles,
    names: &BTreeMap<String, String>,
    namespace: Option<&str>,
) -> String {
    let ns = namespace.map_or(String::new(), |ns| format!(" --namespace {ns}"));
    let command = |secret: &str, sources: &[(String, std::path::PathBuf)]| {
        let from: Vec<String> = sources
            .iter()
            .map(|(key, path)| shell_word(&format!("--from-file={key}={}", path.display())))
            .collect();
        format!(
            "  kubectl{ns} create secret generic {secret} {} --dry-run=client -o yaml | kubectl{ns} apply -f -",
            from.join(" ")
        )
    };
    let mut text = format!(
        "the pods read their certificates from Secrets this output does not hold (no private \
         key leaves the certificate folder); create them (and again after `herdctl certs \
         issue`, then `kubectl{ns} rollout restart statefulset/herd-<name>`) with:\n{}",
        command(TLS_CA_SECRET, &[("ca.pem".into(), files.ca.clone())])
    );
    for server in config.servers.values() {
        let name = &server.name;
        text.push('\n');
        text.push_str(&command(
            &tls_secret_name(&names[name]),
            &[
                (format!("{name}.pem"), files.cert_for(name)),
                (format!("{name}.key"), files.key_for(name)),
            ],
        ));
    }
    text
}

/// `word` as one shell word: as is when plain, else in single quotes.
fn shell_word(word: &str) -> String {
    let plain = word
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+,:@=%".contains(c));
    if plain && !word.is_empty() {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}
