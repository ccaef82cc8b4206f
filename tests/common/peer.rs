//! A raw neighbour for black-box tests: a plain socket that speaks the peer handshake
//! (version 2, `auth.rs`) with the herd's secret, as a dialler or as an acceptor, then lets
//! the test read and write peer lines itself.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

use herdctl::auth::{nonce, HerdSecret};
use herdctl::protocol::{parse_line, Command, PeerMessage, PEER_PROTOCOL_VERSION};

use super::DEADLINE;

pub struct RawPeer {
    pub stream: TcpStream,
    /// Bytes read past the last line handed out.
    pub pending: Vec<u8>,
}

impl RawPeer {
    pub fn new(stream: TcpStream) -> RawPeer {
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        RawPeer {
            stream,
            pending: Vec::new(),
        }
    }

    pub fn connect(port: u16) -> RawPeer {
        RawPeer::new(TcpStream::connect(("127.0.0.1", port)).unwrap())
    }

    /// Writes `line` and its newline.
    pub fn send(&self, line: &str) {
        (&self.stream)
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
    }

    /// The next line, or `None` once the other end closed.
    pub fn try_line(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                return Some(String::from_utf8_lossy(&line).trim_end().to_owned());
            }
            let mut buf = [0u8; 64 * 1024];
            match (&self.stream).read(&mut buf) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// The next line; the test fails if the other end closed.
    pub fn line(&mut self) -> String {
        self.try_line().expect("the node closed the connection")
    }

    /// Dials the node on `port` as neighbour `me` and proves `secret` to it (`acceptor`);
    /// returns once the node's WELCOME is checked.
    pub fn dial(port: u16, me: &str, acceptor: &str, secret: &HerdSecret) -> RawPeer {
        let mut peer = RawPeer::connect(port);
        let ours = nonce();
        peer.send(&format!("HERD HELLO {me} {PEER_PROTOCOL_VERSION} {ours}"));
        let challenge = peer.line();
        let theirs = challenge
            .strip_prefix("HERD CHALLENGE ")
            .unwrap_or_else(|| panic!("expected a challenge, got {challenge:?}"))
            .to_owned();
        peer.send(&format!(
            "HERD AUTH {}",
            secret.auth_mac(me, acceptor, &theirs, &ours)
        ));
        let welcome = peer.line();
        match parse_line(welcome.as_bytes()) {
            Some(Command::Peer(PeerMessage::Welcome {
                proof: Some(proof), ..
            })) => assert!(secret.verify_welcome(proof, acceptor, me, &ours, &theirs)),
            _ => panic!("expected a WELCOME with a proof, got {welcome:?}"),
        }
        peer
    }

    /// Takes the next connection on `listener` (the test plays neighbour `me`), checks that
    /// `dialler` proves `secret`, and welcomes it as a neighbour that predates
    /// acknowledgements (WELCOME version 2: the dialler asks for none).
    pub fn accept(listener: &TcpListener, me: &str, dialler: &str, secret: &HerdSecret) -> RawPeer {
        RawPeer::accept_saying(listener, me, dialler, secret, PEER_PROTOCOL_VERSION)
    }

    /// [`RawPeer::accept`], with `version` in the WELCOME (`herdctl::protocol::WELCOME_VERSION`: the dialler
    /// asks for acknowledgements, `HERD ACKS`).
    pub fn accept_saying(
        listener: &TcpListener,
        me: &str,
        dialler: &str,
        secret: &HerdSecret,
        version: u32,
    ) -> RawPeer {
        let (stream, _) = listener.accept().unwrap();
        let mut peer = RawPeer::new(stream);
        let hello = peer.line();
        let prefix = format!("HERD HELLO {dialler} {PEER_PROTOCOL_VERSION} ");
        let theirs = hello
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("expected {prefix:?}, got {hello:?}"))
            .to_owned();
        let ours = nonce();
        peer.send(&format!("HERD CHALLENGE {ours}"));
        let auth = peer.line();
        let proof = auth.strip_prefix("HERD AUTH ").expect("an AUTH");
        assert!(secret.verify_auth(proof, dialler, me, &ours, &theirs));
        peer.send(&format!(
            "HERD WELCOME {me} {version} {ours} {}",
            secret.welcome_mac(me, dialler, &theirs, &ours)
        ));
        peer
    }
}
