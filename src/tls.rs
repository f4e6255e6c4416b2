//! TLS towards Jenkins.
//!
//! This module owns the rustls client configuration for an `https`
//! upstream: which roots are trusted (the system's, or only the private CA
//! in `upstream.ca_file`), the client certificate for mutual TLS, the
//! loudly named escape hatch that skips verification (and warns at start
//! and on every new connection), and turning a handshake failure into words
//! an operator can act on. Connecting is `upstream`'s job.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The TLS settings of `[upstream]`, validated.
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsConfig {
    /// PEM file of the CA(s) to trust instead of the system's roots.
    pub(crate) ca_file: Option<PathBuf>,
    /// PEM certificate chain and key for mutual TLS.
    pub(crate) client_cert: Option<(PathBuf, PathBuf)>,
    /// The name to verify the certificate against (and send as SNI)
    /// instead of the URL's host.
    pub(crate) server_name: Option<String>,
    /// `upstream.danger_accept_invalid_certs`: accept any certificate.
    pub(crate) accept_invalid_certs: bool,
}

/// Why the TLS configuration could not be built; reported before any socket
/// is bound.
#[derive(Debug, thiserror::Error)]
pub enum TlsInitError {
    #[error("cannot load the system's root certificates: {0}; install the ca-certificates package or set upstream.ca_file")]
    SystemRoots(String),
    #[error("`upstream.{key}` = {path:?}: {problem}")]
    File {
        key: &'static str,
        path: PathBuf,
        problem: String,
    },
    #[error("the TLS client configuration was refused: {0}")]
    Rustls(#[from] rustls::Error),
}

fn file_error(key: &'static str, path: &Path, problem: impl ToString) -> TlsInitError {
    TlsInitError::File {
        key,
        path: path.to_owned(),
        problem: problem.to_string(),
    }
}

/// Builds the rustls client configuration (HTTP/1.1 only, as everywhere).
pub(crate) fn client_config(tls: &TlsConfig) -> Result<ClientConfig, TlsInitError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = if tls.accept_invalid_certs {
        tracing::warn!(
            "upstream.danger_accept_invalid_certs = true: the certificate of Jenkins is NOT checked; anyone on the network path can read the credentials"
        );
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnything { provider }))
    } else {
        builder.with_root_certificates(roots(tls)?)
    };
    let config = match &tls.client_cert {
        None => builder.with_no_client_auth(),
        Some((cert_path, key_path)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
                .map_err(|e| file_error("client_cert_file", cert_path, e))?
                .collect::<Result<_, _>>()
                .map_err(|e| file_error("client_cert_file", cert_path, e))?;
            if chain.is_empty() {
                return Err(file_error(
                    "client_cert_file",
                    cert_path,
                    "holds no PEM certificate",
                ));
            }
            let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| {
                file_error(
                    "client_key_file",
                    key_path,
                    format!("{e}; expected a PEM private key"),
                )
            })?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                file_error(
                    "client_key_file",
                    key_path,
                    format!("does not fit client_cert_file: {e}"),
                )
            })?
        }
    };
    Ok(config)
}

fn roots(tls: &TlsConfig) -> Result<RootCertStore, TlsInitError> {
    let mut roots = RootCertStore::empty();
    match &tls.ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| file_error("ca_file", path, e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| file_error("ca_file", path, e))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(file_error(
                    "ca_file",
                    path,
                    "holds no usable PEM CA certificate",
                ));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            if found.certs.is_empty() {
                let why = found
                    .errors
                    .first()
                    .map_or_else(|| "none found".to_owned(), ToString::to_string);
                return Err(TlsInitError::SystemRoots(why));
            }
            roots.add_parsable_certificates(found.certs);
        }
    }
    Ok(roots)
}

/// The escape hatch: accepts every certificate, and says so on every
/// handshake (one per new connection to Jenkins).
#[derive(Debug)]
struct AcceptAnything {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        tracing::warn!(
            server = ?server_name,
            "new connection to Jenkins WITHOUT certificate verification (upstream.danger_accept_invalid_certs)"
        );
        Ok(ServerCertVerified::assertion())
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

/// Words for a failed handshake, found anywhere in an error chain. `None`
/// when the failure was not TLS.
pub(crate) fn describe_failure(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    // Connectors nest `io::Error`s (whose `source()` skips the wrapped
    // error itself), so look inside each one as well as along `source()`.
    let mut pending: Vec<&(dyn std::error::Error + 'static)> = vec![err];
    while let Some(e) = pending.pop() {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(describe(tls));
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            pending.push(inner);
        }
        if let Some(source) = e.source() {
            pending.push(source);
        }
    }
    None
}

fn describe(err: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match err {
        rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature)
        | rustls::Error::InvalidCertificate(C::Other(_)) => {
            "the certificate of Jenkins was not trusted (unknown issuer); set upstream.ca_file to the CA that signed it".into()
        }
        rustls::Error::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            "the certificate of Jenkins is not valid for its host name; check upstream.url or set upstream.tls_server_name".into()
        }
        rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            "the certificate of Jenkins has expired".into()
        }
        rustls::Error::InvalidCertificate(other) => format!("the certificate of Jenkins was refused: {other:?}"),
        rustls::Error::InvalidMessage(_) | rustls::Error::PeerMisbehaved(_) => {
            "TLS handshake with Jenkins failed; is upstream.url's port really HTTPS?".into()
        }
        rustls::Error::AlertReceived(alert) => format!(
            "Jenkins ended the TLS handshake ({alert:?}); if it requires a client certificate, set upstream.client_cert_file and client_key_file"
        ),
        other => format!("TLS handshake with Jenkins failed: {other}"),
    }
}
