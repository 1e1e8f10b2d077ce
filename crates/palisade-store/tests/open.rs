//! Opening a home: files, permissions, PRAGMAs and schema versions.

mod common;

use palisade_store::{Home, Store, StoreError};
use std::os::unix::fs::PermissionsExt;

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn open_creates_private_files_in_wal_mode() {
    let t = common::store();
    common::add_agent(&t.store, "alpha");
    assert_eq!(mode(t.home.root()), 0o700);
    assert_eq!(mode(&t.home.master_key()), 0o600);
    assert_eq!(mode(&t.home.database()), 0o600);
    for side in ["palisade.db-wal", "palisade.db-shm"] {
        let path = t.home.root().join(side);
        assert!(
            path.exists(),
            "{side} should exist while a connection is open"
        );
        assert_eq!(mode(&path), 0o600, "{side}");
    }
    let conn = common::raw(&t.home);
    let journal: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(journal, "wal");
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert!(version >= 1);
}

#[test]
fn reopening_keeps_data_and_key() {
    let t = common::store();
    common::add_agent(&t.store, "alpha");
    t.store
        .create_secret(common::new_secret("s", "value-1", &["alpha"]))
        .unwrap();
    drop(t.store);
    let again = Store::open(&t.home).unwrap();
    assert_eq!(again.list_agents().unwrap().len(), 1);
    let policy = again.load_policy().unwrap();
    assert_eq!(policy.secrets()[0].value.expose(), "value-1");
}

#[test]
fn newer_schema_is_refused() {
    let t = common::store();
    drop(t.store);
    common::raw(&t.home)
        .execute_batch("PRAGMA user_version = 999")
        .unwrap();
    match Store::open(&t.home) {
        Err(StoreError::SchemaTooNew { found: 999, known }) => assert!(known < 999),
        Err(other) => panic!("expected SchemaTooNew, got {other}"),
        Ok(_) => panic!("expected SchemaTooNew, got a store"),
    }
}

#[test]
fn loose_database_permissions_are_tightened() {
    let t = common::store();
    drop(t.store);
    std::fs::set_permissions(t.home.database(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let _store = Store::open(&t.home).unwrap();
    assert_eq!(mode(&t.home.database()), 0o600);
}

#[test]
fn world_readable_master_key_is_refused() {
    let t = common::store();
    drop(t.store);
    std::fs::set_permissions(t.home.master_key(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = Store::open(&t.home).err().expect("refused");
    assert!(
        err.to_string()
            .contains(&format!("chmod 600 {}", t.home.master_key().display())),
        "{err}"
    );
}

#[test]
fn concurrent_first_open_of_a_fresh_home() {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::at(dir.path().join("fresh"));
    let stores: Vec<Store> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6).map(|_| s.spawn(|| Store::open(&home))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .collect()
    });
    // Every handle got the same key: what one seals, another opens.
    common::add_agent(&stores[0], "alpha");
    let token = stores[0]
        .agent_token(&common::agent("alpha"), false)
        .unwrap();
    for store in &stores[1..] {
        let again = store.agent_token(&common::agent("alpha"), false).unwrap();
        assert_eq!(again.expose(), token.expose());
    }
}

#[test]
fn data_version_moves_when_another_connection_commits() {
    let t = common::store();
    let other = Store::open(&t.home).unwrap();
    let before = t.store.data_version().unwrap();
    common::add_agent(&other, "alpha");
    assert_ne!(t.store.data_version().unwrap(), before);
}

/// A database with objects palisade never creates is refused, naming them: a trigger,
/// a view, an index of another name or one of palisade's names over other columns, an
/// audit head table without its primary key. (An outside review had palisade sign a
/// forged log end: a trigger dropped its inserts, and two head rows were read
/// differently by two queries through an added index.)
#[test]
fn a_database_changed_outside_palisade_is_refused() {
    for (change, named) in [
        (
            "CREATE TRIGGER t BEFORE INSERT ON audit BEGIN SELECT RAISE(IGNORE); END;",
            "trigger",
        ),
        ("CREATE VIEW v AS SELECT * FROM audit;", "view"),
        ("CREATE INDEX ah ON audit_head(last_id DESC, last_hash, id);", "index"),
        (
            "DROP INDEX audit_at; CREATE INDEX audit_at ON audit(hash);",
            "index",
        ),
        (
            "CREATE TABLE h2 (id INTEGER, last_id INTEGER NOT NULL, last_hash TEXT NOT NULL, head_mac TEXT);
             INSERT INTO h2 SELECT id, last_id, last_hash, head_mac FROM audit_head;
             DROP TABLE audit_head; ALTER TABLE h2 RENAME TO audit_head;",
            "primary key",
        ),
    ] {
        let t = common::store();
        common::add_agent(&t.store, "alpha");
        let home = t.home.clone();
        drop(t.store);
        common::raw(&home).execute_batch(change).unwrap();
        let refused = match Store::open(&home) {
            Ok(_) => panic!("opened after {change}"),
            Err(e) => e.to_string(),
        };
        assert!(
            refused.contains(named) && refused.contains("outside palisade"),
            "{change}: {refused}"
        );
    }
    // Untouched, it opens again (palisade's own indexes are its own).
    let t = common::store();
    let home = t.home.clone();
    drop(t.store);
    Store::open(&home).unwrap();
}
