//! `herdctl certs`: the herd's certificate authority and one certificate per server, made
//! with rcgen (no openssl to shell out to). Layout of the folder (default `certs/` beside the
//! herd file, private: 0700, every file 0600):
//!
//! - `ca.pem`, `ca.key`: the herd CA (ten years). Keep `ca.key` on the operator's machine
//!   only: servers need `ca.pem`, their own `<Name>.pem` and `<Name>.key`.
//! - `<Name>.pem`, `<Name>.key`: server `Name`'s certificate (one year): its name is the
//!   subject's common name (its identity on a link), its host's name or address a SAN;
//!   usable as both TLS server and client (a link is mutual TLS).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use super::der::{cert_facts, format_utc};
use crate::config::{HerdConfig, ServerConfig};
use crate::hosts::Host;

/// How long the CA is valid.
const CA_DAYS: i64 = 3650;
/// How long a server's certificate is valid.
const SERVER_DAYS: i64 = 365;
/// The CA's common name starts so; a random suffix tells one herd's CA from another's.
const CA_NAME_PREFIX: &str = "herdctl herd CA";

/// Where the certificates live: `--dir`, else `certs` beside the herd file.
pub fn folder(config: &HerdConfig, dir: Option<&Path>) -> PathBuf {
    let base = config.path.parent().unwrap_or(Path::new("."));
    match dir {
        Some(d) if d.is_absolute() => d.to_path_buf(),
        Some(d) => std::env::current_dir().unwrap_or_default().join(d),
        None => base.join("certs"),
    }
}

/// `herdctl certs init`: a new CA and a certificate for every server of the herd file.
pub fn init(config: &HerdConfig, dir: &Path) -> Result<()> {
    let ca_cert = dir.join("ca.pem");
    if ca_cert.exists() {
        bail!(
            "{} already exists: this folder has a herd CA; add a server with `herdctl certs \
             issue NAME`, or choose another --dir",
            ca_cert.display()
        );
    }
    herd_os::private::folder(dir, "the certificate folder")?;
    let key = KeyPair::generate().context("cannot make the CA's key")?;
    let params = ca_params(&format!("{CA_NAME_PREFIX} {}", &crate::auth::nonce()[..12]))?;
    let cert = params
        .self_signed(&key)
        .context("cannot sign the CA certificate")?;
    write_private(&dir.join("ca.key"), &key.serialize_pem())?;
    write_private(&ca_cert, &cert.pem())?;
    println!("created the herd CA {}", ca_cert.display());
    let issuer = Issuer::new(params, key);
    for server in config.servers.values() {
        issue_one(&issuer, server, dir)?;
    }
    println!(
        "copy ca.pem and each server's <Name>.pem and <Name>.key to its host; keep ca.key \
         private to this machine; then set in the herd file:\n  links:\n    tls: {{ ca: {0}/ca.pem, \
         cert: {0}/{{name}}.pem, key: {0}/{{name}}.key }}",
        shown_relative(config, dir)
    );
    Ok(())
}

/// `herdctl certs issue NAME`: a certificate (new, or renewed) for one server, signed by the
/// folder's CA.
pub fn issue(config: &HerdConfig, dir: &Path, name: &str) -> Result<()> {
    let server = config.server(name)?;
    let issuer = load_issuer(dir)?;
    issue_one(&issuer, server, dir)
}

/// `herdctl certs show`: every certificate in the folder, when it expires, and whether the
/// folder's CA signed it.
pub fn show(dir: &Path) -> Result<()> {
    let ca_path = dir.join("ca.pem");
    let ca = read_cert(&ca_path)?;
    let roots = {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(ca.clone())
            .with_context(|| format!("{} is not a usable CA certificate", ca_path.display()))?;
        roots
    };
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "pem") && *p != ca_path)
        .collect();
    names.sort();
    let now = now_secs();
    println!(
        "{:<24} {:<24} {:>10}  signed by",
        "certificate", "expires", "days left"
    );
    let row =
        |name: &str, der: &rustls::pki_types::CertificateDer<'_>, signed: &str| match cert_facts(
            der,
        ) {
            Some(facts) => println!(
                "{:<24} {:<24} {:>10}  {signed}",
                name,
                format_utc(facts.not_after),
                days_left(facts.not_after, now)
            ),
            None => println!("{name:<24} (not a certificate herdctl can read)"),
        };
    row("ca.pem (the herd CA)", &ca, "itself");
    for path in names {
        let file = path.file_name().unwrap_or_default().to_string_lossy();
        match read_cert(&path) {
            Ok(cert) => {
                let signed = match super::verify::signed_by(&cert, &roots) {
                    Ok(()) => "this CA".to_owned(),
                    Err(e) => format!("NOT this CA ({e})"),
                };
                let identity = cert_facts(&cert)
                    .and_then(|f| f.common_name)
                    .unwrap_or_default();
                row(&format!("{file} ({identity})"), &cert, &signed);
            }
            Err(e) => println!("{file:<24} {e:#}"),
        }
    }
    Ok(())
}

/// Days until `not_after`, or `EXPIRED`.
pub fn days_left(not_after: i64, now: i64) -> String {
    if not_after <= now {
        "EXPIRED".to_owned()
    } else {
        ((not_after - now) / 86_400).to_string()
    }
}

pub fn now_secs() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The CA's parameters; the same common name gives the same issuer name, so a CA read back
/// from its files signs exactly as the one that was created.
fn ca_params(common_name: &str) -> Result<CertificateParams> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(CA_DAYS);
    Ok(params)
}

/// The folder's CA, read back to sign with.
fn load_issuer(dir: &Path) -> Result<Issuer<'static, KeyPair>> {
    let ca_path = dir.join("ca.pem");
    let cert = read_cert(&ca_path).map_err(|e| {
        anyhow!("{e:#}; create the herd CA first with `herdctl certs init` (or pass --dir)")
    })?;
    let common_name = cert_facts(&cert)
        .and_then(|f| f.common_name)
        .filter(|n| n.starts_with(CA_NAME_PREFIX))
        .ok_or_else(|| {
            anyhow!(
                "{} is not a CA that herdctl certs made; use the folder of `herdctl certs init`",
                ca_path.display()
            )
        })?;
    let key_path = dir.join("ca.key");
    let key = KeyPair::from_pem(&read_private_text(&key_path)?)
        .with_context(|| format!("{} is not a private key", key_path.display()))?;
    Ok(Issuer::new(ca_params(&common_name)?, key))
}

/// Makes and writes server `server`'s certificate and key.
fn issue_one(issuer: &Issuer<'_, KeyPair>, server: &ServerConfig, dir: &Path) -> Result<()> {
    let name = &server.name;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name.as_str());
    params.distinguished_name = dn;
    params.subject_alt_names = subject_alt_names(server)?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(SERVER_DAYS);
    let key = KeyPair::generate().with_context(|| format!("cannot make {name}'s key"))?;
    let cert = params
        .signed_by(&key, issuer)
        .with_context(|| format!("cannot sign {name}'s certificate"))?;
    write_private(&dir.join(format!("{name}.key")), &key.serialize_pem())?;
    let cert_path = dir.join(format!("{name}.pem"));
    write_private(&cert_path, &cert.pem())?;
    println!(
        "issued {} for {name} (host {}), expires {}",
        cert_path.display(),
        server.host,
        format_utc(params.not_after.unix_timestamp())
    );
    Ok(())
}

/// The server's host as a SAN (its DNS name or IP address), and its listen address if set.
fn subject_alt_names(server: &ServerConfig) -> Result<Vec<SanType>> {
    let mut sans = vec![match &server.host {
        Host::Ip(ip) => SanType::IpAddress(*ip),
        Host::Name(host) => SanType::DnsName(
            host.clone()
                .try_into()
                .with_context(|| format!("host {host} cannot be a certificate name"))?,
        ),
    }];
    if let Some(listen) = server.listen.filter(|ip| !ip.is_unspecified()) {
        if !sans.contains(&SanType::IpAddress(listen)) {
            sans.push(SanType::IpAddress(listen));
        }
    }
    Ok(sans)
}

/// The one certificate of a PEM file.
pub fn read_cert(path: &Path) -> Result<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_file(path)
        .map_err(|e| anyhow!("cannot read a certificate from {}: {e}", path.display()))
}

/// A private file's text; refused when others may read or write it.
pub fn read_private_text(path: &Path) -> Result<String> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let mut file = herd_os::private::open_read(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mode = file.metadata()?.permissions().mode();
    if mode & 0o077 != 0 {
        bail!(
            "{} can be read or written by other users (mode {:o}); make it private with: chmod \
             600 {}",
            path.display(),
            mode & 0o777,
            path.display()
        );
    }
    let mut text = String::new();
    file.read_to_string(&mut text)
        .with_context(|| format!("cannot read {} as text", path.display()))?;
    Ok(text)
}

/// Writes `text` to `path` (0600), replacing it whole: a temporary file renamed over it.
fn write_private(path: &Path, text: &str) -> Result<()> {
    let temporary = path.with_extension(format!("tmp{}", std::process::id()));
    let written = (|| -> std::io::Result<()> {
        let mut file = herd_os::private::create_new(&temporary)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temporary);
        bail!("cannot write {}: {e}", path.display());
    }
    Ok(())
}

/// `dir` as the herd file would name it (relative to the herd file's folder when inside it).
fn shown_relative(config: &HerdConfig, dir: &Path) -> String {
    let base = config.path.parent().unwrap_or(Path::new("."));
    dir.strip_prefix(base).unwrap_or(dir).display().to_string()
}
