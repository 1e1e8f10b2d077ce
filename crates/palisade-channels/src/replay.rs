//! Signed requests already taken, so a captured one cannot be replayed while its
//! timestamp is still inside the platform's window (Slack's and Discord's signatures
//! cover a timestamp, not a nonce). A request is remembered by what was signed — its
//! timestamp and body — not by how its signature was spelt: the same signature in
//! upper-case hex, or with spaces around it, verifies too and must count as the same.

use std::collections::HashMap;
use std::sync::Mutex;

/// Signatures remembered at most (the oldest go first beyond this).
const MAX_REMEMBERED: usize = 10_000;

pub struct SeenRequests {
    window_seconds: i64,
    seen: Mutex<HashMap<String, i64>>,
}

impl SeenRequests {
    pub fn new(window_seconds: i64) -> SeenRequests {
        SeenRequests {
            window_seconds,
            seen: Mutex::default(),
        }
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
