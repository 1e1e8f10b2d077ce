//! Rules: creation, listing, deletion, policy loading.

mod common;

use palisade_policy::{RateWindow, RuleAction, Scope};
use palisade_store::StoreError;

fn hourly(limit: u32) -> RuleAction {
    RuleAction::RateLimit {
        limit,
        window: "1h".parse::<RateWindow>().unwrap(),
    }
}

#[test]
fn create_list_and_duplicate() {
    let t = common::store();
    common::add_agent(&t.store, "alpha");
    let record = t
        .store
        .create_rule(common::new_rule("limit-posts", hourly(20), Some("alpha")))
        .unwrap();
    assert_eq!(record.action, "rate_limit");
    assert_eq!(record.rate_limit, Some(20));
    assert_eq!(record.rate_window.as_deref(), Some("1h"));
    assert_eq!(record.agent, Some(common::agent("alpha")));
    assert_eq!(record.method, "POST");
    assert_eq!(record.host_pattern, "*.example.com");
    assert_eq!(record.scope, "user");

    let mut org = common::new_rule("org-block", RuleAction::Block, None);
    org.scope = Scope::Org;
    org.priority = 100;
    org.body_contains = Some("DROP TABLE".into());
    org.expires_at_ms = Some(4_000_000_000_000);
    t.store.create_rule(org).unwrap();

    let names: Vec<String> = t
        .store
        .list_rules()
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["org-block", "limit-posts"]);

    let dup = t
        .store
        .create_rule(common::new_rule("org-block", RuleAction::Allow, None))
        .unwrap_err();
    assert!(matches!(dup, StoreError::Duplicate { what: "rule", .. }));
    let ghost = t
        .store
        .create_rule(common::new_rule("x", RuleAction::Allow, Some("ghost")))
        .unwrap_err();
    assert!(matches!(ghost, StoreError::NotFound { what: "agent", .. }));
    assert_eq!(t.store.list_rules().unwrap().len(), 2);
}

#[test]
fn delete_by_name_or_id() {
    let t = common::store();
    let a = t
        .store
        .create_rule(common::new_rule("a", RuleAction::Allow, None))
        .unwrap();
    t.store
        .create_rule(common::new_rule("b", RuleAction::Block, None))
        .unwrap();
    t.store.delete_rule("b").unwrap();
    t.store.delete_rule(&a.id.to_string()).unwrap();
    assert!(t.store.list_rules().unwrap().is_empty());
    let err = t.store.delete_rule("a").unwrap_err();
    assert!(matches!(err, StoreError::NotFound { what: "rule", .. }));
    assert!(matches!(
        t.store.delete_rule("12345"),
        Err(StoreError::NotFound { .. })
    ));
    // A deleted rule's id is never given again: `rules delete 2` typed from an older
    // list must not delete the rule made since.
    let c = t
        .store
        .create_rule(common::new_rule("c", RuleAction::Allow, None))
        .unwrap();
    assert_eq!(c.id, 3);
    assert!(matches!(
        t.store.delete_rule("2"),
        Err(StoreError::NotFound { .. })
    ));
}

#[test]
fn load_policy_round_trips_rules() {
    let t = common::store();
    common::add_agent(&t.store, "alpha");
    let mut limited = common::new_rule("limited", hourly(7), Some("alpha"));
    limited.path = Some(palisade_policy::PathPattern::parse("/v1/*").unwrap());
    limited.body_contains = Some("amount".into());
    t.store.create_rule(limited).unwrap();
    let mut approval = common::new_rule("ask", RuleAction::RequireApproval, None);
    approval.method = palisade_policy::MethodPattern::Any;
    approval.scope = Scope::Org;
    t.store.create_rule(approval).unwrap();

    let policy = t.store.load_policy().unwrap();
    let rules = policy.rules();
    assert_eq!(rules.len(), 2);
    let limited = rules.iter().find(|r| r.name == "limited").unwrap();
    assert_eq!(limited.action, hourly(7));
    assert_eq!(limited.agent, Some(common::agent("alpha")));
    assert_eq!(limited.path.as_ref().map(|p| p.as_str()), Some("/v1/*"));
    assert_eq!(limited.body_contains.as_deref(), Some("amount"));
    assert_eq!(limited.scope, Scope::User);
    let ask = rules.iter().find(|r| r.name == "ask").unwrap();
    assert_eq!(ask.action, RuleAction::RequireApproval);
    assert_eq!(ask.method, palisade_policy::MethodPattern::Any);
    assert_eq!(ask.scope, Scope::Org);
}

#[test]
fn empty_names_are_refused() {
    let t = common::store();
    for name in ["", "  ", " padded", "line\nbreak"] {
        let err = t
            .store
            .create_rule(common::new_rule(name, RuleAction::Allow, None))
            .unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{name:?}: {err}");
    }
}

#[test]
fn edit_disable_and_enable_keep_the_rule_and_are_audited() {
    let t = common::store();
    common::add_agent(&t.store, "alpha");
    let created = t
        .store
        .create_rule(common::new_rule("limit", hourly(20), None))
        .unwrap();
    assert!(created.enabled);
    t.store
        .create_rule(common::new_rule("taken", RuleAction::Allow, None))
        .unwrap();

    let mut changed = common::new_rule("limit-alpha", RuleAction::Block, Some("alpha"));
    changed.priority = 9;
    let updated = t.store.update_rule("limit", changed).unwrap();
    assert_eq!(updated.id, created.id);
    assert_eq!(updated.name, "limit-alpha");
    assert_eq!(updated.action, "block");
    assert_eq!(updated.rate_limit, None);
    assert_eq!(updated.agent, Some(common::agent("alpha")));
    let clash = t
        .store
        .update_rule(
            "limit-alpha",
            common::new_rule("taken", RuleAction::Block, None),
        )
        .unwrap_err();
    assert!(matches!(clash, StoreError::Duplicate { .. }), "{clash}");

    let policy = |store: &palisade_store::Store| {
        store
            .load_policy()
            .unwrap()
            .rules()
            .iter()
            .map(|r| r.name.clone())
            .collect::<Vec<_>>()
    };
    assert!(policy(&t.store).contains(&"limit-alpha".to_string()));
    let disabled = t.store.set_rule_enabled("limit-alpha", false).unwrap();
    assert!(!disabled.enabled);
    assert!(!policy(&t.store).contains(&"limit-alpha".to_string()));
    assert_eq!(
        t.store.list_rules().unwrap().len(),
        2,
        "a disabled rule is kept"
    );
    // Disabling again changes nothing and writes no row.
    t.store
        .set_rule_enabled(&created.id.to_string(), false)
        .unwrap();
    t.store.set_rule_enabled("limit-alpha", true).unwrap();
    assert!(policy(&t.store).contains(&"limit-alpha".to_string()));

    let events: Vec<String> = t
        .store
        .list_audit(&palisade_store::AuditFilter::default())
        .unwrap()
        .into_iter()
        .map(|row| row.entry.event)
        .filter(|event| event.starts_with("rule."))
        .collect();
    assert_eq!(
        events,
        [
            "rule.enable",
            "rule.disable",
            "rule.update",
            "rule.create",
            "rule.create"
        ]
    );
}

/// A person's grant keeps its name: renamed, it would be an ordinary allow rule that
/// decides before the rules below it (its name is what keeps it to answering its hold).
#[test]
fn a_grant_keeps_its_name() {
    let t = common::store();
    common::add_agent(&t.store, "bot");
    let mut grant = common::new_rule("always-allowed-apr_x", RuleAction::Allow, Some("bot"));
    t.store.create_rule(grant.clone()).unwrap();
    grant.name = "plain-allow".into();
    let refused = t
        .store
        .update_rule("always-allowed-apr_x", grant)
        .unwrap_err()
        .to_string();
    assert!(refused.contains("keeps its name"), "{refused}");
    assert!(t.store.list_rules().unwrap()[0]
        .name
        .starts_with("always-allowed-"));
}

/// A hold edited, or enabled again, after a person's grant was made is newer than the
/// grant (it takes the next id, as a new rule would), so the grant does not answer it:
/// a grant answers only holds older than itself. (Kept its id, an old hold edited into
/// a new approval gate was answered by an earlier grant.) Other rules keep their id.
#[test]
fn a_hold_edited_or_enabled_again_is_newer_than_every_grant() {
    let t = common::store();
    common::add_agent(&t.store, "bot");
    let hold = t
        .store
        .create_rule(common::new_rule("ask", RuleAction::RequireApproval, None))
        .unwrap();
    t.store.set_rule_enabled("ask", false).unwrap();
    let grant = t
        .store
        .create_rule(common::new_rule(
            "always-allowed-apr_x",
            RuleAction::Allow,
            Some("bot"),
        ))
        .unwrap();
    assert!(grant.id > hold.id);
    let enabled = t.store.set_rule_enabled("ask", true).unwrap();
    assert!(enabled.id > grant.id, "{} <= {}", enabled.id, grant.id);
    let mut edited = common::new_rule("ask", RuleAction::RequireApproval, None);
    edited.body_contains = Some("wire".into());
    let newer = t
        .store
        .create_rule(common::new_rule(
            "always-allowed-apr_y",
            RuleAction::Allow,
            Some("bot"),
        ))
        .unwrap();
    let updated = t.store.update_rule("ask", edited).unwrap();
    assert!(updated.id > newer.id, "{} <= {}", updated.id, newer.id);
    assert_eq!(updated.body_contains.as_deref(), Some("wire"));
    // A rate limit keeps its id (its counts are kept by it).
    let limit = t
        .store
        .create_rule(common::new_rule("limit", hourly(5), None))
        .unwrap();
    let mut changed = common::new_rule("limit", hourly(7), None);
    changed.priority = 3;
    assert_eq!(t.store.update_rule("limit", changed).unwrap().id, limit.id);
}
