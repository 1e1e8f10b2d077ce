//! The engine against a real store in a temporary home: who may decide, the first
//! decision wins, choices per kind, grants no wider than the request that expire by
//! themselves (on an injected clock), expiry that fails closed, idempotent requests and
//! requests whose holder died.

use palisade_approvals::{
    ApprovalError, ApprovalKind, ApproverIdentity, Choice, Clock, Engine, Events, Holder,
    ManualClock, NewRequest, Platform, Summary,
};
use palisade_policy::{
    AgentName, CanonicalPath, HostPattern, MethodPattern, PathPattern, Profile, RequestFacts,
    RuleAction, Scope, Verdict,
};
use palisade_store::{ApprovalStatus, AuditFilter, Home, NewChannel, NewRule, Store};
use std::sync::Arc;
use std::time::Duration;

struct World {
    _dir: tempfile::TempDir,
    store: Store,
    clock: Arc<ManualClock>,
    engine: Engine,
}

fn agent(name: &str) -> AgentName {
    AgentName::new(name).unwrap()
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::at(dir.path().join("home"));
    let store = Store::open(&home).unwrap().without_gateway_sync();
    store
        .create_agent(&agent("mailer"), Profile::Research)
        .unwrap();
    store
        .create_rule(NewRule {
            name: "ask-gmail".into(),
            host: HostPattern::parse("gmail.googleapis.com").unwrap(),
            path: Some(PathPattern::parse("/gmail/v1/users/*").unwrap()),
            method: MethodPattern::Any,
            action: RuleAction::RequireApproval,
            agent: None,
            priority: 3,
            expires_at_ms: None,
            body_contains: None,
            scope: Scope::User,
            approval_timeout_ms: None,
        })
        .unwrap();
    store
        .create_channel(NewChannel {
            name: "team".into(),
            platform: "slack".into(),
            settings: serde_json::json!({}),
            credentials: palisade_policy::SecretValue::new("{}".to_string()),
        })
        .unwrap();
    store
        .add_approver(&agent("mailer"), "team", "U_ANA", "Ana")
        .unwrap();
    let clock = Arc::new(ManualClock::new(palisade_store::now_ms()));
    let engine = Engine::new(store.clone(), Events::new()).with_clock(clock.clone());
    World {
        _dir: dir,
        store,
        clock,
        engine,
    }
}

/// A held Gmail send, as the vault records one: on port 443.
fn held_send(world: &World, path: &str) -> String {
    held_send_on(world, path, Some(443))
}

/// A held Gmail send, its context naming `port` if given.
fn held_send_on(world: &World, path: &str, port: Option<u16>) -> String {
    let mut context = serde_json::json!({
        "method": "POST", "host": "gmail.googleapis.com", "path": path, "rule": "ask-gmail",
    });
    if let Some(port) = port {
        context["port"] = port.into();
    }
    held_send_with(world, context)
}

/// A held Gmail send whose recorded facts are `context`.
fn held_send_with(world: &World, context: serde_json::Value) -> String {
    world
        .engine
        .request(NewRequest {
            kind: ApprovalKind::CredentialUse,
            agent: agent("mailer"),
            summary: Summary {
                title: "Send e-mail".into(),
                lines: vec![],
                detail: String::new(),
            },
            context,
            timeout: Duration::from_secs(600),
            holder: Some(Holder::this_process()),
            request_key: None,
        })
        .unwrap()
        .id
}

/// Ana decides `id` with `choice`, which grants a rule: the decision and the rule.
fn granted(
    world: &World,
    id: &str,
    choice: Choice,
) -> (palisade_store::Approval, palisade_store::RuleRecord) {
    let decided = world.engine.decide(id, &ana(), choice, None).unwrap();
    let rule = decided.granted_rule.clone().expect("a grant rule");
    let record = world
        .store
        .list_rules()
        .unwrap()
        .into_iter()
        .find(|r| r.name == rule)
        .unwrap();
    (decided, record)
}

fn verdict(world: &World, path: &str, at_ms: i64) -> &'static str {
    verdict_on(world, path, 443, at_ms)
}

fn verdict_on(world: &World, path: &str, port: u16, at_ms: i64) -> &'static str {
    verdict_of_send(world, path, port, at_ms, None)
}

/// What the policy now says of mailer's POST to Gmail at `path` on `port`, with `body`.
fn verdict_of_send(
    world: &World,
    path: &str,
    port: u16,
    at_ms: i64,
    body: Option<&[u8]>,
) -> &'static str {
    let policy = world.store.load_policy().unwrap();
    let path = CanonicalPath::parse(path).unwrap();
    let name = agent("mailer");
    let facts = RequestFacts {
        agent: &name,
        profile: Profile::Research,
        method: &http::Method::POST,
        opens_stream: false,
        host: "gmail.googleapis.com",
        port,
        path: &path,
        body,
        now_ms: at_ms,
        approvals: palisade_policy::dial::ApprovalFrequency::Never,
        model_call: false,
    };
    match policy.evaluate(&facts).verdict {
        Verdict::Allow => "allow",
        Verdict::RequireApproval { .. } | Verdict::DialApproval { .. } => "ask",
        Verdict::Block { .. } => "block",
        Verdict::DefaultDeny => "deny",
    }
}

fn ana() -> ApproverIdentity {
    ApproverIdentity::chat("team", Platform::Slack, "U_ANA", "whatever Slack says")
}

#[test]
fn only_listed_approvers_count_and_refusals_are_audited() {
    let w = world();
    let id = held_send(&w, "/gmail/v1/users/me/messages/send");
    let mallory = ApproverIdentity::chat("team", Platform::Slack, "U_MALLORY", "Ana");
    let refused = w.engine.decide(&id, &mallory, Choice::Once, None);
    assert!(
        matches!(refused, Err(ApprovalError::NotAnApprover { .. })),
        "{refused:?}"
    );
    // The same user id on another channel is not the listed approver either.
    let elsewhere = ApproverIdentity::chat("other", Platform::Telegram, "U_ANA", "Ana");
    assert!(matches!(
        w.engine.decide(&id, &elsewhere, Choice::Once, None),
        Err(ApprovalError::NotAnApprover { .. })
    ));
    assert_eq!(
        w.store.get_approval(&id).unwrap().status,
        ApprovalStatus::Pending
    );
    let rows = w
        .store
        .list_audit(&AuditFilter {
            event: Some("approval.refused".into()),
            ..AuditFilter::default()
        })
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].entry.approval_id.as_deref(), Some(id.as_str()));

    let decided = w.engine.decide(&id, &ana(), Choice::Once, None).unwrap();
    assert_eq!(decided.status, ApprovalStatus::Approved);
    // The name is the one Ana was listed under, not what the platform sent.
    assert_eq!(decided.approver_name.as_deref(), Some("Ana"));
    assert_eq!(decided.approver.as_deref(), Some("Ana (Slack, team)"));
    assert_eq!(decided.approver_channel.as_deref(), Some("team"));
    assert_eq!(decided.choice.as_deref(), Some("once"));

    // A later click, from anyone, learns who decided.
    match w
        .engine
        .decide(&id, &ApproverIdentity::web(), Choice::Deny, None)
    {
        Err(ApprovalError::AlreadyDecided { by, status, .. }) => {
            assert_eq!(status, ApprovalStatus::Approved);
            assert_eq!(by.as_deref(), Some("Ana (Slack, team)"));
        }
        other => panic!("expected already decided, got {other:?}"),
    }
}

#[test]
fn the_first_of_many_racing_decisions_wins() {
    let w = world();
    let id = held_send(&w, "/gmail/v1/users/me/messages/send");
    let handles: Vec<_> = (0..8)
        .map(|n| {
            let engine = w.engine.clone();
            let id = id.clone();
            std::thread::spawn(move || {
                let who = ApproverIdentity::cli(&format!("user{n}"));
                let choice = if n % 2 == 0 {
                    Choice::Once
                } else {
                    Choice::Deny
                };
                engine.decide(&id, &who, choice, None).is_ok()
            })
        })
        .collect();
    let wins = handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|won| *won)
        .count();
    assert_eq!(wins, 1);
}

/// A request held on one port of a host is granted on that port only: another port
/// is another service, which nobody approved.
#[test]
fn always_allowing_a_request_to_one_port_allows_that_port_only() {
    let w = world();
    let sent = "/gmail/v1/users/me/messages/send";
    let id = held_send_on(&w, sent, Some(8443));
    let (_, record) = granted(&w, &id, Choice::Always);
    assert_eq!(record.host_pattern, "gmail.googleapis.com:8443");
    let now = w.clock.now_ms();
    assert_eq!(verdict_on(&w, sent, 8443, now), "allow");
    assert_eq!(
        verdict_on(&w, sent, 443, now),
        "ask",
        "another port still asks"
    );
}

/// An approval recorded before the vault wrote the port is granted on its URL's port;
/// one whose port cannot be known is granted once only, never for every port.
#[test]
fn a_grant_without_a_recorded_port_takes_its_urls_or_none() {
    let w = world();
    let sent = "/gmail/v1/users/me/messages/send";
    let with_url = held_send_with(
        &w,
        serde_json::json!({
            "method": "POST", "host": "gmail.googleapis.com", "path": sent, "rule": "ask-gmail",
            "url": format!("https://gmail.googleapis.com:8443{sent}"),
        }),
    );
    let (_, record) = granted(&w, &with_url, Choice::Always);
    assert_eq!(record.host_pattern, "gmail.googleapis.com:8443");

    let without = held_send_on(&w, "/gmail/v1/users/me/drafts", None);
    let refused = w.engine.decide(&without, &ana(), Choice::Always, None);
    assert!(
        matches!(
            refused,
            Err(palisade_approvals::engine::ApprovalError::ChoiceNotOffered { .. })
        ),
        "{refused:?}"
    );
}

#[test]
fn approve_for_an_hour_grants_exactly_that_request_until_the_hour_is_over() {
    let w = world();
    let sent = "/gmail/v1/users/me/messages/send";
    let other = "/gmail/v1/users/me/drafts";
    let start = w.clock.now_ms();
    assert_eq!(verdict(&w, sent, start), "ask");
    let id = held_send(&w, sent);
    let (_, record) = granted(&w, &id, Choice::ForHour);
    assert_eq!(record.action, "allow");
    assert_eq!(record.host_pattern, "gmail.googleapis.com:443");
    assert_eq!(record.path_pattern.as_deref(), Some(sent));
    assert_eq!(record.method, "POST");
    assert_eq!(record.agent, Some(agent("mailer")));
    assert_eq!(record.expires_at_ms, Some(start + 3_600_000));

    assert_eq!(verdict(&w, sent, start + 1), "allow");
    assert_eq!(
        verdict(&w, other, start + 1),
        "ask",
        "another path still asks"
    );
    w.clock.advance(Duration::from_secs(59 * 60));
    assert_eq!(verdict(&w, sent, w.clock.now_ms()), "allow");
    w.clock.advance(Duration::from_secs(2 * 60));
    assert_eq!(
        verdict(&w, sent, w.clock.now_ms()),
        "ask",
        "the grant expired by itself"
    );
}

#[test]
fn always_allow_creates_a_visible_revocable_rule_for_that_path_only() {
    let w = world();
    let sent = "/gmail/v1/users/me/messages/send";
    let id = held_send(&w, sent);
    let decided = w.engine.decide(&id, &ana(), Choice::Always, None).unwrap();
    let rule = decided.granted_rule.unwrap();
    let now = w.clock.now_ms();
    assert_eq!(verdict(&w, sent, now + 365 * 24 * 3_600_000), "allow");
    assert_eq!(
        verdict(&w, "/gmail/v1/users/me/messages/send/x", now),
        "ask"
    );
    w.store.delete_rule(&rule).unwrap();
    assert_eq!(
        verdict(&w, sent, now),
        "ask",
        "revoking the rule asks again"
    );
}

#[test]
fn a_grant_is_never_for_more_methods_than_the_request_used() {
    let w = world();
    let sent = "/gmail/v1/users/me/messages/send";
    // `ANY` and `*` are valid method tokens a client can send; as a rule's method they
    // would mean every method.
    for method in ["ANY", "*", "any", "get"] {
        for choice in [Choice::Always, Choice::ForHour] {
            let id = w
                .engine
                .request(NewRequest {
                    kind: ApprovalKind::CredentialUse,
                    agent: agent("mailer"),
                    summary: Summary {
                        title: format!("{method} {sent}"),
                        lines: vec![],
                        detail: String::new(),
                    },
                    context: serde_json::json!({
                        "method": method, "host": "gmail.googleapis.com", "path": sent, "rule": "ask-gmail",
                    }),
                    timeout: Duration::from_secs(600),
                    holder: Some(Holder::this_process()),
                    request_key: None,
                })
                .unwrap()
                .id;
            let refused = w.engine.decide(&id, &ana(), choice, None);
            assert!(
                matches!(refused, Err(ApprovalError::ChoiceNotOffered { .. })),
                "{method} {choice:?}: {refused:?}"
            );
            w.engine.decide(&id, &ana(), Choice::Once, None).unwrap();
        }
    }
    assert!(
        w.store
            .list_rules()
            .unwrap()
            .iter()
            .all(|rule| rule.action != "allow"),
        "a grant was made"
    );
    assert_eq!(verdict(&w, sent, w.clock.now_ms()), "ask");
    // A standard method is granted as exactly that method.
    let id = held_send(&w, sent);
    let decided = w.engine.decide(&id, &ana(), Choice::Always, None).unwrap();
    let name = decided.granted_rule.unwrap();
    let rules = w.store.list_rules().unwrap();
    let rule = rules.iter().find(|r| r.name == name).unwrap();
    assert_eq!(rule.method, "POST");
}

#[test]
fn grants_are_refused_when_they_would_be_wider_than_the_request() {
    let w = world();
    let id = held_send(&w, "/gmail/v1/users/*/x");
    let refused = w.engine.decide(&id, &ana(), Choice::Always, None);
    assert!(
        matches!(refused, Err(ApprovalError::ChoiceNotOffered { .. })),
        "{refused:?}"
    );
    assert_eq!(
        w.store.get_approval(&id).unwrap().status,
        ApprovalStatus::Pending
    );
    // Tool actions are decided one at a time.
    let action = w
        .engine
        .request(NewRequest {
            kind: ApprovalKind::ToolAction,
            agent: agent("mailer"),
            summary: Summary {
                title: "Delete the old backups".into(),
                lines: vec![],
                detail: String::new(),
            },
            context: serde_json::json!({}),
            timeout: Duration::from_secs(60),
            holder: None,
            request_key: Some("mailer:1:abc".into()),
        })
        .unwrap();
    assert!(matches!(
        w.engine.decide(&action.id, &ana(), Choice::ForHour, None),
        Err(ApprovalError::ChoiceNotOffered { .. })
    ));
    let denied = w
        .engine
        .decide(
            &action.id,
            &ana(),
            Choice::Deny,
            Some("  not the backups\u{202e}  "),
        )
        .unwrap();
    assert_eq!(denied.comment.as_deref(), Some("not the backups"));
}

#[test]
fn requests_with_a_key_are_found_again_and_expiry_fails_closed() {
    let w = world();
    let ask = |key: &str, timeout: Duration| {
        w.engine
            .request(NewRequest {
                kind: ApprovalKind::ToolAction,
                agent: agent("mailer"),
                summary: Summary {
                    title: "Wire money".into(),
                    lines: vec![],
                    detail: String::new(),
                },
                context: serde_json::json!({}),
                timeout,
                holder: None,
                request_key: Some(key.into()),
            })
            .unwrap()
    };
    let first = ask("k1", Duration::from_secs(600));
    assert_eq!(ask("k1", Duration::from_secs(600)).id, first.id);
    assert_ne!(ask("k2", Duration::from_secs(600)).id, first.id);

    let short = ask("k3", Duration::from_millis(1));
    std::thread::sleep(Duration::from_millis(5));
    w.clock.advance(Duration::from_secs(1));
    // Deciding after the expiry is refused and closes it as timed out.
    assert!(matches!(
        w.engine.decide(&short.id, &ana(), Choice::Once, None),
        Err(ApprovalError::Expired(_))
    ));
    assert_eq!(
        w.store.get_approval(&short.id).unwrap().status,
        ApprovalStatus::TimedOut
    );
    w.clock.advance(Duration::from_secs(3600));
    let expired = w.engine.expire_overdue().unwrap();
    assert_eq!(
        expired.len(),
        2,
        "every pending approval past its expiry is closed"
    );
}

#[test]
fn requests_whose_holder_died_are_cancelled() {
    let w = world();
    let live = held_send(&w, "/gmail/v1/users/me/messages/send");
    let dead = w
        .engine
        .request(NewRequest {
            kind: ApprovalKind::CredentialUse,
            agent: agent("mailer"),
            summary: Summary {
                title: "x".into(),
                lines: vec![],
                detail: String::new(),
            },
            context: serde_json::json!({}),
            timeout: Duration::from_secs(600),
            holder: None,
            request_key: None,
        })
        .unwrap();
    // A holder that is not this process's start time: a crashed gateway's pid reused.
    let me = Holder::this_process();
    let (pid, start) = me.as_str().split_once('@').unwrap();
    let stale = format!("{pid}@{}", start.parse::<u64>().unwrap() + 7);
    let orphan = w
        .engine
        .request(NewRequest {
            kind: ApprovalKind::CredentialUse,
            agent: agent("mailer"),
            summary: Summary {
                title: "y".into(),
                lines: vec![],
                detail: String::new(),
            },
            context: serde_json::json!({}),
            timeout: Duration::from_secs(600),
            holder: Some(Holder::recorded(&stale)),
            request_key: None,
        })
        .unwrap();
    let cancelled = w.engine.cancel_orphaned_holds().unwrap();
    assert_eq!(cancelled.len(), 1, "only the request whose holder is gone");
    assert_eq!(cancelled[0].id, orphan.id);
    assert_eq!(cancelled[0].status, ApprovalStatus::Cancelled);
    assert_eq!(
        w.store.get_approval(&dead.id).unwrap().status,
        ApprovalStatus::Pending
    );
    assert_eq!(
        w.store.get_approval(&live).unwrap().status,
        ApprovalStatus::Pending
    );
}

/// "Always" and "for 1 h" answer the hold of the request they name, and nothing else:
/// a block rule of the same layer that stops some of its bodies still stops them after
/// the grant (as an ordinary allow rule one above the holding rule, the grant was
/// evaluated before that block and disabled it with one click).
#[test]
fn a_grant_answers_a_hold_and_never_passes_a_block() {
    let w = world();
    let sent = "/gmail/v1/users/me/messages/send";
    w.store
        .create_rule(NewRule {
            name: "no-mail-to-attacker".into(),
            host: HostPattern::parse("gmail.googleapis.com").unwrap(),
            path: Some(PathPattern::parse("/gmail/v1/users/*/messages/send").unwrap()),
            method: MethodPattern::parse("POST").unwrap(),
            action: RuleAction::Block,
            agent: None,
            priority: 3,
            expires_at_ms: None,
            body_contains: Some("attacker@evil.example".into()),
            scope: Scope::User,
            approval_timeout_ms: None,
        })
        .unwrap();
    let id = held_send(&w, sent);
    granted(&w, &id, Choice::Always);
    let now = w.clock.now_ms();
    let with_body = |body: &[u8]| verdict_of_send(&w, sent, 443, now, Some(body));
    assert_eq!(
        with_body(b"to=bob@example.com"),
        "allow",
        "the grant answers"
    );
    assert_eq!(
        with_body(b"to=attacker@evil.example"),
        "block",
        "the block still stops what it stopped"
    );
}
