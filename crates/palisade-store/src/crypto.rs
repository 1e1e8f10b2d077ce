//! The master key and sealing of secret values (AES-256-GCM, random 96-bit nonce per value).
//!
//! Sealed form stored in SQLite: `v1:` + base64(nonce || ciphertext || tag). The secret's
//! name is bound as associated data so a sealed value cannot be moved to another secret.
//! Other sealed values use their own associated strings (`agent-token:NAME`, `admin-key`)
//! for the same reason.
//!
//! A random nonce per value is safe here: a home seals at most a few thousand values in
//! its life, far below the 2^32 messages at which random 96-bit nonces start to risk reuse.

use crate::StoreError;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use palisade_policy::SecretValue;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use zeroize::Zeroizing;

/// Environment variable that, when set, supplies the master key instead of the key file.
pub const MASTER_KEY_ENV: &str = "PALISADE_MASTER_KEY";

const SEALED_PREFIX: &str = "v1:";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// 32-byte key; zeroized on drop; `Debug` prints `[redacted]`.
pub struct MasterKey(zeroize::Zeroizing<[u8; 32]>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

impl MasterKey {
    /// The same key again, for another handle on the same home.
    pub(crate) fn duplicate(&self) -> Self {
        MasterKey(zeroize::Zeroizing::new(*self.0))
    }

    /// `PALISADE_MASTER_KEY` (base64 or hex of 32 bytes) if set, else the key file,
    /// created (0600, 32 random bytes) if missing. A key file with other permissions than
    /// 0600/0400 is refused with a message saying how to fix it.
    pub fn load_or_create(home: &crate::Home) -> crate::Result<Self> {
        if let Some(value) = std::env::var_os(MASTER_KEY_ENV) {
            let value = Zeroizing::new(value.into_string().map_err(|_| {
                StoreError::MasterKey(format!(
                    "{MASTER_KEY_ENV} is not valid text; set it to 32 bytes as base64 (44 characters) or hex (64 characters)"
                ))
            })?);
            return Self::parse_env(&value);
        }
        Self::load_or_create_file(&home.master_key())
    }

    /// Parses the value of `PALISADE_MASTER_KEY`. Hex is tried first for 64-character
    /// values because 64 hex digits also decode as (48 bytes of) base64.
    pub fn parse_env(value: &str) -> crate::Result<Self> {
        let value = value.trim();
        let decoded: Option<Zeroizing<Vec<u8>>> =
            if value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
                hex::decode(value).ok().map(Zeroizing::new)
            } else {
                base64::engine::general_purpose::STANDARD
                    .decode(value)
                    .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(value))
                    .ok()
                    .map(Zeroizing::new)
            };
        match decoded {
            Some(bytes) if bytes.len() == 32 => Ok(Self::from_slice(&bytes)),
            Some(bytes) => Err(StoreError::MasterKey(format!(
                "{MASTER_KEY_ENV} decodes to {} bytes but must be exactly 32; generate one with `openssl rand -base64 32`",
                bytes.len()
            ))),
            None => Err(StoreError::MasterKey(format!(
                "{MASTER_KEY_ENV} is neither base64 nor hex; set it to 32 bytes as base64 (44 characters) or hex (64 characters), e.g. from `openssl rand -base64 32`"
            ))),
        }
    }

    fn load_or_create_file(path: &Path) -> crate::Result<Self> {
        match std::fs::symlink_metadata(path) {
            Ok(_) => Self::read_file(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::create_file(path),
            Err(e) => Err(StoreError::MasterKey(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        }
    }

    fn read_file(path: &Path) -> crate::Result<Self> {
        let metadata = std::fs::metadata(path)
            .map_err(|e| StoreError::MasterKey(format!("cannot read {}: {e}", path.display())))?;
        if !metadata.is_file() {
            return Err(StoreError::MasterKey(format!(
                "{} is not a regular file; move it away and a new key will be created (secrets sealed with the old key will be lost)",
                path.display()
            )));
        }
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(StoreError::MasterKey(format!(
                "{} is readable by other users (mode {mode:04o}); run `chmod 600 {}` and try again",
                path.display(),
                path.display()
            )));
        }
        let text =
            Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
                StoreError::MasterKey(format!("cannot read {}: {e}", path.display()))
            })?);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map(Zeroizing::new)
            .map_err(|_| {
                StoreError::MasterKey(format!(
                    "{} does not contain a base64 key; restore it from a backup",
                    path.display()
                ))
            })?;
        if bytes.len() != 32 {
            return Err(StoreError::MasterKey(format!(
                "{} holds {} bytes but a key is 32; restore it from a backup",
                path.display(),
                bytes.len()
            )));
        }
        Ok(Self::from_slice(&bytes))
    }

    /// Writes a complete key to a private temporary file and hard-links it into place:
    /// the link either appears with the full content or fails because another process won
    /// the race, in which case that process's key is the one to use. Creating the final
    /// name directly with O_EXCL would let a racing reader see an empty file.
    fn create_file(path: &Path) -> crate::Result<Self> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(bytes.as_mut());
        let text = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(bytes.as_ref()));

        let dir = path.parent().unwrap_or_else(|| Path::new("."));
        let temp = dir.join(format!(
            ".master.key.{}.{:016x}",
            std::process::id(),
            rand::rngs::OsRng.next_u64()
        ));
        let io_error = |e: std::io::Error, p: &Path| {
            StoreError::MasterKey(format!("cannot create {}: {e}", p.display()))
        };
        let written = (|| -> std::io::Result<()> {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp)?;
            file.write_all(text.as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&temp);
            return Err(io_error(e, &temp));
        }
        let linked = std::fs::hard_link(&temp, path);
        let _ = std::fs::remove_file(&temp);
        match linked {
            Ok(()) => {
                tracing::info!(path = %path.display(), "created a new master key");
                Ok(MasterKey(Zeroizing::new(*bytes)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::read_file(path),
            Err(e) => Err(io_error(e, path)),
        }
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        MasterKey(zeroize::Zeroizing::new(bytes))
    }

    fn from_slice(bytes: &[u8]) -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(bytes);
        MasterKey(key)
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(aes_gcm::Key::<Aes256Gcm>::from_slice(&self.0[..]))
    }

    /// HMAC-SHA256 of `data` under a key derived from the master key for `purpose`
    /// (so a MAC made for one purpose is no good for another, and the master key
    /// itself is never used twice).
    pub fn mac(&self, purpose: &str, data: &[u8]) -> [u8; 32] {
        use hmac::{Hmac, Mac};
        let derive = |key: &[u8], message: &[u8]| -> [u8; 32] {
            let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key)
                .expect("HMAC takes keys of any length");
            mac.update(message);
            mac.finalize().into_bytes().into()
        };
        let purpose_key = zeroize::Zeroizing::new(derive(&self.0[..], purpose.as_bytes()));
        derive(&purpose_key[..], data)
    }

    pub fn seal(&self, associated: &str, value: &SecretValue) -> crate::Result<String> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher()
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: value.expose().as_bytes(),
                    aad: associated.as_bytes(),
                },
            )
            .map_err(|_| StoreError::Invalid("the value is too large to encrypt".into()))?;
        let mut sealed = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        Ok(format!(
            "{SEALED_PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(sealed)
        ))
    }

    pub fn open(&self, associated: &str, sealed: &str) -> crate::Result<SecretValue> {
        let encoded = sealed.strip_prefix(SEALED_PREFIX).ok_or_else(|| {
            StoreError::Invalid(
                "a stored sealed value has an unknown format; the database may be damaged".into(),
            )
        })?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| {
                StoreError::Invalid(
                    "a stored sealed value is not valid base64; the database may be damaged".into(),
                )
            })?;
        if raw.len() < NONCE_LEN + TAG_LEN {
            return Err(StoreError::Invalid(
                "a stored sealed value is truncated; the database may be damaged".into(),
            ));
        }
        let (nonce, ciphertext) = raw.split_at(NONCE_LEN);
        let plain = self
            .cipher()
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: associated.as_bytes(),
                },
            )
            .map_err(|_| StoreError::Decrypt)?;
        match String::from_utf8(plain) {
            Ok(text) => Ok(SecretValue::new(text)),
            Err(e) => {
                drop(Zeroizing::new(e.into_bytes()));
                Err(StoreError::Invalid(
                    "a decrypted value is not UTF-8 text".into(),
                ))
            }
        }
    }
}

/// SHA-256 hex of an agent token (tokens are 32 random bytes, so no slow hash is needed).
pub fn token_hash(token: &str) -> String {
    sha256_hex(token.as_bytes())
}

/// A fresh random token: `pal_` + 43 chars base64url (32 bytes).
pub fn new_token() -> SecretValue {
    let mut bytes = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(bytes.as_mut());
    let mut token = String::with_capacity(4 + 43);
    token.push_str("pal_");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(bytes.as_ref(), &mut token);
    SecretValue::new(token)
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    // Through a fixed buffer: `hex::encode` builds its string one character at a time,
    // and the audit chain hashes every row.
    let mut text = [0u8; 64];
    hex::encode_to_slice(Sha256::digest(bytes), &mut text)
        .expect("64 bytes hold a SHA-256 digest in hex");
    String::from_utf8_lossy(&text).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> MasterKey {
        MasterKey::from_bytes([7u8; 32])
    }

    #[test]
    fn seal_round_trips_and_binds_the_name() {
        let value = SecretValue::new("sk-very-secret".into());
        let sealed = key().seal("github", &value).unwrap();
        assert!(sealed.starts_with("v1:"));
        assert!(!sealed.contains("sk-very-secret"));
        assert_eq!(
            key().open("github", &sealed).unwrap().expose(),
            "sk-very-secret"
        );
        assert!(matches!(
            key().open("gitlab", &sealed),
            Err(StoreError::Decrypt)
        ));
        assert!(matches!(
            MasterKey::from_bytes([8u8; 32]).open("github", &sealed),
            Err(StoreError::Decrypt)
        ));
        // Two seals of the same value differ (fresh nonce).
        assert_ne!(sealed, key().seal("github", &value).unwrap());
    }

    #[test]
    fn malformed_sealed_values_are_errors() {
        for bad in ["", "v2:AAAA", "v1:@@@", "v1:AAAA"] {
            assert!(key().open("x", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn env_key_formats() {
        let bytes = [0xabu8; 32];
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        let hex = hex::encode(bytes);
        for text in [b64.as_str(), b64.trim_end_matches('='), hex.as_str()] {
            let k = MasterKey::parse_env(text).unwrap();
            assert_eq!(*k.0, bytes);
        }
        let short = base64::engine::general_purpose::STANDARD.encode([1u8; 16]);
        let err = MasterKey::parse_env(&short).unwrap_err().to_string();
        assert!(err.contains("16 bytes"), "{err}");
        let err = MasterKey::parse_env("not a key!").unwrap_err().to_string();
        assert!(err.contains("base64"), "{err}");
        assert!(!err.contains("not a key!"));
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let first = MasterKey::load_or_create_file(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let second = MasterKey::load_or_create_file(&path).unwrap();
        assert_eq!(*first.0, *second.0);
        // No temporary files left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = MasterKey::load_or_create_file(&path)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("chmod 600 {}", path.display())),
            "{err}"
        );

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(MasterKey::load_or_create_file(&path).is_ok());
    }

    #[test]
    fn concurrent_creation_agrees_on_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let keys: Vec<[u8; 32]> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| *MasterKey::load_or_create_file(&path).unwrap().0))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(keys.windows(2).all(|w| w[0] == w[1]));
    }

    #[test]
    fn tokens_look_right() {
        let t = new_token();
        assert!(t.expose().starts_with("pal_"));
        assert_eq!(t.expose().len(), 47);
        assert_ne!(t.expose(), new_token().expose());
        assert_eq!(token_hash("abc").len(), 64);
    }

    #[test]
    fn sha256_hex_is_the_lowercase_digest() {
        // FIPS 180-2's example for "abc": stored token hashes and the audit chain depend
        // on this exact spelling.
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
