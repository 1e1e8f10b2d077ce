//! Signed requests already taken, so a captured one cannot be replayed while its
//! timestamp is still inside the platform's window (Slack's and Discord's signatures
//! cover a timestamp, not a nonce). A request is remembered by what was signed — its
//! timestamp and body — not by how its signature was spelt: the same signature in
//! upper-case hex, or with spaces around it, verifies too and must count as the same.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// Signatures remembered at most (the oldest go first beyond this).
const MAX_REMEMBERED: usize = 10_000;

pub struct SeenRequests {
    window_seconds: i64,
    seen: Mutex<HashMap<String, i64>>,
}

/// The caches of the channels alive, by a digest of what verifies their requests.
type Registry = Mutex<HashMap<[u8; 32], Weak<SeenRequests>>>;

impl SeenRequests {
    pub fn new(window_seconds: i64) -> SeenRequests {
        SeenRequests {
            window_seconds,
            seen: Mutex::default(),
        }
    }

    /// The cache every channel verified by `verifier` (a Slack signing secret, a
    /// Discord public key) shares: one app added as two channels gets each signed
    /// request once, not once per channel (a captured one was replayed to the other
    /// channel's address and taken there).
    pub fn shared(platform: &str, verifier: &[u8], window_seconds: i64) -> Arc<SeenRequests> {
        use sha2::Digest;
        static REGISTRY: OnceLock<Registry> = OnceLock::new();
        let mut digest = sha2::Sha256::new();
        digest.update(platform.as_bytes());
        digest.update([0]);
        digest.update(verifier);
        let key: [u8; 32] = digest.finalize().into();
        let mut registry = crate::lock(REGISTRY.get_or_init(Registry::default));
        if let Some(alive) = registry.get(&key).and_then(Weak::upgrade) {
            return alive;
        }
        registry.retain(|_, cache| cache.strong_count() > 0);
        let cache = Arc::new(SeenRequests::new(window_seconds));
        registry.insert(key, Arc::downgrade(&cache));
        cache
    }

    /// Records the request signed over `timestamp` (the header as sent) and `body`,
    /// already verified; `false` if it was taken before.
    pub fn first_time(&self, timestamp: &str, body: &[u8], now_seconds: i64) -> bool {
        use sha2::Digest;
        let timestamp_seconds = timestamp.trim().parse().unwrap_or(now_seconds);
        let mut digest = sha2::Sha256::new();
        digest.update(timestamp.trim().as_bytes());
        digest.update([0]);
        digest.update(body);
        let signature = hex::encode(digest.finalize());
        let signature = signature.as_str();
        let mut seen = crate::lock(&self.seen);
        seen.retain(|_, at| now_seconds.abs_diff(*at) <= self.window_seconds.unsigned_abs());
        if seen.contains_key(signature) {
            return false;
        }
        if seen.len() >= MAX_REMEMBERED {
            if let Some(oldest) = seen
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(k, _)| k.clone())
            {
                seen.remove(&oldest);
            }
        }
        seen.insert(signature.to_string(), timestamp_seconds);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_verified_alike_share_what_they_took() {
        let team = SeenRequests::shared("slack", b"secret-a", 300);
        let team2 = SeenRequests::shared("slack", b"secret-a", 300);
        let other = SeenRequests::shared("slack", b"secret-b", 300);
        let discord = SeenRequests::shared("discord", b"secret-a", 300);
        assert!(team.first_time("1700000000", b"payload=x", 1_700_000_010));
        assert!(!team2.first_time("1700000000", b"payload=x", 1_700_000_010));
        assert!(other.first_time("1700000000", b"payload=x", 1_700_000_010));
        assert!(discord.first_time("1700000000", b"payload=x", 1_700_000_010));
    }

    #[test]
    fn the_same_signed_content_is_taken_once_however_it_is_spelt() {
        let seen = SeenRequests::new(300);
        assert!(seen.first_time("1700000000", b"payload=x", 1_700_000_010));
        assert!(!seen.first_time("1700000000", b"payload=x", 1_700_000_020));
        assert!(!seen.first_time(" 1700000000 ", b"payload=x", 1_700_000_020));
        assert!(seen.first_time("1700000000", b"payload=y", 1_700_000_020));
        assert!(seen.first_time("1700000001", b"payload=x", 1_700_000_020));
        // Outside the window it is forgotten (and the signature check refuses it).
        assert!(seen.first_time("1700000000", b"payload=x", 1_700_001_000));
    }
}
