//! TLS for gRPC, with rustls (aws-lc) through tonic: the server's
//! certificate and, for mutual TLS, the CA that signs client certificates;
//! a client's trusted CA and its own certificate. Every file is PEM. The
//! HTTP doors serve the same certificate, and require the same client
//! certificates, with rustls directly ([`ServerTlsArgs::http_config`]).
//!
//! With `--tls-client-ca` every client must present a certificate that CA
//! signed; an API-keys entry with `client_cert_cn` then grants its roles to
//! a certificate with that subject common name, with no API key sent.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::file::FileError;

/// TLS flags of `revocd serve`.
#[derive(Debug, Clone, Default, Args)]
pub struct ServerTlsArgs {
    /// PEM certificate chain to serve gRPC over TLS with (needs --tls-key).
    #[arg(long, env = "REVOCD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "REVOCD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificate(s) of client certificates: every client must then
    /// present one they signed (mutual TLS).
    #[arg(long, env = "REVOCD_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
}

/// TLS flags of the clients (`revoctl`, `revocd agent`).
#[derive(Debug, Clone, Default, Args)]
pub struct ClientTlsArgs {
    /// PEM CA certificate(s) to trust for the servers (with `https://`
    /// server URLs).
    #[arg(long, env = "REVOCD_TLS_CA")]
    pub tls_ca: Option<PathBuf>,

    /// PEM client certificate to present (mutual TLS; needs --tls-key).
    #[arg(long, env = "REVOCD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "REVOCD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl ServerTlsArgs {
    /// The server's TLS configuration; `None` without `--tls-cert`.
    ///
    /// # Errors
    /// An unreadable file, or one without the PEM blocks it should hold.
    pub fn server_config(&self) -> Result<Option<ServerTlsConfig>, FileError> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let mut config = ServerTlsConfig::new().identity(identity(cert, key)?);
        if let Some(ca) = &self.tls_client_ca {
            config = config.client_ca_root(certificates(ca)?);
        }
        Ok(Some(config))
    }
}

impl ServerTlsArgs {
    /// The same TLS for the HTTP doors, as a rustls configuration offering
    /// HTTP/2 and HTTP/1.1 by ALPN; `None` without `--tls-cert`.
    ///
    /// # Errors
    /// An unreadable file, or one without the PEM blocks it should hold.
    pub fn http_config(&self) -> Result<Option<Arc<rustls::ServerConfig>>, FileError> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| FileError::invalid(cert, e.to_string()))?;
        let builder = match &self.tls_client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for certificate in pem_certificates(ca)? {
                    roots
                        .add(certificate)
                        .map_err(|e| FileError::invalid(ca, e.to_string()))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| FileError::invalid(ca, e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let key_der = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| FileError::invalid(key, e.to_string()))?;
        let mut config = builder
            .with_single_cert(pem_certificates(cert)?, key_der)
            .map_err(|e| FileError::invalid(cert, e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Some(Arc::new(config)))
    }
}

/// A TLS client trusting the system's CA certificates (for polling a
/// Shared Signals transmitter); certificates the system store holds but
/// rustls cannot use are skipped with a warning.
pub fn system_roots_connector() -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::warn!(%error, "reading the system's CA certificates");
    }
    let (_added, skipped) = roots.add_parsable_certificates(native.certs);
    if skipped > 0 {
        tracing::warn!(
            skipped,
            "system CA certificates rustls cannot use were skipped"
        );
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("aws-lc supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// The certificates of a PEM file, at least one.
fn pem_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, FileError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| FileError::invalid(path, e.to_string()))?;
    if certificates.is_empty() {
        return Err(FileError::invalid(path, "no PEM certificate in it"));
    }
    Ok(certificates)
}

impl ClientTlsArgs {
    /// The clients' TLS configuration; `None` when no flag is given (then
    /// `https://` URLs trust nothing and fail).
    ///
    /// # Errors
    /// An unreadable file, or one without the PEM blocks it should hold.
    pub fn client_config(&self) -> Result<Option<ClientTlsConfig>, FileError> {
        if self.tls_ca.is_none() && self.tls_cert.is_none() {
            return Ok(None);
        }
        let mut config = ClientTlsConfig::new();
        if let Some(ca) = &self.tls_ca {
            config = config.ca_certificate(certificates(ca)?);
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            config = config.identity(identity(cert, key)?);
        }
        Ok(Some(config))
    }
}

/// The subject common name of a DER certificate, if it has one.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
    let name = certificate.subject().iter_common_name().next()?;
    name.as_str().ok().map(str::to_owned)
}

/// A PEM file that must hold a block whose label contains `label`.
fn pem(path: &Path, label: &str) -> Result<String, FileError> {
    let text = std::fs::read_to_string(path).map_err(|e| FileError::read(path, e))?;
    let found = text
        .lines()
        .any(|line| line.starts_with("-----BEGIN ") && line.contains(label));
    if !found {
        return Err(FileError::invalid(
            path,
            format!("no PEM `{label}` block; expected a PEM file"),
        ));
    }
    Ok(text)
}

fn certificates(path: &Path) -> Result<Certificate, FileError> {
    pem(path, "CERTIFICATE").map(Certificate::from_pem)
}

fn identity(cert: &Path, key: &Path) -> Result<Identity, FileError> {
    Ok(Identity::from_pem(
        pem(cert, "CERTIFICATE")?,
        pem(key, "PRIVATE KEY")?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_without_the_expected_pem_block_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, "not a certificate").unwrap();
        let args = ServerTlsArgs {
            tls_cert: Some(cert.clone()),
            tls_key: Some(dir.path().join("missing.pem")),
            tls_client_ca: None,
        };
        let error = args.server_config().unwrap_err().to_string();
        assert!(
            error.contains("cert.pem") && error.contains("CERTIFICATE"),
            "{error}"
        );
        assert!(ClientTlsArgs::default().client_config().unwrap().is_none());
    }

    #[test]
    fn garbage_has_no_common_name() {
        assert_eq!(common_name(b"\x30\x03\x02\x01\x00"), None);
    }
}
