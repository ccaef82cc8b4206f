//! TLS for the herd (rustls with the aws-lc-rs provider that reqwest already uses; no
//! OpenSSL): the herd CA and server certificates (`certs.rs`, `herdctl certs`), how a
//! certificate's identity and expiry are read (`der.rs`) and checked (`verify.rs`), and the
//! TLS set-ups a node and a client use (here).
//!
//! With `links.tls` in the herd file, links are mutual TLS: the dialler checks that the
//! server it reached has a certificate from the herd CA naming the neighbour it dialled; the
//! acceptor asks for a certificate from the herd CA and later checks that the name a HELLO
//! claims is the name in it (`node/server.rs`). The client port tells a TLS handshake from a
//! protocol line by its first byte (0x16, a TLS handshake record), so plain-text clients
//! keep working on it. A server's `tls_port` serves clients over TLS with its certificate.

pub mod certs;
pub mod der;
pub mod key_file;
pub mod verify;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::{HerdConfig, TlsFiles};

/// A folder holding `ca.pem`, `<Name>.pem` and `<Name>.key`, which a node reads instead of
/// the paths of `links.tls` (the herd file stays the one the operator's tools read): where
/// an engine hands the node its certificates, e.g. systemd's credentials (`%d`).
pub const TLS_DIR_ENV: &str = "HERD_TLS_DIR";

/// The first byte of a TLS connection (a handshake record); no protocol line starts so.
pub const HANDSHAKE_RECORD: u8 = 0x16;

/// The reading half of a connection, plain or TLS.
pub type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
/// The writing half of a connection, plain or TLS.
pub type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// Splits a connection into boxed halves (a TLS stream through tokio's split).
pub fn split<S: AsyncRead + AsyncWrite + Send + 'static>(stream: S) -> (BoxRead, BoxWrite) {
    let (read, write) = tokio::io::split(stream);
    (Box::new(read), Box::new(write))
}

/// What the other end of a TLS connection presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCert {
    /// The subject's common name: a server's name.
    pub identity: Option<String>,
    /// When it expires, in seconds since the Unix epoch.
    pub not_after: i64,
}

impl PeerCert {
    /// What the end-entity certificate of `chain` says.
    pub fn from_chain(chain: Option<&[CertificateDer<'_>]>) -> Option<PeerCert> {
        let facts = der::cert_facts(chain?.first()?)?;
        Some(PeerCert {
            identity: facts.common_name,
            not_after: facts.not_after,
        })
    }
}

/// A node's TLS: what it accepts on its ports and how it dials its neighbours.
pub struct NodeTls {
    /// The client port: a neighbour must present a certificate from the herd CA.
    pub links: TlsAcceptor,
    /// `tls_port`: the server's certificate; clients present none.
    pub clients: TlsAcceptor,
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// When this server's own certificate expires.
    pub own_not_after: i64,
}

impl NodeTls {
    /// Server `name`'s TLS from `links.tls`, or `None` when the herd has none.
    pub fn load(config: &HerdConfig, name: &str) -> Result<Option<NodeTls>> {
        let Some(files) = &config.tls else {
            return Ok(None);
        };
        let from_env = std::env::var_os(TLS_DIR_ENV)
            .filter(|d| !d.is_empty())
            .map(|d| TlsFiles::in_folder(&PathBuf::from(d)));
        let files = from_env.as_ref().unwrap_or(files);
        let roots = Arc::new(load_roots(&files.ca)?);
        let (chain, key) = load_identity(files, name)?;
        let provider = verify::provider();
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(&provider))
                .build()
                .map_err(|e| anyhow!("cannot check neighbours' certificates: {e}"))?;
        let links = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .with_context(|| cert_mismatch(files, name))?;
        let clients = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain.clone(), key.clone_key())
            .with_context(|| cert_mismatch(files, name))?;
        let own_not_after = der::cert_facts(&chain[0]).map_or(0, |f| f.not_after);
        Ok(Some(NodeTls {
            links: TlsAcceptor::from(Arc::new(links)),
            clients: TlsAcceptor::from(Arc::new(clients)),
            roots,
            chain,
            key,
            own_not_after,
        }))
    }

    /// How this node dials `neighbour`: presenting its own certificate, accepting only one
    /// from the herd CA that names `neighbour`.
    pub fn connector(&self, neighbour: &str) -> Result<TlsConnector> {
        let mut config = ClientConfig::builder_with_provider(verify::provider())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verify::HerdServerVerifier {
                roots: Arc::clone(&self.roots),
                expected: neighbour.to_owned(),
                provider: verify::provider(),
            }))
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())?;
        config.enable_sni = false;
        Ok(TlsConnector::from(Arc::new(config)))
    }
}

/// How a client (`herdctl send`) reaches server `name`'s `tls_port`: its certificate must come
/// from the herd CA and name it.
pub fn client_connector(files: &TlsFiles, name: &str) -> Result<TlsConnector> {
    let roots = Arc::new(load_roots(&files.ca)?);
    let mut config = ClientConfig::builder_with_provider(verify::provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verify::HerdServerVerifier {
            roots,
            expected: name.to_owned(),
            provider: verify::provider(),
        }))
        .with_no_client_auth();
    config.enable_sni = false;
    Ok(TlsConnector::from(Arc::new(config)))
}

/// The name a TLS client sends (SNI is off; the server's identity is checked by name in the
/// certificate, not by this).
pub fn server_name() -> ServerName<'static> {
    ServerName::try_from("herd.invalid").expect("a valid DNS name")
}

fn load_roots(ca: &Path) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    let cert = certs::read_cert(ca)
        .map_err(|e| anyhow!("links.tls ca: {e:#}; create one with `herdctl certs init`"))?;
    roots
        .add(cert)
        .with_context(|| format!("links.tls ca: {} is not a CA certificate", ca.display()))?;
    Ok(roots)
}

/// Server `name`'s certificate chain and key (the key file must be private to its owner).
fn load_identity(
    files: &TlsFiles,
    name: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let (cert_path, key_path) = (files.cert_for(name), files.key_for(name));
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| {
            anyhow!(
                "links.tls cert: cannot read {}: {e}; issue it with `herdctl certs issue {name}`",
                cert_path.display()
            )
        })?;
    if chain.is_empty() {
        return Err(anyhow!(
            "links.tls cert: {} holds no certificate; issue it with `herdctl certs issue {name}`",
            cert_path.display()
        ));
    }
    let text = key_file::read(&key_path).context("links.tls key")?;
    let key = PrivateKeyDer::from_pem_slice(text.as_bytes())
        .map_err(|e| anyhow!("links.tls key: {} holds no key: {e}", key_path.display()))?;
    Ok((chain, key))
}

fn cert_mismatch(files: &TlsFiles, name: &str) -> String {
    format!(
        "links.tls: {} and {} do not make a usable certificate and key; reissue them with \
         `herdctl certs issue {name}`",
        files.cert_for(name).display(),
        files.key_for(name).display()
    )
}
