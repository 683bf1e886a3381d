//! The TLS settings of [`super::Client`], built by spillway instead of by
//! reqwest so that a machine without a CA bundle (a static binary in an
//! empty root, a distroless image) can still start and talk plain
//! `http://`. reqwest refuses to build a client at all when the system has
//! no root certificates; here the missing trust store only fails the TLS
//! handshake, with an error that says what to install or configure.
//!
//! The system's roots are read once per process and shared by every
//! client without a CA file of its own; a `tls_ca_file` adds its
//! certificates to them (or stands alone on a machine without any).

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use std::sync::{Arc, OnceLock};

/// What a handshake says when the machine has no root certificates.
pub const NO_ROOTS: &str = "no CA certificates found on this machine (checked SSL_CERT_FILE, \
     SSL_CERT_DIR and the system bundle): install ca-certificates or set tls_ca_file";

/// The settings of every client without a CA file, built on first use.
pub fn system() -> Arc<ClientConfig> {
    static SYSTEM: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    Arc::clone(SYSTEM.get_or_init(|| with_roots(Vec::new())))
}

/// The system's roots plus those of a CA file (already parsed).
pub fn with_extra_roots(extra: Vec<CertificateDer<'static>>) -> Arc<ClientConfig> {
    with_roots(extra)
}

fn with_roots(extra: Vec<CertificateDer<'static>>) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match platform_verifier(extra, &provider) {
        Ok(v) => v,
        Err(e) => {
            tracing::debug!("TLS: {e}; https:// connections will be refused");
            Arc::new(NoRoots {
                schemes: provider
                    .signature_verification_algorithms
                    .supported_schemes(),
            })
        }
    };
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // What reqwest would offer itself: HTTP/2 where the server speaks it.
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(cfg)
}

fn platform_verifier(
    extra: Vec<CertificateDer<'static>>,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>, rustls::Error> {
    let p = Arc::clone(provider);
    let v = if extra.is_empty() {
        rustls_platform_verifier::Verifier::new(p)?
    } else {
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra, p)?
    };
    Ok(Arc::new(v))
}

/// Refuses every server certificate: there is nothing to check it against.
#[derive(Debug)]
struct NoRoots {
    schemes: Vec<SignatureScheme>,
}

impl ServerCertVerifier for NoRoots {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Err(rustls::Error::General(NO_ROOTS.into()))
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General(NO_ROOTS.into()))
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General(NO_ROOTS.into()))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
}
