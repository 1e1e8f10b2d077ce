//! The vault's certificate authority and the leaf certificates it mints per host.
//!
//! The CA (ECDSA P-256) is created on first start under `home/ca/` and reused after,
//! so agents trust it once. Leaves are signed on demand for the host an agent CONNECTs
//! to and kept, as ready-made rustls server configurations, in a bounded LRU cache:
//! a warm new tunnel costs a handshake, not a signature. All leaves share one key pair
//! generated per process; only the certificate differs per host.

use crate::VaultError;
use lru::LruCache;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::io::Write;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CA_COMMON_NAME: &str = "Palisade vault CA";
const LEAF_CACHE_ENTRIES: usize = 4096;
/// Leaves are short-lived; a cached leaf is re-minted after this long.
const LEAF_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// The CA as loaded from disk, able to sign leaves.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
    leaf_key: KeyPair,
    leaf_key_der: Vec<u8>,
    cache: Mutex<LruCache<String, CachedLeaf>>,
}

struct CachedLeaf {
    config: Arc<ServerConfig>,
    minted_at: std::time::Instant,
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, CA_COMMON_NAME);
    name.push(DnType::OrganizationName, "Palisade");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn tls_error(e: impl std::fmt::Display) -> VaultError {
    VaultError::Tls(e.to_string())
}

impl CertificateAuthority {
    /// Loads `ca_dir/ca.pem` and `ca_dir/ca.key`, creating both on first use.
    pub fn load_or_create(ca_dir: &Path) -> Result<Self, VaultError> {
        let cert_path = ca_dir.join("ca.pem");
        let key_path = ca_dir.join("ca.key");
        let io = |what: &str, path: &Path, e: std::io::Error| {
            VaultError::Io(format!("cannot {what} {}: {e}", path.display()))
        };
        let (ca_pem, key) = if key_path.exists() && cert_path.exists() {
            // Whoever reads the CA key can make certificates every agent trusts: one
            // others could read is refused, as the master key is (`chmod 600` fixes it).
            let mode = std::fs::metadata(&key_path)
                .map_err(|e| io("read", &key_path, e))?
                .permissions()
                .mode()
                & 0o777;
            if mode & 0o077 != 0 {
                return Err(VaultError::Io(format!(
                    "the CA key {} is readable by other users (mode {mode:04o}); run `chmod 600 {}` and try again",
                    key_path.display(),
                    key_path.display()
                )));
            }
            let key_pem =
                std::fs::read_to_string(&key_path).map_err(|e| io("read", &key_path, e))?;
            let key = KeyPair::from_pem(&key_pem).map_err(|e| {
                VaultError::Tls(format!(
                    "the CA key {} is unreadable ({e}); move the ca folder away to make a new CA (agents must then trust the new one)",
                    key_path.display()
                ))
            })?;
            let ca_pem =
                std::fs::read_to_string(&cert_path).map_err(|e| io("read", &cert_path, e))?;
            (ca_pem, key)
        } else {
            std::fs::create_dir_all(ca_dir).map_err(|e| io("create", ca_dir, e))?;
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(tls_error)?;
            let mut params = ca_params();
            let now = time::OffsetDateTime::now_utc();
            params.not_before = now - time::Duration::days(1);
            params.not_after = now + time::Duration::days(3650);
            let cert = params.self_signed(&key).map_err(tls_error)?;
            let ca_pem = cert.pem();
            // The key is written first and exclusively, 0600, so a crash leaves no
            // certificate without its key and no key readable by others.
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&key_path)
                .map_err(|e| io("create", &key_path, e))?;
            file.write_all(key.serialize_pem().as_bytes())
                .and_then(|_| file.sync_all())
                .map_err(|e| io("write", &key_path, e))?;
            std::fs::write(&cert_path, &ca_pem).map_err(|e| io("write", &cert_path, e))?;
            (ca_pem, key)
        };
        let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(tls_error)?;
        let leaf_key_der = leaf_key.serialize_der();
        Ok(CertificateAuthority {
            issuer: Issuer::new(ca_params(), key),
            ca_pem,
            leaf_key,
            leaf_key_der,
            cache: Mutex::new(LruCache::new(
                NonZeroUsize::new(LEAF_CACHE_ENTRIES).unwrap_or(NonZeroUsize::MIN),
            )),
        })
    }

    /// The CA certificate in PEM, as agents must trust it.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A server configuration presenting a leaf for `host` (a DNS name or IP literal).
    pub fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, VaultError> {
        let key = host.to_ascii_lowercase();
        if let Ok(mut cache) = self.cache.lock() {
            if let Some(leaf) = cache.get(&key) {
                if leaf.minted_at.elapsed() < LEAF_LIFETIME / 2 {
                    return Ok(leaf.config.clone());
                }
            }
        }
        let config = Arc::new(self.mint(&key)?);
        if let Ok(mut cache) = self.cache.lock() {
            cache.put(
                key,
                CachedLeaf {
                    config: config.clone(),
                    minted_at: std::time::Instant::now(),
                },
            );
        }
        Ok(config)
    }

    fn mint(&self, host: &str) -> Result<ServerConfig, VaultError> {
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, host);
        params.distinguished_name = name;
        let san = match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                host.to_string()
                    .try_into()
                    .map_err(|_| VaultError::Tls(format!("{host:?} is not a valid host name")))?,
            ),
        };
        params.subject_alt_names = vec![san];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::seconds(LEAF_LIFETIME.as_secs() as i64);
        let cert = params
            .signed_by(&self.leaf_key, &self.issuer)
            .map_err(tls_error)?;
        let chain = vec![CertificateDer::from(cert.der().to_vec())];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key_der.clone()));
        let mut config = ServerConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(tls_error)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(tls_error)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config.session_storage = rustls::server::ServerSessionMemoryCache::new(256);
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CA key others can read is refused (whoever reads it can make certificates
    /// every agent trusts); made private again, it loads.
    #[test]
    fn a_ca_key_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        CertificateAuthority::load_or_create(&ca).unwrap();
        let key = ca.join("ca.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let Err(refused) = CertificateAuthority::load_or_create(&ca) else {
            panic!("a world-readable CA key was used");
        };
        assert!(refused.to_string().contains("chmod 600"), "{refused}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        CertificateAuthority::load_or_create(&ca).unwrap();
    }
}
