//! Local addresses agents may reach, remembered in the home: added and forgotten with a
//! row each, checked like `--allow-local-upstream`, and ignored when not signed with
//! the home's key.

mod common;

use palisade_store::{AuditFilter, LocalUpstreams};

#[test]
fn allowances_are_remembered_audited_and_forgotten() {
    let t = common::store();
    assert_eq!(
        t.store.local_upstreams().unwrap(),
        LocalUpstreams::default()
    );
    assert!(t.store.allow_local_upstream("127.0.0.1:8080").unwrap());
    assert!(t.store.allow_local_upstream(" localhost ").unwrap());
    assert!(!t.store.allow_local_upstream("127.0.0.1:8080").unwrap());
    // A name with a port is that port only (checked with the port a connection goes
    // to), and allowed like an address with one.
    assert!(t.store.allow_local_upstream("localhost:8080").unwrap());
    assert!(t.store.forget_local_upstream("localhost:8080").unwrap());
    for bad in [
        "http://127.0.0.1",
        "",
        "a b",
        "localhost:0",
        "localhost:99999",
    ] {
        let refused = t.store.allow_local_upstream(bad).unwrap_err().to_string();
        assert!(refused.contains("cannot be allowed"), "{bad:?}: {refused}");
    }
    assert_eq!(
        t.store.local_upstreams().unwrap().patterns,
        ["127.0.0.1:8080", "localhost"]
    );
    assert!(t.store.forget_local_upstream("LOCALHOST").unwrap());
    assert!(!t.store.forget_local_upstream("localhost").unwrap());
    assert_eq!(
        t.store.local_upstreams().unwrap().patterns,
        ["127.0.0.1:8080"]
    );
    let rows = t
        .store
        .list_audit(&AuditFilter {
            text: Some("local_upstream".into()),
            ..AuditFilter::default()
        })
        .unwrap();
    let events: Vec<(String, Option<String>)> = rows
        .iter()
        .rev()
        .map(|row| (row.entry.event.clone(), row.entry.host.clone()))
        .collect();
    assert_eq!(
        events,
        [
            ("local_upstream.allow".into(), Some("127.0.0.1:8080".into())),
            ("local_upstream.allow".into(), Some("localhost".into())),
            ("local_upstream.allow".into(), Some("localhost:8080".into())),
            (
                "local_upstream.forget".into(),
                Some("localhost:8080".into())
            ),
            ("local_upstream.forget".into(), Some("LOCALHOST".into())),
        ]
    );
}

/// Written by someone who cannot read the master key (an address added straight into
/// the database), the list allows nothing and says it is not signed; the next change
/// through palisade replaces it.
#[test]
fn a_list_not_signed_with_the_homes_key_allows_nothing() {
    let t = common::store();
    t.store.allow_local_upstream("127.0.0.1:8080").unwrap();
    let conn = common::raw(&t.home);
    let stored: String = conn
        .query_row(
            "SELECT value FROM settings WHERE key = 'local_upstreams'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    let forged = stored.replace("127.0.0.1:8080", "*");
    assert_ne!(forged, stored);
    conn.execute(
        "UPDATE settings SET value = ?1 WHERE key = 'local_upstreams'",
        [&forged],
    )
    .unwrap();
    let read = t.store.local_upstreams().unwrap();
    assert!(read.unsigned && read.patterns.is_empty(), "{read:?}");
    t.store.allow_local_upstream("localhost").unwrap();
    assert_eq!(
        t.store.local_upstreams().unwrap(),
        LocalUpstreams {
            patterns: vec!["localhost".into()],
            unsigned: false
        }
    );
}

fn stored_value(conn: &rusqlite::Connection) -> String {
    conn.query_row(
        "SELECT value FROM settings WHERE key = 'local_upstreams'",
        [],
        |row| row.get(0),
    )
    .unwrap()
}

fn put_back(conn: &rusqlite::Connection, value: &str) {
    conn.execute(
        "UPDATE settings SET value = ?1 WHERE key = 'local_upstreams'",
        [value],
    )
    .unwrap();
}

/// An older signed list put back (an address allowed, then forgotten, then the list
/// from before written back by someone who can write the database) allows nothing:
/// its row is not the log's latest change. Also after a pruning removed both rows,
/// since the pruning records the latest change again.
#[test]
fn an_older_signed_list_put_back_allows_nothing() {
    for pruned in [false, true] {
        let t = common::store();
        let conn = common::raw(&t.home);
        t.store.allow_local_upstream("127.0.0.1:8080").unwrap();
        let older = stored_value(&conn);
        t.store.forget_local_upstream("127.0.0.1:8080").unwrap();
        if pruned {
            let report = t.store.prune_audit(palisade_store::now_ms() + 1).unwrap();
            assert!(report.removed >= 2, "{report:?}");
            // The latest change is still the list in force.
            assert_eq!(
                t.store.local_upstreams().unwrap(),
                LocalUpstreams::default()
            );
        }
        put_back(&conn, &older);
        let read = t.store.local_upstreams().unwrap();
        assert!(
            read.unsigned && read.patterns.is_empty(),
            "pruned {pruned}: {read:?}"
        );
        assert!(t.store.verify_audit().unwrap().ok || !pruned);
    }
}

/// A pruning carries only the list in force: an older signed list put back before it
/// (its row earlier than the forget's) is not signed anew for the carry row, which
/// would have allowed the forgotten address again with the log intact.
#[test]
fn a_pruning_does_not_carry_an_older_list_put_back() {
    let t = common::store();
    let conn = common::raw(&t.home);
    t.store.allow_local_upstream("127.0.0.1:8080").unwrap();
    let older = stored_value(&conn);
    t.store.forget_local_upstream("127.0.0.1:8080").unwrap();
    put_back(&conn, &older);
    t.store.prune_audit(palisade_store::now_ms() + 1).unwrap();
    assert!(t.store.local_upstreams().unwrap().patterns.is_empty());
    assert!(t.store.verify_audit().unwrap().ok);
}
