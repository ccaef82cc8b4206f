//! Authenticated peer links: a herd secret shared by every server, proved in the handshake
//! by HMAC-SHA256 over fresh nonces, so the secret never crosses the wire and a recorded
//! handshake cannot be replayed.
//!
//!   dialler  -> `HERD HELLO <dialler> 1 <nonce_d>`
//!   acceptor -> `HERD WELCOME <acceptor> 1 <nonce_a> <mac_a>`   mac_a = HMAC(welcome|acceptor|dialler|nonce_d|nonce_a)
//!   dialler  -> `HERD AUTH <mac_d>`                             mac_d = HMAC(auth|dialler|acceptor|nonce_a|nonce_d)
//!
//! Each side proves itself over the other's nonce; the labels and name order keep one proof
//! from being reflected as the other. Without a secret the MAC is `-` and there is no AUTH.

use std::fmt;
use std::io::Read;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The environment variable that overrides `secret:` in herd.yaml.
pub const SECRET_ENV: &str = "HERD_SECRET";

/// The herd secret. Its `Debug` never shows it, so it cannot leak through a logged config.
#[derive(Clone, PartialEq, Eq)]
pub struct HerdSecret(String);

impl HerdSecret {
    pub fn new(secret: String) -> HerdSecret {
        HerdSecret(secret)
    }

    fn mac(&self, parts: &[&str]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.0.as_bytes())
            .expect("HMAC takes a key of any length");
        for part in parts {
            // Length-prefixed, so ("ab", "c") and ("a", "bc") never collide.
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        mac
    }

    /// The acceptor's proof in WELCOME.
    pub fn welcome_mac(
        &self,
        acceptor: &str,
        dialler: &str,
        dialler_nonce: &str,
        acceptor_nonce: &str,
    ) -> String {
        let mac = self.mac(&["welcome", acceptor, dialler, dialler_nonce, acceptor_nonce]);
        hex(&mac.finalize().into_bytes())
    }

    /// The dialler's proof in AUTH.
    pub fn auth_mac(
        &self,
        dialler: &str,
        acceptor: &str,
        acceptor_nonce: &str,
        dialler_nonce: &str,
    ) -> String {
        let mac = self.mac(&["auth", dialler, acceptor, acceptor_nonce, dialler_nonce]);
        hex(&mac.finalize().into_bytes())
    }

    /// Checks a proof in constant time.
    pub fn verify_welcome(
        &self,
        proof: &str,
        acceptor: &str,
        dialler: &str,
        dialler_nonce: &str,
        acceptor_nonce: &str,
    ) -> bool {
        let mac = self.mac(&["welcome", acceptor, dialler, dialler_nonce, acceptor_nonce]);
        unhex(proof).is_some_and(|p| mac.verify_slice(&p).is_ok())
    }

    /// Checks a proof in constant time.
    pub fn verify_auth(
        &self,
        proof: &str,
        dialler: &str,
        acceptor: &str,
        acceptor_nonce: &str,
        dialler_nonce: &str,
    ) -> bool {
        let mac = self.mac(&["auth", dialler, acceptor, acceptor_nonce, dialler_nonce]);
        unhex(proof).is_some_and(|p| mac.verify_slice(&p).is_ok())
    }

    /// The bearer token of the admin endpoint's `/status` and `/metrics`: derived from the
    /// secret under its own label, so handing it to Prometheus does not hand out the secret
    /// (nor anything a peer handshake accepts).
    pub fn admin_token(&self) -> String {
        hex(&self.mac(&["herd admin token"]).finalize().into_bytes())
    }

    /// Checks an admin bearer token in constant time.
    pub fn verify_admin_token(&self, token: &str) -> bool {
        let mac = self.mac(&["herd admin token"]);
        unhex(token).is_some_and(|t| mac.verify_slice(&t).is_ok())
    }
}

/// The operator's control path (`operator.rs`) proves the same secret the same way:
///
///   tool -> `HERD OPERATOR <nonce_t>`
///   node -> `HERD CHALLENGE <node> <nonce_n> <mac_n>`      mac_n = HMAC(challenge|node|nonce_t|nonce_n)
///   tool -> `HERD CONTROL <mac_t> <command>`             mac_t = HMAC(control|node|nonce_n|nonce_t|command)
///
/// The command is inside the proof, and the node's nonce is good for one command, so a
/// recorded command can be neither replayed nor changed.
impl HerdSecret {
    pub fn challenge_mac(&self, node: &str, tool_nonce: &str, node_nonce: &str) -> String {
        let mac = self.mac(&["challenge", node, tool_nonce, node_nonce]);
        hex(&mac.finalize().into_bytes())
    }

    pub fn verify_challenge(
        &self,
        proof: &str,
        node: &str,
        tool_nonce: &str,
        node_nonce: &str,
    ) -> bool {
        let mac = self.mac(&["challenge", node, tool_nonce, node_nonce]);
        unhex(proof).is_some_and(|p| mac.verify_slice(&p).is_ok())
    }

    pub fn control_mac(
        &self,
        node: &str,
        node_nonce: &str,
        tool_nonce: &str,
        command: &str,
    ) -> String {
        let mac = self.mac(&["control", node, node_nonce, tool_nonce, command]);
        hex(&mac.finalize().into_bytes())
    }

    pub fn verify_control(
        &self,
        proof: &str,
        node: &str,
        node_nonce: &str,
        tool_nonce: &str,
        command: &str,
    ) -> bool {
        let mac = self.mac(&["control", node, node_nonce, tool_nonce, command]);
        unhex(proof).is_some_and(|p| mac.verify_slice(&p).is_ok())
    }
}

impl fmt::Debug for HerdSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HerdSecret([redacted])")
    }
}

/// 128 bits from the kernel's random source, as 32 hex digits.
pub fn nonce() -> String {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("/dev/urandom is readable");
    hex(&bytes)
}

/// A nonce as it may appear on the wire: 32 lowercase hex digits.
pub fn is_valid_nonce(text: &str) -> bool {
    text.len() == 32 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A proof as it may appear on the wire: 64 lowercase hex digits, or `-` for none.
pub fn is_valid_proof(text: &str) -> bool {
    text == "-"
        || (text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_token_is_derived_and_checked() {
        let secret = HerdSecret::new("correct horse".into());
        let token = secret.admin_token();
        assert_eq!(token.len(), 64);
        assert!(!token.contains("correct"));
        assert!(secret.verify_admin_token(&token));
        assert!(!secret.verify_admin_token(&token[..62]));
        assert!(!secret.verify_admin_token(""));
        assert!(!HerdSecret::new("battery staple".into()).verify_admin_token(&token));
    }

    #[test]
    fn proofs_verify_only_with_the_same_secret_names_and_nonces() {
        let secret = HerdSecret::new("correct horse".into());
        let (nd, na) = (nonce(), nonce());
        assert!(is_valid_nonce(&nd) && nd != na);
        let w = secret.welcome_mac("Ball", "Alford", &nd, &na);
        assert!(is_valid_proof(&w));
        assert!(secret.verify_welcome(&w, "Ball", "Alford", &nd, &na));
        assert!(
            !secret.verify_welcome(&w, "Ball", "Alford", &na, &nd),
            "nonces swapped"
        );
        assert!(
            !secret.verify_welcome(&w, "Alford", "Ball", &nd, &na),
            "names swapped"
        );
        let other = HerdSecret::new("battery staple".into());
        assert!(
            !other.verify_welcome(&w, "Ball", "Alford", &nd, &na),
            "wrong secret"
        );
        // The acceptor's proof cannot be reflected as the dialler's.
        assert!(!secret.verify_auth(&w, "Alford", "Ball", &na, &nd));
        let a = secret.auth_mac("Alford", "Ball", &na, &nd);
        assert!(secret.verify_auth(&a, "Alford", "Ball", &na, &nd));
        assert!(!secret.verify_auth("-", "Alford", "Ball", &na, &nd));
        assert!(!secret.verify_auth("zz", "Alford", "Ball", &na, &nd));
    }

    #[test]
    fn control_proofs_bind_the_command_and_both_nonces() {
        let secret = HerdSecret::new("correct horse".into());
        let (nt, nn) = (nonce(), nonce());
        let c = secret.challenge_mac("Ball", &nt, &nn);
        assert!(secret.verify_challenge(&c, "Ball", &nt, &nn));
        assert!(!secret.verify_challenge(&c, "Welsh", &nt, &nn));
        let p = secret.control_mac("Ball", &nn, &nt, "CUT Welsh 1a");
        assert!(secret.verify_control(&p, "Ball", &nn, &nt, "CUT Welsh 1a"));
        assert!(!secret.verify_control(&p, "Ball", &nn, &nt, "CUT Alford 1a"));
        assert!(!secret.verify_control(&p, "Ball", &nonce(), &nt, "CUT Welsh 1a"));
        assert!(!secret.verify_control(&c, "Ball", &nn, &nt, "CUT Welsh 1a"));
        let other = HerdSecret::new("battery staple".into());
        assert!(!other.verify_control(&p, "Ball", &nn, &nt, "CUT Welsh 1a"));
    }

    #[test]
    fn the_secret_never_shows_in_debug() {
        let secret = HerdSecret::new("hunter2".into());
        assert!(!format!("{secret:?}").contains("hunter2"));
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(unhex(&hex(&[0, 1, 254, 255])).unwrap(), [0, 1, 254, 255]);
        assert_eq!(unhex("abc"), None);
    }
}
