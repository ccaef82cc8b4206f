//! Authenticated peer links: a herd secret shared by every server, proved in the handshake
//! by HMAC-SHA256 over fresh nonces, so the secret never crosses the wire and a recorded
//! handshake cannot be replayed. Handshake version 2:
//!
//!   dialler  -> `HERD HELLO <dialler> 2 <nonce_d>`
//!   acceptor -> `HERD CHALLENGE <nonce_a>`
//!   dialler  -> `HERD AUTH <mac_d>`                             mac_d = HMAC(auth|dialler|acceptor|nonce_a|nonce_d)
//!   acceptor -> `HERD WELCOME <acceptor> 3 <nonce_a> <mac_a>`   mac_a = HMAC(welcome|acceptor|dialler|nonce_d|nonce_a)
//!
//! WELCOME's version says what the acceptor's sessions speak (3: acknowledgements of
//! updates, `protocol::ACK_VERSION`; acceptors before them say 2). It is outside the proofs,
//! so older diallers, which never read it, link as before.
//! The dialler proves itself first: an acceptor sends nothing derived from the secret (and
//! nothing of the herd) to a connection that has not proved it, so a stranger who names a
//! neighbour gets a random nonce and nothing to guess the secret against. One HELLO per
//! connection; a failed AUTH closes it. Each side proves itself over the other's nonce; the
//! labels and name order keep one proof from being reflected as the other.
//!
//! With `insecure_open_links: true` (no secret) the acceptor answers HELLO with
//! `HERD WELCOME <acceptor> 3 <nonce_a> -` at once.
//!
//! Where the secret comes from is a [`SecretSource`]: `HERD_SECRET`, `secret:`,
//! `secret_file:`, or `herd.secret` beside the herd file, created (0600) on first need.

use std::fmt;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The environment variable that overrides `secret:` in herd.yaml.
pub const SECRET_ENV: &str = "HERD_SECRET";

/// The file beside the herd file that holds the secret when nothing else names one.
pub const SECRET_FILE_NAME: &str = "herd.secret";

/// The shortest secret accepted, in characters: 32 hex digits are 128 bits. A shorter one
/// could be guessed offline by anyone who recorded a handshake.
pub const MIN_SECRET_CHARS: usize = 32;

/// The herd secret. Its `Debug` never shows it, so it cannot leak through a logged config.
#[derive(Clone, PartialEq, Eq)]
pub struct HerdSecret(String);

impl HerdSecret {
    /// A secret as given, unchecked (tests; [`HerdSecret::checked`] is the way in).
    pub fn new(secret: String) -> HerdSecret {
        HerdSecret(secret)
    }

    /// `secret` if it is strong enough: at least [`MIN_SECRET_CHARS`] printable ASCII
    /// characters without white space (it travels in environment variables and env files).
    /// `from` names where it came from, for the error.
    pub fn checked(secret: &str, from: &str) -> Result<HerdSecret> {
        if !secret.bytes().all(|b| b.is_ascii_graphic()) {
            bail!(
                "the herd secret in {from} holds white space or non-ASCII characters; use \
                 printable ASCII, e.g. the output of: openssl rand -hex 32"
            );
        }
        if secret.len() < MIN_SECRET_CHARS {
            bail!(
                "the herd secret in {from} has {} characters, fewer than {MIN_SECRET_CHARS} (128 \
                 bits as hex); use a long random one, e.g. the output of: openssl rand -hex 32",
                secret.len()
            );
        }
        Ok(HerdSecret(secret.to_owned()))
    }

    /// A fresh 256-bit secret, as 64 hex digits.
    pub fn generate() -> HerdSecret {
        HerdSecret(random_hex::<32>())
    }

    /// The secret itself, for an export that must write it out (a Kubernetes Secret, an env
    /// file). Nothing else should call this.
    pub fn reveal(&self) -> &str {
        &self.0
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
    /// A client id as redacted logs show it (`logs.redact: ids`): 16 hex digits of a keyed
    /// hash, the same on every server of the herd, so one client's lines can be followed
    /// without its id being kept.
    pub fn log_id(&self, client: &str) -> String {
        let mac = self.mac(&["log id", client]).finalize().into_bytes();
        hex(&mac[..8])
    }

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
///   tool -> `HERD CONTROL <mac_t> <command>`                 mac_t = HMAC(control|node|nonce_n|nonce_t|command)
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
    random_hex::<16>()
}

/// `N` bytes from the kernel's random source, as hex.
fn random_hex<const N: usize>() -> String {
    let mut bytes = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("/dev/urandom is readable");
    hex(&bytes)
}

/// Where a herd's secret comes from, in order of precedence. Resolving it
/// ([`SecretSource::ensure_secret`]) may create the default file, so it happens only where a
/// secret is needed (`start`, `run`, exports), never when a herd file is merely read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `HERD_SECRET` in the environment.
    Env(HerdSecret),
    /// `secret:` in the herd file.
    Inline(HerdSecret),
    /// `secret_file:` in the herd file (a copy of another host's `herd.secret`).
    File(PathBuf),
    /// `herd.secret` beside the herd file, created with a fresh secret on first need.
    Default(PathBuf),
    /// `insecure_open_links: true`: anyone who reaches the port may be a neighbour.
    Open,
}

impl SecretSource {
    /// The secret, reading (or, for the default file, creating) it; `None` only for open
    /// links.
    pub fn ensure_secret(&self) -> Result<Option<HerdSecret>> {
        match self {
            SecretSource::Env(secret) | SecretSource::Inline(secret) => Ok(Some(secret.clone())),
            SecretSource::File(path) => read_secret_file(path).map(Some),
            SecretSource::Default(path) => {
                if !path.exists() {
                    create_secret_file(path)?;
                }
                read_secret_file(path).map(Some)
            }
            SecretSource::Open => Ok(None),
        }
    }

    pub fn is_open(&self) -> bool {
        *self == SecretSource::Open
    }

    /// Where the secret comes from, for `herdctl check`.
    pub fn describe(&self) -> String {
        match self {
            SecretSource::Env(_) => format!("from {SECRET_ENV} in the environment"),
            SecretSource::Inline(_) => "from secret: in the herd file".to_owned(),
            SecretSource::File(path) => format!("from secret_file: {}", path.display()),
            SecretSource::Default(path) if path.exists() => {
                format!(
                    "from {} (copy it to every host of the herd)",
                    path.display()
                )
            }
            SecretSource::Default(path) => format!(
                "from {} (created at the first start; copy it to every host of the herd)",
                path.display()
            ),
            SecretSource::Open => {
                "none: OPEN LINKS (insecure_open_links: true), anyone who reaches a port can \
                 join the herd"
                    .to_owned()
            }
        }
    }
}

/// Reads a secret file: private to its owner, one strong secret (a trailing newline is
/// allowed). Opened without following a symbolic link.
fn read_secret_file(path: &Path) -> Result<HerdSecret> {
    let shown = path.display();
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| {
            format!(
                "cannot read the herd secret {shown}: copy herd.secret from a host of the herd, \
                 or set secret_file: to where it is"
            )
        })?;
    let mode = file.metadata()?.permissions().mode();
    if mode & 0o077 != 0 {
        bail!(
            "the herd secret {shown} can be read or written by other users (mode {:o}); make it \
             private with: chmod 600 {shown}",
            mode & 0o777
        );
    }
    let mut text = String::new();
    file.read_to_string(&mut text)
        .with_context(|| format!("cannot read the herd secret {shown} as text"))?;
    HerdSecret::checked(text.trim_end_matches(['\n', '\r']), &shown.to_string())
}

/// Creates `path` holding a fresh secret, mode 0600. Written to a private temporary file
/// first (`O_EXCL`, `O_NOFOLLOW`) and hard-linked into place, so two nodes starting at once
/// never race: one link wins, the other finds the file and reads the winner's secret.
fn create_secret_file(path: &Path) -> Result<()> {
    let folder = path.parent().unwrap_or(Path::new("."));
    let temporary = folder.join(format!(".{SECRET_FILE_NAME}.{}.tmp", nonce()));
    let written = (|| -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&temporary)?;
        writeln!(file, "{}", HerdSecret::generate().reveal())?;
        file.sync_all()
    })();
    let linked = written.and_then(|()| std::fs::hard_link(&temporary, path));
    let _ = std::fs::remove_file(&temporary);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(anyhow!(
            "cannot create the herd secret {}: {e}; make its folder writable, or set \
             secret_file: (or {SECRET_ENV}) to an existing secret",
            path.display()
        )),
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of an even-length hex string.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
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
    use herd_wire::protocol::{is_valid_nonce, is_valid_proof};

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
    fn weak_secrets_are_refused_with_the_fix() {
        let e = HerdSecret::checked("a", "herd.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("1 characters") && e.contains("openssl rand -hex 32"),
            "{e}"
        );
        let e = HerdSecret::checked(&"x y".repeat(20), "herd.yaml").unwrap_err();
        assert!(e.to_string().contains("white space"), "{e}");
        assert!(HerdSecret::checked(&"ab".repeat(16), "herd.yaml").is_ok());
        assert_eq!(HerdSecret::generate().reveal().len(), 64);
    }

    #[test]
    fn the_default_file_is_created_private_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SECRET_FILE_NAME);
        let source = SecretSource::Default(path.clone());
        let first = source.ensure_secret().unwrap().unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(source.ensure_secret().unwrap().unwrap(), first);
        // Two starters at once agree on one secret.
        std::fs::remove_file(&path).unwrap();
        let secrets: Vec<HerdSecret> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| source.ensure_secret().unwrap().unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(secrets.iter().all(|s| *s == secrets[0]));
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary left"
        );
        // A file others can read is refused, naming the fix.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = source.ensure_secret().unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(unhex(&hex(&[0, 1, 254, 255])).unwrap(), [0, 1, 254, 255]);
        assert_eq!(unhex("abc"), None);
    }
}
