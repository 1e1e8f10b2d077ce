//! The configuration version moves with every configuration change and only then, so
//! a gateway can poll it without reloading its policy under request load.

use palisade_policy::{AgentName, Profile};
use palisade_store::{AuditEntry, Home, Store};

#[test]
fn config_version_moves_on_changes_but_not_on_request_audit_rows() {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::at(dir.path().join("home"));
    let store = Store::open(&home).unwrap();
    let other = Store::open(&home).unwrap();
    let start = other.config_version().unwrap();

    store
        .create_agent(&AgentName::new("mailer").unwrap(), Profile::Action)
        .unwrap();
    let after_create = other.config_version().unwrap();
    assert!(
        after_create > start,
        "creating an agent must move the version"
    );

    let rows: Vec<(i64, AuditEntry)> = (0..50)
        .map(|i| {
            (
                i,
                AuditEntry {
                    event: "request".into(),
                    decision: Some("injected".into()),
                    ..AuditEntry::default()
                },
            )
        })
        .collect();
    store.append_audit_batch(&rows).unwrap();
    assert_eq!(
        other.config_version().unwrap(),
        after_create,
        "request audit rows must not move the version"
    );

    store
        .agent_token(&AgentName::new("mailer").unwrap(), true)
        .unwrap();
    assert!(other.config_version().unwrap() > after_create);
}
