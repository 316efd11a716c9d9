//! TLS 1.3 for libp2p over QUIC (the libp2p TLS handshake spec), with our
//! own choice of cipher order.
//!
//! The certificate is libp2p-tls's (`certificate::generate`, a fresh P-256
//! key carrying a signature by the identity key); the checks on the
//! remote's are ours, on `certificate::parse` (self-signed, in its validity
//! window, its libp2p extension signed by the key the peer id names).
//!
//! Why not `libp2p_tls::make_*_config`: those list ChaCha20-Poly1305 first
//! and rustls follows the client's order, so every connection used it. On a
//! CPU with AES instructions AES-128-GCM is ~4× faster per core (the bench's
//! `baseline` rows), so we offer it first there and ChaCha first elsewhere.

use libp2p::identity::Keypair;
use libp2p::PeerId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::aws_lc_rs::cipher_suite::{
    TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use std::sync::Arc;

/// The ALPN every libp2p QUIC connection names.
const ALPN: &[u8] = b"libp2p";

/// Why the TLS configs could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rcgen could not make the certificate.
    #[error("generating the libp2p certificate: {0}")]
    Certificate(#[from] libp2p::tls::certificate::GenError),
    /// rustls refused the config.
    #[error("building the TLS config: {0}")]
    Rustls(#[from] rustls::Error),
    /// No suite in the config can protect QUIC's initial packets.
    #[error("no TLS suite for QUIC: {0}")]
    NoQuicSuite(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
}

/// The TLS 1.3 suites in the order we offer them.
pub(crate) fn suites(aes_first: bool) -> Vec<rustls::SupportedCipherSuite> {
    if aes_first {
        vec![
            TLS13_AES_128_GCM_SHA256,
            TLS13_AES_256_GCM_SHA384,
            TLS13_CHACHA20_POLY1305_SHA256,
        ]
    } else {
        vec![
            TLS13_CHACHA20_POLY1305_SHA256,
            TLS13_AES_128_GCM_SHA256,
            TLS13_AES_256_GCM_SHA384,
        ]
    }
}

fn provider() -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    p.cipher_suites = suites(crate::swarm::aes_in_hardware());
    Arc::new(p)
}

/// The client side: presents our certificate, accepts any valid libp2p
/// certificate (the swarm checks the peer id against the dialed one).
pub fn client_config(key: &Keypair) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let ours = OurCert::new(key, &provider)?;
    let mut c = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PeerCert))
        .with_client_cert_resolver(Arc::new(ours));
    c.alpn_protocols = vec![ALPN.to_vec()];
    Ok(c)
}

/// The server side: asks every client for its libp2p certificate.
pub fn server_config(key: &Keypair) -> Result<rustls::ServerConfig, TlsError> {
    let provider = provider();
    let ours = OurCert::new(key, &provider)?;
    let mut c = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(PeerCert))
        .with_cert_resolver(Arc::new(ours));
    c.alpn_protocols = vec![ALPN.to_vec()];
    Ok(c)
}

/// Our certificate, handed out as it is: rustls's own loaders would run
/// it through webpki, which refuses the libp2p extension (it is critical).
#[derive(Debug)]
struct OurCert(Arc<rustls::sign::CertifiedKey>);

impl OurCert {
    fn new(key: &Keypair, provider: &CryptoProvider) -> Result<OurCert, TlsError> {
        let (cert, private) = libp2p::tls::certificate::generate(key)?;
        let signer = provider.key_provider.load_private_key(private)?;
        Ok(OurCert(Arc::new(rustls::sign::CertifiedKey::new(
            vec![cert],
            signer,
        ))))
    }
}

impl rustls::client::ResolvesClientCert for OurCert {
    fn resolve(
        &self,
        _hints: &[&[u8]],
        _schemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl rustls::server::ResolvesServerCert for OurCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// A client that presents `cert` with `key`, whatever they hold (tests
/// present forged certificates with it).
#[cfg(test)]
pub(super) fn client_presenting(
    cert: CertificateDer<'static>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
) -> rustls::ClientConfig {
    let provider = provider();
    let signer = provider.key_provider.load_private_key(key).unwrap();
    let ours = OurCert(Arc::new(rustls::sign::CertifiedKey::new(
        vec![cert],
        signer,
    )));
    let mut c = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PeerCert))
        .with_client_cert_resolver(Arc::new(ours));
    c.alpn_protocols = vec![ALPN.to_vec()];
    c
}

/// The peer id in a finished handshake's certificate.
pub fn peer_of(conn: &quinn::Connection) -> Option<PeerId> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?;
    let cert = certs.first()?;
    libp2p::tls::certificate::parse(cert)
        .ok()
        .map(|c| c.peer_id())
}

/// The libp2p rules for the remote's certificate, on both sides: exactly
/// one certificate, and it parses as a valid libp2p certificate.
#[derive(Debug)]
struct PeerCert;

fn check_chain(
    end: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> Result<(), rustls::Error> {
    if !intermediates.is_empty() {
        return Err(rustls::Error::General(
            "libp2p TLS takes exactly one certificate".into(),
        ));
    }
    libp2p::tls::certificate::parse(end)
        .map(|_| ())
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))
}

fn check_signature(
    cert: &CertificateDer<'_>,
    message: &[u8],
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    let parsed = libp2p::tls::certificate::parse(cert)
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
    parsed
        .verify_signature(dss.scheme, message, dss.signature())
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadSignature))?;
    Ok(HandshakeSignatureValid::assertion())
}

/// What the libp2p certificate's key may sign with (TLS 1.3 only).
fn schemes() -> Vec<SignatureScheme> {
    use SignatureScheme::*;
    vec![
        ECDSA_NISTP256_SHA256,
        ECDSA_NISTP384_SHA384,
        ED25519,
        RSA_PSS_SHA256,
        RSA_PSS_SHA384,
        RSA_PSS_SHA512,
    ]
}

fn no_tls12() -> rustls::Error {
    rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls13RequiredForQuic)
}

impl ServerCertVerifier for PeerCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        check_chain(end_entity, intermediates).map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(no_tls12())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        check_signature(cert, message, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        schemes()
    }
}

impl ClientCertVerifier for PeerCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        check_chain(end_entity, intermediates).map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(no_tls12())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        check_signature(cert, message, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        schemes()
    }
}
