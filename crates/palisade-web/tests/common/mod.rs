//! Helpers shared by the web UI's test binaries.

use palisade_store::{AuditFilter, Store};

/// Fails unless each of `events` has an audit row (of `agent`, when given) whose actor
/// is the web UI's admin.
pub fn assert_audited_as_admin(store: &Store, agent: Option<&str>, events: &[&str]) {
    let actors: Vec<(String, String)> = store
        .list_audit(&AuditFilter {
            agent: agent.map(str::to_string),
            ..Default::default()
        })
        .unwrap()
        .into_iter()
        .filter_map(|row| Some((row.entry.event, row.entry.actor?)))
        .collect();
    for event in events {
        assert!(
            actors.contains(&(event.to_string(), "web:admin".to_string())),
            "{event} not audited as web:admin: {actors:?}"
        );
    }
}
