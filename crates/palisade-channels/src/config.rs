//! A stored channel as a running one: its platform, its settings (API base URL and
//! the like, not secret) and its credentials (one sealed JSON object, opened only here,
//! held as [`SecretValue`]s that print redacted).

use crate::channel::{Channel, ChannelError};
use palisade_approvals::Platform;
use palisade_policy::SecretValue;
use palisade_store::{ChannelRecord, Store};
use std::sync::Arc;

/// The credentials of a channel as `channels add` stores them.
pub fn credentials_json(pairs: &[(&str, &SecretValue)]) -> SecretValue {
    let mut object = serde_json::Map::new();
    for (name, value) in pairs {
        object.insert(
            name.to_string(),
            serde_json::Value::String(value.expose().to_string()),
        );
    }
    SecretValue::new(serde_json::Value::Object(object).to_string())
}

fn credential(credentials: &serde_json::Value, name: &str) -> Option<SecretValue> {
    credentials
        .get(name)
        .and_then(|v| v.as_str())
        .filter(|v| !v.is_empty())
        .map(|v| SecretValue::new(v.to_string()))
}

fn setting<'a>(record: &'a ChannelRecord, name: &str) -> Option<&'a str> {
    record.settings.get(name).and_then(|v| v.as_str())
}

/// Builds the running channel for a stored one.
pub fn open(store: &Store, record: &ChannelRecord) -> Result<Arc<dyn Channel>, ChannelError> {
    let sealed = store
        .channel_credentials(&record.name)
        .map_err(|e| ChannelError::Config(format!("channel {}: {e}", record.name)))?;
    let credentials: serde_json::Value = serde_json::from_str(sealed.expose()).map_err(|_| {
        ChannelError::Config(format!(
            "channel {}: its stored credentials are unreadable; remove and add it again",
            record.name
        ))
    })?;
    let platform: Platform = record.platform.parse().map_err(ChannelError::Config)?;
    let missing = |what: &str| {
        ChannelError::Config(format!(
            "channel {} has no {what}; remove and add it again",
            record.name
        ))
    };
    match platform {
        Platform::Telegram => {
            let token = credential(&credentials, "token").ok_or_else(|| missing("bot token"))?;
            let base = setting(record, "api_base").unwrap_or(crate::telegram::DEFAULT_API_BASE);
            Ok(Arc::new(crate::telegram::Telegram::new(
                &record.name,
                base,
                token,
            )?))
        }
        Platform::Slack | Platform::Discord => Err(ChannelError::Config(format!(
            "channel {}: {} is not supported by this build yet",
            record.name,
            platform.title()
        ))),
    }
}
