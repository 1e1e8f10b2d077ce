//! `list_grants`: the credentials the vault injects for the agent — names and where
//! they go, never a value.

use crate::host::HostInner;
use palisade_store::InboundMessage;

pub(super) async fn run(inner: &HostInner, message: &InboundMessage) -> (bool, String) {
    let store = inner.store.clone();
    let result = tokio::task::spawn_blocking(move || store.list_secrets()).await;
    match result {
        Ok(Ok(secrets)) => {
            let grants: Vec<_> = secrets
                .into_iter()
                .filter(|secret| secret.agents.contains(&message.agent))
                .map(|secret| {
                    serde_json::json!({
                        "secret": secret.name,
                        "host_pattern": secret.host_pattern,
                        "path_pattern": secret.path_pattern,
                    })
                })
                .collect();
            (true, serde_json::Value::Array(grants).to_string())
        }
        Ok(Err(error)) => (false, error.to_string()),
        Err(error) => (false, error.to_string()),
    }
}
