//! The herd secret: authenticated peer links, forged updates refused, the secret kept out of
//! every log.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

use common::{wait_until, Herd, CLASSIC, DEADLINE, PAIR, SOLO};

const SECRET: &str = "s3cret-that-must-never-be-logged";

fn secured(servers: &[(&str, &[&str])]) -> Herd {
    let herd = Herd::configure(servers, &format!("secret: \"{SECRET}\"\n"));
    for (name, _) in servers {
        herd.spawn(name);
    }
    for (name, _) in servers {
        herd.wait_listening(name);
    }
    herd
}

fn all_logs(herd: &Herd) -> String {
    let mut text = String::new();
    for (name, _) in CLASSIC {
        text += &herd.log_text(name);
        text += &herd.stderr(name);
    }
    text
}

#[test]
fn authenticated_links_flood_and_the_secret_is_never_logged() {
    let herd = secured(CLASSIC);
    let at = herd.send("Alford", "IAMAT kiwi +34.068930-118.445127 1621464827.5\n");
    for (name, _) in CLASSIC {
        herd.wait_for_at(name, "kiwi", at.trim_end());
    }
    wait_until("an authenticated link in Ball's log", || {
        herd.log_text("Ball").contains("opened (authenticated)")
    });
    let logs = all_logs(&herd);
    assert!(!logs.contains(SECRET), "the secret reached a log");
    assert!(
        !logs.contains("no herd secret"),
        "links must not be reported open"
    );
}

#[test]
fn a_client_cannot_forge_an_update_or_a_proof() {
    let herd = secured(PAIR);
    let mut stream = TcpStream::connect(("127.0.0.1", herd.port("Alford"))).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut exchange = |line: &str| {
        stream.write_all(format!("{line}\n").as_bytes()).unwrap();
        let mut reply = String::new();
        reader.read_line(&mut reply).unwrap();
        reply.trim_end().to_owned()
    };
    let forged = "HERD AT Ball +0.000000001 victim +1+1 99999";
    // Before any handshake.
    assert_eq!(exchange(forged), format!("? {forged}"));
    // Claiming to be Ball gets a challenge (a random nonce), nothing derived from the secret.
    let challenge = exchange("HERD HELLO Ball 2 0123456789abcdef0123456789abcdef");
    assert!(challenge.starts_with("HERD CHALLENGE "), "{challenge}");
    assert_eq!(challenge.split(' ').count(), 3, "{challenge}");
    assert_eq!(
        exchange(forged),
        format!("? {forged}"),
        "no updates before AUTH"
    );
    // A wrong proof is refused and the connection closed: no second guess on it.
    let wrong = format!("HERD AUTH {}", "ab".repeat(32));
    assert_eq!(exchange(&wrong), format!("? {wrong}"));
    let mut rest = String::new();
    assert_eq!(reader.read_line(&mut rest).unwrap(), 0, "closed: {rest:?}");
    assert_eq!(herd.known_at("Alford", "victim"), None);
    assert_eq!(herd.known_at("Ball", "victim"), None);
    wait_until("the failed proof to be logged", || {
        herd.log_text("Alford")
            .contains("failed to prove the herd secret")
    });
    assert_eq!(
        herd.status("Alford").peer_dropped.get("failed_auth"),
        Some(&1)
    );
}

#[test]
fn one_hello_per_connection() {
    let herd = secured(PAIR);
    let reply = herd.send(
        "Alford",
        "HERD HELLO Nobody 2 0123456789abcdef0123456789abcdef\n\
         HERD HELLO Ball 2 0123456789abcdef0123456789abcdef\n",
    );
    assert_eq!(
        reply,
        "? HERD HELLO Nobody 2 0123456789abcdef0123456789abcdef\n\
         ? HERD HELLO Ball 2 0123456789abcdef0123456789abcdef\n"
    );
}

#[test]
fn herd_secret_env_overrides_the_file_and_a_mismatch_refuses_the_link() {
    let herd = Herd::configure(
        PAIR,
        "secret: \"from-file-from-file-from-file-from-file\"\n",
    );
    herd.spawn("Ball");
    herd.wait_listening("Ball");
    herd.spawn_with_env(
        "Alford",
        &[("HERD_SECRET", Some("from-environment-from-environment"))],
    );
    herd.wait_listening("Alford");
    // Each side refuses the other's proof, and each dialler is told.
    for (acceptor, dialler) in [("Alford", "Ball"), ("Ball", "Alford")] {
        wait_until(&format!("{acceptor} to refuse {dialler}'s proof"), || {
            herd.log_text(acceptor)
                .contains(&format!("{dialler} failed to prove the herd secret"))
                && herd.log_text(dialler).contains(&format!(
                    "{acceptor} refused this node's proof of the herd secret"
                ))
        });
    }
    let at = herd.send("Alford", "IAMAT island +1+1 5\n");
    assert!(at.starts_with("AT Alford"), "still serves clients: {at}");
    assert_eq!(herd.status("Alford").links_up, 0, "no link may form");
    assert_eq!(herd.status("Ball").links_up, 0, "no link may form");
    assert_eq!(herd.known_at("Ball", "island"), None);
    let logs = herd.log_text("Alford") + &herd.log_text("Ball");
    assert!(!logs.contains("from-environment") && !logs.contains("from-file"));
    assert!(
        !herd.path().join("herd.secret").exists(),
        "a configured secret creates no file"
    );
}

#[test]
fn a_server_without_the_secret_is_not_linked_and_says_so() {
    let herd = Herd::configure(PAIR, "insecure_open_links: true\n");
    // Ball runs open (no secret); Alford has one from the environment.
    herd.spawn("Ball");
    herd.wait_listening("Ball");
    herd.spawn_with_env("Alford", &[("HERD_SECRET", Some(SECRET))]);
    herd.wait_listening("Alford");
    wait_until("Alford to refuse the open Ball", || {
        herd.log_text("Alford").contains("Ball runs OPEN LINKS")
    });
    wait_until("Ball to say it needs the secret", || {
        herd.log_text("Ball")
            .contains("Alford requires the herd secret")
    });
    assert!(herd
        .log_text("Ball")
        .contains("OPEN LINKS: insecure_open_links is true"));
    assert!(herd.status("Ball").open_links);
    assert!(!herd.status("Alford").open_links);
    assert_eq!(herd.status("Alford").links_up, 0, "no link may form");
    assert_eq!(herd.status("Ball").links_up, 0, "no link may form");
}

#[test]
fn without_a_configured_secret_the_herd_makes_one_private_to_its_user() {
    use std::os::unix::fs::PermissionsExt;
    let herd = Herd::start(PAIR);
    let path = herd.path().join("herd.secret");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(herd.secret().reveal().len(), 64, "256 bits as hex");
    let at = herd.send("Alford", "IAMAT kiwi +1+1 5\n");
    herd.wait_for_at("Ball", "kiwi", at.trim_end());
    assert!(!herd.status("Alford").open_links);
    let check = herd.herdctl().arg("check").output().unwrap();
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(
        out.contains(&format!("herd secret: from {}", path.display())),
        "{out}"
    );
    assert!(!herd.log_text("Alford").contains(herd.secret().reveal()));
}

#[test]
fn a_weak_secret_is_refused_in_one_line() {
    let herd = Herd::configure(SOLO, "secret: \"a\"\n");
    let out = herd.herdctl().args(["run", "Alford"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("fewer than 32") && err.contains("openssl rand -hex 32"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}
