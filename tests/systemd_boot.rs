//! The exported systemd units, run by a real systemd: a minimal Debian 12 root filesystem
//! (`scripts/systemd-rootfs.sh`: debootstrapped once, then cached) is booted with
//! systemd-nspawn, after `herdctl export systemd` and `systemctl enable herd.target` ran
//! inside it. The herd runs as its own user under the units' sandbox.
//!
//! The cached root filesystem is never written: each run boots an overlay of it, thrown away
//! at the end. The container shares this machine's network, so the test talks to the servers
//! on 127.0.0.1 like any other test.
//!
//! Needs root, systemd-nspawn (systemd-container), nsenter and overlayfs, and for the first
//! run debootstrap and Debian's archive. Missing any: skipped, except under CI=true.
//!
//! A second herd has TLS links: its units hand each node its certificates as systemd
//! credentials (`LoadCredential=`), from a folder only root reads.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{run_to_end, skip_unless_ci, wait_until, with_peers, Herd, DEADLINE, PAIR, TLS_YAML};

/// A line of servers, Alford - Ball - Welsh, and Holiday linked to none until the reload.
const SERVERS: &[(&str, &[&str])] = &[
    ("Alford", &["Ball"]),
    ("Ball", &["Welsh"]),
    ("Holiday", &[]),
    ("Welsh", &[]),
];
/// Where the herd lives inside the container: the layout of a packaged service.
const HERD_FILE: &str = "/etc/herd/herd.yaml";
const LAYOUT: &str = "data_dir: /var/lib/herd\nlog_dir: /var/log/herd\nrun_dir: /run/herd\n";
const EXE_INSIDE: &str = "/usr/local/bin/herdctl";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn works(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// One booted container at a time: with `--keep-unit` each lives in this process's cgroup,
/// and two systemd instances there get in each other's way (one's `systemctl kill` failed).
static ONE_BOOT: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Holds [`ONE_BOOT`] (a test that failed while holding it leaves it to the next).
fn one_boot() -> std::sync::MutexGuard<'static, ()> {
    ONE_BOOT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The cached root filesystem (built now if missing), or `None` after saying what is missing.
fn root_filesystem() -> Option<PathBuf> {
    if !nix::unistd::geteuid().is_root() {
        skip_unless_ci("the systemd boot test needs root (mounts, systemd-nspawn)");
        return None;
    }
    for (tool, package) in [
        ("systemd-nspawn", "systemd-container"),
        ("nsenter", "util-linux"),
    ] {
        if !works(tool, "--version") {
            skip_unless_ci(&format!("{tool} not found: apt-get install {package}"));
            return None;
        }
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/systemd-rootfs.sh");
    let built = Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    if !built.status.success() {
        skip_unless_ci(&format!(
            "no root filesystem to boot: {} failed ({})",
            script.display(),
            built.status
        ));
        return None;
    }
    Some(PathBuf::from(text(&built.stdout).trim()))
}

/// A booted container over a throw-away overlay of the root filesystem. Dropping it powers
/// the container off (killing it if it hangs), unmounts the overlay and removes its files.
struct Container {
    dir: tempfile::TempDir,
    merged: PathBuf,
    nspawn: Option<Child>,
    /// The container's systemd, as this machine's pid.
    init: u32,
}

impl Container {
    /// Mounts the overlay; nothing runs yet.
    fn overlay(rootfs: &Path) -> Container {
        let dir = tempfile::tempdir().unwrap();
        for folder in ["upper", "work", "merged"] {
            std::fs::create_dir(dir.path().join(folder)).unwrap();
        }
        let merged = dir.path().join("merged");
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            rootfs.display(),
            dir.path().join("upper").display(),
            dir.path().join("work").display()
        );
        let mount = run_to_end(
            Command::new("mount")
                .args(["-t", "overlay", "overlay", "-o", &options])
                .arg(&merged),
            b"",
        );
        assert!(mount.status.success(), "mount: {}", text(&mount.stderr));
        Container {
            dir,
            merged,
            nspawn: None,
            init: 0,
        }
    }

    /// The overlay with `herd`'s file (its ports and links) where the container's nodes
    /// read it. They share this machine's network, so the herd lets go of its ports.
    fn with_herd_file(rootfs: &Path, herd: &Herd) -> Container {
        let container = Container::overlay(rootfs);
        std::fs::create_dir_all(container.path("/etc/herd")).unwrap();
        std::fs::copy(&herd.config, container.path(HERD_FILE)).unwrap();
        herd.release_all();
        container
    }

    /// The path on this machine of `path` inside the container.
    fn path(&self, inside: &str) -> PathBuf {
        self.merged.join(inside.trim_start_matches('/'))
    }

    /// systemd-nspawn on the overlay, with this build's herdctl. No machined, no scope of its
    /// own: works with or without systemd on this machine.
    fn nspawn(&self) -> Command {
        let mut command = Command::new("systemd-nspawn");
        command
            .args(["--quiet", "--register=no", "--keep-unit", "--directory"])
            .arg(&self.merged)
            .arg(format!(
                "--bind-ro={}:{EXE_INSIDE}",
                env!("CARGO_BIN_EXE_herdctl")
            ));
        command
    }

    /// Runs a shell script in the container before it boots (as an administrator would on
    /// the machine).
    fn prepare(&self, script: &str) {
        let out = run_to_end(self.nspawn().args(["/bin/sh", "-ec", script]), b"");
        assert!(
            out.status.success(),
            "preparing the container failed ({}):\n{}{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
    }

    /// Boots the container and waits until its systemd has finished starting up.
    fn boot(&mut self) {
        let console = std::fs::File::create(self.dir.path().join("console.log")).unwrap();
        let child = self
            .nspawn()
            .args(["--boot", "--console=passive"])
            .stdin(Stdio::null())
            .stdout(console.try_clone().unwrap())
            .stderr(console)
            .spawn()
            .unwrap();
        let nspawn = child.id();
        self.nspawn = Some(child);
        wait_until("the container's systemd to start", || {
            let children =
                std::fs::read_to_string(format!("/proc/{nspawn}/task/{nspawn}/children"))
                    .unwrap_or_default();
            let init = children.split_whitespace().find_map(|pid| {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
                (comm.trim() == "systemd").then(|| pid.parse().unwrap())
            });
            self.init = init.unwrap_or(0);
            init.is_some()
        });
        let began = Instant::now();
        // Until its systemd answers at all (its socket appears a moment after it starts).
        let mut state = String::new();
        wait_until("the container's systemd to finish starting up", || {
            state = text(
                &self
                    .inside(&["systemctl", "is-system-running", "--wait"])
                    .stdout,
            );
            !state.trim().is_empty() && state.trim() != "offline"
        });
        assert!(
            ["running", "degraded"].contains(&state.trim()),
            "the container booted {state:?}; console:\n{}",
            self.console()
        );
        eprintln!(
            "booted in {:.1}s ({})",
            began.elapsed().as_secs_f64(),
            state.trim()
        );
    }

    fn console(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("console.log")).unwrap_or_default()
    }

    /// Runs a command inside the booted container, in all its namespaces.
    fn inside(&self, args: &[&str]) -> Output {
        run_to_end(
            Command::new("nsenter")
                .args(["--target", &self.init.to_string(), "--all", "--"])
                .args(args),
            b"",
        )
    }

    /// `systemctl ARGS` inside, which must succeed; its output.
    fn systemctl(&self, args: &[&str]) -> String {
        let out = self.inside(&[&["systemctl"], args].concat());
        assert!(
            out.status.success(),
            "systemctl {args:?} failed ({}):\n{}{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// One property of a unit (`systemctl show -p NAME --value`).
    fn property(&self, unit: &str, name: &str) -> String {
        self.systemctl(&["show", unit, "-p", name, "--value"])
            .trim()
            .to_owned()
    }

    /// The herdctl processes in the container (by pid namespace, seen from here).
    fn herd_processes(&self) -> Vec<u32> {
        let namespace = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
        let ours = namespace(&self.init.to_string());
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|entry| {
                let pid = entry.ok()?.file_name().into_string().ok()?;
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
                let herd = comm.trim() == "herdctl" && namespace(&pid) == ours;
                herd.then(|| pid.parse().ok())?
            })
            .collect()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if let Some(mut nspawn) = self.nspawn.take() {
            // SIGTERM: nspawn powers the container off in order; it is killed if it hangs.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(nspawn.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let began = Instant::now();
            while nspawn.try_wait().ok().flatten().is_none() && began.elapsed() < DEADLINE {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = nspawn.kill();
            let _ = nspawn.wait();
        }
        let unmounted = Command::new("umount").arg(&self.merged).status();
        if !unmounted.is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.merged).status();
        }
    }
}

#[test]
fn exported_units_boot_restart_reload_and_stop_under_systemd() {
    let Some(rootfs) = root_filesystem() else {
        return;
    };
    let _one = one_boot();
    let herd = Herd::configure(SERVERS, LAYOUT);
    let mut container = Container::with_herd_file(&rootfs, &herd);
    // What an administrator does: a user for the herd, owning the herd file (the units run
    // as its owner), the units exported and enabled.
    // No secret given: `export` makes herd.secret beside the herd file, the units' user's.
    container.prepare(&format!(
        "useradd --system --no-create-home herd\nchown herd {HERD_FILE}\n\
         {EXE_INSIDE} --config {HERD_FILE} export systemd --dir /etc/systemd/system all\n\
         systemctl enable herd.target\n\
         test \"$(stat -c %U:%a /etc/herd/herd.secret)\" = herd:600"
    ));

    container.boot();
    // Every server was started by herd.target at boot, as the herd's user.
    for (name, _) in SERVERS {
        let unit = format!("herd-{name}.service");
        assert_eq!(container.property(&unit, "ActiveState"), "active", "{unit}");
        herd.wait_listening(name);
    }
    assert_eq!(container.property("herd-Alford.service", "User"), "herd");
    assert_eq!(container.herd_processes().len(), SERVERS.len());

    // Floods cross: a report at Alford reaches Welsh, two hops away.
    let at = herd.send(
        "Alford",
        "IAMAT kiwi +34.068930-118.445127 1621464827.959498503\n",
    );
    herd.wait_for_at("Welsh", "kiwi", at.trim_end());

    // A crash: systemd restarts the server, which floods again.
    let ball = "herd-Ball.service";
    let pid = container.property(ball, "MainPID");
    container.systemctl(&["kill", "--signal=KILL", ball]);
    wait_until("systemd to restart Ball", || {
        container.property(ball, "NRestarts") == "1"
            && container.property(ball, "ActiveState") == "active"
            && container.property(ball, "MainPID") != pid
    });
    herd.wait_listening("Ball");
    let at = herd.send("Alford", "IAMAT kiwi +34.068930-118.445127 1621464828.5\n");
    herd.wait_for_at("Welsh", "kiwi", at.trim_end());

    // A reload applies a herd file change live: Holiday gains a link to Welsh, and its
    // reports reach Alford, three hops away, with no server restarted.
    let holiday = "herd-Holiday.service";
    let pid = container.property(holiday, "MainPID");
    let yaml = std::fs::read_to_string(&herd.config).unwrap();
    let linked = with_peers(&yaml, "Holiday", &["Welsh"]);
    std::fs::write(container.path(HERD_FILE), &linked).unwrap();
    container.systemctl(&["reload", "herd.target"]);
    let at = herd.send("Holiday", "IAMAT kiwi.holiday +34.0-118.4 1621464900.0\n");
    herd.wait_for_at("Alford", "kiwi.holiday", at.trim_end());
    assert_eq!(
        container.property(holiday, "MainPID"),
        pid,
        "Holiday restarted"
    );
    assert_eq!(container.property(holiday, "NRestarts"), "0");

    // The logs land where the units say.
    assert_eq!(
        container.property(holiday, "LogsDirectory"),
        "herd herd/Holiday"
    );
    let logs = container.path("/var/log/herd/Holiday");
    let read_logs = || -> String {
        std::fs::read_dir(&logs)
            .unwrap_or_else(|e| panic!("{}: {e}", logs.display()))
            .map(|f| std::fs::read_to_string(f.unwrap().path()).unwrap())
            .collect()
    };
    // Polled: the node's log writer holds lines a moment to write them in time order.
    wait_until("Holiday's log to show the IAMAT and the new link", || {
        let log = read_logs();
        log.contains("IAMAT kiwi.holiday") && log.contains("link to Welsh added")
    });
    // Linked with the secret export made.
    wait_until("Welsh's log to show Holiday's authenticated link", || {
        let welsh: String = std::fs::read_dir(container.path("/var/log/herd/Welsh"))
            .unwrap()
            .map(|f| std::fs::read_to_string(f.unwrap().path()).unwrap())
            .collect();
        welsh.contains("peer connection from Holiday") && welsh.contains("(authenticated)")
    });

    // Stopping the target stops every server: no herd process is left. (systemctl returns
    // when the target is stopped; its servers stop just after, so this waits for them.)
    container.systemctl(&["stop", "herd.target"]);
    wait_until("no herd process in the container", || {
        container.herd_processes().is_empty()
    });
    for (name, _) in SERVERS {
        let unit = format!("herd-{name}.service");
        assert_eq!(
            container.property(&unit, "ActiveState"),
            "inactive",
            "{unit}"
        );
    }
}

#[test]
fn a_tls_herd_boots_with_its_certificates_as_systemd_credentials() {
    let Some(rootfs) = root_filesystem() else {
        return;
    };
    let _one = one_boot();
    let herd = Herd::configure(
        PAIR,
        &format!("{LAYOUT}{TLS_YAML}admin: {{ open: true }}\n"),
    );
    let mut container = Container::with_herd_file(&rootfs, &herd);
    // The certificates are made by root and stay root's (folder 0700, files 0600): the
    // herd's user can read its key only as the credential systemd hands its unit.
    container.prepare(&format!(
        "useradd --system --no-create-home herd\nchown herd {HERD_FILE}\n\
         {EXE_INSIDE} --config {HERD_FILE} certs init\n\
         test \"$(stat -c %U:%a /etc/herd/certs)\" = root:700\n\
         if runuser -u herd -- cat /etc/herd/certs/Alford.key >/dev/null 2>&1; then \
         echo the herd user reads the key; exit 1; fi\n\
         {EXE_INSIDE} --config {HERD_FILE} export systemd --dir /etc/systemd/system all\n\
         systemctl enable herd.target"
    ));

    container.boot();
    for (name, _) in PAIR {
        let unit = format!("herd-{name}.service");
        assert_eq!(container.property(&unit, "ActiveState"), "active", "{unit}");
        herd.wait_listening(name);
    }
    assert_eq!(container.property("herd-Alford.service", "User"), "herd");
    // Each link is up and encrypted, as the admin endpoint says.
    for (name, peer) in [("Alford", "Ball"), ("Ball", "Alford")] {
        wait_until(
            &format!("{name}'s link to {peer} to be up over TLS"),
            || {
                let (_, body) = herd.admin_get(name, "/status", None);
                let status: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                status["links"][0]["peer"] == peer
                    && status["links"][0]["state"] == "up"
                    && status["links"][0]["encrypted"] == true
            },
        );
    }
    let at = herd.send(
        "Alford",
        "IAMAT kiwi.tls +34.068930-118.445127 1621464827.959498503\n",
    );
    herd.wait_for_at("Ball", "kiwi.tls", at.trim_end());
    container.systemctl(&["stop", "herd.target"]);
    wait_until("no herd process in the container", || {
        container.herd_processes().is_empty()
    });
}
