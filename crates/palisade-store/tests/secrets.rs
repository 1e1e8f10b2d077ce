//! Secrets: sealed values, grants, policy loading.

mod common;

use palisade_store::crypto::MasterKey;
use palisade_store::{Store, StoreError};

#[test]
fn create_list_get_without_values() {
    let t = common::store();
    common::add_agent(&t.store, "alpha");
    let record = t
        .store
        .create_secret(common::new_secret("github", "ghp_value_1234", &["alpha"]))
        .unwrap();
    assert_eq!(record.name, "github");
    assert_eq!(record.host_pattern, "api.example.com");
    assert_eq!(record.path_pattern.as_deref(), Some("/v1/*"));
    assert_eq!(record.injection, "bearer");
    assert_eq!(record.agents, vec![common::agent("alpha")]);

    let listed = t.store.list_secrets().unwrap();
    assert_eq!(listed.len(), 1);
    let json = serde_json::to_string(&listed).unwrap();
    assert!(!json.contains("ghp_value_1234"));
    assert_eq!(t.store.get_secret("github").unwrap().id, record.id);

    let dup = t
        .store
        .create_secret(common::new_secret("github", "x", &[]))
        .unwrap_err();
    assert!(matches!(dup, StoreError::Duplicate { what: "secret", .. }));
}

/// A value with a line break, tab or NUL inside could never be sent in a header: it
/// is refused on create and on rotate (without quoting it), and nothing is written.
#[test]
fn a_value_with_a_control_character_inside_is_refused() {
    let t = common::store();
    common::add_agent(&t.store, "alpha");
    t.store
        .create_secret(common::new_secret("kept", "good-value-1", &["alpha"]))
        .unwrap();
    let audit_before = common::audit_events(&t.store).len();
    for value in [
        "ab\ncd-secret",
        "ab\r\ncd-secret",
        "ab\tcd-secret",
        "ab\0cd-secret",
        "ab\u{2028}cd-secret",
        "ab\u{a0}cd-secret",
        "ab\u{200b}cd-secret",
        "\u{feff}abcd-secret",
    ] {
        let error = t
            .store
            .create_secret(common::new_secret("pasted", value, &["alpha"]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("control character"), "{error}");
        assert!(!error.contains("cd-secret"), "{error}");
        let value = palisade_policy::SecretValue::new(value.to_string());
        let error = t.store.rotate_secret("kept", &value).unwrap_err();
        assert!(matches!(error, StoreError::Input(_)), "{error}");
    }
    assert_eq!(t.store.list_secrets().unwrap().len(), 1);
    assert_eq!(common::audit_events(&t.store).len(), audit_before);
}

/// A chat platform's token with a line break, tab or invisible character inside is
/// refused too (it was stored, and the channel then failed as "malformed").
#[test]
fn a_channel_token_with_a_control_character_inside_is_refused() {
    let t = common::store();
    for token in ["123456:ABC\tdef", "xoxb-1\r\n2", "tok\u{2028}en"] {
        let credentials = serde_json::json!({"bot_token": "xoxb-good", "app_token": token});
        let error = t
            .store
            .create_channel(palisade_store::NewChannel {
                name: "team".into(),
                platform: "slack".into(),
                settings: serde_json::json!({}),
                credentials: palisade_policy::SecretValue::new(credentials.to_string()),
            })
            .unwrap_err()
            .to_string();
        assert!(error.contains("the channel's app token holds"), "{error}");
    }
    assert!(t.store.list_channels().unwrap().is_empty());
}

#[test]
fn unknown_agent_writes_nothing() {
    let t = common::store();
    common::add_agent(&t.store, "alpha");
    let audit_before = common::audit_events(&t.store).len();
    let err = t
        .store
        .create_secret(common::new_secret("s", "v", &["alpha", "ghost"]))
        .unwrap_err();
    match err {
        StoreError::NotFound {
            what: "agent",
            name,
        } => assert_eq!(name, "ghost"),
        other => panic!("unexpected {other}"),
    }
    assert!(t.store.list_secrets().unwrap().is_empty());
    assert_eq!(common::audit_events(&t.store).len(), audit_before);
    let grants: i64 = common::raw(&t.home)
        .query_row("SELECT COUNT(*) FROM secret_grants", [], |r| r.get(0))
        .unwrap();
    assert_eq!(grants, 0);
}

#[test]
fn grant_and_revoke() {
    let t = common::store();
    let alpha = common::add_agent(&t.store, "alpha");
    let beta = common::add_agent(&t.store, "beta");
    t.store
        .create_secret(common::new_secret("s", "v", &[]))
        .unwrap();
    t.store.grant_secret("s", &alpha).unwrap();
    t.store.grant_secret("s", &alpha).unwrap();
    t.store.grant_secret("s", &beta).unwrap();
    assert_eq!(
        t.store.get_secret("s").unwrap().agents,
        vec![alpha.clone(), beta.clone()]
    );

    t.store.revoke_secret("s", &alpha).unwrap();
    let err = t.store.revoke_secret("s", &alpha).unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { what: "grant", .. }),
        "{err}"
    );
    assert!(err.to_string().contains("alpha"), "{err}");
    assert!(matches!(
        t.store.grant_secret("nope", &alpha),
        Err(StoreError::NotFound { what: "secret", .. })
    ));
    assert!(matches!(
        t.store.grant_secret("s", &common::agent("ghost")),
        Err(StoreError::NotFound { what: "agent", .. })
    ));
    assert_eq!(t.store.get_secret("s").unwrap().agents, vec![beta]);

    t.store.delete_secret("s").unwrap();
    assert!(t.store.list_secrets().unwrap().is_empty());
    assert!(matches!(
        t.store.delete_secret("s"),
        Err(StoreError::NotFound { .. })
    ));
    let events = common::audit_events(&t.store);
    assert_eq!(
        events,
        [
            "agent.create",
            "agent.create",
            "secret.create",
            "secret.grant",
            "secret.grant",
            "secret.revoke",
            "secret.delete"
        ]
    );
}

#[test]
fn load_policy_decrypts_values() {
    let t = common::store();
    common::add_agent(&t.store, "alpha");
    t.store
        .create_secret(common::new_secret("a", "value-a", &["alpha"]))
        .unwrap();
    let mut other = common::new_secret("b", "value-b", &[]);
    other.injection = "header:X-Api-Key".parse().unwrap();
    other.path = None;
    other.priority = 3;
    t.store.create_secret(other).unwrap();

    let policy = t.store.load_policy().unwrap();
    let secrets = policy.secrets();
    assert_eq!(secrets.len(), 2);
    assert_eq!(secrets[0].name, "a");
    assert_eq!(secrets[0].value.expose(), "value-a");
    assert_eq!(secrets[0].agents, vec![common::agent("alpha")]);
    assert_eq!(secrets[1].value.expose(), "value-b");
    assert_eq!(
        secrets[1].injection.to_string(),
        "header:X-Api-Key"
            .parse::<palisade_policy::Injection>()
            .unwrap()
            .to_string()
    );
    assert!(secrets[1].path.is_none());
    assert_eq!(secrets[1].priority, 3);
}

/// A home is opened only with its own master key: another would seal secrets the
/// gateway cannot open. A home made before the check value existed is checked against
/// a sealed secret, then given it.
#[test]
fn a_home_is_opened_with_its_own_master_key_only() {
    let t = common::store();
    t.store
        .create_secret(common::new_secret("a", "value-a", &[]))
        .unwrap();
    let refused = Store::open_with_key(&t.home, MasterKey::from_bytes([9u8; 32]));
    assert!(matches!(refused, Err(StoreError::MasterKey(_))));
    // Without the check value (an older home), the sealed secret decides.
    common::raw(&t.home)
        .execute("DELETE FROM settings WHERE key = 'master_key_check'", [])
        .unwrap();
    let refused = Store::open_with_key(&t.home, MasterKey::from_bytes([9u8; 32]));
    assert!(matches!(refused, Err(StoreError::MasterKey(_))));
    // The home's own key opens it, and writes the check value again.
    drop(t.store);
    let reopened = Store::open(&t.home).unwrap();
    assert_eq!(reopened.list_secrets().unwrap().len(), 1);
    let refused = Store::open_with_key(&t.home, MasterKey::from_bytes([9u8; 32]));
    assert!(matches!(refused, Err(StoreError::MasterKey(_))));
}

#[test]
fn sealed_value_cannot_be_moved_to_another_secret() {
    let t = common::store();
    t.store
        .create_secret(common::new_secret("a", "value-a", &[]))
        .unwrap();
    t.store
        .create_secret(common::new_secret("b", "value-b", &[]))
        .unwrap();
    common::raw(&t.home)
        .execute(
            "UPDATE secrets SET sealed = (SELECT sealed FROM secrets WHERE name = 'a') WHERE name = 'b'",
            [],
        )
        .unwrap();
    // b is left out (never injected, and never with a's value); the rest loads, so
    // other changes still take effect.
    let policy = t.store.load_policy().unwrap();
    let names: Vec<&str> = policy.secrets().iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a"]);
}

/// Where a secret is sent is sealed with its value: a host, path, injection or
/// sensitivity changed in the database (by someone who cannot read the master key)
/// leaves the secret out of the policy, never sent there (review, audit round ten: the
/// gateway sent the credential to the host written in). Rotating keeps it whole.
#[test]
fn a_secrets_destination_changed_in_the_database_is_never_used() {
    for change in [
        "host_pattern = 'evil.example'",
        "path_pattern = '/*'",
        "path_pattern = NULL",
        "injection = 'header:X-Leak'",
        "sensitive = 1",
    ] {
        let t = common::store();
        t.store
            .create_secret(common::new_secret("api", "value-api-123", &[]))
            .unwrap();
        t.store
            .rotate_secret(
                "api",
                &palisade_policy::SecretValue::new("value-api-456".into()),
            )
            .unwrap();
        let loaded = t.store.load_policy().unwrap();
        assert_eq!(loaded.secrets()[0].value.expose(), "value-api-456");
        common::raw(&t.home)
            .execute(
                &format!("UPDATE secrets SET {change} WHERE name = 'api'"),
                [],
            )
            .unwrap();
        let policy = t.store.load_policy().unwrap();
        assert!(policy.secrets().is_empty(), "{change}: the secret was kept");
    }
}

/// A home whose secrets were sealed for their names alone (schema version 11) has them
/// sealed for their destination by the open that migrates it, and they load.
#[test]
fn secrets_sealed_for_their_name_are_bound_when_the_home_is_migrated() {
    let t = common::store();
    t.store
        .create_secret(common::new_secret("api", "value-api-123", &[]))
        .unwrap();
    let key = MasterKey::load_or_create(&t.home).unwrap();
    let legacy = key
        .seal(
            "api",
            &palisade_policy::SecretValue::new("value-api-123".into()),
        )
        .unwrap();
    // Another secret's value sealed for its name alone, put back under another host:
    // not sealed again for that host.
    t.store
        .create_secret(common::new_secret("moved", "value-moved-123", &[]))
        .unwrap();
    let moved = key
        .seal(
            "moved",
            &palisade_policy::SecretValue::new("value-moved-123".into()),
        )
        .unwrap();
    let raw = common::raw(&t.home);
    raw.execute(
        "UPDATE secrets SET sealed = ?1, host_pattern = 'evil.example' WHERE name = 'moved'",
        [&moved],
    )
    .unwrap();
    raw.execute(
        "UPDATE secrets SET sealed = ?1 WHERE name = 'api'",
        [&legacy],
    )
    .unwrap();
    raw.execute_batch("ALTER TABLE secret_grants DROP COLUMN mac; PRAGMA user_version = 11")
        .unwrap();
    drop(raw);
    drop(t.store);
    let store = Store::open(&t.home).unwrap();
    let policy = store.load_policy().unwrap();
    let names: Vec<&str> = policy.secrets().iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["api"],
        "the secret moved to another host was sealed for it"
    );
    assert_eq!(policy.secrets()[0].value.expose(), "value-api-123");
    let sealed: String = common::raw(&t.home)
        .query_row("SELECT sealed FROM secrets WHERE name = 'api'", [], |row| {
            row.get(0)
        })
        .unwrap();
    assert_ne!(sealed, legacy, "not sealed again");
}

/// A grant written into the database without the master key (a row of its own, or a
/// signed row moved to another agent) grants nothing: grants carry a signature of the
/// secret's and the agent's names (review, audit round ten). Grants made through
/// palisade, and those of a home migrated from before signatures, do.
#[test]
fn grants_written_into_the_database_grant_nothing() {
    let t = common::store();
    common::add_agent(&t.store, "alpha");
    common::add_agent(&t.store, "beta");
    common::add_agent(&t.store, "gamma");
    t.store
        .create_secret(common::new_secret("api", "value-api-123", &["alpha"]))
        .unwrap();
    t.store
        .grant_secret("api", &common::agent("gamma"))
        .unwrap();
    let raw = common::raw(&t.home);
    raw.execute(
        "INSERT INTO secret_grants (secret_id, agent_id) SELECT s.id, a.id FROM secrets s, agents a WHERE a.name = 'beta'",
        [],
    )
    .unwrap();
    let granted = |store: &Store| -> Vec<String> {
        store.load_policy().unwrap().secrets()[0]
            .agents
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    assert_eq!(granted(&t.store), ["alpha", "gamma"]);
    // alpha's signed grant moved to beta: its signature names alpha.
    raw.execute(
        "DELETE FROM secret_grants WHERE agent_id = (SELECT id FROM agents WHERE name = 'beta')",
        [],
    )
    .unwrap();
    raw.execute(
        "UPDATE secret_grants SET agent_id = (SELECT id FROM agents WHERE name = 'beta')
         WHERE agent_id = (SELECT id FROM agents WHERE name = 'alpha')",
        [],
    )
    .unwrap();
    assert_eq!(granted(&t.store), ["gamma"]);
    assert_eq!(t.store.list_secrets().unwrap()[0].agents.len(), 1);
    // A home from before signed grants has its grants signed when it is migrated, those
    // the audit log records.
    raw.execute("UPDATE secret_grants SET mac = NULL", [])
        .unwrap();
    assert!(granted(&t.store).is_empty());
    raw.execute_batch("ALTER TABLE secret_grants DROP COLUMN mac; PRAGMA user_version = 12")
        .unwrap();
    drop(raw);
    drop(t.store);
    // Only grants the audit log records are signed: gamma's; not the one moved to
    // beta, which the log never granted (asking for the migration again cannot sign a
    // grant someone wrote in).
    let store = Store::open(&t.home).unwrap();
    assert_eq!(granted(&store), ["gamma"]);
}

/// Migrating a home from before signed grants signs what the log records: a grant made
/// with the secret, one made later, not one revoked since, nor one written in.
#[test]
fn the_migration_signs_the_grants_the_log_records() {
    let t = common::store();
    for name in ["alpha", "beta", "gamma", "delta"] {
        common::add_agent(&t.store, name);
    }
    t.store
        .create_secret(common::new_secret(
            "api",
            "value-api-123",
            &["alpha", "delta"],
        ))
        .unwrap();
    t.store
        .grant_secret("api", &common::agent("gamma"))
        .unwrap();
    t.store
        .revoke_secret("api", &common::agent("delta"))
        .unwrap();
    let raw = common::raw(&t.home);
    for forged in ["beta", "delta"] {
        raw.execute(
            "INSERT INTO secret_grants (secret_id, agent_id) SELECT s.id, a.id FROM secrets s, agents a WHERE a.name = ?1",
            [forged],
        )
        .unwrap();
    }
    raw.execute_batch("ALTER TABLE secret_grants DROP COLUMN mac; PRAGMA user_version = 12")
        .unwrap();
    drop(raw);
    drop(t.store);
    let store = Store::open(&t.home).unwrap();
    let granted: Vec<String> = store.load_policy().unwrap().secrets()[0]
        .agents
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(granted, ["alpha", "gamma"]);
}

#[test]
fn corrupt_rows_are_errors_not_panics() {
    let t = common::store();
    common::add_agent(&t.store, "alpha");
    t.store
        .create_secret(common::new_secret("a", "value-a", &["alpha"]))
        .unwrap();
    let conn = common::raw(&t.home);
    conn.execute("UPDATE secrets SET injection = 'smoke-signal'", [])
        .unwrap();
    // A secret that cannot be read is left out; a rule that cannot be read fails.
    assert!(t.store.load_policy().unwrap().secrets().is_empty());
    t.store
        .create_rule(common::new_rule(
            "r",
            palisade_policy::RuleAction::Block,
            None,
        ))
        .unwrap();
    conn.execute("UPDATE rules SET action = 'smite'", [])
        .unwrap();
    let err = t.store.load_policy().unwrap_err();
    assert!(err.to_string().contains("action"), "{err}");
    conn.execute("UPDATE agents SET profile = 'wizard'", [])
        .unwrap();
    assert!(t.store.list_agents().is_err());
    conn.execute(
        "UPDATE agents SET profile = 'action', settings = '{nope'",
        [],
    )
    .unwrap();
    assert!(t.store.list_agents().is_err());
    conn.execute("UPDATE secrets SET sealed = 'v1:!!'", [])
        .unwrap();
    conn.execute("DELETE FROM rules", []).unwrap();
    assert!(t.store.load_policy().unwrap().secrets().is_empty());
}

#[test]
fn admin_key_is_stable_until_rotated() {
    let t = common::store();
    let first = t.store.admin_key(false).unwrap();
    assert_eq!(first.expose(), t.store.admin_key(false).unwrap().expose());
    let rotated = t.store.admin_key(true).unwrap();
    assert_ne!(first.expose(), rotated.expose());
    assert_eq!(rotated.expose(), t.store.admin_key(false).unwrap().expose());
    let events = common::audit_events(&t.store);
    assert_eq!(events, ["admin_key.create", "admin_key.rotate"]);
}

#[test]
fn rotating_replaces_the_value_only_and_checks_come_before_the_value() {
    let t = common::store();
    common::add_agent(&t.store, "alpha");
    t.store
        .create_secret(common::new_secret("gh", "old-value-123", &["alpha"]))
        .unwrap();
    let rotated = t
        .store
        .rotate_secret(
            "gh",
            &palisade_policy::SecretValue::new("new-value-456".into()),
        )
        .unwrap();
    assert_eq!(rotated.agents, vec![common::agent("alpha")]);
    let policy = t.store.load_policy().unwrap();
    assert_eq!(policy.secrets()[0].value.expose(), "new-value-456");
    assert!(t
        .store
        .rotate_secret("ghost", &palisade_policy::SecretValue::new("x".into()))
        .is_err());

    let draft = |name: &str, agent: &str| palisade_store::input::SecretDraft {
        name: name.into(),
        host_pattern: "api.example.com".into(),
        inject: "bearer".into(),
        agents: vec![agent.into()],
        ..Default::default()
    };
    let taken = t
        .store
        .check_new_secret(&draft("gh", "alpha").check().unwrap());
    assert!(matches!(
        taken,
        Err(palisade_store::StoreError::Duplicate { .. })
    ));
    let ghost = t
        .store
        .check_new_secret(&draft("new", "ghost").check().unwrap());
    assert!(matches!(
        ghost,
        Err(palisade_store::StoreError::NotFound { .. })
    ));
    assert!(t
        .store
        .check_new_secret(&draft("new", "alpha").check().unwrap())
        .is_ok());
    let rows = t
        .store
        .list_audit(&palisade_store::AuditFilter {
            event: Some("secret.rotate".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(rows.len(), 1);
}

#[test]
fn request_counts_add_up_per_hour_and_outcome() {
    use palisade_store::Outcome;
    let t = common::store();
    let now = palisade_store::now_ms();
    let hour = 3_600_000;
    t.store
        .add_request_counts(&[
            ("a".into(), now, Outcome::Allowed, 3),
            ("a".into(), now, Outcome::Allowed, 2),
            ("a".into(), now - hour, Outcome::Blocked, 1),
            ("b".into(), now, Outcome::Injected, 7),
            ("a".into(), now - 30 * 24 * hour, Outcome::Held, 1),
        ])
        .unwrap();
    let a = t
        .store
        .request_counts(Some(&common::agent("a")), now - 24 * hour)
        .unwrap();
    assert_eq!(a.len(), 2, "{a:?}");
    assert_eq!(a[0].outcome, Outcome::Blocked);
    assert_eq!(a[1].outcome, Outcome::Allowed);
    assert_eq!(a[1].count, 5);
    assert_eq!(
        t.store.request_counts(None, now - 24 * hour).unwrap().len(),
        3
    );
    // Counts are not configuration: no gateway reload, no audit row.
    assert!(t
        .store
        .list_audit(&palisade_store::AuditFilter::default())
        .unwrap()
        .is_empty());
}

/// A secret for every host (`*`) never goes to a research agent: it visits any site,
/// and every one of them would receive it. Refused on create, grant and profile change.
#[test]
fn a_secret_for_every_host_stays_out_of_research_agents() {
    let t = common::store();
    let reader = common::agent("reader");
    t.store
        .create_agent(&reader, palisade_policy::Profile::Research)
        .unwrap();
    let doer = common::add_agent(&t.store, "doer");
    let wide = |name: &str, host: &str, agents: &[&str]| {
        let mut secret = common::new_secret(name, "v", agents);
        secret.host = palisade_policy::HostPattern::parse(host).unwrap();
        secret.path = None;
        secret
    };
    let everywhere = |agents: &[&str]| wide("everywhere", "*", agents);
    for (name, host) in [
        ("all", "*"),
        ("com", "*.com"),
        ("pages", "*.github.io"),
        ("nums", "*.0.0.1"),
    ] {
        let refused = t
            .store
            .create_secret(wide(name, host, &["reader"]))
            .unwrap_err();
        assert!(
            refused.to_string().contains("hosts of many owners"),
            "{host}: {refused}"
        );
    }
    t.store
        .create_secret(wide("own", "*.example.com", &["reader"]))
        .unwrap();
    t.store.create_secret(everywhere(&["doer"])).unwrap();
    let refused = t.store.grant_secret("everywhere", &reader).unwrap_err();
    assert!(
        refused.to_string().contains("hosts of many owners"),
        "{refused}"
    );
    let refused = t
        .store
        .set_agent_profile(&doer, palisade_policy::Profile::Research)
        .unwrap_err();
    assert!(
        refused.to_string().contains("hosts of many owners"),
        "{refused}"
    );
}
