//! `herdctl export kubernetes --image IMAGE [--namespace NS]`: the herd as Kubernetes
//! objects, as multi-document YAML on stdout, for `kubectl apply -f -`.
//!
//! - a ConfigMap `herd-config` holding the herd file, rewritten for the cluster: each
//!   server's host becomes its Service's name, every server listens on 0.0.0.0, and the data,
//!   log and run folders move to the container's volumes;
//! - a Secret `herd-secret` when the herd file holds the herd secret (it is taken out of the
//!   ConfigMap);
//! - per server, a headless Service (its stable DNS name, which neighbours resolve at every
//!   dial, so a rescheduled pod is found) and a one-replica StatefulSet running
//!   `herdctl run <Name> --log-stdout`, with a volume claim for its store and TCP probes;
//! - with `links.tls`, each pod mounts at `/etc/herd-tls` the herd CA (Secret `herd-tls-ca`)
//!   and its own server's certificate and key (Secret `herd-<name>-tls`), and no other
//!   server's key. The export writes no private key: it says on stderr how to make those
//!   Secrets from the certificate folder (`kubectl create secret generic`).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Map, Value};

use super::kubernetes_tls::{tls_secret_commands, tls_volume, TLS_DIR};
use herd_config::config::{Environment, HerdConfig, PlacesConfig, ProviderKind, ServerConfig};

/// Where the pods find the herd file (the ConfigMap's mount).
pub const CONFIG_DIR: &str = "/etc/herd";
pub const CONFIG_FILE: &str = "herd.yaml";
/// The volume claim of each server: its store and its log files.
pub(crate) const STATE_DIR: &str = "/var/lib/herd";
/// An emptyDir, gone with the pod, which the kubelet makes writable by everyone: the run
/// folder (locks and stderr) is a private folder the node makes in it.
pub(crate) const RUN_MOUNT: &str = "/run/herd";
const RUN_DIR: &str = "/run/herd/run";
const CONFIG_MAP: &str = "herd-config";
const SECRET: &str = "herd-secret";
const GOOGLE_SECRET: &str = "herd-google-places";
const X_SECRET: &str = "herd-x";
/// The image's unprivileged user (scripts/image-root.sh and the Dockerfile make it).
pub(crate) const USER_ID: u32 = 65532;
/// A ConfigMap holds at most 1 MiB; keep room for the object around the data.
const MAX_CONFIG_MAP_BYTES: usize = 1000 * 1024;
/// What each server's store may grow to; change it in the output if it needs more.
const STORAGE: &str = "1Gi";

/// `herdctl export kubernetes`: prints the objects (or writes them to `out`, private to
/// this user: they hold the herd secret), and on stderr what to create by hand.
pub fn export(
    config_path: &Path,
    image: &str,
    namespace: Option<&str>,
    out: Option<&Path>,
) -> Result<ExitCode> {
    let (config, text) = HerdConfig::load_with_text(config_path, &Environment::of_process())?;
    let export = manifests(&config, &text, image, namespace)?;
    match out {
        Some(path) => write_private(path, &export.yaml)?,
        None => {
            print!("{}", export.yaml);
            if export.holds_secret {
                eprintln!(
                    "herdctl: warning: the output holds the herd secret (Secret {SECRET}): keep \
                     it private, or write it with --out FILE (created 0600)"
                );
            }
        }
    }
    for note in &export.notes {
        eprintln!("herdctl: note: {note}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `text` to `path`, readable and writable by this user only (an existing file is
/// made private before anything is written into it; a symbolic link is not followed).
pub(crate) fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let shown = path.display();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("cannot write {shown}: choose another --out FILE"))?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot make {shown} private (chmod 600)"))?;
    file.set_len(0)?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {shown}"))?;
    Ok(())
}

/// The objects as YAML, and things the operator must do besides applying them.
pub struct Manifests {
    pub yaml: String,
    pub notes: Vec<String>,
    /// The objects carry the herd secret (a Secret object).
    pub holds_secret: bool,
}

/// Builds every object for `config`, whose file says `text`.
pub fn manifests(
    config: &HerdConfig,
    text: &str,
    image: &str,
    namespace: Option<&str>,
) -> Result<Manifests> {
    if image.trim().is_empty() || image.chars().any(char::is_whitespace) {
        bail!("--image {image:?} is not an image reference; use e.g. registry.example.com/herdctl:1.0");
    }
    if let Some(ns) = namespace {
        if !is_dns_label(ns) {
            bail!(
                "--namespace {ns:?} is not a valid namespace name; use lower-case letters, \
                 digits and '-', at most 63"
            );
        }
    }
    let names = object_names(config)?;
    let mut notes = Vec::new();
    let cluster_config = cluster_herd_file(config, text, &names)?;
    let config_hash = herd_config::config::text_digest(&cluster_config.herd_yaml);

    let metadata = |name: &str, extra_labels: &[(&str, &str)]| {
        let mut labels = Map::new();
        labels.insert("app.kubernetes.io/name".into(), json!("herd"));
        labels.insert("app.kubernetes.io/managed-by".into(), json!("herdctl"));
        for (key, value) in extra_labels {
            labels.insert((*key).into(), json!(value));
        }
        let mut meta = Map::new();
        meta.insert("name".into(), json!(name));
        if let Some(ns) = namespace {
            meta.insert("namespace".into(), json!(ns));
        }
        meta.insert("labels".into(), Value::Object(labels));
        Value::Object(meta)
    };

    let mut documents = Vec::new();
    let mut data = Map::new();
    data.insert(CONFIG_FILE.into(), json!(cluster_config.herd_yaml));
    for (key, content) in &cluster_config.extra_files {
        data.insert(key.clone(), json!(content));
    }
    documents.push(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(CONFIG_MAP, &[]),
        "data": data,
    }));

    // Wherever the secret comes from here (the environment, the herd file, herd.secret), the
    // pods read it from a Secret, never from the ConfigMap.
    let secret = config.secret.ensure_secret()?;
    if let Some(secret) = &secret {
        documents.push(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": metadata(SECRET, &[]),
            "type": "Opaque",
            "stringData": { (herd_config::auth::SECRET_ENV): secret.reveal() },
        }));
    } else {
        notes.push(
            "the herd runs OPEN LINKS (insecure_open_links: true): any pod that reaches a \
             server's port can join the herd"
                .to_owned(),
        );
    }
    if let Some(files) = &config.tls {
        notes.push(tls_secret_commands(config, files, &names, namespace));
    }
    let mut env = vec![json!({
        "name": "HERD_CONFIG",
        "value": format!("{CONFIG_DIR}/{CONFIG_FILE}"),
    })];
    if secret.is_some() {
        env.push(json!({
            "name": herd_config::auth::SECRET_ENV,
            "valueFrom": { "secretKeyRef": { "name": SECRET, "key": herd_config::auth::SECRET_ENV } },
        }));
    }
    // An upstream places provider needs its credential in the environment, from a Secret.
    let credential = match config.places.provider() {
        ProviderKind::Offline => None,
        ProviderKind::Google => Some((GOOGLE_SECRET, herd_places::google::API_KEY_ENV, "google")),
        ProviderKind::X => Some((X_SECRET, herd_places::x::TOKEN_ENV, "x")),
    };
    if let Some((secret, key, provider)) = credential {
        env.push(json!({
            "name": key,
            "valueFrom": { "secretKeyRef": { "name": secret, "key": key } },
        }));
        notes.push(format!(
            "the {provider} places provider needs {key} in the cluster: kubectl create secret \
             generic {secret} --from-literal={key}=..."
        ));
    }

    for server in config.servers.values() {
        let name = &names[&server.name];
        let labels = [("app.kubernetes.io/instance", name.as_str())];
        let selector = json!({
            "app.kubernetes.io/name": "herd",
            "app.kubernetes.io/instance": name,
        });
        let mut ports = vec![
            json!({ "name": "herd", "port": server.port, "targetPort": "herd", "protocol": "TCP" }),
        ];
        if let Some(tls_port) = server.tls_port {
            ports.push(json!({
                "name": "herd-tls", "port": tls_port, "targetPort": "herd-tls", "protocol": "TCP",
            }));
        }
        documents.push(json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": metadata(name, &labels),
            "spec": {
                // Headless: the name resolves to the pod itself, ready or not, so
                // neighbours can link while it starts and find it again when it moves.
                "clusterIP": "None",
                "publishNotReadyAddresses": true,
                "selector": selector,
                "ports": ports,
            },
        }));
        documents.push(stateful_set(
            config,
            server,
            name,
            metadata(name, &labels),
            &selector,
            image,
            &env,
            &config_hash,
        ));
    }

    let mut yaml = String::new();
    for document in &documents {
        yaml.push_str("---\n");
        yaml.push_str(&serde_saphyr::to_string(document).context("cannot write YAML")?);
    }
    Ok(Manifests {
        yaml,
        notes,
        holds_secret: secret.is_some(),
    })
}

/// One server's StatefulSet: one replica running `herdctl run <Name>`.
#[allow(clippy::too_many_arguments)]
fn stateful_set(
    config: &HerdConfig,
    server: &ServerConfig,
    name: &str,
    metadata: Value,
    selector: &Value,
    image: &str,
    env: &[Value],
    config_hash: &str,
) -> Value {
    // On the admin port, never the client port: a client holding every client slot must
    // not make the pod look dead (or unready).
    let http_probe = |path: &str, period: u32, failures: u32| {
        json!({
            "httpGet": { "path": path, "port": "admin" },
            "periodSeconds": period,
            "failureThreshold": failures,
        })
    };
    let mut capabilities = json!({ "drop": ["ALL"] });
    if server.port < 1024 || server.tls_port.is_some_and(|p| p < 1024) {
        capabilities["add"] = json!(["NET_BIND_SERVICE"]);
    }
    // SIGTERM, then SIGKILL after the herd's stop timeout, as under herdctl's supervisor.
    let grace = config
        .supervisor
        .stop_timeout
        .as_millis()
        .div_ceil(1000)
        .max(1) as u64;
    let mut ports = vec![
        json!({ "name": "herd", "containerPort": server.port, "protocol": "TCP" }),
        json!({ "name": "admin", "containerPort": server.admin_port, "protocol": "TCP" }),
    ];
    let mut mounts = vec![
        json!({ "name": "config", "mountPath": CONFIG_DIR, "readOnly": true }),
        json!({ "name": "state", "mountPath": STATE_DIR }),
        json!({ "name": "run", "mountPath": RUN_MOUNT }),
    ];
    let mut volumes = vec![
        json!({ "name": "config", "configMap": { "name": CONFIG_MAP } }),
        json!({ "name": "run", "emptyDir": {} }),
    ];
    if let Some(tls_port) = server.tls_port {
        ports.push(json!({ "name": "herd-tls", "containerPort": tls_port, "protocol": "TCP" }));
    }
    if config.tls.is_some() {
        mounts.push(json!({ "name": "tls", "mountPath": TLS_DIR, "readOnly": true }));
        volumes.push(tls_volume(&server.name, name));
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": metadata,
        "spec": {
            "serviceName": name,
            "replicas": 1,
            "selector": { "matchLabels": selector },
            "template": {
                "metadata": {
                    "labels": selector,
                    // A changed herd file changes this, which rolls the pod onto it.
                    "annotations": {
                        "herdctl/config-sha256": config_hash,
                        // Prometheus's kubernetes_sd scrapes pods that ask for it; /metrics
                        // needs the admin token unless admin.open (see the README).
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": server.admin_port.to_string(),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    "terminationGracePeriodSeconds": grace,
                    "securityContext": {
                        "runAsNonRoot": true,
                        "runAsUser": USER_ID,
                        "runAsGroup": USER_ID,
                        "fsGroup": USER_ID,
                        // Otherwise the kubelet makes every folder on the volume writable by
                        // the group at each mount, and the node refuses such a folder.
                        "fsGroupChangePolicy": "OnRootMismatch",
                        "seccompProfile": { "type": "RuntimeDefault" },
                    },
                    "containers": [{
                        "name": "herd",
                        "image": image,
                        "command": ["herdctl"],
                        "args": [
                            "--config", format!("{CONFIG_DIR}/{CONFIG_FILE}"),
                            "run", server.name, "--log-stdout",
                        ],
                        "env": env,
                        "ports": ports,
                        // A node reads its whole store before it listens: give a big one
                        // time before liveness counts.
                        "startupProbe": http_probe("/readyz", 2, 150),
                        "readinessProbe": http_probe("/readyz", 5, 2),
                        "livenessProbe": http_probe("/healthz", 10, 3),
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "capabilities": capabilities,
                        },
                        "volumeMounts": mounts,
                    }],
                    "volumes": volumes,
                },
            },
            "volumeClaimTemplates": [{
                "metadata": { "name": "state" },
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": { "requests": { "storage": STORAGE } },
                },
            }],
        },
    })
}

/// The herd file as the pods read it, the files it refers to, and the secret taken out.
pub(crate) struct ClusterConfig {
    pub herd_yaml: String,
    /// Files the herd file names, by the name it gives them (beside the herd file).
    pub extra_files: BTreeMap<String, String>,
}

/// Rewrites the herd file for the cluster; the rest of it (links, limits, places, ...) is
/// kept as written. The result is validated like any herd file.
pub(crate) fn cluster_herd_file(
    config: &HerdConfig,
    text: &str,
    names: &BTreeMap<String, String>,
) -> Result<ClusterConfig> {
    let mut file: Value = serde_saphyr::from_str(text)
        .with_context(|| format!("cannot read {} as YAML", config.path.display()))?;
    let top = file
        .as_object_mut()
        .ok_or_else(|| anyhow!("{} is not a YAML mapping", config.path.display()))?;
    top.remove("host");
    top.insert("listen".into(), json!("0.0.0.0"));
    top.insert("data_dir".into(), json!(format!("{STATE_DIR}/data")));
    top.insert("log_dir".into(), json!(format!("{STATE_DIR}/logs")));
    top.insert("run_dir".into(), json!(RUN_DIR));
    // The secret reaches the pods through a Secret (see `manifests`).
    top.remove("secret");
    top.remove("secret_file");
    // The certificates are mounted at TLS_DIR (see `tls_volume`, and compose's mounts).
    if let Some(tls) = top
        .get_mut("links")
        .and_then(|l| l.get_mut("tls"))
        .filter(|t| t.is_object())
    {
        *tls = json!({
            "ca": format!("{TLS_DIR}/ca.pem"),
            "cert": format!("{TLS_DIR}/{{name}}.pem"),
            "key": format!("{TLS_DIR}/{{name}}.key"),
        });
    }
    let servers = top
        .get_mut("servers")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| anyhow!("{}: servers: is not a mapping", config.path.display()))?;
    for (server, spec) in servers.iter_mut() {
        let spec = spec.as_object_mut().ok_or_else(|| {
            anyhow!(
                "{}: server {server} is not a mapping",
                config.path.display()
            )
        })?;
        spec.remove("listen");
        spec.insert("host".into(), json!(names[server]));
    }

    let mut extra_files = BTreeMap::new();
    let places_file = top
        .get("places")
        .and_then(|p| p.get("file"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let resolved_file = match &config.places {
        PlacesConfig::Offline { file } => file.as_ref(),
        _ => None,
    };
    if let (Some(written), Some(resolved)) = (places_file, resolved_file) {
        // A relative path goes into the ConfigMap beside the herd file; an absolute one
        // must be in the image already.
        if Path::new(&written).is_relative() {
            let content = std::fs::read_to_string(resolved).with_context(|| {
                format!("cannot read places.file {} (as text)", resolved.display())
            })?;
            let key = "places.csv".to_owned();
            top["places"]["file"] = json!(key);
            extra_files.insert(key, content);
        }
    }

    let herd_yaml = serde_saphyr::to_string(&file).context("cannot write the herd file")?;
    HerdConfig::parse(
        &herd_yaml,
        &Path::new(CONFIG_DIR).join(CONFIG_FILE),
        &Environment::default(),
    )
    .context("the herd file rewritten for the cluster is not valid (a herdctl bug)")?;
    let size = herd_yaml.len() + extra_files.values().map(String::len).sum::<usize>();
    if size > MAX_CONFIG_MAP_BYTES {
        bail!(
            "the herd file and its places file take {size} bytes, more than a ConfigMap holds \
             (1 MiB); put the places file into the image and give places.file its absolute path"
        );
    }
    Ok(ClusterConfig {
        herd_yaml,
        extra_files,
    })
}

/// Each server's Service and StatefulSet name: `herd-` and the server's name in lower case,
/// `_` as `-` (Kubernetes names are DNS labels).
pub(crate) fn object_names(config: &HerdConfig) -> Result<BTreeMap<String, String>> {
    let mut names = BTreeMap::new();
    let mut taken: BTreeMap<String, &str> = BTreeMap::new();
    for server in config.servers.keys() {
        let name = format!("herd-{}", server.to_ascii_lowercase().replace('_', "-"));
        // A StatefulSet's name goes into its pods' labels with a suffix: 52 leaves room.
        if !is_dns_label(&name) || name.len() > 52 {
            bail!(
                "server {server} cannot be named {name:?} in Kubernetes (a name there is at \
                 most 52 lower-case letters, digits and '-', ending with a letter or digit); \
                 rename it in {}",
                config.path.display()
            );
        }
        if let Some(other) = taken.insert(name.clone(), server) {
            bail!(
                "servers {other} and {server} would both be named {name:?} in Kubernetes \
                 (names there are lower case, '_' as '-'); rename one in {}",
                config.path.display()
            );
        }
        names.insert(server.clone(), name);
    }
    Ok(names)
}

/// An RFC 1123 label: what Kubernetes accepts as a namespace or Service name.
fn is_dns_label(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const HERD: &str = "\
servers:
  Alford:   { port: 12000, peers: [Hamilton, Welsh] }
  Ball:     { port: 12001, peers: [Holiday, Welsh], host: 10.0.0.2, listen: 10.0.0.2 }
  Hamilton: { port: 12002, peers: [Holiday] }
  Holiday:  { port: 12003 }
  Welsh:    { port: 12004 }
host: 10.0.0.1
secret: s3cret-s3cret-s3cret-s3cret-s3cret
limits: { max_connections: 50 }
supervisor: { stop_timeout_ms: 2500 }
";

    fn export(text: &str, namespace: Option<&str>) -> Result<(HerdConfig, Manifests)> {
        let config = HerdConfig::parse(
            text,
            Path::new("/srv/herd/herd.yaml"),
            &Environment::default(),
        )?;
        let out = manifests(&config, text, "registry.example/herdctl:1", namespace)?;
        Ok((config, out))
    }

    fn documents(yaml: &str) -> Vec<Value> {
        serde_saphyr::from_str_multiple(yaml).unwrap()
    }

    #[test]
    fn every_server_gets_a_service_and_a_stateful_set() {
        let (_, out) = export(HERD, Some("herd")).unwrap();
        let docs = documents(&out.yaml);
        let kinds: Vec<(&str, &str)> = docs
            .iter()
            .map(|d| {
                (
                    d["kind"].as_str().unwrap(),
                    d["metadata"]["name"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            &kinds[..2],
            [("ConfigMap", "herd-config"), ("Secret", "herd-secret")]
        );
        assert_eq!(kinds.len(), 2 + 2 * 5);
        assert!(kinds.contains(&("Service", "herd-hamilton")));
        assert!(kinds.contains(&("StatefulSet", "herd-hamilton")));
        assert!(docs.iter().all(|d| d["metadata"]["namespace"] == "herd"));

        let set = docs
            .iter()
            .find(|d| d["kind"] == "StatefulSet" && d["metadata"]["name"] == "herd-ball")
            .unwrap();
        let pod = &set["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        assert_eq!(
            container["args"],
            json!([
                "--config",
                "/etc/herd/herd.yaml",
                "run",
                "Ball",
                "--log-stdout"
            ])
        );
        assert_eq!(container["ports"][0]["containerPort"], 12001);
        assert_eq!(set["spec"]["replicas"], 1);
        assert_eq!(pod["terminationGracePeriodSeconds"], 3);
        assert_eq!(
            container["readinessProbe"]["httpGet"],
            json!({ "path": "/readyz", "port": "admin" })
        );
        assert_eq!(
            container["livenessProbe"]["httpGet"],
            json!({ "path": "/healthz", "port": "admin" })
        );
        assert_eq!(container["ports"][1]["containerPort"], 13001);
        let annotations = &set["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(annotations["prometheus.io/scrape"], "true");
        assert_eq!(annotations["prometheus.io/port"], "13001");
        assert_eq!(
            set["spec"]["volumeClaimTemplates"][0]["metadata"]["name"],
            "state"
        );
        let env = container["env"].as_array().unwrap();
        assert!(env.iter().any(|e| e["name"] == "HERD_SECRET"
            && e["valueFrom"]["secretKeyRef"]["name"] == "herd-secret"));
    }

    #[test]
    fn the_config_map_points_every_host_at_its_service_and_listens_everywhere() {
        let (_, out) = export(HERD, None).unwrap();
        let docs = documents(&out.yaml);
        assert!(docs
            .iter()
            .all(|d| d["metadata"].get("namespace").is_none()));
        let herd_yaml = docs[0]["data"]["herd.yaml"].as_str().unwrap();
        assert!(
            !herd_yaml.contains("s3cret"),
            "the secret is in the Secret only"
        );
        assert_eq!(
            docs[1]["stringData"]["HERD_SECRET"],
            "s3cret-s3cret-s3cret-s3cret-s3cret"
        );
        let cluster = HerdConfig::parse(
            herd_yaml,
            Path::new("/etc/herd/herd.yaml"),
            &Environment::default(),
        )
        .unwrap();
        for server in cluster.servers.values() {
            assert_eq!(
                server.host.to_string(),
                format!("herd-{}", server.name.to_lowercase())
            );
            assert_eq!(server.listen, Some("0.0.0.0".parse().unwrap()));
        }
        assert_eq!(cluster.servers["Alford"].neighbours.len(), 2, "links kept");
        assert_eq!(cluster.limits.max_connections, 50, "settings kept");
        assert_eq!(cluster.data_dir, Path::new("/var/lib/herd/data"));
        assert_eq!(cluster.run_dir, Path::new("/run/herd/run"));
    }

    #[test]
    fn with_tls_each_pod_mounts_the_ca_and_its_own_key_from_secrets() {
        let text = format!(
            "{HERD}links:\n  tls: {{ ca: certs/ca.pem, cert: \"certs/{{name}}.pem\", key: \
             \"my certs/{{name}}.key\" }}\n"
        )
        .replace(
            "Ball:     { port: 12001,",
            "Ball:     { port: 12001, tls_port: 12101,",
        );
        let (_, out) = export(&text, Some("herd")).unwrap();
        let docs = documents(&out.yaml);
        let find = |kind: &str, name: &str| {
            docs.iter()
                .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
                .unwrap()
                .clone()
        };
        let pod = find("StatefulSet", "herd-ball")["spec"]["template"]["spec"].clone();
        let tls = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "tls")
            .unwrap()
            .clone();
        assert_eq!(tls["projected"]["defaultMode"], 0o400);
        assert_eq!(
            tls["projected"]["sources"],
            json!([
                { "secret": { "name": "herd-tls-ca", "items": [{ "key": "ca.pem", "path": "ca.pem" }] } },
                { "secret": { "name": "herd-ball-tls", "items": [
                    { "key": "Ball.pem", "path": "Ball.pem" },
                    { "key": "Ball.key", "path": "Ball.key" },
                ] } },
            ])
        );
        let container = &pod["containers"][0];
        assert!(container["volumeMounts"]
            .as_array()
            .unwrap()
            .contains(&json!({ "name": "tls", "mountPath": "/etc/herd-tls", "readOnly": true })));
        assert_eq!(
            container["ports"][2],
            json!({ "name": "herd-tls", "containerPort": 12101, "protocol": "TCP" })
        );
        assert_eq!(
            find("Service", "herd-ball")["spec"]["ports"][1]["port"],
            12101
        );
        // The pod runs as the image's user, in the group the kubelet gives the files to.
        assert_eq!(pod["securityContext"]["fsGroup"], USER_ID);
        assert_eq!(pod["securityContext"]["runAsUser"], USER_ID);

        // The herd file in the pods reads the mounted files.
        let herd_yaml = docs[0]["data"]["herd.yaml"].as_str().unwrap();
        let cluster = HerdConfig::parse(
            herd_yaml,
            Path::new("/etc/herd/herd.yaml"),
            &Environment::default(),
        )
        .unwrap();
        let files = cluster.tls.unwrap();
        assert_eq!(files.ca, Path::new("/etc/herd-tls/ca.pem"));
        assert_eq!(files.key_for("Ball"), Path::new("/etc/herd-tls/Ball.key"));

        // No key in the output; the note says how to make the Secrets from the files.
        assert!(!out.yaml.contains("PRIVATE KEY"));
        assert_eq!(docs.iter().filter(|d| d["kind"] == "Secret").count(), 1);
        let note = out.notes.iter().find(|n| n.contains("kubectl")).unwrap();
        assert!(
            note.contains(
                "kubectl --namespace herd create secret generic herd-ball-tls \
                 --from-file=Ball.pem=/srv/herd/certs/Ball.pem \
                 '--from-file=Ball.key=/srv/herd/my certs/Ball.key' --dry-run=client -o yaml \
                 | kubectl --namespace herd apply -f -"
            ),
            "{note}"
        );
        assert!(note.contains("herd-tls-ca --from-file=ca.pem=/srv/herd/certs/ca.pem"));
        assert!(!note.contains("ca.key"), "{note}");
    }

    #[test]
    fn names_that_kubernetes_cannot_take_are_refused() {
        let e = export("servers:\n  A_b: { port: 1 }\n  a-B: { port: 2 }\n", None)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("would both be named \"herd-a-b\""), "{e}");
        let e = export("servers:\n  A_: { port: 1 }\n", None)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("cannot be named"), "{e}");
        let e = export("servers:\n  A: { port: 1 }\n", Some("Bad_NS"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("--namespace"), "{e}");
    }
}
