//! `herdctl export systemd --dir DIR [all|NAME...]`: a `herd-<Name>.service` per server that
//! runs `herdctl --config <herd file> run <Name>` (restarted on failure, stopped within the
//! herd's stop timeout, sandboxed so it can write only its data, log and run folders), and a
//! `herd.target` that starts and stops them together.
//!
//! With `links.tls`, each unit hands its node the herd CA and its own certificate and key as
//! systemd credentials (`LoadCredential=`): systemd (root) reads them before the start and
//! puts them in a folder of the unit's own that only its user reads (`$CREDENTIALS_DIRECTORY`,
//! on a non-swappable file system, gone when the unit stops), and `HERD_TLS_DIR=%d` tells the
//! node to read them there. The certificate folder may then stay root's and 0700.

use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use herd_config::auth::SecretSource;
use herd_config::config::{Environment, HerdConfig, ServerConfig};
use herd_config::hosts::Locality;
use herd_logs::server_log_dir;

/// The target that groups every exported server.
pub const TARGET: &str = "herd.target";

/// The unit file name of server `name`.
pub fn unit_name(name: &str) -> String {
    format!("herd-{name}.service")
}

/// What goes into every unit besides the server itself.
#[derive(Debug, Clone)]
pub struct UnitSettings {
    /// The herdctl executable, absolute.
    pub exe: PathBuf,
    /// Run as this user (the herd file's owner) rather than root; `None` for root.
    pub user: Option<String>,
}

/// `herdctl export systemd`: writes the units into `dir` and says how to install them.
pub fn export(config_path: &Path, dir: &Path, names: &[String]) -> Result<ExitCode> {
    let config = HerdConfig::load(config_path, &Environment::of_process())?;
    let here = Locality::look_up(config.hosts())?;
    let servers = chosen_servers(&config, names, &here)?;
    check_tls_paths(&config, &servers)?;
    let settings = UnitSettings {
        exe: std::env::current_exe()
            .and_then(|p| p.canonicalize())
            .context("cannot find the herdctl executable")?,
        user: file_owner(&config.path)?,
    };
    // The units run as the herd file's owner (root when root owns it): their folders are
    // theirs. Run as another user than root, `export` can only make folders of its own.
    let owner = {
        let meta = std::fs::metadata(&config.path)
            .with_context(|| format!("cannot read {}", config.path.display()))?;
        if nix::unistd::geteuid().is_root() {
            (meta.uid(), meta.gid())
        } else {
            (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            )
        }
    };
    // The sandbox leaves the herd file's folder read-only, so a node could not make the
    // default herd.secret there: it is made now, and given to the units' user.
    config.secret.ensure_secret()?;
    if let SecretSource::Default(path) = &config.secret {
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(path, Some(owner.0), Some(owner.1))
                .with_context(|| format!("cannot give {} to uid {}", path.display(), owner.0))?;
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // systemd makes the folders under /run, /var/lib and /var/log itself at every start
    // (see `Folder`); it refuses to start a unit whose other writable folder is missing, so
    // those are made now, for the servers that live here (another machine's folders are made
    // by an export there).
    for server in servers.iter().filter(|s| config.is_local(s, &here)) {
        // Private, as the node makes them (see `herd_os::private`), and the units' user's.
        let keys = ["data_dir", "log_dir", "run_dir"];
        for (folder, key) in writable_paths(&config, server).iter().zip(keys) {
            if let Folder::Plain(folder) = Folder::of(folder) {
                herd_os::private::folder_for(&folder, key, owner.0, Some(owner.1))?;
            }
        }
    }
    let mut written = Vec::new();
    for server in &servers {
        let path = dir.join(unit_name(&server.name));
        write_file(&path, &service_unit(&config, server, &settings))?;
        written.push(path);
    }
    let target = dir.join(TARGET);
    write_file(&target, &target_unit(&servers))?;
    written.push(target);
    for path in &written {
        println!("wrote {}", path.display());
    }
    let shown = dir.display();
    let installed = dir
        .canonicalize()
        .is_ok_and(|d| d == Path::new("/etc/systemd/system"));
    if !installed {
        println!(
            "install them with:\n  sudo cp {shown}/herd-*.service {shown}/{TARGET} \
             /etc/systemd/system/"
        );
    }
    println!(
        "start them (and at every boot) with:\n  sudo systemctl daemon-reload\n  sudo \
         systemctl enable --now {TARGET}"
    );
    Ok(ExitCode::SUCCESS)
}

/// Nothing: this machine's servers (an error if it has none). `all`: every server of the
/// herd (units for other machines too). Names: those servers, wherever they live.
fn chosen_servers<'a>(
    config: &'a HerdConfig,
    names: &[String],
    here: &Locality,
) -> Result<Vec<&'a ServerConfig>> {
    if names.iter().any(|n| n == "all") {
        if names.len() > 1 {
            bail!("give either `all` or server names, not both");
        }
        return Ok(config.servers.values().collect());
    }
    if names.is_empty() {
        let local: Vec<&ServerConfig> = config
            .servers
            .values()
            .filter(|s| config.is_local(s, here))
            .collect();
        if local.is_empty() {
            bail!(
                "no server of {} lives on this machine (its addresses: {}); name the servers \
                 to export, or `all`",
                config.path.display(),
                here.machine().describe()
            );
        }
        return Ok(local);
    }
    names.iter().map(|n| config.server(n)).collect()
}

/// The folders server `server` writes: the data folder (its store, and where a corrupt one
/// is moved aside), its own log folder, and the run folder (its lock and stderr).
pub fn writable_paths(config: &HerdConfig, server: &ServerConfig) -> Vec<PathBuf> {
    vec![
        config.data_dir.clone(),
        server_log_dir(&config.logs, &server.name),
        config.run_dir.clone(),
    ]
}

/// How a folder the node writes comes to exist before each start. systemd creates (and gives
/// to the unit's user) the folders under its own roots: `/run` is an empty tmpfs after every
/// boot, so only systemd can be relied on to make a run folder there. Any other folder is
/// made by the export and named in `ReadWritePaths=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Folder {
    /// `RuntimeDirectory=`: relative to `/run`.
    Runtime(PathBuf),
    /// `StateDirectory=`: relative to `/var/lib`.
    State(PathBuf),
    /// `LogsDirectory=`: relative to `/var/log`.
    Logs(PathBuf),
    /// `ReadWritePaths=`: anywhere else.
    Plain(PathBuf),
}

impl Folder {
    pub fn of(path: &Path) -> Folder {
        type Kind = fn(PathBuf) -> Folder;
        let roots: [(&str, Kind); 3] = [
            ("/run", Folder::Runtime),
            ("/var/lib", Folder::State),
            ("/var/log", Folder::Logs),
        ];
        for (root, kind) in roots {
            let Ok(relative) = path.strip_prefix(root) else {
                continue;
            };
            // systemd takes plain relative names only: not the root itself, no `.` or `..`.
            let plain = relative.components().count() > 0
                && relative
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)));
            if plain {
                return kind(relative.to_path_buf());
            }
        }
        Folder::Plain(path.to_path_buf())
    }
}

/// The unit settings that make `folders` exist and writable under the sandbox.
fn folder_settings(folders: &[PathBuf]) -> Vec<String> {
    let mut runtime = Vec::new();
    let mut state = Vec::new();
    let mut logs = Vec::new();
    let mut plain = Vec::new();
    for folder in folders {
        match Folder::of(folder) {
            Folder::Runtime(p) => runtime.push(p),
            Folder::State(p) => state.push(p),
            Folder::Logs(p) => logs.push(p),
            Folder::Plain(p) => plain.push(p),
        }
    }
    let words = |paths: &[PathBuf]| {
        paths
            .iter()
            .map(|p| quoted(&p.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut settings = Vec::new();
    if !runtime.is_empty() {
        settings.push(format!("RuntimeDirectory={}", words(&runtime)));
        settings.push("RuntimeDirectoryMode=0700".to_owned());
        // Every server of the herd shares the run folder: one stopping must not empty it
        // under the others (it goes at the next boot, as everything in /run).
        settings.push("RuntimeDirectoryPreserve=yes".to_owned());
    }
    if !state.is_empty() {
        settings.push(format!("StateDirectory={}", words(&state)));
        settings.push("StateDirectoryMode=0700".to_owned());
    }
    if !logs.is_empty() {
        settings.push(format!("LogsDirectory={}", words(&logs)));
        settings.push("LogsDirectoryMode=0700".to_owned());
    }
    if !plain.is_empty() {
        settings.push(format!("ReadWritePaths={}", words(&plain)));
    }
    settings
}

/// The service unit of one server.
pub fn service_unit(config: &HerdConfig, server: &ServerConfig, settings: &UnitSettings) -> String {
    let name = &server.name;
    let mut unit = String::new();
    let mut line = |text: &str| {
        unit.push_str(text);
        unit.push('\n');
    };
    line("# Generated by `herdctl export systemd`; regenerate it after changing the herd file.");
    line("[Unit]");
    line(&format!("Description=herd server {name}"));
    line(&format!("PartOf={TARGET}"));
    // `systemctl reload herd.target` reloads every server.
    line(&format!("ReloadPropagatedFrom={TARGET}"));
    line("Wants=network-online.target");
    line("After=network-online.target");
    line("");
    line("[Service]");
    line("Type=exec");
    line(&format!(
        "ExecStart={} --config {} run {name}",
        quoted(&settings.exe.to_string_lossy()),
        quoted(&config.path.to_string_lossy())
    ));
    // `systemctl reload`: the node re-reads the herd file and applies what it can live. The
    // binary signals it itself (a minimal system has no /bin/kill) and waits until the node
    // runs the new file, so a refused file fails the reload.
    line(&format!(
        "ExecReload={} --config {} reload --node {name} --pid $MAINPID",
        quoted(&settings.exe.to_string_lossy()),
        quoted(&config.path.to_string_lossy())
    ));
    line("Restart=on-failure");
    line(&format!(
        "RestartSec={}ms",
        config.supervisor.backoff_initial.as_millis()
    ));
    line(&format!(
        "TimeoutStopSec={}ms",
        config.supervisor.stop_timeout.as_millis()
    ));
    // What the node asks for itself (see `raise_open_files_limit` in node/server.rs).
    line(&format!(
        "LimitNOFILE={}",
        config.limits.max_connections.saturating_add(256)
    ));
    // HERD_SECRET and GOOGLE_PLACES_API_KEY belong in the environment, not the herd file.
    let folder = config.path.parent().unwrap_or(Path::new("/"));
    line(&format!(
        "EnvironmentFile=-{}",
        quoted(&folder.join("herd.env").to_string_lossy())
    ));
    for setting in tls_credentials(config, server) {
        line(&setting);
    }
    if let Some(user) = &settings.user {
        line(&format!("User={user}"));
    }
    // What the node writes holds clients' locations (it also sets this itself).
    line("UMask=0077");
    line("");
    line("# Sandbox: the node writes only its data, log and run folders.");
    line("ProtectSystem=strict");
    let mut folders = writable_paths(config, server);
    // The node also checks that log_dir itself is its own (see `herd_os::private`): under
    // /var/log systemd makes it root's unless it is named too.
    if matches!(Folder::of(&config.logs.dir), Folder::Logs(_)) {
        folders.insert(1, config.logs.dir.clone());
    }
    for setting in folder_settings(&folders) {
        line(&setting);
    }
    line("ProtectHome=read-only");
    // A private /tmp would hide a herd kept under /tmp from its own server.
    let under_tmp = std::iter::once(config.path.clone())
        .chain(writable_paths(config, server))
        .any(|p| p.starts_with("/tmp") || p.starts_with("/var/tmp"));
    if !under_tmp {
        line("PrivateTmp=yes");
    }
    line("PrivateDevices=yes");
    line("NoNewPrivileges=yes");
    if server.port < 1024 || server.tls_port.is_some_and(|p| p < 1024) {
        line("CapabilityBoundingSet=CAP_NET_BIND_SERVICE");
        line("AmbientCapabilities=CAP_NET_BIND_SERVICE");
    } else {
        line("CapabilityBoundingSet=");
    }
    line("ProtectKernelTunables=yes");
    line("ProtectKernelModules=yes");
    line("ProtectKernelLogs=yes");
    line("ProtectControlGroups=yes");
    line("ProtectClock=yes");
    line("ProtectHostname=yes");
    line("ProtectProc=invisible");
    // Netlink: listing this machine's addresses, and the resolver's address checks.
    line("RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK");
    line("RestrictNamespaces=yes");
    line("RestrictRealtime=yes");
    line("RestrictSUIDSGID=yes");
    line("LockPersonality=yes");
    line("MemoryDenyWriteExecute=yes");
    line("RemoveIPC=yes");
    line("SystemCallArchitectures=native");
    line("SystemCallFilter=@system-service");
    line("SystemCallErrorNumber=EPERM");
    line("");
    line("[Install]");
    line(&format!("WantedBy={TARGET}"));
    unit
}

/// The credentials of server `server` under `links.tls` (see the module documentation):
/// nothing without it.
fn tls_credentials(config: &HerdConfig, server: &ServerConfig) -> Vec<String> {
    let Some(files) = &config.tls else {
        return Vec::new();
    };
    let name = &server.name;
    let mut settings = vec![
        "# The certificates: systemd copies them into a folder only this unit's user reads."
            .to_owned(),
    ];
    for (id, path) in [
        ("ca.pem".to_owned(), files.ca.clone()),
        (format!("{name}.pem"), files.cert_for(name)),
        (format!("{name}.key"), files.key_for(name)),
    ] {
        // systemd takes the rest of the line as the path (specifiers expanded), and only
        // a normalized absolute one.
        let path = normalized(&path).to_string_lossy().replace('%', "%%");
        settings.push(format!("LoadCredential={id}:{path}"));
    }
    settings.push(format!("Environment={}=%d", herd_config::tls::TLS_DIR_ENV));
    settings
}

/// A path with a line break or another control character would end a `LoadCredential=` line
/// early: refused.
fn check_tls_paths(config: &HerdConfig, servers: &[&ServerConfig]) -> Result<()> {
    let Some(files) = &config.tls else {
        return Ok(());
    };
    for server in servers {
        for path in [
            files.ca.clone(),
            files.cert_for(&server.name),
            files.key_for(&server.name),
        ] {
            if path.to_string_lossy().chars().any(char::is_control) {
                bail!(
                    "links.tls path {:?} has a control character, which a unit file cannot \
                     hold; rename the certificate folder",
                    path.display()
                );
            }
        }
    }
    Ok(())
}

/// `path` without `.` and with each `..` taken back (systemd refuses paths that have them).
fn normalized(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// The target that starts (and, through each unit's `PartOf=`, stops) every server.
pub fn target_unit(servers: &[&ServerConfig]) -> String {
    let mut unit = String::new();
    let _ = writeln!(
        unit,
        "# Generated by `herdctl export systemd`.\n[Unit]\nDescription=herd servers: {}",
        servers
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    for server in servers {
        let _ = writeln!(unit, "Wants={}", unit_name(&server.name));
    }
    let _ = writeln!(unit, "\n[Install]\nWantedBy=multi-user.target");
    unit
}

/// A word for a unit file: as is when plain, else double-quoted with C escapes; `%` doubled
/// either way (systemd expands `%` specifiers in these settings).
fn quoted(word: &str) -> String {
    let word = word.replace('%', "%%");
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+,:@=%".contains(c));
    if plain {
        return word;
    }
    let mut out = String::from("\"");
    for c in word.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The user owning `path`, to run the units as (`None` when root owns it).
fn file_owner(path: &Path) -> Result<Option<String>> {
    let uid = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .uid();
    if uid == 0 {
        return Ok(None);
    }
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .with_context(|| {
            format!(
                "{} belongs to uid {uid}, which has no user name; give the file to the user \
                 the servers should run as",
                path.display()
            )
        })?;
    Ok(Some(user.name))
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> HerdConfig {
        HerdConfig::parse(
            "servers:\n  Alford: { port: 12000, peers: [Ball] }\n  Ball: { port: 80 }\n\
             supervisor: { stop_timeout_ms: 2500 }\nlimits: { max_connections: 100 }\n",
            Path::new("/srv/my herd/herd.yaml"),
            &Environment::default(),
        )
        .unwrap()
    }

    #[test]
    fn a_unit_runs_the_server_with_the_herds_settings() {
        let config = config();
        let settings = UnitSettings {
            exe: "/usr/local/bin/herdctl".into(),
            user: Some("herd".into()),
        };
        let unit = service_unit(&config, &config.servers["Alford"], &settings);
        for expected in [
            "ExecStart=/usr/local/bin/herdctl --config \"/srv/my herd/herd.yaml\" run Alford",
            "Restart=on-failure",
            "TimeoutStopSec=2500ms",
            "LimitNOFILE=356",
            "User=herd",
            "ReadWritePaths=\"/srv/my herd/data\" \"/srv/my herd/logs/Alford\" \"/srv/my herd/run\"",
            "ExecReload=/usr/local/bin/herdctl --config \"/srv/my herd/herd.yaml\" reload --node \
             Alford --pid $MAINPID",
            "ReloadPropagatedFrom=herd.target",
            "ProtectSystem=strict",
            "CapabilityBoundingSet=\n",
            "PrivateTmp=yes",
            "PartOf=herd.target",
            "WantedBy=herd.target",
        ] {
            assert!(unit.contains(expected), "{expected:?} in\n{unit}");
        }
        let ball = service_unit(&config, &config.servers["Ball"], &settings);
        assert!(
            ball.contains("AmbientCapabilities=CAP_NET_BIND_SERVICE"),
            "{ball}"
        );

        let in_tmp = HerdConfig::parse(
            "servers:\n  A: { port: 1 }\n",
            Path::new("/tmp/h/herd.yaml"),
            &Environment::default(),
        )
        .unwrap();
        let unit = service_unit(&in_tmp, &in_tmp.servers["A"], &settings);
        assert!(!unit.contains("PrivateTmp"), "{unit}");
    }

    #[test]
    fn a_tls_herds_unit_hands_its_node_its_own_certificates_as_credentials() {
        let tls = HerdConfig::parse(
            "servers:\n  Alford: { port: 12000, peers: [Ball] }\n  Ball: { port: 12001 }\n\
             links:\n  tls: { ca: ../certs/ca.pem, cert: \"/etc/100%/{name}.pem\", key: \
             \"/etc/100%/{name}.key\" }\n",
            Path::new("/etc/herd/herd.yaml"),
            &Environment::default(),
        )
        .unwrap();
        let settings = UnitSettings {
            exe: "/usr/bin/herdctl".into(),
            user: Some("herd".into()),
        };
        let unit = service_unit(&tls, &tls.servers["Ball"], &settings);
        for expected in [
            "LoadCredential=ca.pem:/etc/certs/ca.pem\n",
            "LoadCredential=Ball.pem:/etc/100%%/Ball.pem\n",
            "LoadCredential=Ball.key:/etc/100%%/Ball.key\n",
            "Environment=HERD_TLS_DIR=%d\n",
        ] {
            assert!(unit.contains(expected), "{expected:?} in\n{unit}");
        }
        assert!(!unit.contains("Alford.key"), "only its own key:\n{unit}");
        let plain = config();
        let unit = service_unit(&plain, &plain.servers["Alford"], &settings);
        assert!(!unit.contains("LoadCredential") && !unit.contains("HERD_TLS_DIR"));
    }

    #[test]
    fn systemd_makes_the_folders_under_its_own_roots() {
        let config = HerdConfig::parse(
            "servers:\n  Alford: { port: 12000 }\ndata_dir: /var/lib/herd\nrun_dir: /run/herd\n\
             log_dir: /var/log/herd\n",
            Path::new("/etc/herd/herd.yaml"),
            &Environment::default(),
        )
        .unwrap();
        let settings = UnitSettings {
            exe: "/usr/bin/herdctl".into(),
            user: None,
        };
        let unit = service_unit(&config, &config.servers["Alford"], &settings);
        for expected in [
            "RuntimeDirectory=herd\n",
            "RuntimeDirectoryPreserve=yes\n",
            "StateDirectory=herd\n",
            "LogsDirectory=herd herd/Alford\n",
        ] {
            assert!(unit.contains(expected), "{expected:?} in\n{unit}");
        }
        assert!(!unit.contains("ReadWritePaths"), "{unit}");

        assert_eq!(
            Folder::of(Path::new("/run/herd/run")),
            Folder::Runtime("herd/run".into())
        );
        for elsewhere in [
            "/run",
            "/var/lib",
            "/var/lib/../etc",
            "/srv/herd",
            "/running",
        ] {
            assert_eq!(
                Folder::of(Path::new(elsewhere)),
                Folder::Plain(elsewhere.into()),
                "{elsewhere}"
            );
        }
    }

    #[test]
    fn the_target_wants_every_exported_server() {
        let config = config();
        let servers: Vec<&ServerConfig> = config.servers.values().collect();
        let target = target_unit(&servers);
        assert!(target.contains("Wants=herd-Alford.service\nWants=herd-Ball.service\n"));
        assert!(target.contains("WantedBy=multi-user.target"));
    }

    #[test]
    fn words_are_quoted_only_when_needed() {
        assert_eq!(quoted("/usr/bin/herdctl"), "/usr/bin/herdctl");
        assert_eq!(quoted("/a b/c"), "\"/a b/c\"");
        assert_eq!(quoted("/100%"), "/100%%");
        assert_eq!(quoted("a\"b\\"), "\"a\\\"b\\\\\"");
    }

    #[test]
    fn no_names_means_this_machines_servers_and_all_means_every_one() {
        let config = HerdConfig::parse(
            "servers:\n  A: { port: 1, host: 10.0.0.1 }\n  B: { port: 1, host: 10.0.0.2 }\n",
            Path::new("/h/herd.yaml"),
            &Environment::default(),
        )
        .unwrap();
        let here = Locality::with(
            herd_config::hosts::Machine::with_addresses(["10.0.0.2".parse().unwrap()]),
            [],
        );
        let names =
            |chosen: Vec<&ServerConfig>| chosen.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(chosen_servers(&config, &[], &here).unwrap()), ["B"]);
        assert_eq!(
            names(chosen_servers(&config, &["all".into()], &here).unwrap()),
            ["A", "B"]
        );
        assert_eq!(
            names(chosen_servers(&config, &["A".into()], &here).unwrap()),
            ["A"]
        );
        let nowhere = Locality::with(herd_config::hosts::Machine::with_addresses([]), []);
        assert!(chosen_servers(&config, &[], &nowhere).is_err());
        assert!(chosen_servers(&config, &["C".into()], &here).is_err());
    }
}
