//! Agents and tokens.

mod common;

use palisade_policy::Profile;
use palisade_store::crypto::token_hash;
use palisade_store::StoreError;

#[test]
fn create_get_list_and_duplicate() {
    let t = common::store();
    let alpha = common::agent("alpha");
    let record = t.store.create_agent(&alpha, Profile::Research).unwrap();
    assert_eq!(record.name, alpha);
    assert_eq!(record.profile, Profile::Research);
    assert!(!record.has_token);
    assert_eq!(record.settings, serde_json::json!({}));

    let err = t.store.create_agent(&alpha, Profile::Action).unwrap_err();
    assert!(
        matches!(err, StoreError::Duplicate { what: "agent", .. }),
        "{err}"
    );

    common::add_agent(&t.store, "beta");
    let names: Vec<String> = t
        .store
        .list_agents()
        .unwrap()
        .into_iter()
        .map(|a| a.name.to_string())
        .collect();
    assert_eq!(names, ["alpha", "beta"]);

    let missing = t.store.get_agent(&common::agent("gamma")).unwrap_err();
    assert!(matches!(
        missing,
        StoreError::NotFound { what: "agent", .. }
    ));
}

#[test]
fn settings_and_profile_updates() {
    let t = common::store();
    let alpha = common::add_agent(&t.store, "alpha");
    let settings = serde_json::json!({ "model": "claude-sonnet-4-6", "provider": "anthropic" });
    t.store.update_agent_settings(&alpha, &settings).unwrap();
    t.store
        .set_agent_profile(&alpha, Profile::Research)
        .unwrap();
    let record = t.store.get_agent(&alpha).unwrap();
    assert_eq!(record.settings, settings);
    assert_eq!(record.profile, Profile::Research);
    assert!(t
        .store
        .set_agent_profile(&common::agent("nobody"), Profile::Action)
        .is_err());
}

#[test]
fn tokens_are_shown_again_until_rotated() {
    let t = common::store();
    let alpha = common::add_agent(&t.store, "alpha");
    let first = t.store.agent_token(&alpha, false).unwrap();
    assert!(first.expose().starts_with("pal_"));
    assert!(t.store.get_agent(&alpha).unwrap().has_token);
    let again = t.store.agent_token(&alpha, false).unwrap();
    assert_eq!(first.expose(), again.expose());

    let hashes = t.store.agent_token_hashes().unwrap();
    assert_eq!(hashes, vec![(token_hash(first.expose()), alpha.clone())]);

    let rotated = t.store.agent_token(&alpha, true).unwrap();
    assert_ne!(rotated.expose(), first.expose());
    let hashes = t.store.agent_token_hashes().unwrap();
    assert_eq!(hashes, vec![(token_hash(rotated.expose()), alpha.clone())]);

    let events = common::audit_events(&t.store);
    assert_eq!(events, ["agent.create", "agent.token", "agent.token"]);
}

/// A token row someone wrote into the database without the master key (the hash of a
/// token of their own, for a made-up agent or an existing one), or an agent's sealed
/// token moved to another agent's row, is not accepted: only tokens this home issued
/// count (review, audit round ten: a forged row's token got a secret injected).
#[test]
fn tokens_written_into_the_database_are_not_accepted() {
    let t = common::store();
    let alpha = common::add_agent(&t.store, "alpha");
    let beta = common::add_agent(&t.store, "beta");
    let issued = t.store.agent_token(&alpha, false).unwrap();
    let raw = common::raw(&t.home);
    raw.execute(
        "INSERT INTO agents (name, profile, settings, created_at_ms) VALUES ('ghost', 'action', '{}', 0)",
        [],
    )
    .unwrap();
    raw.execute(
        "INSERT INTO agent_tokens (agent_id, token_hash, sealed, created_at_ms)
         SELECT id, ?1, 'x', 0 FROM agents WHERE name = 'ghost'",
        [token_hash("attacker-token")],
    )
    .unwrap();
    // Alpha's sealed token (and its hash) copied to beta's row.
    raw.execute(
        "INSERT INTO agent_tokens (agent_id, token_hash, sealed, created_at_ms)
         SELECT (SELECT id FROM agents WHERE name = 'beta'), ?1, sealed, 0 FROM agent_tokens
         WHERE agent_id = (SELECT id FROM agents WHERE name = 'alpha')",
        [token_hash("beta-stolen")],
    )
    .unwrap();
    let hashes = t.store.agent_token_hashes().unwrap();
    assert_eq!(hashes, vec![(token_hash(issued.expose()), alpha.clone())]);
    let _ = beta;
}

#[test]
fn delete_removes_token_grants_and_bound_rules() {
    let t = common::store();
    let alpha = common::add_agent(&t.store, "alpha");
    common::add_agent(&t.store, "beta");
    t.store.agent_token(&alpha, false).unwrap();
    t.store
        .create_secret(common::new_secret("shared", "v", &["alpha", "beta"]))
        .unwrap();
    t.store
        .create_rule(common::new_rule(
            "alpha-only",
            palisade_policy::RuleAction::Block,
            Some("alpha"),
        ))
        .unwrap();
    t.store
        .create_rule(common::new_rule(
            "everyone",
            palisade_policy::RuleAction::Allow,
            None,
        ))
        .unwrap();

    t.store.delete_agent(&alpha).unwrap();
    assert!(t.store.agent_token_hashes().unwrap().is_empty());
    let secret = t.store.get_secret("shared").unwrap();
    assert_eq!(secret.agents, vec![common::agent("beta")]);
    let rules: Vec<String> = t
        .store
        .list_rules()
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(rules, ["everyone"]);

    let err = t.store.delete_agent(&alpha).unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }));

    // The name can be reused; the new agent inherits nothing.
    t.store.create_agent(&alpha, Profile::Action).unwrap();
    assert!(!t.store.get_agent(&alpha).unwrap().has_token);
}
