//! The herd secret: authenticated peer links, forged updates refused, the secret kept out of
//! every log.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

use common::{wait_until, Herd, CLASSIC, DEADLINE};

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
    let herd = secured(&[("Alford", &["Ball"]), ("Ball", &[])]);
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
    // Claiming to be Ball gets a challenge, not trust.
    let welcome = exchange("HERD HELLO Ball 1 0123456789abcdef0123456789abcdef");
    assert!(welcome.starts_with("HERD WELCOME Alford 1 "), "{welcome}");
    assert!(
        !welcome.ends_with(" -"),
        "a secured server proves itself: {welcome}"
    );
    assert_eq!(
        exchange(forged),
        format!("? {forged}"),
        "no updates before AUTH"
    );
    let wrong = format!("HERD AUTH {}", "ab".repeat(32));
    assert_eq!(exchange(&wrong), format!("? {wrong}"));
    assert_eq!(exchange(forged), format!("? {forged}"), "still a client");
    assert_eq!(herd.known_at("Alford", "victim"), None);
    assert_eq!(herd.known_at("Ball", "victim"), None);
    wait_until("the failed proof to be logged", || {
        herd.log_text("Alford")
            .contains("failed to prove the herd secret")
    });
}

#[test]
fn herd_secret_env_overrides_the_file_and_a_mismatch_refuses_the_link() {
    let herd = Herd::configure(
        &[("Alford", &["Ball"]), ("Ball", &[])],
        "secret: \"from-file\"\n",
    );
    herd.spawn("Ball");
    herd.wait_listening("Ball");
    herd.spawn_with_env("Alford", &[("HERD_SECRET", Some("from-environment"))]);
    herd.wait_listening("Alford");
    // Each side checks the other's proof first, so both refuse and say why.
    wait_until("Alford to refuse Ball's proof", || {
        herd.log_text("Alford")
            .contains("Ball could not prove it knows the herd secret")
    });
    wait_until("Ball to refuse Alford's proof", || {
        herd.log_text("Ball")
            .contains("Alford could not prove it knows the herd secret")
    });
    let at = herd.send("Alford", "IAMAT island +1+1 5\n");
    assert!(at.starts_with("AT Alford"), "still serves clients: {at}");
    assert_eq!(herd.status("Alford").links_up, 0, "no link may form");
    assert_eq!(herd.status("Ball").links_up, 0, "no link may form");
    assert_eq!(herd.known_at("Ball", "island"), None);
    let logs = herd.log_text("Alford") + &herd.log_text("Ball");
    assert!(!logs.contains("from-environment") && !logs.contains("from-file"));
}

#[test]
fn a_server_without_the_secret_is_not_linked_and_says_so() {
    let herd = Herd::configure(&[("Alford", &["Ball"]), ("Ball", &[])], "");
    // Ball runs open (no secret); Alford has one from the environment.
    herd.spawn("Ball");
    herd.wait_listening("Ball");
    herd.spawn_with_env("Alford", &[("HERD_SECRET", Some(SECRET))]);
    herd.wait_listening("Alford");
    wait_until("Alford to refuse the open Ball", || {
        herd.log_text("Alford").contains("Ball has no herd secret")
    });
    wait_until("Ball to say it needs the secret", || {
        herd.log_text("Ball")
            .contains("Alford requires the herd secret")
    });
    assert!(herd
        .log_text("Ball")
        .contains("no herd secret: peer links are open"));
    assert_eq!(herd.status("Alford").links_up, 0, "no link may form");
    assert_eq!(herd.status("Ball").links_up, 0, "no link may form");
}
