//! Approvals: creation, the once-only decision, closing, listing.

mod common;

use palisade_store::{ApprovalDecision, ApprovalStatus, NewApproval, Store, StoreError};

fn new_approval(agent: &str, title: &str) -> NewApproval {
    NewApproval {
        kind: "credential_use".into(),
        agent: common::agent(agent),
        title: title.into(),
        lines: vec![
            "POST api.example.com/v1/charges".into(),
            "amount: 12 EUR".into(),
        ],
        detail: "full request detail".into(),
        context: serde_json::json!({ "method": "POST", "host": "api.example.com", "rule": "ask" }),
        expires_at_ms: palisade_store::now_ms() + 600_000,
        holder: None,
        request_key: None,
    }
}

fn decision(approve: bool, approver: &str) -> ApprovalDecision {
    ApprovalDecision {
        approve,
        approver: approver.into(),
        comment: if approve {
            None
        } else {
            Some("not today".into())
        },
        choice: if approve { "once" } else { "deny" }.into(),
        approver_channel: "cli".into(),
        approver_user: approver.into(),
        approver_name: approver.into(),
        grant: None,
    }
}

#[test]
fn create_and_get() {
    let t = common::store();
    common::add_agent(&t.store, "alpha");
    let created = t
        .store
        .create_approval(new_approval("alpha", "Pay"))
        .unwrap();
    let id = created.id.clone();
    assert_eq!(id.len(), 16);
    assert!(id.starts_with("apr_"));
    assert!(id[4..]
        .chars()
        .all(|c| c.is_ascii_lowercase() || ('2'..='7').contains(&c)));
    assert_eq!(created.status, ApprovalStatus::Pending);
    let fetched = t.store.get_approval(&id).unwrap();
    assert_eq!(fetched.lines, created.lines);
    assert_eq!(fetched.context["rule"], "ask");
    assert!(fetched.decided_at_ms.is_none());
    assert!(matches!(
        t.store.get_approval("apr_nope"),
        Err(StoreError::NotFound {
            what: "approval",
            ..
        })
    ));
}

#[test]
fn decide_once() {
    let t = common::store();
    let created = t
        .store
        .create_approval(new_approval("alpha", "Pay"))
        .unwrap();
    let decided = t
        .store
        .decide_approval(&created.id, &decision(false, "slack:U1"))
        .unwrap();
    assert_eq!(decided.status, ApprovalStatus::Denied);
    assert_eq!(decided.approver.as_deref(), Some("slack:U1"));
    assert_eq!(decided.comment.as_deref(), Some("not today"));
    assert!(decided.decided_at_ms.is_some());

    let again = t
        .store
        .decide_approval(&created.id, &decision(true, "web:admin"))
        .unwrap_err();
    assert!(matches!(again, StoreError::AlreadyDecided(_)));
    assert!(matches!(
        t.store.decide_approval("apr_missing", &decision(true, "x")),
        Err(StoreError::NotFound { .. })
    ));

    let rows = t
        .store
        .list_audit(&palisade_store::AuditFilter {
            event: Some("approval.decide".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].entry.actor.as_deref(), Some("slack:U1"));
    assert_eq!(rows[0].entry.decision.as_deref(), Some("denied"));
    assert_eq!(
        rows[0].entry.approval_id.as_deref(),
        Some(created.id.as_str())
    );
}

#[test]
fn racing_approvers_one_wins() {
    let t = common::store();
    let created = t
        .store
        .create_approval(new_approval("alpha", "Pay"))
        .unwrap();
    let wins: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let home = t.home.clone();
                let id = created.id.clone();
                s.spawn(move || {
                    let store = Store::open(&home).unwrap();
                    match store.decide_approval(&id, &decision(i % 2 == 0, &format!("web:{i}"))) {
                        Ok(_) => 1,
                        Err(StoreError::AlreadyDecided(_)) => 0,
                        Err(other) => panic!("{other}"),
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(wins, 1);
    let decide_rows = t
        .store
        .list_audit(&palisade_store::AuditFilter {
            event: Some("approval.decide".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(decide_rows.len(), 1);
}

#[test]
fn close_is_a_noop_after_a_decision() {
    let t = common::store();
    let a = t.store.create_approval(new_approval("alpha", "A")).unwrap();
    let b = t.store.create_approval(new_approval("alpha", "B")).unwrap();
    let closed = t
        .store
        .close_approval(&a.id, ApprovalStatus::TimedOut)
        .unwrap();
    assert_eq!(closed.status, ApprovalStatus::TimedOut);
    assert!(matches!(
        t.store.decide_approval(&a.id, &decision(true, "web:admin")),
        Err(StoreError::AlreadyDecided(_))
    ));
    t.store
        .decide_approval(&b.id, &decision(true, "web:admin"))
        .unwrap();
    let still = t
        .store
        .close_approval(&b.id, ApprovalStatus::Cancelled)
        .unwrap();
    assert_eq!(still.status, ApprovalStatus::Approved);
    assert!(matches!(
        t.store.close_approval(&b.id, ApprovalStatus::Approved),
        Err(StoreError::Invalid(_))
    ));
}

#[test]
fn list_newest_first_and_decided_among() {
    let t = common::store();
    let ids: Vec<String> = (0..5)
        .map(|i| {
            t.store
                .create_approval(new_approval("alpha", &format!("n{i}")))
                .unwrap()
                .id
        })
        .collect();
    t.store
        .decide_approval(&ids[1], &decision(true, "web:admin"))
        .unwrap();
    t.store
        .close_approval(&ids[3], ApprovalStatus::Cancelled)
        .unwrap();

    let all = t.store.list_approvals(None, 100).unwrap();
    let titles: Vec<&str> = all.iter().map(|a| a.title.as_str()).collect();
    assert_eq!(titles, ["n4", "n3", "n2", "n1", "n0"]);
    let pending = t
        .store
        .list_approvals(Some(ApprovalStatus::Pending), 2)
        .unwrap();
    let titles: Vec<&str> = pending.iter().map(|a| a.title.as_str()).collect();
    assert_eq!(titles, ["n4", "n2"]);

    let mut decided: Vec<String> = t
        .store
        .decided_among(&[
            ids[0].clone(),
            ids[1].clone(),
            ids[3].clone(),
            "apr_zzzz".into(),
        ])
        .unwrap()
        .into_iter()
        .map(|a| a.id)
        .collect();
    decided.sort();
    let mut expected = vec![ids[1].clone(), ids[3].clone()];
    expected.sort();
    assert_eq!(decided, expected);
    assert!(t.store.decided_among(&[]).unwrap().is_empty());

    // More ids than one query can bind.
    let many: Vec<String> = (0..1200)
        .map(|i| format!("apr_{i:012}"))
        .chain([ids[1].clone()])
        .collect();
    assert_eq!(t.store.decided_among(&many).unwrap().len(), 1);
}

#[test]
fn deleting_an_agent_or_channel_forgets_its_access_requests_and_pending_approvals() {
    let t = common::store();
    common::add_agent(&t.store, "alpha");
    common::add_channel(&t.store, "tg");
    let access = |agent: &str| {
        let mut request = new_approval(agent, "Access request");
        request.kind = "access_request".into();
        request.request_key = Some(palisade_store::approvals::access_request_key(
            "tg",
            "333",
            &common::agent(agent),
        ));
        t.store.create_approval(request).unwrap()
    };
    // Approved once: asking again finds the same, approved request.
    let first = access("alpha");
    t.store
        .decide_approval(&first.id, &decision(true, "ana"))
        .unwrap();
    assert_eq!(access("alpha").id, first.id);
    let pending = t
        .store
        .create_approval(new_approval("alpha", "Pay"))
        .unwrap();

    // A new agent of the same name inherits neither.
    t.store.delete_agent(&common::agent("alpha")).unwrap();
    common::add_agent(&t.store, "alpha");
    let again = access("alpha");
    assert_ne!(again.id, first.id);
    assert_eq!(again.status, ApprovalStatus::Pending);
    assert_eq!(
        t.store.get_approval(&pending.id).unwrap().status,
        ApprovalStatus::Cancelled
    );

    // Nor a new channel of the same name.
    t.store
        .decide_approval(&again.id, &decision(true, "ana"))
        .unwrap();
    t.store.delete_channel("tg").unwrap();
    common::add_channel(&t.store, "tg");
    let third = access("alpha");
    assert!(third.id != again.id && third.status == ApprovalStatus::Pending);
}

#[test]
fn strangers_waiting_for_access_to_one_agent_are_capped() {
    let t = common::store();
    let alpha = common::add_agent(&t.store, "alpha");
    let key = |user: usize, channel: &str| {
        palisade_store::approvals::access_request_key(channel, &user.to_string(), &alpha)
    };
    for user in 0..3 {
        assert!(t
            .store
            .access_request_allowed(&key(user, "tg"), &alpha, "tg", 3)
            .unwrap());
        let mut request = new_approval("alpha", "Access request");
        request.kind = "access_request".into();
        request.request_key = Some(key(user, "tg"));
        t.store.create_approval(request).unwrap();
    }
    // A fourth stranger waits for nobody; the first asking again finds theirs.
    assert!(!t
        .store
        .access_request_allowed(&key(3, "tg"), &alpha, "tg", 3)
        .unwrap());
    assert!(t
        .store
        .access_request_allowed(&key(0, "tg"), &alpha, "tg", 3)
        .unwrap());
    // Another channel has its own share.
    assert!(t
        .store
        .access_request_allowed(&key(3, "slack"), &alpha, "slack", 3)
        .unwrap());
}
