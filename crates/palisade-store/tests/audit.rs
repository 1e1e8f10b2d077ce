//! The audit chain: appends, listing with filters, and tamper detection.

mod common;

use palisade_store::{AuditEntry, AuditFilter, Store};

fn request(agent: &str, host: &str, decision: &str) -> AuditEntry {
    AuditEntry {
        event: "request".into(),
        agent: Some(agent.into()),
        method: Some("GET".into()),
        host: Some(host.into()),
        path: Some("/v1/things".into()),
        decision: Some(decision.into()),
        status: Some(200),
        latency_ms: Some(12.5),
        detail: Some(serde_json::json!({ "b": 1, "a": [true, null, "x"] })),
        ..AuditEntry::default()
    }
}

/// `n` request rows at t = 1000, 2000, ...
fn rows(n: i64) -> Vec<(i64, AuditEntry)> {
    (1..=n)
        .map(|i| {
            let agent = if i % 2 == 0 { "even" } else { "odd" };
            let decision = if i % 3 == 0 { "blocked" } else { "allowed" };
            (
                i * 1000,
                request(agent, &format!("h{}.example.com", i % 4), decision),
            )
        })
        .collect()
}

/// A store with the `n` [`rows`] appended.
fn with_rows(n: i64) -> common::TestStore {
    let t = common::store();
    t.store.append_audit_batch(&rows(n)).unwrap();
    t
}

/// [`with_rows`]`(n)`, then `extra` appended as someone without the key would: its hash
/// computed as palisade does (in a home of its own, over the same rows) and the head
/// moved over it, its signature left as it was. The store, and a raw connection to it.
fn with_forged_end(n: i64, extra: AuditEntry) -> (common::TestStore, rusqlite::Connection) {
    let t = with_rows(n);
    let forged = common::store();
    forged.store.append_audit_batch(&rows(n)).unwrap();
    forged
        .store
        .append_audit_batch(&[((n + 1) * 1000, extra)])
        .unwrap();
    let conn = common::raw(&t.home);
    conn.execute(
        &format!(
            "ATTACH DATABASE '{}' AS forged",
            forged.home.database().display()
        ),
        [],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO audit SELECT * FROM forged.audit WHERE id = ?1",
        [n + 1],
    )
    .unwrap();
    conn.execute_batch(
        "UPDATE audit_head SET last_id = (SELECT last_id FROM forged.audit_head),
             last_hash = (SELECT last_hash FROM forged.audit_head);
         DETACH DATABASE forged;",
    )
    .unwrap();
    (t, conn)
}

fn verify_problem(store: &Store) -> (Option<i64>, String) {
    let report = store.verify_audit().unwrap();
    assert!(!report.ok, "tampering went unnoticed");
    (report.first_bad_id, report.problem.unwrap_or_default())
}

#[test]
fn append_list_and_verify() {
    let t = with_rows(10);
    let id = t
        .store
        .append_audit(&request("odd", "x.example.com", "injected"))
        .unwrap();
    assert_eq!(id, 11);
    let report = t.store.verify_audit().unwrap();
    assert!(report.ok, "{:?}", report.problem);
    assert_eq!(report.rows, 11);

    let rows = t.store.list_audit(&AuditFilter::default()).unwrap();
    assert_eq!(rows.len(), 11);
    assert_eq!(rows[0].id, 11);
    assert_eq!(rows[10].id, 1);
    assert_eq!(rows[10].at_ms, 1000);
    assert_eq!(rows[10].entry.status, Some(200));
    assert_eq!(rows[10].entry.latency_ms, Some(12.5));
    assert_eq!(rows[10].entry.detail.as_ref().unwrap()["a"][2], "x");
    assert_eq!(rows[10].hash.len(), 64);
}

#[test]
fn filters() {
    let t = with_rows(12);
    let ids = |filter: AuditFilter| -> Vec<i64> {
        t.store
            .list_audit(&filter)
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect()
    };
    assert_eq!(
        ids(AuditFilter {
            agent: Some("even".into()),
            limit: Some(3),
            ..Default::default()
        }),
        [12, 10, 8]
    );
    assert_eq!(
        ids(AuditFilter {
            decision: Some("blocked".into()),
            ..Default::default()
        }),
        [12, 9, 6, 3]
    );
    assert_eq!(
        ids(AuditFilter {
            host: Some("h1.example.com".into()),
            ..Default::default()
        }),
        [9, 5, 1]
    );
    assert_eq!(
        ids(AuditFilter {
            since_ms: Some(10_000),
            ..Default::default()
        }),
        [12, 11, 10]
    );
    assert_eq!(
        ids(AuditFilter {
            before_id: Some(3),
            ..Default::default()
        }),
        [2, 1]
    );
    assert_eq!(
        ids(AuditFilter {
            event: Some("request".into()),
            agent: Some("odd".into()),
            decision: Some("blocked".into()),
            before_id: Some(9),
            ..Default::default()
        }),
        [3]
    );
    assert!(ids(AuditFilter {
        event: Some("nothing".into()),
        ..Default::default()
    })
    .is_empty());
    assert_eq!(
        ids(AuditFilter {
            since_ms: Some(4_000),
            until_ms: Some(7_000),
            ..Default::default()
        }),
        [6, 5, 4]
    );
    // Text search spans the columns, ignores ASCII case, and treats `%`/`_` literally.
    assert_eq!(
        ids(AuditFilter {
            text: Some("H1.EXAMPLE".into()),
            ..Default::default()
        }),
        [9, 5, 1]
    );
    assert_eq!(
        ids(AuditFilter {
            text: Some("blocked".into()),
            agent: Some("even".into()),
            ..Default::default()
        }),
        [12, 6]
    );
    for literal in ["%", "h_.example"] {
        assert!(
            ids(AuditFilter {
                text: Some(literal.into()),
                ..Default::default()
            })
            .is_empty(),
            "{literal} matched as a wildcard"
        );
    }
}

#[test]
fn edited_middle_row_is_detected() {
    let t = with_rows(10);
    common::raw(&t.home)
        .execute("UPDATE audit SET decision = 'allowed' WHERE id = 6", [])
        .unwrap();
    let (id, problem) = verify_problem(&t.store);
    assert_eq!(id, Some(6));
    assert!(problem.contains("edited"), "{problem}");
}

#[test]
fn edited_detail_and_number_are_detected() {
    let t = with_rows(10);
    common::raw(&t.home)
        .execute("UPDATE audit SET latency_ms = 1.0 WHERE id = 4", [])
        .unwrap();
    assert_eq!(verify_problem(&t.store).0, Some(4));

    let t = with_rows(10);
    common::raw(&t.home)
        .execute(
            "UPDATE audit SET detail = '{\"a\":[true,null,\"y\"],\"b\":1}' WHERE id = 2",
            [],
        )
        .unwrap();
    assert_eq!(verify_problem(&t.store).0, Some(2));

    let t = with_rows(10);
    common::raw(&t.home)
        .execute("UPDATE audit SET status = 'two hundred' WHERE id = 7", [])
        .unwrap();
    assert_eq!(verify_problem(&t.store).0, Some(7));
}

#[test]
fn edited_and_rechained_row_breaks_the_next_link() {
    let t = with_rows(10);
    let conn = common::raw(&t.home);
    // Forge row 5's hash to match its new content; row 6 still points at the old hash.
    conn.execute(
        "UPDATE audit SET hash = 'f' || substr(hash, 2) WHERE id = 5",
        [],
    )
    .unwrap();
    let (id, _) = verify_problem(&t.store);
    assert_eq!(id, Some(5));
}

#[test]
fn edited_hash_is_detected() {
    let t = with_rows(10);
    common::raw(&t.home)
        .execute(
            "UPDATE audit SET hash = '0000000000000000000000000000000000000000000000000000000000000001' WHERE id = 3",
            [],
        )
        .unwrap();
    let (id, problem) = verify_problem(&t.store);
    assert_eq!(id, Some(3));
    assert!(!problem.is_empty());
}

#[test]
fn deleted_middle_row_is_detected() {
    let t = with_rows(10);
    common::raw(&t.home)
        .execute("DELETE FROM audit WHERE id = 5", [])
        .unwrap();
    let (id, problem) = verify_problem(&t.store);
    assert_eq!(id, Some(6));
    assert!(problem.contains("missing"), "{problem}");
}

#[test]
fn deleted_first_row_is_detected() {
    let t = with_rows(3);
    common::raw(&t.home)
        .execute("DELETE FROM audit WHERE id = 1", [])
        .unwrap();
    assert_eq!(verify_problem(&t.store).0, Some(2));
}

#[test]
fn truncated_tail_is_detected() {
    let t = with_rows(10);
    common::raw(&t.home)
        .execute("DELETE FROM audit WHERE id >= 9", [])
        .unwrap();
    let (id, problem) = verify_problem(&t.store);
    assert_eq!(id, Some(9));
    assert!(problem.contains("end"), "{problem}");

    // Appending afterwards does not paper over the gap.
    t.store
        .append_audit(&request("odd", "h", "allowed"))
        .unwrap();
    assert!(!t.store.verify_audit().unwrap().ok);
}

/// A log of 10 rows cut back to its first `kept`, as an attacker who kept the head
/// record (hash and signature) from when the log ended there would leave it, the head
/// record not yet put back: the store, a raw connection, and that hash and signature.
fn cut_after_signed_head(kept: i64) -> (common::TestStore, rusqlite::Connection, (String, String)) {
    let t = with_rows(kept);
    let conn = common::raw(&t.home);
    let signed: (String, String) = conn
        .query_row(
            "SELECT last_hash, head_mac FROM audit_head WHERE id = 1",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    let later: Vec<_> = (kept + 1..=10)
        .map(|i| (i * 1000, request("odd", "h", "allowed")))
        .collect();
    t.store.append_audit_batch(&later).unwrap();
    conn.execute("DELETE FROM audit WHERE id > ?1", [kept])
        .unwrap();
    (t, conn, signed)
}

/// Deleting the newest rows and moving the head back to the new last row leaves a
/// chain that is consistent in itself; the anchor outside the database still knows
/// how far the log went.
#[test]
fn tail_deleted_with_the_head_rewritten_is_detected() {
    let (t, conn, (hash, mac)) = cut_after_signed_head(7);
    // Moved back without the signature: the end is not signed.
    conn.execute("UPDATE audit_head SET last_id = 7, last_hash = ?1", [&hash])
        .unwrap();
    let (_, problem) = verify_problem(&t.store);
    assert!(
        problem.contains("does not carry this home's signature"),
        "{problem}"
    );
    // Moved back with the old signature: the anchor knows how far the log went.
    conn.execute("UPDATE audit_head SET head_mac = ?1", [&mac])
        .unwrap();
    let (id, problem) = verify_problem(&t.store);
    assert_eq!(id, Some(8));
    assert!(problem.contains("anchor records row 10"), "{problem}");
}

/// Rows added at the end with their hashes computed as palisade does (the chain's
/// hash is unkeyed) and the head moved over them are not palisade's: the head's
/// signature says so, and later writes do not sign them over (they did: the next row
/// extended the forged end and signed it, and the anchor moved on).
#[test]
fn rows_added_at_the_end_without_the_key_are_detected() {
    let forged_approval = AuditEntry {
        event: "approval.decide".into(),
        actor: Some("cli:alice".into()),
        decision: Some("approved".into()),
        ..AuditEntry::default()
    };
    let (t, conn) = with_forged_end(4, forged_approval);
    let (_, problem) = verify_problem(&t.store);
    assert!(
        problem.contains("does not carry this home's signature"),
        "{problem}"
    );
    for _ in 0..3 {
        t.store
            .append_audit(&request("odd", "h", "allowed"))
            .unwrap();
    }
    let (_, problem) = verify_problem(&t.store);
    assert!(
        problem.contains("does not carry this home's signature"),
        "{problem}"
    );
    // The writes marked the anchor (it moved on past an unsigned end), so asking for
    // the signing migration again signs nothing: the anchor no longer vouches.
    conn.execute_batch(
        "ALTER TABLE audit_head DROP COLUMN head_mac;
         ALTER TABLE sessions DROP COLUMN reset_after_message; ALTER TABLE secret_grants DROP COLUMN mac;
         PRAGMA user_version = 9;",
    )
    .unwrap();
    let reopened = Store::open(&t.home).unwrap();
    assert!(
        !reopened.verify_audit().unwrap().ok,
        "the forged row was signed"
    );
}

/// Writers in several handles (processes, in production) move the one anchor file in
/// place, each under its lock: it never goes backwards and ends at the last row,
/// whoever wrote it; an anchor longer than a record (written by hand, or by another
/// version) is replaced whole.
#[test]
fn concurrent_writers_leave_one_whole_anchor_at_the_end() {
    let t = common::store();
    let anchor = t.home.audit_anchor();
    // A valid anchor longer than a record (as another version might write it).
    let first = std::fs::read_to_string(&anchor).unwrap();
    std::fs::write(&anchor, format!("{:1000}", first.trim_end())).unwrap();
    let writers: Vec<_> = (0..3)
        .map(|writer| {
            let home = t.home.clone();
            std::thread::spawn(move || {
                let store = Store::open(&home).unwrap();
                for i in 0..60 {
                    let batch = vec![(i, request(&format!("w{writer}"), "h", "blocked")); 3];
                    store.append_audit_batch(&batch).unwrap();
                }
            })
        })
        .collect();
    let mut seen = 0;
    while writers.iter().any(|w| !w.is_finished()) {
        if let Ok(text) = std::fs::read_to_string(&anchor) {
            if let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) {
                let id = value["last_id"].as_i64().unwrap();
                assert!(id >= seen, "the anchor went back from {seen} to {id}");
                seen = id;
            }
        }
    }
    for writer in writers {
        writer.join().unwrap();
    }
    let text = std::fs::read_to_string(&anchor).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["last_id"], 3 * 60 * 3);
    assert!(
        text.len() < 1000,
        "the longer old anchor was not cut: {}",
        text.len()
    );
    assert!(t.store.verify_audit().unwrap().ok);
}

/// The anchor itself cannot be moved back without the master key, nor removed unseen.
#[test]
fn an_edited_or_missing_anchor_is_detected() {
    let t = with_rows(5);
    let anchor = t.home.audit_anchor();
    let text = std::fs::read_to_string(&anchor).unwrap();
    let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["last_id"], 5);
    value["last_id"] = 3.into();
    std::fs::write(&anchor, value.to_string()).unwrap();
    let (_, problem) = verify_problem(&t.store);
    assert!(problem.contains("signature"), "{problem}");
    // Writes do not move an anchor that lost its signature: it stays the evidence.
    t.store
        .append_audit(&request("odd", "h", "allowed"))
        .unwrap();
    let (_, problem) = verify_problem(&t.store);
    assert!(problem.contains("signature"), "{problem}");
    std::fs::remove_file(&anchor).unwrap();
    let (_, problem) = verify_problem(&t.store);
    assert!(problem.contains("missing"), "{problem}");
    // Nor do they make a new one: a deleted anchor would come back signed over
    // whatever the log had become.
    t.store
        .append_audit(&request("odd", "h", "allowed"))
        .unwrap();
    let (_, problem) = verify_problem(&t.store);
    assert!(problem.contains("palisade audit anchor"), "{problem}");
    // A person signs the log as it is now.
    let report = t.store.reanchor_audit().unwrap();
    assert!(report.ok && report.rows == 7, "{report:?}");
    assert!(t.store.verify_audit().unwrap().ok);
    t.store
        .append_audit(&request("odd", "h", "allowed"))
        .unwrap();
    assert!(t.store.verify_audit().unwrap().ok);
}

/// Rows deleted from the end with the head moved back stay detected however much is
/// written afterwards: the next write finds the row the anchor named gone and marks it
/// on the anchor for good, so it does not sign the cut log (it did, once the log grew
/// past the row the anchor named).
#[test]
fn a_cut_log_stays_detected_after_more_writes() {
    let (t, conn, (hash, mac)) = cut_after_signed_head(5);
    conn.execute(
        "UPDATE audit_head SET last_id = 5, last_hash = ?1, head_mac = ?2",
        [&hash, &mac],
    )
    .unwrap();
    for _ in 0..8 {
        t.store
            .append_audit(&request("odd", "h", "allowed"))
            .unwrap();
    }
    let (id, problem) = verify_problem(&t.store);
    assert_eq!(id, Some(10), "{problem}");
    assert!(problem.contains("found altered at row 10"), "{problem}");
}

/// The anchor cannot be held back by breaking the row it names for a while: the next
/// write marks that row on the anchor and moves on, so rows written meanwhile that are
/// then cut, with the row mended and an old signed head put back, are still found.
#[test]
fn an_anchor_held_back_by_a_broken_row_still_sees_the_cut() {
    let t = with_rows(5);
    let conn = common::raw(&t.home);
    let (hash, head_hash, mac): (String, String, String) = conn
        .query_row(
            "SELECT a.hash, h.last_hash, h.head_mac FROM audit a, audit_head h WHERE a.id = 5",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .unwrap();
    conn.execute("UPDATE audit SET hash = 'x' WHERE id = 5", [])
        .unwrap();
    for _ in 0..2 {
        t.store
            .append_audit(&request("odd", "h", "allowed"))
            .unwrap();
    }
    conn.execute_batch("DELETE FROM audit WHERE id > 5")
        .unwrap();
    conn.execute("UPDATE audit SET hash = ?1 WHERE id = 5", [&hash])
        .unwrap();
    conn.execute(
        "UPDATE audit_head SET last_id = 5, last_hash = ?1, head_mac = ?2",
        [&head_hash, &mac],
    )
    .unwrap();
    let (_, problem) = verify_problem(&t.store);
    assert!(problem.contains("found altered at row 5"), "{problem}");
    // A person signs the log anew; the mark goes with it.
    assert!(t.store.reanchor_audit().unwrap().ok);
    assert!(t.store.verify_audit().unwrap().ok);
}

/// The same rows written into two logs, one with row 2 changed: a log whose rows are
/// replaced by the other's from row 2 on is a consistent chain that someone without
/// the key re-chained; its anchor no longer matches, and later writes keep it so.
#[test]
fn a_rechained_log_stays_detected_after_more_writes() {
    let batch = |changed: bool| -> Vec<(i64, AuditEntry)> {
        (1..=4)
            .map(|i| {
                let decision = if changed && i == 2 {
                    "blocked"
                } else {
                    "injected"
                };
                (i * 1000, request("odd", "api.example.com", decision))
            })
            .collect()
    };
    let t = common::store();
    t.store.append_audit_batch(&batch(false)).unwrap();
    let forged = common::store();
    forged.store.append_audit_batch(&batch(true)).unwrap();
    let conn = common::raw(&t.home);
    conn.execute(
        &format!(
            "ATTACH DATABASE '{}' AS forged",
            forged.home.database().display()
        ),
        [],
    )
    .unwrap();
    conn.execute_batch(
        "DELETE FROM audit WHERE id >= 2;
         INSERT INTO audit SELECT * FROM forged.audit WHERE id >= 2;
         UPDATE audit_head SET last_hash = (SELECT last_hash FROM forged.audit_head);",
    )
    .unwrap();
    // The end is not signed (the head was moved without the key) and the anchored row
    // no longer has its hash; either is reported, and stays so after more writes.
    for round in 0..2 {
        let (_, problem) = verify_problem(&t.store);
        assert!(
            problem.contains("does not carry this home's signature")
                || problem.contains("does not have the hash")
                || problem.contains("was found altered"),
            "round {round}: {problem}"
        );
        t.store
            .append_audit(&request("odd", "h", "allowed"))
            .unwrap();
    }
}

/// An anchor saved before a pruning and put back afterwards names a row before the
/// log's start: it cannot say where the log ended, so it is reported, not trusted.
#[test]
fn an_anchor_older_than_the_logs_start_is_reported() {
    let t = with_rows(3);
    let old = std::fs::read(t.home.audit_anchor()).unwrap();
    let later: Vec<_> = (4..=10)
        .map(|i| (i * 1000, request("odd", "h", "allowed")))
        .collect();
    t.store.append_audit_batch(&later).unwrap();
    let pruned = t.store.prune_audit(7000).unwrap();
    assert_eq!(pruned.first_id, 7);
    assert!(t.store.verify_audit().unwrap().ok);
    std::fs::write(t.home.audit_anchor(), old).unwrap();
    let (_, problem) = verify_problem(&t.store);
    assert!(problem.contains("before the log's start"), "{problem}");
}

/// The anchor is never written through a link: a link planted in its place is left
/// pointing at a file that stays as it was (here a copy of the anchor itself, which a
/// write through the link would have moved on).
#[test]
fn the_anchor_is_not_written_through_a_link() {
    let t = with_rows(2);
    let anchor = t.home.audit_anchor();
    let victim = t.dir.path().join("victim.txt");
    let before = std::fs::read_to_string(&anchor).unwrap();
    std::fs::write(&victim, &before).unwrap();
    std::fs::remove_file(&anchor).unwrap();
    std::os::unix::fs::symlink(&victim, &anchor).unwrap();
    t.store
        .append_audit(&request("odd", "h", "allowed"))
        .unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), before);
    assert!(!t.store.verify_audit().unwrap().ok);
    // Signing anew replaces the link, not what it points at.
    assert!(t.store.reanchor_audit().unwrap().ok);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), before);
    assert!(!std::fs::symlink_metadata(&anchor).unwrap().is_symlink());
    assert!(t.store.verify_audit().unwrap().ok);
}

/// A row rewritten and re-chained from there to a new head (everything consistent
/// inside the database) no longer has the hash the anchor signed.
#[test]
fn a_rechained_log_is_detected_by_its_anchor() {
    let t = with_rows(3);
    let conn = common::raw(&t.home);
    conn.execute("UPDATE audit SET hash = 'forged' WHERE id = 3", [])
        .unwrap();
    conn.execute("UPDATE audit_head SET last_hash = 'forged'", [])
        .unwrap();
    assert!(!t.store.verify_audit().unwrap().ok);
}

#[test]
fn everything_deleted_is_detected() {
    let t = with_rows(4);
    common::raw(&t.home)
        .execute("DELETE FROM audit", [])
        .unwrap();
    assert_eq!(verify_problem(&t.store).0, Some(1));
}

#[test]
fn rows_added_behind_the_head_are_detected() {
    let t = with_rows(2);
    common::raw(&t.home)
        .execute(
            "INSERT INTO audit (id, at_ms, event, prev_hash, hash) VALUES (3, 1, 'forged', 'x', 'y')",
            [],
        )
        .unwrap();
    let (id, _) = verify_problem(&t.store);
    assert_eq!(id, Some(3));
}

#[test]
fn empty_log_verifies() {
    let t = common::store();
    let report = t.store.verify_audit().unwrap();
    assert!(report.ok);
    assert_eq!(report.rows, 0);
    // A new home is anchored from the start, so a log emptied later is not taken
    // for a new one.
    let anchor = std::fs::read_to_string(t.home.audit_anchor()).unwrap();
    assert!(anchor.contains("\"last_id\":0"), "{anchor}");
}

#[test]
fn concurrent_writers_keep_one_chain() {
    let t = common::store();
    std::thread::scope(|s| {
        for i in 0..6 {
            let home = t.home.clone();
            s.spawn(move || {
                let store = Store::open(&home).unwrap();
                for j in 0..20 {
                    if j % 5 == 0 {
                        let batch: Vec<_> = (0..3)
                            .map(|k| (k, request(&format!("w{i}"), "h", "allowed")))
                            .collect();
                        store.append_audit_batch(&batch).unwrap();
                    } else {
                        store
                            .append_audit(&request(&format!("w{i}"), "h", "allowed"))
                            .unwrap();
                    }
                }
            });
        }
    });
    let report = t.store.verify_audit().unwrap();
    assert!(report.ok, "{:?}", report.problem);
    assert_eq!(report.rows, 6 * (16 + 4 * 3));
}

#[test]
fn mutations_are_audited_with_the_actor() {
    let t = common::store();
    let web = t.store.with_actor("web:admin");
    common::add_agent(&web, "alpha");
    common::add_agent(&t.store, "beta");
    let rows = t.store.list_audit(&AuditFilter::default()).unwrap();
    assert_eq!(rows[0].entry.actor.as_deref(), Some("cli"));
    assert_eq!(rows[1].entry.actor.as_deref(), Some("web:admin"));
    assert_eq!(rows[1].entry.event, "agent.create");
    assert_eq!(rows[1].entry.agent.as_deref(), Some("alpha"));
}

#[test]
fn rewritten_head_is_detected() {
    let t = with_rows(3);
    common::raw(&t.home)
        .execute("UPDATE audit_head SET last_hash = 'abc'", [])
        .unwrap();
    assert_eq!(verify_problem(&t.store).0, Some(3));
}

#[test]
fn non_finite_latency_is_stored_as_absent() {
    let t = common::store();
    let mut entry = request("odd", "h", "allowed");
    entry.latency_ms = Some(f64::NAN);
    t.store.append_audit(&entry).unwrap();
    assert!(t.store.verify_audit().unwrap().ok);
    let rows = t.store.list_audit(&AuditFilter::default()).unwrap();
    assert_eq!(rows[0].entry.latency_ms, None);
}

/// Pruning removes the rows before a time from the beginning of the log, records
/// itself as an `audit.prune` row with the actor, and leaves a chain that verifies from
/// its new, signed start; pruning again at the same time removes nothing.
#[test]
fn pruning_keeps_a_verifiable_chain() {
    let t = with_rows(10);
    let store = t.store.with_actor("cli:tester");
    let report = store.prune_audit(5_500).unwrap();
    assert_eq!(
        (report.removed, report.first_id, report.recorded_as),
        (5, 6, Some(11))
    );
    let verified = store.verify_audit().unwrap();
    assert!(verified.ok, "{:?}", verified.problem);
    assert_eq!((verified.rows, verified.starts_at), (6, Some(6)));
    let rows = store
        .list_audit(&AuditFilter {
            limit: Some(100),
            ..AuditFilter::default()
        })
        .unwrap();
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    assert_eq!(ids, [11, 10, 9, 8, 7, 6]);
    let pruned = &rows[0];
    assert_eq!(pruned.entry.event, "audit.prune");
    assert_eq!(pruned.entry.actor.as_deref(), Some("cli:tester"));
    assert_eq!(pruned.entry.detail.as_ref().unwrap()["removes"], 5);

    assert_eq!(store.prune_audit(5_500).unwrap().removed, 0);
    // Everything before now: all rows go, the pruning's own row starts the chain.
    let report = store.prune_audit(palisade_store::now_ms() + 1).unwrap();
    assert_eq!((report.removed, report.first_id), (6, 12));
    let verified = store.verify_audit().unwrap();
    assert!(verified.ok, "{:?}", verified.problem);
    assert_eq!((verified.rows, verified.starts_at), (1, Some(12)));
    // Appends go on from there.
    store.append_audit(&request("odd", "h", "allowed")).unwrap();
    assert!(store.verify_audit().unwrap().ok);
}

/// After a pruning, deleting rows from the new beginning is still detected, and so is
/// moving the start by hand past rows deleted without `audit prune`: the start's
/// signature is made with the master key.
#[test]
fn rows_deleted_from_a_pruned_start_are_detected() {
    let t = with_rows(10);
    t.store.prune_audit(3_500).unwrap();
    let conn = common::raw(&t.home);
    conn.execute("DELETE FROM audit WHERE id = 4", []).unwrap();
    let (id, problem) = verify_problem(&t.store);
    assert_eq!(id, Some(5));
    assert!(problem.contains("rows 4 to 4 are missing"), "{problem}");

    // Moving the start over the gap, with the right hash, is not enough.
    conn.execute(
        "UPDATE audit_head SET first_id = 5, first_prev_hash = \
         (SELECT prev_hash FROM audit WHERE id = 5)",
        [],
    )
    .unwrap();
    let (id, problem) = verify_problem(&t.store);
    assert_eq!(id, Some(5));
    assert!(problem.contains("without a valid signature"), "{problem}");
}

/// A log that fails verification is not pruned: the rows that show the tampering
/// stay.
#[test]
fn a_tampered_log_is_not_pruned() {
    let t = with_rows(10);
    common::raw(&t.home)
        .execute("UPDATE audit SET decision = 'allowed' WHERE id = 3", [])
        .unwrap();
    let error = t.store.prune_audit(8_500).unwrap_err().to_string();
    assert!(error.contains("nothing was pruned"), "{error}");
    let (id, _) = verify_problem(&t.store);
    assert_eq!(id, Some(3));
}

/// A retention prunes what is older than it, recorded as set (`audit.retention`) and
/// as applied (`audit.prune` with the retention); shorter than a day is refused, and
/// turning it off stops the pruning.
#[test]
fn a_retention_prunes_what_is_older_than_it() {
    const DAY_MS: i64 = 24 * 3600 * 1000;
    let t = common::store();
    let store = t.store.with_actor("cli:tester");
    assert_eq!(store.audit_retention().unwrap(), None);
    let now = palisade_store::now_ms();
    // Six rows 40 to 35 days old, then four 10 to 7 days old.
    let entries: Vec<(i64, AuditEntry)> = (0..10)
        .map(|i| {
            let age_days = if i < 6 { 40 - i } else { 10 - (i - 6) };
            (now - age_days * DAY_MS, request("odd", "h", "allowed"))
        })
        .collect();
    store.append_audit_batch(&entries).unwrap();
    // Nothing is set: nothing goes.
    assert!(store.prune_expired_audit(now).unwrap().is_none());

    let error = store
        .set_audit_retention(Some(std::time::Duration::from_secs(3600)))
        .unwrap_err()
        .to_string();
    assert!(error.contains("at least 24 hours"), "{error}");
    let thirty_days = std::time::Duration::from_secs(30 * 24 * 3600);
    let set_as = store.set_audit_retention(Some(thirty_days)).unwrap();
    assert_eq!(set_as, 11);
    assert_eq!(store.audit_retention().unwrap(), Some(thirty_days));

    let report = store.prune_expired_audit(now).unwrap().unwrap();
    assert_eq!((report.removed, report.first_id), (6, 7));
    let verified = store.verify_audit().unwrap();
    assert!(verified.ok, "{:?}", verified.problem);
    assert_eq!(verified.starts_at, Some(7));
    let newest = &store.list_audit(&AuditFilter::default()).unwrap()[0];
    assert_eq!(newest.entry.event, "audit.prune");
    let detail = newest.entry.detail.as_ref().unwrap();
    assert_eq!(detail["keep_ms"], 30 * DAY_MS);
    assert_eq!(detail["removes"], 6);
    // Applied again at once: nothing more is old enough.
    assert_eq!(store.prune_expired_audit(now).unwrap().unwrap().removed, 0);

    store.set_audit_retention(None).unwrap();
    assert_eq!(store.audit_retention().unwrap(), None);
    // A year on, every row is past 30 days; with no retention they stay.
    assert!(store
        .prune_expired_audit(now + 365 * DAY_MS)
        .unwrap()
        .is_none());
    assert_eq!(store.verify_audit().unwrap().starts_at, Some(7));
}

/// The retention setting as the database holds it.
fn retention_setting(conn: &rusqlite::Connection) -> String {
    conn.query_row(
        "SELECT value FROM settings WHERE key = 'audit_retention'",
        [],
        |row| row.get(0),
    )
    .unwrap()
}

/// Writes `value` over the retention setting, as someone with the database could.
fn write_retention_setting(conn: &rusqlite::Connection, value: &str) {
    conn.execute(
        "INSERT OR REPLACE INTO settings (key, value) VALUES ('audit_retention', ?1)",
        [value],
    )
    .unwrap();
}

/// The retention decides what is deleted, so it is used only as palisade wrote it:
/// a value edited in the database, or an earlier setting written back after a later
/// change (its signature was valid once), prunes nothing and says why.
#[test]
fn a_retention_not_written_by_palisade_prunes_nothing() {
    let t = with_rows(10);
    let store = &t.store;
    let day = std::time::Duration::from_secs(24 * 3600);
    store.set_audit_retention(Some(day)).unwrap();
    let conn = common::raw(&t.home);
    let genuine = retention_setting(&conn);
    let refused = |store: &Store| {
        let rows = store.verify_audit().unwrap().rows;
        let error = store
            .prune_expired_audit(palisade_store::now_ms())
            .unwrap_err()
            .to_string();
        assert!(error.contains("not written by palisade"), "{error}");
        assert!(store.audit_retention().is_err());
        let after = store.verify_audit().unwrap();
        assert_eq!((after.rows, after.starts_at), (rows, None));
    };
    // The same signature over a shorter time.
    let edited = genuine.replacen(&format!("{}:", day.as_millis()), "1:", 1);
    assert_ne!(edited, genuine);
    write_retention_setting(&conn, &edited);
    refused(store);

    // A longer retention set later, then the first one written back.
    store.set_audit_retention(Some(day * 365)).unwrap();
    write_retention_setting(&conn, &genuine);
    refused(store);
    // Turned off, then written back: refused too.
    store.set_audit_retention(None).unwrap();
    conn.execute(
        "INSERT INTO settings (key, value) VALUES ('audit_retention', ?1)",
        [&genuine],
    )
    .unwrap();
    refused(store);
}

/// The row of the retention in force is never pruned away: a pruning that reaches it
/// writes it again (the setting signed for the new row), so an earlier setting written
/// back is still told apart once the later one's first row is gone (it was accepted
/// then, and the gateway would have pruned by the shorter retention). Likewise when the
/// later setting was "off" (no setting left, only its row, which was not carried).
#[test]
fn an_earlier_retention_is_refused_after_the_later_ones_row_was_pruned() {
    let day = std::time::Duration::from_secs(24 * 3600);
    for later in [Some(day * 400), None] {
        let t = with_rows(3);
        let store = &t.store;
        store.set_audit_retention(Some(day)).unwrap();
        let conn = common::raw(&t.home);
        let earlier = retention_setting(&conn);
        store.set_audit_retention(later).unwrap();
        // As if 400 days had passed: everything written so far is pruned.
        store
            .prune_audit(palisade_store::now_ms() + 60_000)
            .unwrap();
        assert!(store.verify_audit().unwrap().ok);
        assert_eq!(store.audit_retention().unwrap(), later);
        write_retention_setting(&conn, &earlier);
        let error = store.audit_retention().unwrap_err().to_string();
        assert!(
            error.contains("not written by palisade"),
            "{later:?}: {error}"
        );
        let error = store
            .prune_expired_audit(palisade_store::now_ms())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("not written by palisade"),
            "{later:?}: {error}"
        );
    }
}

/// A large pruning goes in several transactions (so a gateway writing rows meanwhile
/// never waits long for the lock), each leaving a chain that verifies.
#[test]
fn a_large_pruning_goes_in_chunks() {
    let t = with_rows(45_000);
    let report = t.store.prune_audit(41_000_500).unwrap();
    assert_eq!((report.removed, report.first_id), (41_000, 41_001));
    let verified = t.store.verify_audit().unwrap();
    assert!(verified.ok, "{:?}", verified.problem);
    assert_eq!((verified.rows, verified.starts_at), (4_001, Some(41_001)));
}

/// `audit verify` while another process appends (a gateway at work) never reports
/// tampering: it reads the anchor before it takes its snapshot of the database, so the
/// anchor never names a row the snapshot cannot see. (It read the anchor after
/// walking the chain, by when writers had moved it past the snapshot's end: "rows were
/// deleted from the end", and `audit prune` refused to run beside a gateway.)
#[test]
fn verifying_beside_a_writer_finds_no_tampering() {
    let t = with_rows(100_000);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let home = t.home.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let store = Store::open(&home).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                store
                    .append_audit_batch(&[(1, request("w", "h", "allowed"))])
                    .unwrap();
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        })
    };
    let reports: Vec<_> = (0..3).map(|_| t.store.verify_audit().unwrap()).collect();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    for report in reports {
        assert!(report.ok, "{:?}", report.problem);
    }
}

/// A log written before heads were signed gets its head signed by the open that
/// migrates it; an unsigned head found later is reported, not signed (it would be the
/// end someone without the key made).
#[test]
fn a_head_is_signed_by_the_migration_only() {
    let t = with_rows(3);
    let conn = common::raw(&t.home);
    conn.execute_batch(
        "ALTER TABLE audit_head DROP COLUMN head_mac; ALTER TABLE sessions DROP COLUMN reset_after_message; ALTER TABLE secret_grants DROP COLUMN mac;
         PRAGMA user_version = 9;",
    )
    .unwrap();
    drop(conn);
    let reopened = Store::open(&t.home).unwrap();
    assert!(reopened.verify_audit().unwrap().ok);

    common::raw(&t.home)
        .execute("UPDATE audit_head SET head_mac = NULL", [])
        .unwrap();
    let reopened = Store::open(&t.home).unwrap();
    let (_, problem) = verify_problem(&reopened);
    assert!(
        problem.contains("does not carry this home's signature"),
        "{problem}"
    );

    // The "migration" asked for again by someone who can write the database (the column
    // dropped, the version set back) after appending a row of their own: the end is
    // not the one the anchor vouches for, so it is not signed.
    let (t, conn) = with_forged_end(3, request("odd", "forged.example", "allowed"));
    conn.execute_batch(
        "ALTER TABLE audit_head DROP COLUMN head_mac;
         ALTER TABLE sessions DROP COLUMN reset_after_message; ALTER TABLE secret_grants DROP COLUMN mac;
         PRAGMA user_version = 9;",
    )
    .unwrap();
    drop(conn);
    let reopened = Store::open(&t.home).unwrap();
    let (_, problem) = verify_problem(&reopened);
    assert!(
        problem.contains("does not carry this home's signature"),
        "{problem}"
    );
}

/// A database deleted together with its anchor, from a home that keeps its master key,
/// starts a log whose anchor is marked: an older copy of the database put back then
/// (cut to a head signed earlier) does not pass `audit verify` (the new log's anchor at
/// row 0 fitted any log from its start), nor does the new log itself until a person
/// signs it. A brand-new home is not marked.
#[test]
fn a_log_started_again_in_a_home_that_had_one_is_reported() {
    let t = with_rows(5);
    assert!(t.store.verify_audit().unwrap().ok);
    let home = t.home.clone();
    drop(t.store);
    // The home is older than a minute (a key made moments ago is a new home's).
    age_the_key(&home);
    let kept = t.dir.path().join("kept.db");
    std::fs::copy(home.database(), &kept).unwrap();
    remove_the_log(&home);
    let again = Store::open(&home).unwrap();
    let (_, problem) = verify_problem(&again);
    assert!(problem.contains("started again"), "{problem}");
    drop(again);
    for side in ["palisade.db-wal", "palisade.db-shm"] {
        let _ = std::fs::remove_file(home.root().join(side));
    }
    std::fs::copy(&kept, home.database()).unwrap();
    let restored = Store::open(&home).unwrap();
    let (_, problem) = verify_problem(&restored);
    assert!(problem.contains("started again"), "{problem}");
    // The person who removed it says so, and the log is vouched for from then on.
    assert!(restored.reanchor_audit().unwrap().ok);
    assert!(restored.verify_audit().unwrap().ok);
}

/// An index whose contents were rewritten (its text put back, so the schema check finds
/// palisade's own) cannot show `audit verify` an edited row as it was: the chain, the
/// rows pruned and the latest retention row are read from the table itself. (An outside
/// review edited rows' agents and rebuilt `audit_agent` over an expression giving the
/// old ones; verify read them from the index and said intact.)
#[test]
fn an_index_rewritten_to_hide_an_edit_does_not_fool_verify() {
    let t = with_rows(8);
    let home = t.home.clone();
    drop(t.store);
    let conn = common::raw(&home);
    let sql: String = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE name = 'audit_agent'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    conn.execute_batch(&format!(
        "DROP INDEX audit_agent;
         UPDATE audit SET agent = 'forged' WHERE id = 5;
         CREATE INDEX audit_agent ON audit(CASE id WHEN 5 THEN 'odd' ELSE agent END, id);
         PRAGMA writable_schema = ON;
         UPDATE sqlite_master SET sql = '{}' WHERE name = 'audit_agent';
         PRAGMA writable_schema = OFF;
         ANALYZE sqlite_master;
         DELETE FROM sqlite_stat1;
         INSERT INTO sqlite_stat1 VALUES ('audit', 'audit_agent', '100 1 1');",
        sql.replace('\'', "''")
    ))
    .unwrap();
    drop(conn);
    let store = Store::open(&home).unwrap();
    let (bad, problem) = verify_problem(&store);
    assert_eq!(bad, Some(5), "{problem}");
    // Listing reads the rows, not the index: the edited row is the forged agent's.
    let forged = store
        .list_audit(&AuditFilter {
            agent: Some("forged".into()),
            ..AuditFilter::default()
        })
        .unwrap();
    assert_eq!(forged.iter().map(|r| r.id).collect::<Vec<_>>(), [5]);
}

/// The key's age is its file's, through a link: an old key behind a new link made the
/// home look new, and a log started again then went unmarked.
#[test]
fn an_old_key_behind_a_new_link_is_an_old_home() {
    let t = with_rows(3);
    let home = t.home.clone();
    drop(t.store);
    age_the_key(&home);
    let moved = home.root().join("moved.key");
    std::fs::rename(home.master_key(), &moved).unwrap();
    std::os::unix::fs::symlink(&moved, home.master_key()).unwrap();
    remove_the_log(&home);
    let again = Store::open(&home).unwrap();
    let (_, problem) = verify_problem(&again);
    assert!(problem.contains("started again"), "{problem}");
}

/// A FIFO in the anchor's place neither hangs `audit verify` nor a write: it is no
/// anchor, and said so.
#[test]
fn a_fifo_for_an_anchor_hangs_nothing() {
    let t = with_rows(3);
    let anchor = t.home.audit_anchor();
    std::fs::remove_file(&anchor).unwrap();
    nix::unistd::mkfifo(&anchor, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let (done, finished) = std::sync::mpsc::channel();
    let home = t.home.clone();
    std::thread::spawn(move || {
        let store = Store::open(&home).unwrap();
        store.append_audit(&request("odd", "h", "allowed")).unwrap();
        let _ = done.send(store.verify_audit().unwrap());
    });
    let report = finished
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("a write or `audit verify` hung on a FIFO anchor");
    assert!(!report.ok, "{report:?}");
}

/// Makes the home's master key an hour old (a key made moments ago is a new home's).
fn age_the_key(home: &palisade_store::Home) {
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(home.master_key())
        .unwrap()
        .set_modified(old)
        .unwrap();
}

/// Deletes the database (with its write-ahead log) and the anchor, as an attacker could.
fn remove_the_log(home: &palisade_store::Home) {
    for side in [
        "palisade.db",
        "palisade.db-wal",
        "palisade.db-shm",
        "audit.anchor",
    ] {
        let _ = std::fs::remove_file(home.root().join(side));
    }
}

/// The schema is checked again by the first write after it changed: a trigger or a
/// constraint added while palisade runs (the gateway keeps its database open for
/// weeks) made its own inserts vanish or fail, as one there at open would have.
#[test]
fn a_schema_changed_while_palisade_runs_is_refused_at_the_next_write() {
    let audit_sql = |conn: &rusqlite::Connection| -> String {
        conn.query_row(
            "SELECT sql FROM sqlite_master WHERE name = 'audit'",
            [],
            |row| row.get(0),
        )
        .unwrap()
    };
    for change in [
        "CREATE TRIGGER t BEFORE INSERT ON audit WHEN NEW.agent = 'odd' BEGIN SELECT RAISE(IGNORE); END;",
        "CREATE INDEX sly ON audit(agent);",
        // A constraint written into the table's definition, with the database's
        // version set back too (which switched the comparison off).
        "WITH-CHECK",
        "WITH-CHECK-OLD-VERSION",
    ] {
        let t = with_rows(3);
        let conn = common::raw(&t.home);
        if change.starts_with("WITH-CHECK") {
            if change.ends_with("OLD-VERSION") {
                conn.execute_batch("PRAGMA user_version = 10").unwrap();
            }
            // A CHECK fails the insert; a NOT NULL that ignores its conflicts drops it
            // without a word, as the trigger did.
            let sql = match change.ends_with("OLD-VERSION") {
                false => audit_sql(&conn).replace(
                    "hash        TEXT NOT NULL",
                    "hash        TEXT NOT NULL CHECK (agent IS NOT 'odd')",
                ),
                true => audit_sql(&conn).replace(
                    "rule        TEXT,",
                    "rule        TEXT NOT NULL ON CONFLICT IGNORE,",
                ),
            };
            assert_ne!(sql, audit_sql(&conn), "the definition was not changed");
            // With the schema's version moved on, as connections then read it anew.
            let version: i64 = conn
                .query_row("PRAGMA schema_version", [], |row| row.get(0))
                .unwrap();
            conn.execute_batch(&format!(
                "PRAGMA writable_schema = ON;
                 UPDATE sqlite_master SET sql = '{}' WHERE name = 'audit';
                 PRAGMA writable_schema = OFF;
                 PRAGMA schema_version = {};",
                sql.replace('\'', "''"),
                version + 1
            ))
            .unwrap();
        } else {
            conn.execute_batch(change).unwrap();
        }
        let refused = t
            .store
            .append_audit(&request("odd", "h", "allowed"))
            .expect_err(change);
        assert!(refused.is_tampering(), "{change}: {refused}");
        assert!(refused.to_string().contains("outside palisade"), "{refused}");
        let last: i64 = conn
            .query_row("SELECT max(id) FROM audit", [], |row| row.get(0))
            .unwrap();
        assert_eq!(last, 3, "{change}: a row was written");
    }
}

/// A row put where the log's next row goes makes the write fail as tampering (the
/// gateway then keeps its rows and marks the anchor), not as an error like any other.
#[test]
fn a_row_in_the_way_of_the_next_is_tampering_and_marks_the_anchor() {
    let t = with_rows(3);
    let conn = common::raw(&t.home);
    conn.execute(
        "INSERT INTO audit (id, at_ms, event, prev_hash, hash) VALUES (4, 0, 'x', '', '')",
        [],
    )
    .unwrap();
    let refused = t
        .store
        .append_audit(&request("odd", "h", "allowed"))
        .unwrap_err();
    assert!(refused.is_tampering(), "{refused}");
    t.store.mark_audit_altered().unwrap();
    // The row taken away again, the log looks whole; the anchor still says.
    conn.execute("DELETE FROM audit WHERE id = 4", []).unwrap();
    t.store
        .append_audit(&request("odd", "h", "allowed"))
        .unwrap();
    let (bad, problem) = verify_problem(&t.store);
    assert_eq!(bad, Some(4), "{problem}");
    assert!(problem.contains("altered at row 4"), "{problem}");
}

/// Another process holding the anchor's lock (a shared lock needs only read access)
/// hangs neither a write nor `audit verify`; and rows written meanwhile, then cut with
/// the head put back, are found once the anchor can move again.
#[test]
fn an_anchor_held_locked_neither_hangs_nor_hides_a_cut() {
    let t = with_rows(5);
    let conn = common::raw(&t.home);
    let signed = signed_head(&conn);
    let holder = std::fs::File::open(t.home.audit_anchor()).unwrap();
    holder.lock_shared().unwrap();
    let (done, finished) = std::sync::mpsc::channel();
    let home = t.home.clone();
    std::thread::spawn(move || {
        // A gateway's handle: it keeps what it could not anchor (a CLI's refuses to
        // write, below).
        let store = Store::open(&home).unwrap().without_gateway_sync();
        store
            .append_audit(&request("odd", "cut", "injected"))
            .unwrap();
        let _ = done.send(store);
    });
    let writer = finished
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("a write hung on a locked anchor");
    // Row 6 cut, and the head put back as it was signed at row 5.
    cut_back_to_row_5(&conn, &signed);
    drop(holder);
    writer
        .append_audit(&request("odd", "h", "allowed"))
        .unwrap();
    let (bad, problem) = verify_problem(&t.store);
    assert_eq!(bad, Some(6), "{problem}");
    // Held exclusively, verify says so instead of waiting.
    let holder = std::fs::File::open(t.home.audit_anchor()).unwrap();
    holder.lock().unwrap();
    let (done, finished) = std::sync::mpsc::channel();
    let home = t.home.clone();
    std::thread::spawn(move || {
        let _ = done.send(Store::open(&home).unwrap().verify_audit().unwrap());
    });
    let report = finished
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("`audit verify` hung on a locked anchor");
    assert!(
        report.problem.unwrap_or_default().contains("locked"),
        "verify did not say the anchor is locked"
    );
}

/// A process that may end right after its write (the CLI, the web UI) writes nothing
/// while another process holds the anchor locked past the second it waits: a row it
/// committed then, cut with the head put back, went unseen for good, since it ended
/// before it could check what it owed (review, audit round ten).
#[test]
fn a_cli_write_waits_for_the_anchor_or_writes_nothing() {
    let t = with_rows(5);
    let holder = std::fs::File::open(t.home.audit_anchor()).unwrap();
    holder.lock_shared().unwrap();
    let refused = t
        .store
        .append_audit(&request("odd", "cli", "created"))
        .unwrap_err()
        .to_string();
    assert!(refused.contains("holds the audit anchor"), "{refused}");
    drop(holder);
    let report = t.store.verify_audit().unwrap();
    assert!(report.ok, "{:?}", report.problem);
    assert_eq!(report.rows, 5, "a row was written");
    // Let go, the write goes through and is anchored.
    t.store
        .append_audit(&request("odd", "cli", "created"))
        .unwrap();
    let report = t.store.verify_audit().unwrap();
    assert!(report.ok && report.rows == 6, "{:?}", report.problem);
}

/// Rows cut while the writer waits for the anchor's lock (held a moment, under the
/// second it waits), with the head put back as it was signed before them: the anchor,
/// once the lock is let go, finds the log's end no further than itself, and was left
/// unmarked (review round eight: credentialed requests went out with no row and verify
/// said intact). The writer checks its own end under the lock, and marks it gone.
#[test]
fn rows_cut_while_the_writer_waits_for_the_anchor_are_found() {
    let t = with_rows(5);
    let conn = common::raw(&t.home);
    let signed = signed_head(&conn);
    let holder = std::fs::File::open(t.home.audit_anchor()).unwrap();
    holder.lock_shared().unwrap();
    let home = t.home.clone();
    let writing = std::thread::spawn(move || {
        Store::open(&home)
            .unwrap()
            .without_gateway_sync()
            .append_audit(&request("odd", "exfil", "injected"))
            .unwrap();
    });
    // Row 6 committed; the writer now waits for the lock.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while conn
        .query_row("SELECT last_id FROM audit_head", [], |row| {
            row.get::<_, i64>(0)
        })
        .unwrap()
        < 6
    {
        assert!(std::time::Instant::now() < deadline, "row 6 never came");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    cut_back_to_row_5(&conn, &signed);
    drop(holder);
    writing.join().unwrap();
    let (bad, problem) = verify_problem(&t.store);
    assert_eq!(bad, Some(6), "{problem}");
    assert!(problem.contains("altered at row 6"), "{problem}");
}

/// Whatever keeps the anchor from moving (moved aside, unreadable, locked), the end
/// the writer could not anchor is owed, and once the anchor can move again an owed end
/// the log no longer has is marked: an anchor put aside while rows were written and
/// cut, then put back, passed verify; so did one locked, then garbled, then put back.
#[test]
fn rows_cut_while_the_anchor_could_not_move_are_found_when_it_can() {
    for garbled in [false, true] {
        let t = with_rows(5);
        let conn = common::raw(&t.home);
        let signed = signed_head(&conn);
        let anchor = t.home.audit_anchor();
        let aside = t.home.root().join("anchor.aside");
        let holder = std::fs::File::open(&anchor).unwrap();
        if garbled {
            holder.lock_shared().unwrap();
        } else {
            std::fs::rename(&anchor, &aside).unwrap();
        }
        let writer = Store::open(&t.home).unwrap().without_gateway_sync();
        writer
            .append_audit_batch(&[
                (6000, request("odd", "exfil-1", "injected")),
                (7000, request("odd", "exfil-2", "injected")),
            ])
            .unwrap();
        // Rows 6 and 7 cut, and the head put back as it was signed at row 5.
        cut_back_to_row_5(&conn, &signed);
        if garbled {
            // The lock let go with garbage in the anchor's place for one write.
            std::fs::rename(&anchor, &aside).unwrap();
            std::fs::write(&anchor, "garbage").unwrap();
            drop(holder);
            writer
                .append_audit(&request("odd", "h", "allowed"))
                .unwrap();
            cut_back_to_row_5(&conn, &signed);
        }
        std::fs::rename(&aside, &anchor).unwrap();
        writer
            .append_audit(&request("odd", "h", "allowed"))
            .unwrap();
        let (bad, problem) = verify_problem(&t.store);
        assert!(
            bad.is_some_and(|row| row >= 6),
            "garbled {garbled}: {problem}"
        );
        assert!(problem.contains("altered"), "garbled {garbled}: {problem}");
    }
}

/// The log's head hash and signature as they are now.
fn signed_head(conn: &rusqlite::Connection) -> (String, String) {
    conn.query_row(
        "SELECT last_hash, head_mac FROM audit_head WHERE id = 1",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )
    .unwrap()
}

/// Cuts the log after row 5 and puts back the head `signed` at row 5, as someone
/// without the key who kept that signed head would.
fn cut_back_to_row_5(conn: &rusqlite::Connection, signed: &(String, String)) {
    conn.execute("DELETE FROM audit WHERE id > 5", []).unwrap();
    conn.execute(
        "UPDATE audit_head SET last_id = 5, last_hash = ?1, head_mac = ?2 WHERE id = 1",
        (&signed.0, &signed.1),
    )
    .unwrap();
}

/// A write-ahead log deleted, or moved aside and copied back, while a store has it open:
/// SQLite would go on writing through its descriptor into a file nobody else reads.
/// The next write is refused as tampering instead, and so is every one after it.
#[test]
fn a_log_file_taken_away_while_open_stops_writes() {
    for (file, how) in [
        ("palisade.db-wal", "deleted"),
        ("palisade.db-wal", "copied back"),
        ("palisade.db-shm", "deleted"),
        ("palisade.db", "copied back"),
    ] {
        let t = with_rows(5);
        let path = t.home.root().join(file);
        assert!(path.exists(), "{file} is not there while the store is open");
        match how {
            "deleted" => std::fs::remove_file(&path).unwrap(),
            _ => {
                let aside = t.home.root().join("aside");
                std::fs::rename(&path, &aside).unwrap();
                std::fs::copy(&aside, &path).unwrap();
            }
        }
        for _ in 0..2 {
            let error = t
                .store
                .append_audit(&request("odd", "h", "allowed"))
                .expect_err(&format!("a row was written with {file} {how}"));
            assert!(error.is_tampering(), "{file} {how}: {error}");
            assert!(error.to_string().contains(file), "{error}");
        }
    }
}
