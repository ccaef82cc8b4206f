//! `herdctl export compose`, brought up by a real Docker engine: the image is built from this
//! build's binary with no base image (the repository's Dockerfile, FROM scratch), the project
//! started with Compose, and the herd checked from outside: floods cross between containers,
//! a container cut off the network is routed around and catches up when it is back, a crashed
//! container is restarted by its policy with its store, and `down -v` leaves nothing.
//!
//! Needs a Docker engine that answers and Compose (`docker compose` or `docker-compose`);
//! missing either: skipped, except under CI=true.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{run_to_end, skip_unless_ci, wait_until, Herd};

/// A diamond: Alford reaches Welsh through Ball or through Hamilton.
const SERVERS: &[(&str, &[&str])] = &[
    ("Alford", &["Ball", "Hamilton"]),
    ("Ball", &["Welsh"]),
    ("Hamilton", &["Welsh"]),
    ("Welsh", &[]),
];

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn quiet(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The Compose command (`docker compose` or `docker-compose`), when an engine answers.
fn compose_command() -> Option<Vec<&'static str>> {
    if !quiet("docker", &["info"]) {
        skip_unless_ci("no Docker engine answers `docker info` (apt-get install docker.io)");
        return None;
    }
    if quiet("docker", &["compose", "version"]) {
        return Some(vec!["docker", "compose"]);
    }
    if quiet("docker-compose", &["version"]) {
        return Some(vec!["docker-compose"]);
    }
    skip_unless_ci(
        "neither `docker compose` nor `docker-compose` works (apt-get install docker-compose)",
    );
    None
}

/// Runs `program args`, which must succeed; its output.
fn must(command: &mut Command) -> Output {
    let shown = format!("{command:?}");
    let out = run_to_end(command, b"");
    assert!(
        out.status.success(),
        "{shown} failed ({}):\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

fn docker(args: &[&str]) -> String {
    text(&must(Command::new("docker").args(args)).stdout)
        .trim()
        .to_owned()
}

/// The image and the Compose project of one test, removed (containers, volumes, network,
/// image) when dropped, pass or fail.
struct Project {
    compose: Vec<&'static str>,
    dir: PathBuf,
    name: String,
    image: String,
}

impl Project {
    /// `herd` exported for Compose (`export compose --publish`) into `work`, as project
    /// `herd<kind><ids>` with an image of this build's binary; the export's output.
    fn export(
        herd: &Herd,
        compose: Vec<&'static str>,
        work: &Path,
        kind: &str,
    ) -> (Project, Output) {
        let id = format!("{}{}", std::process::id(), herd.port("Alford"));
        // Made before the image is built, so that dropping it removes whatever was made.
        let project = Project {
            compose,
            dir: work.join("project"),
            name: format!("herd{kind}{id}"),
            image: format!("herdctl-test:{kind}{id}"),
        };
        build_image(&work.join("context"), &project.image);
        let out = must(
            herd.herdctl()
                .args([
                    "export",
                    "compose",
                    "--publish",
                    "--image",
                    &project.image,
                    "--dir",
                ])
                .arg(&project.dir),
        );
        (project, out)
    }

    fn compose(&self, args: &[&str]) -> Output {
        must(
            Command::new(self.compose[0])
                .args(&self.compose[1..])
                .args(["--project-name", &self.name, "--file"])
                .arg(self.dir.join("compose.yaml"))
                .args(args),
        )
    }

    /// The container of server `name`'s service.
    fn container(&self, name: &str) -> String {
        let service = format!("herd-{}", name.to_lowercase());
        text(&self.compose(&["ps", "-q", &service]).stdout)
            .trim()
            .to_owned()
    }

    fn inspect(&self, name: &str, format: &str) -> String {
        docker(&["inspect", "--format", format, &self.container(name)])
    }

    fn wait_healthy(&self, name: &str) {
        wait_until(&format!("{name}'s container to be healthy"), || {
            self.inspect(name, "{{.State.Health.Status}}") == "healthy"
        });
    }

    /// What Docker still holds of this project.
    fn leftovers(&self) -> String {
        let label = format!("label=com.docker.compose.project={}", self.name);
        [
            docker(&["ps", "-aq", "--filter", &label]),
            docker(&["volume", "ls", "-q", "--filter", &label]),
            docker(&["network", "ls", "-q", "--filter", &label]),
        ]
        .join(" ")
        .trim()
        .to_owned()
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = Command::new(self.compose[0])
            .args(&self.compose[1..])
            .args(["--project-name", &self.name, "--file"])
            .arg(self.dir.join("compose.yaml"))
            .args(["down", "--volumes", "--remove-orphans", "--timeout", "5"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("docker")
            .args(["image", "rm", "--force", &self.image])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Builds the image as the README does, from this build's binary, into a context of its own.
fn build_image(context: &Path, tag: &str) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    must(
        Command::new(repo.join("scripts/image-root.sh"))
            .arg(env!("CARGO_BIN_EXE_herdctl"))
            .arg(context.join("target/image-root")),
    );
    must(
        Command::new("docker")
            .args(["build", "--quiet", "--tag", tag, "--file"])
            .arg(repo.join("Dockerfile"))
            .arg(context),
    );
}

#[test]
fn compose_project_floods_heals_restarts_and_goes_away() {
    let Some(compose) = compose_command() else {
        return;
    };
    let herd = Herd::configure(SERVERS, "");
    let work = tempfile::tempdir().unwrap();
    let (project, out) = Project::export(&herd, compose, work.path(), "test");
    // The herd's secret (made beside the herd file, as `start` would) is in herd.env only.
    assert!(out.stdout.ends_with(b"up -d\n"), "{}", text(&out.stdout));
    let secret = std::fs::read_to_string(herd.path().join("herd.secret")).unwrap();
    let env = std::fs::read_to_string(project.dir.join("herd.env")).unwrap();
    assert!(
        env.contains(&format!("HERD_SECRET={}\n", secret.trim())),
        "{env}"
    );
    project.compose(&["up", "--detach"]);

    // Every container becomes healthy (its health check is `herdctl probe` in the image).
    for (name, _) in SERVERS {
        project.wait_healthy(name);
    }
    assert_eq!(project.inspect("Alford", "{{.Config.Hostname}}"), "Alford");
    assert_eq!(project.inspect("Alford", "{{.Config.User}}"), "65532:65532");

    // An IAMAT at Alford is answered at Welsh, two hops away, container to container.
    let at = herd.send("Alford", "IAMAT kiwi +34.068930-118.445127 1621464827.5\n");
    herd.wait_for_at("Welsh", "kiwi", at.trim_end());

    // Ball cut off the network: the flood goes round through Hamilton; back on, Ball is
    // brought up to date by its neighbours.
    let network = format!("{}_herd", project.name);
    let ball = project.container("Ball");
    docker(&["network", "disconnect", &network, &ball]);
    let at = herd.send("Alford", "IAMAT kiwi +34.068930-118.445127 1621464828.5\n");
    herd.wait_for_at("Welsh", "kiwi", at.trim_end());
    docker(&[
        "network",
        "connect",
        "--alias",
        "herd-ball",
        &network,
        &ball,
    ]);
    herd.wait_for_at("Ball", "kiwi", at.trim_end());

    // A crash (the node's process killed from outside): Docker restarts the container by
    // its policy, and its store, in the volume, still knows kiwi.
    let pid = project.inspect("Welsh", "{{.State.Pid}}");
    must(Command::new("kill").args(["-KILL", &pid]));
    wait_until("Docker to restart Welsh", || {
        project.inspect("Welsh", "{{.RestartCount}}") == "1"
            && project.inspect("Welsh", "{{.State.Running}}") == "true"
    });
    // (Its published port accepts connections even while it is down: ask Docker instead.)
    project.wait_healthy("Welsh");
    assert_eq!(
        herd.known_at("Welsh", "kiwi").as_deref(),
        Some(at.trim_end())
    );

    // `docker kill`: Docker 20.10 counts it as a deliberate stop, which `unless-stopped`
    // (and even `always`) does not undo until the engine restarts; newer engines restart it.
    // Either way `up` brings it back.
    let engine = docker(&["version", "--format", "{{.Server.Version}}"]);
    docker(&["kill", &project.container("Hamilton")]);
    eprintln!(
        "docker kill on engine {engine}: restarted by policy: {}",
        project.inspect("Hamilton", "{{.RestartCount}}") != "0"
    );
    project.compose(&["up", "--detach"]);
    project.wait_healthy("Hamilton");
    let at = herd.send("Alford", "IAMAT kiwi +34.068930-118.445127 1621464829.5\n");
    herd.wait_for_at("Hamilton", "kiwi", at.trim_end());

    // `down -v` leaves no container, volume or network.
    project.compose(&["down", "--volumes", "--timeout", "5"]);
    assert_eq!(project.leftovers(), "");
}

#[test]
fn a_tls_compose_project_links_over_tls_each_container_with_its_own_key() {
    let Some(compose) = compose_command() else {
        return;
    };
    if !nix::unistd::geteuid().is_root() {
        return skip_unless_ci(
            "the TLS Compose test needs root: the export gives each key to the containers' \
             user (65532)",
        );
    }
    let herd = Herd::configure_tls(common::PAIR, "");
    herd.give_tls_port("Ball");
    let work = tempfile::tempdir().unwrap();
    let (project, _) = Project::export(&herd, compose, work.path(), "tls");
    // The keys are copied for the containers' user only, in a folder of this user's.
    {
        use std::os::unix::fs::MetadataExt;
        let key = std::fs::metadata(project.dir.join("tls/Alford.key")).unwrap();
        assert_eq!((key.mode() & 0o777, key.uid()), (0o400, 65532));
        let folder = std::fs::metadata(project.dir.join("tls")).unwrap();
        assert_eq!(folder.mode() & 0o777, 0o700);
    }
    project.compose(&["up", "--detach"]);
    for (name, _) in common::PAIR {
        project.wait_healthy(name);
    }
    // Each container has the CA and its own certificate and key, and no other key.
    let mounts = project.inspect("Alford", "{{range .Mounts}}{{.Destination}} {{end}}");
    let mounted: Vec<&str> = mounts.split_whitespace().collect();
    for file in ["ca.pem", "Alford.pem", "Alford.key"] {
        let path = format!("/etc/herd-tls/{file}");
        assert!(mounted.contains(&path.as_str()), "{mounts}");
    }
    assert!(!mounts.contains("Ball.key"), "{mounts}");

    // The link is up, over TLS (a herd with links.tls takes no other), as status says from
    // inside a container.
    wait_until("Alford's link to Ball to be up and encrypted", || {
        let out = run_to_end(
            Command::new("docker").args([
                "exec",
                &project.container("Alford"),
                "herdctl",
                "status",
                "--json",
            ]),
            b"",
        );
        let Ok(status) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
            return false;
        };
        status.as_array().is_some_and(|servers| {
            servers.iter().any(|s| {
                s["name"] == "Alford"
                    && s["links"][0]["state"] == "up"
                    && s["links"][0]["encrypted"] == true
            })
        })
    });
    let at = herd.send(
        "Alford",
        "IAMAT kiwi.tls +34.068930-118.445127 1621464827.5\n",
    );
    herd.wait_for_at("Ball", "kiwi.tls", at.trim_end());
    // Ball's tls_port, published, answers `herdctl send` here over TLS with its mounted
    // certificate, checked against the herd CA.
    let sent = must(
        herd.herdctl()
            .args(["send", "Ball", "WHATSAT kiwi.tls 10 1"]),
    );
    assert!(
        text(&sent.stdout).starts_with(at.trim_end()),
        "{}",
        text(&sent.stdout)
    );

    project.compose(&["down", "--volumes", "--timeout", "5"]);
    assert_eq!(project.leftovers(), "");
}
