//! `herdctl export systemd` and `export kubernetes`, checked by the engines' own validators
//! (`systemd-analyze verify`, `kubernetes-validate --strict`), and `run --log-stdout`, which
//! the exported pods rely on.
//!
//! The validators are external tools: `.ci/run` installs them. Under CI=true a missing one is
//! a failure; elsewhere the test says what is missing and skips.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use common::{
    run_to_end, skip_unless_ci, wait_until, Herd, Running, CLASSIC, DEADLINE, PAIR, SOLO,
};

/// The tool at `path` if it runs, else `None` after saying why (a failure under CI).
fn tool(what: &str, path: PathBuf, how_to_get_it: &str) -> Option<PathBuf> {
    let works = Command::new(&path)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if works {
        return Some(path);
    }
    skip_unless_ci(&format!(
        "{what} ({}) is not available: {how_to_get_it}",
        path.display()
    ));
    None
}

fn systemd_analyze() -> Option<PathBuf> {
    tool(
        "systemd-analyze",
        "systemd-analyze".into(),
        "apt-get install systemd",
    )
}

/// `HERDCTL_KUBERNETES_VALIDATE`, else the venv `.ci/run` makes, else the PATH.
fn kubernetes_validate() -> Option<PathBuf> {
    let path = std::env::var_os("HERDCTL_KUBERNETES_VALIDATE")
        .map(PathBuf::from)
        .or_else(|| {
            let home = std::env::var_os("HOME")?;
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(&home).join(".cache"));
            let venv = cache.join("herdctl/kubernetes-validate/bin/kubernetes-validate");
            venv.exists().then_some(venv)
        })
        .unwrap_or_else(|| "kubernetes-validate".into());
    tool(
        "kubernetes-validate",
        path,
        "pip install kubernetes-validate (in a venv), or run .ci/run once",
    )
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `systemd-analyze verify` of every unit file in `dir` says nothing and exits 0.
fn assert_units_verify(analyze: &Path, dir: &Path) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let verify = run_to_end(Command::new(analyze).arg("verify").args(&files), b"");
    assert!(
        verify.status.success() && verify.stdout.is_empty() && verify.stderr.is_empty(),
        "systemd-analyze verify complained ({}):\n{}{}",
        verify.status,
        text(&verify.stdout),
        text(&verify.stderr)
    );
}

/// `herdctl export kubernetes` of `herd` into namespace `herd`, checked to succeed.
fn export_kubernetes(herd: &Herd) -> std::process::Output {
    let out = run_to_end(
        herd.herdctl().args([
            "export",
            "kubernetes",
            "--image",
            "registry.example/herdctl:0.1",
            "--namespace",
            "herd",
        ]),
        b"",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    out
}

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    // One server of another host: `all` exports it, the default (this machine's) does not.
    let herd = Herd::configure(
        CLASSIC,
        "limits: { max_connections: 2000 }\nsupervisor: { stop_timeout_ms: 3000 }\n",
    );
    let config = std::fs::read_to_string(&herd.config).unwrap();
    let config = config.replace(
        &format!("Welsh: {{ port: {}", herd.port("Welsh")),
        &format!("Welsh: {{ host: 192.0.2.7, port: {}", herd.port("Welsh")),
    );
    std::fs::write(&herd.config, config).unwrap();

    let local = herd.path().join("local-units");
    let out = run_to_end(
        herd.herdctl()
            .args(["export", "systemd", "--dir"])
            .arg(&local),
        b"",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut names: Vec<String> = std::fs::read_dir(&local)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "herd-Alford.service",
            "herd-Ball.service",
            "herd-Hamilton.service",
            "herd-Holiday.service",
            "herd.target"
        ],
        "this machine's servers only"
    );

    let every = herd.path().join("units");
    let out = run_to_end(
        herd.herdctl()
            .args(["export", "systemd", "--dir"])
            .arg(&every)
            .arg("all"),
        b"",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("systemctl enable --now herd.target"));
    let unit = std::fs::read_to_string(every.join("herd-Welsh.service")).unwrap();
    let exe = Path::new(env!("CARGO_BIN_EXE_herdctl"))
        .canonicalize()
        .unwrap();
    for expected in [
        format!(
            "ExecStart={} --config {} run Welsh",
            exe.display(),
            herd.config.display()
        ),
        "Restart=on-failure".to_owned(),
        format!(
            "ExecReload={} --config {} reload --node Welsh --pid $MAINPID",
            exe.display(),
            herd.config.display()
        ),
        "TimeoutStopSec=3000ms".to_owned(),
        "LimitNOFILE=2256".to_owned(),
        format!(
            "ReadWritePaths={} {} {}",
            herd.path().join("data").display(),
            herd.path().join("logs/Welsh").display(),
            herd.path().join("run").display()
        ),
    ] {
        assert!(unit.contains(&expected), "{expected:?} in:\n{unit}");
    }
    let target = std::fs::read_to_string(every.join("herd.target")).unwrap();
    assert!(target.contains("Wants=herd-Welsh.service"), "{target}");
    // The folders the sandbox leaves writable exist, or systemd would refuse the unit: for
    // the servers of this machine; Welsh's are made by an export on its own machine.
    assert!(herd.path().join("logs/Alford").is_dir());
    assert!(!herd.path().join("logs/Welsh").exists());

    assert_units_verify(&analyze, &every);

    // The check can fail: a unit systemd cannot run is reported.
    let broken = herd.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    std::fs::write(
        broken.join("herd-Welsh.service"),
        unit.replace(&exe.display().to_string(), "/nonexistent/herdctl"),
    )
    .unwrap();
    let verify = run_to_end(
        Command::new(&analyze)
            .arg("verify")
            .arg(broken.join("herd-Welsh.service")),
        b"",
    );
    assert!(
        !verify.stderr.is_empty(),
        "verify saw nothing wrong with a missing executable"
    );
}

/// `kubernetes-validate --strict` passes `yaml` (written beside the herd file), `resources`
/// of it.
fn assert_kubernetes_validates(herd: &Herd, validate: &Path, yaml: &str, resources: usize) {
    let manifests = herd.path().join("herd-k8s.yaml");
    std::fs::write(&manifests, yaml).unwrap();
    let check = run_to_end(Command::new(validate).arg("--strict").arg(&manifests), b"");
    let report = format!("{}{}", text(&check.stdout), text(&check.stderr));
    assert!(
        check.status.success(),
        "kubernetes-validate refused:\n{report}"
    );
    assert_eq!(
        report.matches(" passed for resource ").count(),
        resources,
        "{report}"
    );
}

#[test]
fn kubernetes_objects_pass_kubernetes_validate_strict() {
    let Some(validate) = kubernetes_validate() else {
        return;
    };
    let herd = Herd::configure(CLASSIC, "");
    std::fs::write(
        herd.path().join("pois.csv"),
        "name,lat,lon\nCafe,34.07,-118.44\n",
    )
    .unwrap();
    let config = std::fs::read_to_string(&herd.config).unwrap();
    std::fs::write(
        &herd.config,
        format!("{config}places: {{ provider: offline, file: pois.csv }}\n"),
    )
    .unwrap();
    let out = export_kubernetes(&herd);
    let yaml = text(&out.stdout);
    assert_eq!(yaml.matches("\n---\n").count() + 1, 2 + 5 * 2, "{yaml}");
    assert!(yaml.contains("kind: Secret") && yaml.contains("places.csv"));
    assert_kubernetes_validates(&herd, &validate, &yaml, 12);

    // The check can fail: a field Kubernetes does not know is refused under --strict.
    let broken = herd.path().join("broken.yaml");
    std::fs::write(
        &broken,
        yaml.replacen("  replicas: 1\n", "  replicas: 1\n  replica: 1\n", 1),
    )
    .unwrap();
    let check = run_to_end(Command::new(&validate).arg("--strict").arg(&broken), b"");
    assert!(!check.status.success(), "an unknown field passed");
}

#[test]
fn systemd_units_of_a_tls_herd_load_their_certificates_as_credentials() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let herd = Herd::configure_tls(PAIR, "");
    let units = herd.path().join("units");
    let out = run_to_end(
        herd.herdctl()
            .args(["export", "systemd", "--dir"])
            .arg(&units)
            .arg("all"),
        b"",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let certs = herd.path().join("certs");
    let unit = std::fs::read_to_string(units.join("herd-Alford.service")).unwrap();
    for expected in [
        format!("LoadCredential=ca.pem:{}\n", certs.join("ca.pem").display()),
        format!(
            "LoadCredential=Alford.pem:{}\n",
            certs.join("Alford.pem").display()
        ),
        format!(
            "LoadCredential=Alford.key:{}\n",
            certs.join("Alford.key").display()
        ),
        "Environment=HERD_TLS_DIR=%d\n".to_owned(),
    ] {
        assert!(unit.contains(&expected), "{expected:?} in:\n{unit}");
    }
    assert!(!unit.contains("Ball.key"), "{unit}");
    assert_units_verify(&analyze, &units);
}

#[test]
fn kubernetes_objects_of_a_tls_herd_pass_kubernetes_validate_strict() {
    let Some(validate) = kubernetes_validate() else {
        return;
    };
    let herd = Herd::configure_tls(CLASSIC, "");
    herd.give_tls_port("Ball");
    let out = export_kubernetes(&herd);
    let yaml = text(&out.stdout);
    // Every pod mounts its certificates; no key (nor a Secret of one) is in the objects.
    assert_eq!(
        yaml.matches("mountPath: /etc/herd-tls").count(),
        5,
        "{yaml}"
    );
    assert!(yaml.contains("name: herd-tls"), "Ball's tls_port: {yaml}");
    assert!(!yaml.contains("PRIVATE KEY"), "{yaml}");
    // The notes say how to make each Secret, from files that exist (the CA's key stays out).
    let notes = text(&out.stderr);
    for name in ["alford", "ball", "hamilton", "holiday", "welsh"] {
        let wanted = format!("create secret generic herd-{name}-tls ");
        assert!(notes.contains(&wanted), "{wanted:?} in:\n{notes}");
    }
    let sources: Vec<&str> = notes
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("--from-file="))
        .collect();
    assert_eq!(sources.len(), 1 + 2 * 5, "{notes}");
    for source in sources {
        let (_, path) = source.split_once('=').unwrap();
        assert!(Path::new(path).is_file(), "{path} in:\n{notes}");
        assert!(!path.ends_with("ca.key"), "{notes}");
    }
    assert_kubernetes_validates(&herd, &validate, &yaml, 12);
}

#[test]
fn kubernetes_export_to_a_file_is_private_and_carries_the_secret_in_a_secret() {
    use std::os::unix::fs::PermissionsExt;
    let herd = Herd::configure(CLASSIC, "");
    let file = herd.path().join("herd-k8s.yaml");
    // An existing file readable by others is made private before the secret goes in.
    std::fs::write(&file, "old").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run_to_end(
        herd.herdctl()
            .args(["export", "kubernetes", "--image", "h:1", "--out"])
            .arg(&file),
        b"",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let yaml = std::fs::read_to_string(&file).unwrap();
    let secret = herd.secret();
    assert!(yaml.contains("kind: Secret") && yaml.contains(secret.reveal()));
    // To standard output it comes with a warning.
    let out = run_to_end(
        herd.herdctl()
            .args(["export", "kubernetes", "--image", "h:1"]),
        b"",
    );
    assert!(text(&out.stdout).contains(secret.reveal()));
    assert!(
        text(&out.stderr).contains("holds the herd secret"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn run_with_log_stdout_writes_the_log_to_stdout_too() {
    let herd = Herd::configure(SOLO, "");
    let mut node = Running::spawn(
        herd.herdctl()
            .args(["run", "Alford", "--log-stdout"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let (lines_tx, lines) = mpsc::channel();
    let stdout = node.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if lines_tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    let wanted = |what: &str| {
        let began = std::time::Instant::now();
        loop {
            let left = DEADLINE.saturating_sub(began.elapsed());
            match lines.recv_timeout(left) {
                Ok(line) if line.contains(what) => return line,
                Ok(_) => {}
                Err(_) => panic!("no {what:?} on the node's stdout"),
            }
        }
    };
    wanted("Alford listening on");
    let reply = herd.send(
        "Alford",
        "IAMAT kiwi +34.068930-118.445127 1621464827.959498503\n",
    );
    assert!(reply.starts_with("AT Alford "), "{reply}");
    // Wire lines too, as in the file.
    let line = wanted("IAMAT kiwi +34.068930-118.445127");
    assert!(line.contains("INFO"), "{line}");
    // The file has its own writer, which may flush a moment later.
    wait_until("the same line in the log file", || {
        herd.log_text("Alford")
            .contains("IAMAT kiwi +34.068930-118.445127")
    });
}
