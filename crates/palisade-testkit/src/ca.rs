//! A throwaway certificate authority for tests.
//!
//! Upstream servers in tests speak real TLS, so the vault (started with
//! `--upstream-ca FILE`) and real clients (`curl --cacert`, `httpx`'s `verify=`)
//! verify them exactly as they would verify a public host. The CA lives only as
//! long as the [`TestCa`] value; its PEM is written to a temporary file whose path
//! tests hand to those programs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::KitError;

/// Names every server certificate from [`TestCa::issue_default`] is valid for.
pub const DEFAULT_SERVER_NAMES: &[&str] = &["localhost", "127.0.0.1", "::1"];

/// An ECDSA P-256 CA whose certificate is written to a temporary PEM file.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    // Kept so the PEM file outlives every program a test points at it.
    dir: tempfile::TempDir,
    pem_path: PathBuf,
}

/// A server certificate chain and its private key, ready for rustls.
pub struct ServerIdentity {
    /// Leaf first, then the CA.
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// The leaf in PEM, for servers configured by file (nginx, Python).
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    /// Creates a new CA and writes its certificate to `ca.pem` in a fresh temp dir.
    pub fn new() -> Result<TestCa, KitError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "Palisade Test CA");
        name.push(DnType::OrganizationName, "Palisade tests");
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        let cert_pem = cert.pem();
        let dir = tempfile::Builder::new()
            .prefix("palisade-test-ca")
            .tempdir()?;
        let pem_path = dir.path().join("ca.pem");
        std::fs::write(&pem_path, &cert_pem)?;
        Ok(TestCa {
            issuer: Issuer::new(params, key),
            cert_der: cert.der().clone(),
            cert_pem,
            dir,
            pem_path,
        })
    }

    /// Path of the CA certificate PEM (for `--upstream-ca`, `curl --cacert`, `verify=`).
    pub fn pem_path(&self) -> &Path {
        &self.pem_path
    }

    /// The CA certificate in PEM.
    pub fn pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate in DER.
    pub fn der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// A directory that lives as long as the CA, for files derived from it.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Issues a server certificate for `localhost`, `127.0.0.1`, `::1` and `extra_names`.
    pub fn issue_default(&self, extra_names: &[&str]) -> Result<ServerIdentity, KitError> {
        let mut names: Vec<String> = DEFAULT_SERVER_NAMES.iter().map(|n| n.to_string()).collect();
        names.extend(extra_names.iter().map(|n| n.to_string()));
        self.issue(&names)
    }

    /// Issues a server certificate valid for exactly `names` (DNS names or IP literals).
    pub fn issue(&self, names: &[String]) -> Result<ServerIdentity, KitError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(names.to_vec())?;
        let mut name = DistinguishedName::new();
        name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        params.distinguished_name = name;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(ServerIdentity {
            chain: vec![cert.der().clone(), self.cert_der.clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A rustls client configuration that trusts only this CA (ALPN as given).
    pub fn client_config(&self, alpn: &[&[u8]]) -> Result<Arc<rustls::ClientConfig>, KitError> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.cert_der.clone())
            .map_err(|error| KitError::Tls(error.to_string()))?;
        let mut config = rustls::ClientConfig::builder_with_provider(crate::crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|error| KitError::Tls(error.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa")
            .field("pem_path", &self.pem_path)
            .finish_non_exhaustive()
    }
}
