//! `herdctl export compose --image IMAGE --dir DIR [--publish]`: the herd as a Docker Compose
//! project, for `docker compose up -d` (or `docker-compose`) in DIR:
//!
//! - `compose.yaml`: per server a service `herd-<name>` (its DNS name on the project's own
//!   network `herd`; the container's hostname is the server's name) running
//!   `herdctl run <Name> --log-stdout` as the image's unprivileged user, with a volume for
//!   its store and logs, a tmpfs for its run folder, a read-only root, no capabilities, a
//!   restart policy and a health check (`herdctl probe`, the admin endpoint's `/healthz`);
//! - `herd.yaml`: the herd file as the containers read it (the same rewrite as for
//!   Kubernetes: hosts are the services' names, every server listens on 0.0.0.0, folders
//!   move into the volume), and any places file it names;
//! - `herd.env` (0600): `HERD_SECRET`, which the services read from it: the herd's secret,
//!   wherever it comes from here (`herd.secret` beside the herd file is made if it does not
//!   exist yet, as `herdctl start` would), so the containers and this machine's herdctl
//!   share it. Only `insecure_open_links: true` leaves it out;
//! - with `links.tls`, `tls/`: the certificates each container mounts (`compose_tls.rs`).

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use serde_json::{json, Map};

use super::kubernetes::{
    cluster_herd_file, object_names, CONFIG_DIR, CONFIG_FILE, RUN_MOUNT, STATE_DIR, USER_ID,
};
use herd_config::auth::SECRET_ENV;
use herd_config::config::{Environment, HerdConfig, ProviderKind};

pub const COMPOSE_FILE: &str = "compose.yaml";
pub const ENV_FILE: &str = "herd.env";
/// The project's network, which every service joins.
const NETWORK: &str = "herd";

/// What `export compose` writes, before it is written.
pub struct Project {
    pub compose_yaml: String,
    /// Files for DIR besides compose.yaml and herd.env: the herd file and its places file.
    pub files: Vec<(String, String)>,
    pub env_file: String,
    /// The certificates to copy into `tls/` (`links.tls`).
    pub tls: Vec<super::compose_tls::TlsCopy>,
    pub notes: Vec<String>,
}

/// `herdctl export compose`: writes the project into `dir` and says how to start it.
pub fn export(config_path: &Path, image: &str, dir: &Path, publish: bool) -> Result<ExitCode> {
    let (config, text) = HerdConfig::load_with_text(config_path, &Environment::of_process())?;
    let secret = config.secret.ensure_secret()?;
    let project = project(
        &config,
        &text,
        image,
        publish,
        secret.as_ref().map(|s| s.reveal()),
    )?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut written = Vec::new();
    for (name, content) in
        std::iter::once((COMPOSE_FILE.to_owned(), project.compose_yaml)).chain(project.files)
    {
        let path = dir.join(&name);
        std::fs::write(&path, content)
            .with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    let env_path = dir.join(ENV_FILE);
    write_private(&env_path, &project.env_file)?;
    written.push(env_path);
    let (copied, tls_notes) = super::compose_tls::write(dir, &project.tls)?;
    written.extend(copied);
    for path in &written {
        println!("wrote {}", path.display());
    }
    for note in project.notes.iter().chain(&tls_notes) {
        eprintln!("herdctl: note: {note}");
    }
    println!(
        "start it with:\n  cd {} && docker compose up -d   # or docker-compose up -d",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Builds the project for `config`, whose file says `text`; `secret`: the herd's (`None`:
/// the herd runs open links, as its file says).
pub fn project(
    config: &HerdConfig,
    text: &str,
    image: &str,
    publish: bool,
    secret: Option<&str>,
) -> Result<Project> {
    if image.trim().is_empty() || image.chars().any(char::is_whitespace) {
        bail!("--image {image:?} is not an image reference; use e.g. herdctl (built by the README's steps)");
    }
    let names = object_names(config)?;
    let herd = cluster_herd_file(config, text, &names)?;
    let mut notes = Vec::new();

    let mut env_file = String::from("# Read by every service; keep this file private.\n");
    match secret {
        Some(secret) => {
            let _ = writeln!(env_file, "{SECRET_ENV}={secret}");
        }
        None => notes.push(
            "the herd runs open links (insecure_open_links: true): anyone who reaches the \
             project's network can join it"
                .to_owned(),
        ),
    }
    let credential = match config.places.provider() {
        ProviderKind::Offline => None,
        ProviderKind::Google => Some(herd_places::google::API_KEY_ENV),
        ProviderKind::X => Some(herd_places::x::TOKEN_ENV),
    };
    if let Some(key) = credential {
        match std::env::var(key) {
            Ok(value) if !value.is_empty() => {
                let _ = writeln!(env_file, "{key}={value}");
            }
            _ => notes.push(format!(
                "the places provider needs {key}: add {key}=... to {ENV_FILE}"
            )),
        }
    }

    let mut files = vec![(CONFIG_FILE.to_owned(), herd.herd_yaml)];
    let mut config_mounts = vec![json!(format!(
        "./{CONFIG_FILE}:{CONFIG_DIR}/{CONFIG_FILE}:ro"
    ))];
    for (name, content) in herd.extra_files {
        config_mounts.push(json!(format!("./{name}:{CONFIG_DIR}/{name}:ro")));
        files.push((name, content));
    }

    let grace = config
        .supervisor
        .stop_timeout
        .as_millis()
        .div_ceil(1000)
        .max(1);
    let mut published = std::collections::BTreeMap::new();
    let mut services = Map::new();
    let mut volumes = Map::new();
    for server in config.servers.values() {
        let name = &names[&server.name];
        let mut mounts = config_mounts.clone();
        mounts.push(json!(format!("{name}:{STATE_DIR}")));
        if config.tls.is_some() {
            mounts.extend(super::compose_tls::mounts(server));
        }
        volumes.insert(name.clone(), json!({}));
        let mut service = json!({
            "image": image,
            "command": ["run", server.name, "--log-stdout"],
            "hostname": server.name,
            "user": format!("{USER_ID}:{USER_ID}"),
            "environment": { "HERD_CONFIG": format!("{CONFIG_DIR}/{CONFIG_FILE}") },
            "env_file": [ENV_FILE],
            "networks": [NETWORK],
            "volumes": mounts,
            // The run folder (locks) goes with the container; the node makes a private
            // folder in it (see `kubernetes::RUN_DIR`).
            "tmpfs": [format!("{RUN_MOUNT}:uid={USER_ID},gid={USER_ID},mode=0700")],
            "read_only": true,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges:true"],
            "restart": "unless-stopped",
            // SIGTERM, then SIGKILL after the herd's stop timeout, in whole seconds
            // (docker-compose 1.x sends a fraction the engine refuses).
            "stop_grace_period": format!("{grace}s"),
            "ulimits": { "nofile": config.limits.max_connections.saturating_add(256) },
            // The admin endpoint's /healthz, through herdctl (the image has no other client).
            "healthcheck": {
                "test": ["CMD", "/usr/local/bin/herdctl", "probe", server.name],
                "interval": "5s",
                "timeout": "3s",
                "retries": 3,
                "start_period": "60s",
            },
        });
        let ports: Vec<u16> = std::iter::once(server.port)
            .chain(server.tls_port)
            .collect();
        if ports.iter().any(|p| *p < 1024) {
            service["cap_add"] = json!(["NET_BIND_SERVICE"]);
        }
        if publish {
            for port in &ports {
                if let Some(other) = published.insert(*port, &server.name) {
                    bail!(
                        "servers {other} and {} both use port {port}: --publish puts every \
                         server's ports on this machine; give them different ports, or leave \
                         out --publish",
                        server.name,
                    );
                }
            }
            let mapped: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}:{p}")).collect();
            service["ports"] = json!(mapped);
        }
        services.insert(name.clone(), service);
    }
    let compose = json!({
        "services": services,
        "networks": { NETWORK: {} },
        "volumes": volumes,
    });
    let compose_yaml = format!(
        "# Generated by `herdctl export compose`; regenerate it after changing the herd file.\n\
         # Secrets are in {ENV_FILE}, not here.\n{}",
        serde_saphyr::to_string(&compose).context("cannot write YAML")?
    );
    Ok(Project {
        compose_yaml,
        files,
        env_file,
        tls: super::compose_tls::copies(config),
        notes,
    })
}

/// Writes `text` to `path`, readable by its owner only (even if the file was not before).
fn write_private(path: &Path, text: &str) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot make {} private", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn config(text: &str) -> HerdConfig {
        HerdConfig::parse(
            text,
            Path::new("/srv/herd/herd.yaml"),
            &Environment::default(),
        )
        .unwrap()
    }

    const HERD: &str =
        "servers:\n  Alford: { port: 12000, peers: [Ball] }\n  Ball: { port: 12001 }\n";
    const SECRET: &str = "a-herd-secret-of-thirty-two-chars-or-more";

    #[test]
    fn one_service_per_server_on_its_own_network_with_volume_and_health_check() {
        let project = project(&config(HERD), HERD, "herdctl:test", true, Some(SECRET)).unwrap();
        let compose: Value = serde_saphyr::from_str(&project.compose_yaml).unwrap();
        let alford = &compose["services"]["herd-alford"];
        assert_eq!(alford["command"], json!(["run", "Alford", "--log-stdout"]));
        assert_eq!(alford["hostname"], "Alford");
        assert_eq!(alford["networks"], json!(["herd"]));
        assert_eq!(alford["restart"], "unless-stopped");
        assert_eq!(alford["ports"], json!(["127.0.0.1:12000:12000"]));
        assert_eq!(alford["env_file"], json!(["herd.env"]));
        assert_eq!(
            alford["healthcheck"]["test"],
            json!(["CMD", "/usr/local/bin/herdctl", "probe", "Alford"])
        );
        assert!(alford["volumes"]
            .as_array()
            .unwrap()
            .contains(&json!("herd-alford:/var/lib/herd")));
        assert!(compose["volumes"]["herd-ball"].is_object());

        let (_, herd_yaml) = &project.files[0];
        let herd = HerdConfig::parse(
            herd_yaml,
            Path::new("/etc/herd/herd.yaml"),
            &Environment::default(),
        )
        .unwrap();
        assert_eq!(herd.servers["Ball"].host.to_string(), "herd-ball");
        // The secret is in herd.env only.
        assert!(project
            .env_file
            .contains(&format!("HERD_SECRET={SECRET}\n")));
        assert!(!project.compose_yaml.contains(SECRET) && !herd_yaml.contains(SECRET));
    }

    #[test]
    fn publishing_two_servers_on_one_port_is_refused() {
        let text = "servers:\n  A: { port: 12000, host: 10.0.0.1 }\n  B: { port: 12000, host: 10.0.0.2 }\n";
        let error = project(&config(text), text, "i", true, Some(SECRET))
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("both use port 12000"), "{error}");
        assert!(project(&config(text), text, "i", false, Some(SECRET)).is_ok());
        assert!(project(&config(HERD), HERD, "", false, Some(SECRET)).is_err());
    }
}
