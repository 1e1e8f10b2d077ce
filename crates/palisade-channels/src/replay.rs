//! Signed requests already taken, so a captured one cannot be replayed while its
//! timestamp is still inside the platform's window (Slack's and Discord's signatures
//! cover a timestamp, not a nonce).

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

    /// Records `signature` (already verified) made at `timestamp_seconds`; `false` if
    /// it was taken before.
    pub fn first_time(&self, signature: &str, timestamp_seconds: i64, now_seconds: i64) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|_, at| (now_seconds - *at).abs() <= self.window_seconds);
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
