//! Who a certificate says it is, checked the herd's way: signed by the herd CA (rustls'
//! webpki path building, nothing of our own) and naming the expected server as its subject's
//! common name, compared exactly. A server's identity is its name in the herd file, which is
//! not always a DNS name, so the usual SAN host-name check does not apply.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::der::cert_facts;

/// The one crypto provider of the herd: aws-lc-rs, the one reqwest already brings in.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Whether `cert` chains to one of `roots` (as a TLS server certificate).
pub fn signed_by(cert: &CertificateDer<'_>, roots: &RootCertStore) -> Result<(), rustls::Error> {
    let parsed = ParsedCertificate::try_from(cert)?;
    rustls::client::verify_server_cert_signed_by_trust_anchor(
        &parsed,
        roots,
        &[],
        UnixTime::now(),
        provider().signature_verification_algorithms.all,
    )
}

/// The identity (subject common name) a certificate claims.
pub fn identity(cert: &CertificateDer<'_>) -> Option<String> {
    cert_facts(cert).and_then(|f| f.common_name)
}

/// A dialler's check of the server it reached: the herd CA signed its certificate, and the
/// certificate names `expected`.
#[derive(Debug)]
pub struct HerdServerVerifier {
    pub roots: Arc<RootCertStore>,
    pub expected: String,
    pub provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for HerdServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        match identity(end_entity) {
            Some(name) if name == self.expected => Ok(ServerCertVerified::assertion()),
            _ => Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
