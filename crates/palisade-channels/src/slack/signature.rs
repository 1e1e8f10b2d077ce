//! Slack's request signatures, for the Events API and interactivity over HTTPS.
//!
//! Slack signs each request with the app's signing secret: `X-Slack-Signature:
//! v0=HEX(HMAC-SHA256(secret, "v0:" + X-Slack-Request-Timestamp + ":" + body))`. A
//! request is taken only when the signature matches (compared in constant time), its
//! timestamp is within five minutes of now (an old request cannot be replayed later),
//! and it was not seen before (a captured one cannot be replayed within the window).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far a request's timestamp may be from now.
pub const WINDOW_SECONDS: i64 = 300;

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the request has no X-Slack-Signature or X-Slack-Request-Timestamp")]
    Missing,
    #[error("the signature or timestamp is malformed")]
    Malformed,
    #[error("the request timestamp is more than 5 minutes from now")]
    Stale,
    #[error("the signature does not match")]
    Mismatch,
    #[error("the request was seen before (a replay)")]
    Replayed,
}

/// `v0=HEX`: the signature Slack would send for `body` at `timestamp`.
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks one request's signature; `now_seconds` is the Unix time.
pub fn verify(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_seconds: i64,
) -> Result<(), SignatureError> {
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
        return Err(SignatureError::Missing);
    };
    let seconds: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::Malformed)?;
    let expected = signature
        .strip_prefix("v0=")
        .and_then(|h| hex::decode(h).ok())
        .filter(|bytes| bytes.len() == 32)
        .ok_or(SignatureError::Malformed)?;
    // `abs_diff`: a timestamp of i64::MIN must be stale, not an overflow.
    if now_seconds.abs_diff(seconds) > WINDOW_SECONDS.unsigned_abs() {
        return Err(SignatureError::Stale);
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| SignatureError::Mismatch)?;
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"8f742231b10e8888abcd99yyyzzz85a5";

    #[test]
    fn a_signed_request_passes_and_any_change_fails() {
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J";
        let now = 1_531_420_618;
        let signature = sign(SECRET, "1531420618", body);
        assert_eq!(
            verify(SECRET, Some("1531420618"), Some(&signature), body, now),
            Ok(())
        );
        // Another body, timestamp, secret or signature shape is refused.
        assert_eq!(
            verify(SECRET, Some("1531420618"), Some(&signature), b"x", now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(SECRET, Some("1531420619"), Some(&signature), body, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"other", Some("1531420618"), Some(&signature), body, now),
            Err(SignatureError::Mismatch)
        );
        for bad in ["", "v1=00", "v0=zz", &signature[..20]] {
            assert_eq!(
                verify(SECRET, Some("1531420618"), Some(bad), body, now),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
        assert_eq!(
            verify(SECRET, None, Some(&signature), body, now),
            Err(SignatureError::Missing)
        );
    }

    #[test]
    fn old_and_future_requests_are_stale_and_replays_are_seen() {
        let body = b"{}";
        let signature = sign(SECRET, "1000", body);
        assert_eq!(
            verify(SECRET, Some("1000"), Some(&signature), body, 1000 + 301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(SECRET, Some("1000"), Some(&signature), body, 1000 - 301),
            Err(SignatureError::Stale)
        );
        assert!(verify(SECRET, Some("1000"), Some(&signature), body, 1000 + 300).is_ok());
        // Timestamps at the ends of i64 are stale, not an overflow.
        for extreme in [i64::MIN, i64::MAX] {
            let timestamp = extreme.to_string();
            let signature = sign(SECRET, &timestamp, body);
            for now in [i64::MIN, -1, 1_700_000_000, i64::MAX] {
                if now == extreme {
                    continue;
                }
                assert_eq!(
                    verify(SECRET, Some(&timestamp), Some(&signature), body, now),
                    Err(SignatureError::Stale)
                );
            }
        }
        let seen = crate::replay::SeenRequests::new(WINDOW_SECONDS);
        assert!(seen.first_time("1000", body, 1000));
        assert!(!seen.first_time("1000", body, 1001));
    }
}
