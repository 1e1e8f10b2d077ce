//! The master key and sealing of secret values (AES-256-GCM, random 96-bit nonce per value).
//!
//! Sealed form stored in SQLite: `v1:` + base64(nonce || ciphertext || tag). The secret's
//! name is bound as associated data so a sealed value cannot be moved to another secret.

use palisade_policy::SecretValue;

/// 32-byte key; zeroized on drop; `Debug` prints `[redacted]`.
pub struct MasterKey(zeroize::Zeroizing<[u8; 32]>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

impl MasterKey {
    /// `PALISADE_MASTER_KEY` (base64 or hex of 32 bytes) if set, else the key file,
    /// created (0600, 32 random bytes) if missing. A key file with other permissions than
    /// 0600/0400 is refused with a message saying how to fix it.
    pub fn load_or_create(home: &crate::Home) -> crate::Result<Self> {
        todo!("{home:?}")
    }
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        MasterKey(zeroize::Zeroizing::new(bytes))
    }
    pub fn seal(&self, associated: &str, value: &SecretValue) -> crate::Result<String> {
        todo!("{associated} {value:?}")
    }
    pub fn open(&self, associated: &str, sealed: &str) -> crate::Result<SecretValue> {
        todo!("{associated} {sealed}")
    }
}

/// SHA-256 hex of an agent token (tokens are 32 random bytes, so no slow hash is needed).
pub fn token_hash(token: &str) -> String {
    todo!("{token}")
}

/// A fresh random token: `pal_` + 43 chars base64url (32 bytes).
pub fn new_token() -> SecretValue {
    todo!()
}
