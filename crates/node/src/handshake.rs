//! The herd's handshake, both ends: the dialler's greeting (`HELLO`, then with a secret
//! `CHALLENGE`/`AUTH`/`WELCOME`, see PROTOCOL.md) and the acceptor's answers to `HELLO` and
//! `AUTH` on its client port. The lines are parsed and formatted in `herd-wire`'s
//! `protocol.rs`; the proofs are `herd-config`'s `auth.rs`. Nothing derived from the secret
//! is sent before the dialler has proved it knows it.

use anyhow::{bail, Result};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::peer_input::Dropped;
use super::server::{Connection, Role, Transport};
use super::Node;
use herd_config::auth;
use herd_logs::WireLog;
use herd_wire::protocol::{
    self, format_auth, format_hello, format_peer_challenge, format_welcome, Command, PeerMessage,
    PEER_PROTOCOL_VERSION,
};

/// The acceptor's answer to `HERD HELLO <server> <version> <nonce>` on `conn`: a WELCOME (open links, or TLS links with no
/// secret: the connection is a peer's now) or a CHALLENGE (it must prove the secret next);
/// `None` to refuse the line (its role says whether the connection goes on).
pub(super) fn on_hello(
    node: &Node,
    conn: &mut Connection,
    server: &str,
    version: u32,
    nonce: &str,
) -> Option<String> {
    let Connection {
        role,
        remote,
        transport,
        ..
    } = conn;
    let known = node.server_config().neighbours.contains(server);
    let first = matches!(role, Role::Client);
    if !known || version != PEER_PROTOCOL_VERSION || !first {
        // A name is ASCII (checked), but as long as the line: show its start.
        tracing::warn!(
            "{remote}: refused HELLO from {:?} (protocol {version}): not a \
             neighbour of {}, a version other than {PEER_PROTOCOL_VERSION}, or not \
             the connection's first HELLO",
            &server[..server.len().min(64)],
            node.name
        );
        if first {
            *role = Role::RefusedHello;
        }
        return None;
    }
    if let Some(why) = tls_refusal(node, transport, server) {
        tracing::warn!("{remote}: refused HELLO from {server}: {why}");
        node.peer_input.count(Dropped::FailedAuth);
        *role = Role::Closing;
        return None;
    }
    let our_nonce = auth::nonce();
    if node.secret.is_none() {
        match node.tls.is_some() {
            true => tracing::info!(
                "peer connection from {server} ({remote}) opened (TLS, certificate from the \
                 herd CA)"
            ),
            false => tracing::warn!(
                "peer connection from {server} ({remote}) opened without proof: OPEN LINKS \
                 (insecure_open_links: true)"
            ),
        }
        node.peers.wake(server);
        *role = Role::Peer(server.to_owned());
        return Some(format_welcome(&node.name, &our_nonce, None));
    }
    // Nothing derived from the secret until the dialler has proved it knows it.
    let challenge = format_peer_challenge(&our_nonce);
    *role = Role::Authenticating {
        from: server.to_owned(),
        dialler_nonce: nonce.to_owned(),
        our_nonce,
    };
    Some(challenge)
}

/// The acceptor's answer to `HERD AUTH <proof>`: the WELCOME with its own proof when the
/// dialler proved the secret (the connection is a peer's now); `None` to refuse it (the
/// connection closes when the handshake was under way, its role says).
pub(super) fn on_auth(node: &Node, conn: &mut Connection, proof: &str) -> Option<String> {
    let Connection { role, remote, .. } = conn;
    let Role::Authenticating {
        from,
        dialler_nonce,
        our_nonce,
    } = role
    else {
        return None;
    };
    let secret = node.secret.as_ref().expect("authenticating needs a secret");
    if !secret.verify_auth(proof, from, &node.name, our_nonce, dialler_nonce) {
        tracing::warn!("{remote}: {from} failed to prove the herd secret; closing the connection");
        node.peer_input.count(Dropped::FailedAuth);
        *role = Role::Closing;
        return None;
    }
    tracing::info!("peer connection from {from} ({remote}) opened (authenticated)");
    node.peers.wake(from);
    let proof = secret.welcome_mac(&node.name, from, dialler_nonce, our_nonce);
    let welcome = format_welcome(&node.name, our_nonce, Some(&proof));
    *role = Role::Peer(from.clone());
    Some(welcome)
}

/// Why a HELLO from `server` cannot open a link on a connection that came by `transport`:
/// a herd with TLS links takes HELLO only over mutual TLS, from a certificate naming the
/// server that says HELLO.
fn tls_refusal(node: &Node, transport: &Transport, server: &str) -> Option<String> {
    node.tls.as_ref()?;
    match transport {
        Transport::LinkTls(cert) if cert.identity.as_deref() == Some(server) => None,
        Transport::LinkTls(cert) => Some(format!(
            "its certificate names {:?}, not {server}",
            cert.identity.as_deref().unwrap_or("nobody")
        )),
        Transport::Plain => Some(
            "this herd's links are TLS (links.tls) and it came in plain text; give the \
             neighbour the same links.tls"
                .to_owned(),
        ),
        Transport::ClientTls => Some("a neighbour's link must not come on tls_port".to_owned()),
    }
}

/// Whether `line` is the next step of a neighbour's handshake on a connection in `role`.
pub(super) fn is_handshake_line(line: &[u8], role: &Role) -> bool {
    match role {
        Role::Client => line.starts_with(b"HERD HELLO "),
        Role::Authenticating { .. } => line.starts_with(b"HERD AUTH "),
        _ => false,
    }
}

/// The herd's own handshake on a connection: HELLO, and the secret's challenge when there
/// is a secret. Returns the version the neighbour's WELCOME said.
pub(super) async fn greet<S: AsyncRead + AsyncWrite + Unpin>(
    node: &Node,
    neighbour: &str,
    stream: &mut S,
) -> Result<u32> {
    let our_nonce = auth::nonce();
    send(
        stream,
        &node.log,
        neighbour,
        &format_hello(&node.name, &our_nonce),
    )
    .await?;
    let answer = receive(stream, &node.log, neighbour).await?;
    let their_nonce = match (protocol::parse_line(&answer), &node.secret) {
        (Some(Command::Peer(PeerMessage::Challenge { nonce })), Some(_)) => nonce.to_owned(),
        (
            Some(Command::Peer(PeerMessage::Welcome {
                server,
                version,
                proof: None,
                ..
            })),
            None,
        ) if server == neighbour => {
            return Ok(version);
        }
        (Some(Command::Peer(PeerMessage::Welcome { proof: None, .. })), Some(_)) => bail!(
            "{neighbour} runs OPEN LINKS (insecure_open_links: true); give every server the \
             same herd secret"
        ),
        (Some(Command::Peer(PeerMessage::Challenge { .. })), None) => bail!(
            "{neighbour} requires the herd secret; remove insecure_open_links and give every \
             server the same secret (herd.secret, secret_file: or {})",
            auth::SECRET_ENV
        ),
        _ => bail!(
            "handshake refused: answered {:?}",
            String::from_utf8_lossy(&answer)
        ),
    };
    let secret = node.secret.as_ref().expect("matched above");
    let proof = secret.auth_mac(&node.name, neighbour, &their_nonce, &our_nonce);
    send(stream, &node.log, neighbour, &format_auth(&proof)).await?;
    let answer = receive(stream, &node.log, neighbour).await?;
    match protocol::parse_line(&answer) {
        Some(Command::Peer(PeerMessage::Welcome {
            server,
            version,
            nonce,
            proof: Some(proof),
        })) if server == neighbour && nonce == their_nonce => {
            if !secret.verify_welcome(proof, neighbour, &node.name, &our_nonce, &their_nonce) {
                bail!("{neighbour} could not prove it knows the herd secret; not linking");
            }
            Ok(version)
        }
        _ if answer.starts_with(b"? HERD AUTH") => bail!(
            "{neighbour} refused this node's proof of the herd secret: the two run \
             different secrets; give every server the same one"
        ),
        _ => bail!(
            "handshake refused: answered {:?}",
            String::from_utf8_lossy(&answer)
        ),
    }
}

/// Writes one handshake line and logs it.
async fn send<S: AsyncWrite + Unpin>(
    stream: &mut S,
    log: &WireLog,
    neighbour: &str,
    line: &str,
) -> Result<()> {
    stream.write_all(line.as_bytes()).await?;
    log.one(neighbour, ">", line.trim_end().as_bytes());
    Ok(())
}

/// Reads one handshake line and logs it, a byte at a time: the neighbour may follow its
/// WELCOME at once with session lines (`HERD FAULT`, a digest), and they belong to the
/// session's reader, so nothing past the newline may be read here. (A buffered reader
/// dropped after the handshake lost them whenever they came in the same segment.)
async fn receive<S: AsyncRead + Unpin>(
    stream: &mut S,
    log: &WireLog,
    neighbour: &str,
) -> Result<Vec<u8>> {
    const MAX_HANDSHAKE_LINE: usize = 4096;
    let mut answer = Vec::with_capacity(128);
    loop {
        let byte = match stream.read_u8().await {
            Ok(byte) => byte,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                bail!("connection closed during handshake")
            }
            Err(e) => return Err(e.into()),
        };
        if byte == b'\n' {
            break;
        }
        if answer.len() == MAX_HANDSHAKE_LINE {
            bail!("handshake line longer than {MAX_HANDSHAKE_LINE} bytes");
        }
        answer.push(byte);
    }
    if answer.last() == Some(&b'\r') {
        answer.pop();
    }
    log.one(neighbour, "<", &answer);
    Ok(answer)
}
