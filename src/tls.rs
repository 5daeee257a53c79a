//! TLS settings the service uses as a client: the system's trusted roots, plus a private CA
//! from a PEM file where the configuration names one.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {reason}")]
    Pem { path: String, reason: String },
    #[error("{path} holds no certificate")]
    Empty { path: String },
    #[error("{path}: {source}")]
    Rejected { path: String, source: rustls::Error },
}

/// The certificates of a PEM file.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let shown = path.display().to_string();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Pem {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty { path: shown });
    }
    Ok(certs)
}

/// A client configuration trusting the system's roots and `extra_ca`.
pub fn client_config(extra_ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    // A system without a CA bundle still reaches servers signed by `extra_ca`.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = extra_ca {
        for cert in certificates(path)? {
            roots.add(cert).map_err(|source| TlsError::Rejected {
                path: path.display().to_string(),
                source,
            })?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|source| TlsError::Rejected {
        path: String::new(),
        source,
    })?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A server configuration from a PEM certificate chain and its PEM private key.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = certificates(cert)?;
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Pem {
        path: key.display().to_string(),
        reason: e.to_string(),
    })?;
    let rejected = |source| TlsError::Rejected {
        path: cert.display().to_string(),
        source,
    };
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(rejected)?
    .with_no_client_auth()
    .with_single_cert(chain, private)
    .map_err(rejected)?;
    Ok(Arc::new(config))
}
