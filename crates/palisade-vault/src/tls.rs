//! TLS settings shared by both sides of the vault: the crypto provider and the trust
//! roots used for upstreams (the system's plus any `--upstream-ca` files).

use crate::VaultError;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::path::PathBuf;
use std::sync::Arc;

/// ring: builds with a C compiler only, which this project already needs for SQLite.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Client configuration for upstream connections, offering h2 and HTTP/1.1 (or only
/// HTTP/1.1 for WebSocket upgrades, which need an HTTP/1.1 connection).
pub fn upstream_client_config(
    extra_roots: &[PathBuf],
    alpn: &[&[u8]],
) -> Result<rustls::ClientConfig, VaultError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A single unparsable system certificate must not stop the gateway.
        let _ = roots.add(cert);
    }
    for cert in extra_root_certificates(extra_roots)? {
        roots
            .add(cert)
            .map_err(|e| VaultError::Tls(e.to_string()))?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| VaultError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// The certificates of the `--upstream-ca` files, each checked to hold at least one
/// certificate a trust store accepts.
pub fn extra_root_certificates(
    extra_roots: &[PathBuf],
) -> Result<Vec<CertificateDer<'static>>, VaultError> {
    let mut all = Vec::new();
    for path in extra_roots {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| VaultError::UpstreamCa {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?
            .collect::<Result<_, _>>()
            .map_err(|e| VaultError::UpstreamCa {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
        if certs.is_empty() {
            return Err(VaultError::UpstreamCa {
                path: path.display().to_string(),
                reason: "no PEM certificate in it".into(),
            });
        }
        for cert in certs {
            RootCertStore::empty()
                .add(cert.clone())
                .map_err(|e| VaultError::UpstreamCa {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
            all.push(cert);
        }
    }
    Ok(all)
}
