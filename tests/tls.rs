//! TLS links and TLS clients, black-box: `herdctl certs` makes a herd CA, nodes link over
//! mutual TLS on their client port (which keeps serving plain-text clients), and whatever
//! is not a neighbour's certificate from the herd CA naming the server it claims to be is
//! refused.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{run_to_end, wait_until, Herd, DEADLINE, PAIR, SOLO, TLS_YAML};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

const IAMAT: &str = "IAMAT kiwi.tls +34.068930-118.445127 1621464827.959498503";

fn cert_file(herd: &Herd, name: &str) -> PathBuf {
    herd.path().join("certs").join(name)
}

/// A TLS connection to `port` from a client that presents `cert`/`key` (if any) and accepts
/// only a certificate from `ca` naming `server`.
fn tls_connect(
    port: u16,
    ca: &Path,
    identity: Option<(&Path, &Path)>,
    server: &str,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let provider = herdctl::tls::verify::provider();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(ca).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(herdctl::tls::verify::HerdServerVerifier {
            roots: Arc::new(roots),
            expected: server.to_owned(),
            provider,
        }));
    let config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_file(cert).unwrap()],
                PrivateKeyDer::from_pem_file(key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let connection =
        rustls::ClientConnection::new(Arc::new(config), herdctl::tls::server_name()).unwrap();
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    rustls::StreamOwned::new(connection, stream)
}

/// Writes `line` on a TLS connection and reads its first answer line; `Err` with what
/// happened when the connection failed or closed first.
fn ask(
    stream: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    line: &str,
) -> Result<String, String> {
    stream
        .write_all(format!("{line}\n").as_bytes())
        .and_then(|()| stream.flush())
        .map_err(|e| format!("write: {e}"))?;
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte) {
            Ok(0) => {
                return Err(format!(
                    "closed after {:?}",
                    String::from_utf8_lossy(&answer)
                ))
            }
            Ok(_) if byte[0] == b'\n' => return Ok(String::from_utf8_lossy(&answer).into()),
            Ok(_) => answer.push(byte[0]),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

fn hello(from: &str) -> String {
    format!("HERD HELLO {from} 2 {}", herdctl::auth::nonce())
}

#[test]
fn certs_init_issue_and_show() {
    let herd = Herd::configure(PAIR, "");
    let made = herd.certs(&["init"]);
    assert!(made.contains("created the herd CA"), "{made}");
    for file in [
        "ca.pem",
        "ca.key",
        "Alford.pem",
        "Alford.key",
        "Ball.pem",
        "Ball.key",
    ] {
        let mode = std::fs::metadata(cert_file(&herd, file))
            .unwrap_or_else(|e| panic!("{file}: {e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    let folder = std::fs::metadata(herd.path().join("certs")).unwrap();
    assert_eq!(folder.permissions().mode() & 0o777, 0o700);
    // A second init would replace the CA every server trusts: refused, naming the fix.
    let again = run_to_end(herd.herdctl().args(["certs", "init"]), b"");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("certs issue"));

    // A renewal is signed by the same CA (the running herd keeps trusting it).
    let before = std::fs::read(cert_file(&herd, "Ball.pem")).unwrap();
    assert!(herd.certs(&["issue", "Ball"]).contains("issued"));
    assert_ne!(std::fs::read(cert_file(&herd, "Ball.pem")).unwrap(), before);

    // A certificate from another herd's CA is told apart.
    let other = tempfile::tempdir().unwrap();
    herd.certs(&["init", "--dir", other.path().to_str().unwrap()]);
    std::fs::copy(
        other.path().join("Alford.pem"),
        cert_file(&herd, "Stranger.pem"),
    )
    .unwrap();
    let shown = herd.certs(&["show"]);
    let line = |file: &str| {
        shown
            .lines()
            .find(|l| l.starts_with(file))
            .unwrap_or_else(|| panic!("no {file} in\n{shown}"))
            .to_owned()
    };
    let expires = herdctl::tls::der::format_utc(
        herdctl::tls::der::cert_facts(
            &CertificateDer::from_pem_file(cert_file(&herd, "Ball.pem")).unwrap(),
        )
        .unwrap()
        .not_after,
    );
    assert!(line("Ball.pem (Ball)").contains(&expires), "{shown}");
    assert!(
        line("Ball.pem").contains("this CA") && line("Ball.pem").contains(" 36"),
        "{shown}"
    );
    assert!(line("Stranger.pem").contains("NOT this CA"), "{shown}");

    let unknown = run_to_end(herd.herdctl().args(["certs", "issue", "Nobody"]), b"");
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("known servers"));
}

#[test]
fn a_tls_herd_floods_and_syncs_and_shows_its_links_encrypted() {
    let herd = Herd::configure_tls(
        &[
            ("Alford", &["Ball"]),
            ("Ball", &["Hamilton"]),
            ("Hamilton", &[]),
        ],
        "admin: { open: true }\n",
    );
    herd.start_node("Alford");
    herd.start_node("Ball");
    // Plain-text clients keep the client port.
    let reply = herd.send("Alford", &format!("{IAMAT}\n"));
    assert!(reply.starts_with("AT Alford "), "{reply}");
    let at = reply.trim_end().to_owned();
    herd.wait_for_at("Ball", "kiwi.tls", &at);
    // Hamilton starts late: anti-entropy over its TLS link brings it what it missed.
    herd.start_node("Hamilton");
    herd.wait_for_at("Hamilton", "kiwi.tls", &at);

    // Each link says it is encrypted, and when the neighbour's certificate expires.
    let ball_expires = herdctl::tls::der::cert_facts(
        &CertificateDer::from_pem_file(cert_file(&herd, "Ball.pem")).unwrap(),
    )
    .unwrap()
    .not_after;
    wait_until("Alford's link to Ball to show TLS", || {
        let (code, body) = herd.admin_get("Alford", "/status", None);
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        let link = &status["links"][0];
        code == 200
            && link["peer"] == "Ball"
            && link["encrypted"] == true
            && link["peer_cert_not_after"] == ball_expires
    });
    wait_until("Alford to log that its links are TLS", || {
        herd.log_text("Alford").contains("links are mutual TLS")
    });
}

#[test]
fn a_plain_text_hello_is_refused_by_a_tls_herd() {
    let herd = Herd::configure_tls(PAIR, "");
    herd.start_node("Alford");
    let mut peer = common::peer::RawPeer::connect(herd.port("Alford"));
    peer.send(&hello("Ball"));
    let answer = peer.line();
    assert!(answer.starts_with("? HERD HELLO Ball"), "{answer}");
    assert_eq!(peer.try_line(), None, "the connection must close");
    // (The log writer is asynchronous.)
    wait_until("Alford to log why it refused", || {
        herd.log_text("Alford")
            .contains("links are TLS (links.tls) and it came in plain text")
    });
}

#[test]
fn only_a_herd_certificate_naming_the_neighbour_opens_a_link() {
    let herd = Herd::configure_tls(
        &[
            ("Alford", &["Ball"]),
            ("Ball", &[]),
            ("Hamilton", &["Ball"]),
        ],
        "",
    );
    herd.start_node("Alford");
    let port = herd.port("Alford");
    let ca = cert_file(&herd, "ca.pem");
    let identity = |dir: &Path, name: &str| {
        (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        )
    };
    let certs_dir = herd.path().join("certs");

    // Ball's own certificate: the handshake goes on (the herd secret's challenge).
    let (cert, key) = identity(&certs_dir, "Ball");
    let mut ball = tls_connect(port, &ca, Some((&cert, &key)), "Alford");
    let answer = ask(&mut ball, &hello("Ball")).unwrap();
    assert!(answer.starts_with("HERD CHALLENGE "), "{answer}");

    // Hamilton's certificate (same CA) claiming to be Ball: refused.
    let (cert, key) = identity(&certs_dir, "Hamilton");
    let mut impostor = tls_connect(port, &ca, Some((&cert, &key)), "Alford");
    let answer = ask(&mut impostor, &hello("Ball"));
    assert!(
        answer
            .as_deref()
            .is_ok_and(|a| a.starts_with("? HERD HELLO Ball")),
        "{answer:?}"
    );
    let mut byte = [0u8; 1];
    assert!(
        matches!(impostor.read(&mut byte), Ok(0) | Err(_)),
        "the impostor's connection must close"
    );

    // Ball's name from another herd's CA: the TLS handshake itself is refused.
    let other = tempfile::tempdir().unwrap();
    herd.certs(&["init", "--dir", other.path().to_str().unwrap()]);
    let (cert, key) = identity(other.path(), "Ball");
    let mut stranger = tls_connect(port, &ca, Some((&cert, &key)), "Alford");
    let answer = ask(&mut stranger, &hello("Ball"));
    assert!(answer.is_err(), "{answer:?}");

    // No certificate at all: refused too.
    let mut anonymous = tls_connect(port, &ca, None, "Alford");
    let answer = ask(&mut anonymous, &hello("Ball"));
    assert!(answer.is_err(), "{answer:?}");

    wait_until("Alford to log the refusals", || {
        let log = herd.log_text("Alford");
        log.contains("its certificate names \"Hamilton\", not Ball")
            && log.matches("refused a TLS connection").count() >= 2
    });
}

#[test]
fn a_dialler_refuses_a_neighbour_whose_certificate_names_another_server() {
    // Ball's port is held by an impostor presenting Hamilton's certificate (same CA).
    let herd = Herd::configure_tls(
        &[("Alford", &["Ball"]), ("Ball", &[]), ("Hamilton", &[])],
        "admin: { open: true }\n",
    );
    let listener = herd.listen_as("Ball");
    let cert = CertificateDer::from_pem_file(cert_file(&herd, "Hamilton.pem")).unwrap();
    let key = PrivateKeyDer::from_pem_file(cert_file(&herd, "Hamilton.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(herdctl::tls::verify::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let config = Arc::new(config);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let connection = rustls::ServerConnection::new(Arc::clone(&config)).unwrap();
            let mut tls = rustls::StreamOwned::new(connection, stream);
            let mut byte = [0u8; 1];
            let _ = tls.read(&mut byte);
        }
    });
    herd.start_node("Alford");
    wait_until("Alford to refuse the impostor", || {
        let (_, body) = herd.admin_get("Alford", "/status", None);
        body.contains("TLS handshake with Ball failed")
    });
    let (_, body) = herd.admin_get("Alford", "/status", None);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_ne!(status["links"][0]["state"], "up", "{body}");
}

#[test]
fn a_tls_herd_file_with_a_missing_certificate_names_the_fix() {
    let herd = Herd::configure_tls(SOLO, "");
    std::fs::remove_file(cert_file(&herd, "Alford.pem")).unwrap();
    let output = run_to_end(herd.herdctl().args(["run", "Alford"]), b"");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("herdctl certs issue Alford"), "{stderr}");
    // A key others can read is refused.
    herd.certs(&["issue", "Alford"]);
    std::fs::set_permissions(
        cert_file(&herd, "Alford.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let output = run_to_end(herd.herdctl().args(["run", "Alford"]), b"");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("chmod 600"));
}

/// Lays out server `name`'s certificates in `dir` the way a Kubernetes Secret volume does
/// (each name a link into `..data`, itself a link to the current version's folder), the
/// files with `mode`.
fn secret_volume(herd: &Herd, name: &str, dir: &Path, mode: u32) {
    let version = dir.join("..2026_12_04_17_00_00.123");
    std::fs::create_dir_all(&version).unwrap();
    std::os::unix::fs::symlink(version.file_name().unwrap(), dir.join("..data")).unwrap();
    for file in [
        "ca.pem".to_owned(),
        format!("{name}.pem"),
        format!("{name}.key"),
    ] {
        std::fs::copy(cert_file(herd, &file), version.join(&file)).unwrap();
        std::fs::set_permissions(version.join(&file), std::fs::Permissions::from_mode(mode))
            .unwrap();
        std::os::unix::fs::symlink(format!("..data/{file}"), dir.join(&file)).unwrap();
    }
}

#[test]
fn a_node_reads_its_certificates_from_herd_tls_dir_through_a_secret_volumes_links() {
    let herd = Herd::configure_tls(PAIR, "admin: { open: true }\n");
    // A key others may read is refused, naming the fix.
    let exposed = herd.path().join("exposed");
    secret_volume(&herd, "Ball", &exposed, 0o444);
    let output = run_to_end(
        herd.herdctl()
            .args(["run", "Ball"])
            .env("HERD_TLS_DIR", &exposed),
        b"",
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("Ball.key") && stderr.contains("chmod"),
        "{stderr}"
    );

    let mounted = herd.path().join("mounted");
    secret_volume(&herd, "Alford", &mounted, 0o400);
    // Only the folder has Alford's key: the herd file's paths would not start it.
    std::fs::remove_file(cert_file(&herd, "Alford.key")).unwrap();
    herd.spawn_with_env("Alford", &[("HERD_TLS_DIR", mounted.to_str())]);
    herd.wait_listening("Alford");
    herd.start_node("Ball");
    wait_until("Alford's link to Ball to be up over TLS", || {
        let (_, body) = herd.admin_get("Alford", "/status", None);
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        status["links"][0]["state"] == "up" && status["links"][0]["encrypted"] == true
    });
    let reply = herd.send("Alford", &format!("{IAMAT}\n"));
    herd.wait_for_at("Ball", "kiwi.tls", reply.trim_end());
}

#[test]
fn send_speaks_tls_to_a_tls_port_checking_the_herd_ca() {
    let herd = Herd::configure_tls(PAIR, "");
    let tls_port = herd.give_tls_port("Ball");
    herd.start_node("Alford");
    herd.start_node("Ball");
    let send = |line: &str| run_to_end(herd.herdctl().args(["send", "Ball", line]), b"");
    let sent = send(IAMAT);
    let reply = String::from_utf8_lossy(&sent.stdout).into_owned();
    assert!(
        sent.status.success() && reply.starts_with("AT Ball "),
        "{reply} {}",
        String::from_utf8_lossy(&sent.stderr)
    );
    herd.wait_for_at("Alford", "kiwi.tls", reply.trim_end());
    // Several lines and a last one without a newline, over TLS.
    let piped = run_to_end(
        herd.herdctl().args(["send", "Ball", "-"]),
        b"WHATSAT kiwi.tls 10 1\nIAMAT other +1+1 5",
    );
    let text = String::from_utf8_lossy(&piped.stdout);
    assert!(
        text.starts_with(reply.trim_end()) && text.contains("AT Ball "),
        "{text}"
    );

    // The tls_port speaks only TLS: a plain-text line gets no answer.
    let plain = common::exchange(tls_port, b"HERD STATUS\n");
    assert!(!plain.starts_with(b"HERD STATUS"), "{plain:?}");

    // With another herd's CA in the herd file, send refuses Ball's certificate: it was TLS.
    let other = tempfile::tempdir().unwrap();
    herd.certs(&["init", "--dir", other.path().to_str().unwrap()]);
    std::fs::copy(other.path().join("ca.pem"), cert_file(&herd, "ca.pem")).unwrap();
    let refused = send(IAMAT);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("TLS"),
        "{stderr}"
    );
}

#[test]
fn a_capture_of_a_tls_flood_never_shows_the_client_id() {
    if !std::process::Command::new("tcpdump")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return common::skip_unless_ci("tcpdump is not installed (apt-get install tcpdump)");
    }
    if !nix_is_root() {
        return common::skip_unless_ci("capturing on lo needs root");
    }
    let herd = Herd::configure_tls(PAIR, "");
    // Ball is asked over its tls_port, so the only cleartext a query could show is not
    // captured.
    herd.give_tls_port("Ball");
    herd.start_node("Alford");
    herd.start_node("Ball");
    // Alford's floods go to Ball on the connection Alford dialled: Ball's port.
    let capture = herd.path().join("lo.pcap");
    let filter = format!("tcp port {}", herd.port("Ball"));
    let mut tcpdump = common::Running::spawn(
        std::process::Command::new("tcpdump")
            .args(["-i", "lo", "-U", "-n", "-s", "0", "-w"])
            .arg(&capture)
            .arg(&filter)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped()),
    );
    // tcpdump says "listening on lo" once it captures.
    let mut said = std::io::BufReader::new(tcpdump.0.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut said, &mut line).unwrap();
    assert!(line.contains("listening on"), "{line}");

    let secret_id = format!("secret-client-{}", herdctl::auth::nonce());
    let reply = herd.send(
        "Alford",
        &format!("IAMAT {secret_id} +34.068930-118.445127 1621464827.959498503\n"),
    );
    wait_until("Ball to hold the update", || {
        let asked = run_to_end(
            herd.herdctl()
                .args(["send", "Ball", &format!("WHATSAT {secret_id} 1 1")]),
            b"",
        );
        String::from_utf8_lossy(&asked.stdout).starts_with(reply.trim_end())
    });
    // A plain-text client on the same port, as the capture's own check that it sees
    // cleartext where there is some.
    let marker = format!("plain-marker-{}", herdctl::auth::nonce());
    herd.send("Ball", &format!("WHATSAT {marker} 1 1\n"));
    wait_until("the capture to hold the plain-text marker", || {
        std::fs::read(&capture).is_ok_and(|b| contains(&b, marker.as_bytes()))
    });
    common::nix_kill(tcpdump.0.id(), "INT");
    tcpdump.wait();
    let bytes = std::fs::read(&capture).unwrap();
    // The flood went through (the WHATSAT above found it at Ball), over the captured link.
    assert!(
        !contains(&bytes, secret_id.as_bytes()),
        "the client id crossed the link in cleartext"
    );
    assert!(!contains(&bytes, b"HERD AT"), "a flood line in cleartext");
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn nix_is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

#[test]
fn status_shows_each_tls_link_and_its_certificate_expiry() {
    let supervised = common::supervised::Supervised::herd(PAIR, "", TLS_YAML);
    supervised.herd.certs(&["init"]);
    supervised.ok(&["start", "all"]);
    let expires = herdctl::tls::der::format_utc(
        herdctl::tls::der::cert_facts(
            &CertificateDer::from_pem_file(cert_file(&supervised.herd, "Ball.pem")).unwrap(),
        )
        .unwrap()
        .not_after,
    );
    let wanted = format!("Alford: TLS links: Ball (certificate expires {expires}, 36");
    wait_until("status to show Alford's TLS link", || {
        supervised.ok(&["status"]).contains(&wanted)
    });
    let json = supervised.status();
    let alford = json.iter().find(|n| n["name"] == "Alford").unwrap();
    assert_eq!(alford["links"][0]["encrypted"], true, "{alford}");
    supervised.ok(&["stop", "all"]);
}
