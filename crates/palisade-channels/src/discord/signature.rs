//! Discord's signatures on HTTP interactions: `X-Signature-Ed25519` is the Ed25519
//! signature (hex) of `X-Signature-Timestamp + body` under the application's public
//! key. Checked with ring (already Palisade's crypto); a timestamp more than five
//! minutes from now is refused as well, so a captured request cannot be sent later.

use ring::signature::{UnparsedPublicKey, ED25519};

pub const WINDOW_SECONDS: i64 = 300;

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the request has no X-Signature-Ed25519 or X-Signature-Timestamp")]
    Missing,
    #[error("the signature or timestamp is malformed")]
    Malformed,
    #[error("the request timestamp is more than 5 minutes from now")]
    Stale,
    #[error("the signature does not verify")]
    Mismatch,
    #[error("the request was seen before (a replay)")]
    Replayed,
}

/// The 32-byte public key from its hex form.
pub fn parse_public_key(text: &str) -> Option<[u8; 32]> {
    hex::decode(text.trim()).ok()?.try_into().ok()
}

pub fn verify(
    public_key: &[u8; 32],
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
    let signature = hex::decode(signature.trim())
        .ok()
        .filter(|bytes| bytes.len() == 64)
        .ok_or(SignatureError::Malformed)?;
    // `abs_diff`: a timestamp of i64::MIN must be stale, not an overflow.
    if now_seconds.abs_diff(seconds) > WINDOW_SECONDS.unsigned_abs() {
        return Err(SignatureError::Stale);
    }
    let mut message = Vec::with_capacity(timestamp.len() + body.len());
    message.extend_from_slice(timestamp.as_bytes());
    message.extend_from_slice(body);
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(&message, &signature)
        .map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    #[test]
    fn a_signed_interaction_verifies_and_any_change_fails() {
        let pair = Ed25519KeyPair::from_seed_unchecked(&[9; 32]).unwrap();
        let key: [u8; 32] = pair.public_key().as_ref().try_into().unwrap();
        let body = br#"{"type":1}"#;
        let signed = |timestamp: &str, body: &[u8]| {
            let mut message = timestamp.as_bytes().to_vec();
            message.extend_from_slice(body);
            hex::encode(pair.sign(&message).as_ref())
        };
        let signature = signed("1700000000", body);
        let now = 1_700_000_010;
        // Timestamps at the ends of i64 are stale, not an overflow.
        for extreme in [i64::MIN, i64::MAX] {
            let timestamp = extreme.to_string();
            assert_eq!(
                verify(
                    &key,
                    Some(&timestamp),
                    Some(&signed(&timestamp, body)),
                    body,
                    now
                ),
                Err(SignatureError::Stale)
            );
        }
        assert_eq!(
            verify(&key, Some("1700000000"), Some(&signature), body, now),
            Ok(())
        );
        assert_eq!(
            verify(&key, Some("1700000001"), Some(&signature), body, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&key, Some("1700000000"), Some(&signature), b"{}", now),
            Err(SignatureError::Mismatch)
        );
        let other = [1; 32];
        assert!(verify(&other, Some("1700000000"), Some(&signature), body, now).is_err());
        assert_eq!(
            verify(&key, Some("1700000000"), Some("abcd"), body, now),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(&key, None, Some(&signature), body, now),
            Err(SignatureError::Missing)
        );
        let old = signed("1699999000", body);
        assert_eq!(
            verify(&key, Some("1699999000"), Some(&old), body, now),
            Err(SignatureError::Stale)
        );
        assert_eq!(parse_public_key(&hex::encode(key)), Some(key));
        assert_eq!(parse_public_key("00"), None);
    }
}
