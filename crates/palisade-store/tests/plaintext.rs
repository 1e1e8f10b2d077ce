//! No secret value, agent token or admin key ever reaches the database files in plain
//! text (nor base64 or hex of it), before or after the write-ahead log is checkpointed.

mod common;

use base64::Engine;
use palisade_store::{Home, Store};

const SECRET: &str = "zq9-DISTINCTIVE-secret-value-7f3a1c";

fn forms(value: &str) -> Vec<Vec<u8>> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    vec![
        value.as_bytes().to_vec(),
        b64.encode(value).into_bytes(),
        b64.encode(value).trim_end_matches('=').as_bytes().to_vec(),
        b64url.encode(value).into_bytes(),
        hex::encode(value).into_bytes(),
    ]
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn assert_absent(home: &Home, values: &[&str], when: &str) {
    let mut files_seen = 0;
    for name in ["palisade.db", "palisade.db-wal", "palisade.db-shm"] {
        let Ok(bytes) = std::fs::read(home.root().join(name)) else {
            continue;
        };
        if !bytes.is_empty() {
            files_seen += 1;
        }
        for value in values {
            for form in forms(value) {
                assert!(
                    !contains(&bytes, &form),
                    "{when}: {name} contains a form of a secret value"
                );
            }
        }
    }
    assert!(files_seen > 0, "{when}: no database file to inspect");
}

#[test]
fn values_never_reach_the_files() {
    let t = common::store();
    let alpha = common::add_agent(&t.store, "alpha");
    t.store
        .create_secret(common::new_secret("distinctive", SECRET, &["alpha"]))
        .unwrap();
    let token = t.store.agent_token(&alpha, false).unwrap();
    let admin = t.store.admin_key(false).unwrap();
    let values = [SECRET, token.expose(), admin.expose()];

    // Before a checkpoint the new pages live in the -wal file.
    let wal = std::fs::metadata(t.home.root().join("palisade.db-wal")).unwrap();
    assert!(wal.len() > 0, "expected un-checkpointed WAL content");
    assert_absent(&t.home, &values, "before checkpoint");

    t.store.checkpoint().unwrap();
    assert_absent(&t.home, &values, "after checkpoint");
    // Control: the scan does find text that is stored in the clear.
    let db = std::fs::read(t.home.database()).unwrap();
    assert!(contains(&db, b"api.example.com"));

    // And after rotation and deletion (freed pages keep old bytes).
    let rotated = t.store.agent_token(&alpha, true).unwrap();
    t.store.delete_secret("distinctive").unwrap();
    t.store.checkpoint().unwrap();
    drop(t.store);
    let values = [SECRET, token.expose(), admin.expose(), rotated.expose()];
    assert_absent(&t.home, &values, "after close");

    // The values are still recoverable through the store itself.
    let store = Store::open(&t.home).unwrap();
    assert_eq!(
        store.agent_token(&alpha, false).unwrap().expose(),
        rotated.expose()
    );
    assert_eq!(store.admin_key(false).unwrap().expose(), admin.expose());
}

#[test]
fn audit_rows_carry_no_values() {
    let t = common::store();
    let alpha = common::add_agent(&t.store, "alpha");
    t.store
        .create_secret(common::new_secret("distinctive", SECRET, &["alpha"]))
        .unwrap();
    let token = t.store.agent_token(&alpha, true).unwrap();
    let rows = t
        .store
        .list_audit(&palisade_store::AuditFilter::default())
        .unwrap();
    let text = serde_json::to_string(&rows).unwrap();
    assert!(!text.contains(SECRET));
    assert!(!text.contains(token.expose()));
}
