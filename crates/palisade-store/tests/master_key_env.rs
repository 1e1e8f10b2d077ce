//! `PALISADE_MASTER_KEY` replaces the key file. This file holds a single test because it
//! changes the process environment, which parallel tests in the same binary would see.

use palisade_store::{Home, Store};

#[test]
fn environment_key_is_used_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::at(dir.path().join("home"));

    std::env::set_var("PALISADE_MASTER_KEY", "not-a-key");
    let err = Store::open(&home).err().expect("a bad key is refused");
    assert!(err.to_string().contains("PALISADE_MASTER_KEY"), "{err}");
    assert!(!err.to_string().contains("not-a-key"), "{err}");

    std::env::set_var("PALISADE_MASTER_KEY", hex::encode([5u8; 32]));
    let store = Store::open(&home).unwrap();
    let admin = store.admin_key(false).unwrap();
    assert!(
        !home.master_key().exists(),
        "no key file with an environment key"
    );
    drop(store);

    // The same key in base64 opens what the hex spelling sealed.
    use base64::Engine;
    std::env::set_var(
        "PALISADE_MASTER_KEY",
        base64::engine::general_purpose::STANDARD.encode([5u8; 32]),
    );
    let store = Store::open(&home).unwrap();
    assert_eq!(store.admin_key(false).unwrap().expose(), admin.expose());
    drop(store);

    // A different key does not open the home at all: nothing is sealed with it.
    std::env::set_var("PALISADE_MASTER_KEY", hex::encode([6u8; 32]));
    let err = Store::open(&home).err().expect("another key is refused");
    assert!(
        matches!(err, palisade_store::StoreError::MasterKey(_))
            && err.to_string().contains("PALISADE_MASTER_KEY"),
        "{err}"
    );
    std::env::remove_var("PALISADE_MASTER_KEY");
}
