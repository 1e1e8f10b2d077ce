//! Folders agents may mount, and the compartment rule on sensitive ones: a research
//! agent never mounts a sensitive folder, whichever of the three changes (the mount,
//! the mark, the profile) would bring them together.

mod common;

use common::*;
use palisade_policy::Profile;
use palisade_store::StoreError;
use std::path::Path;

fn invalid(result: Result<impl std::fmt::Debug, StoreError>) -> String {
    match result {
        Err(StoreError::Invalid(message)) => message,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn folders_are_added_mounted_listed_and_removed() {
    let t = store();
    let coder = add_agent(&t.store, "coder");
    let folder = t
        .store
        .add_folder("notes", Path::new("/srv/notes"), false)
        .unwrap();
    assert_eq!(folder.path, Path::new("/srv/notes"));
    assert!(folder.mounts.is_empty());
    t.store.mount_folder("notes", &coder, false).unwrap();
    // Mounting again changes the mode, not the count.
    t.store.mount_folder("notes", &coder, true).unwrap();
    let mounted = t.store.agent_folders(&coder).unwrap();
    assert_eq!(mounted.len(), 1);
    assert!(mounted[0].1, "the second mount made it writable");
    let listed = t.store.list_folders().unwrap();
    assert_eq!(listed[0].mounts.len(), 1);
    assert_eq!(listed[0].mounts[0].agent, coder);

    // Names become /mnt/NAME; paths and names are unique.
    for bad in ["", "Notes", "../x", "a/b", "-x", &"n".repeat(64)] {
        invalid(t.store.add_folder(bad, Path::new("/srv/other"), false));
    }
    assert!(invalid(t.store.add_folder("notes", Path::new("/srv/x"), false)).contains("exists"));
    assert!(
        invalid(t.store.add_folder("again", Path::new("/srv/notes"), false))
            .contains("already folder notes")
    );
    invalid(t.store.add_folder("rel", Path::new("srv/rel"), false));

    t.store.unmount_folder("notes", &coder).unwrap();
    assert!(matches!(
        t.store.unmount_folder("notes", &coder),
        Err(StoreError::NotFound { .. })
    ));
    t.store.mount_folder("notes", &coder, false).unwrap();
    let removed = t.store.remove_folder("notes").unwrap();
    assert_eq!(removed.mounts.len(), 1);
    assert!(t.store.agent_folders(&coder).unwrap().is_empty());
    assert!(matches!(
        t.store.get_folder("notes"),
        Err(StoreError::NotFound { .. })
    ));
    // Every change is in the audit log.
    let events: Vec<String> = t
        .store
        .list_audit(&Default::default())
        .unwrap()
        .into_iter()
        .rev()
        .map(|row| row.entry.event)
        .filter(|event| event.starts_with("folder."))
        .collect();
    assert_eq!(
        events,
        vec![
            "folder.add",
            "folder.mount",
            "folder.mount",
            "folder.unmount",
            "folder.mount",
            "folder.remove"
        ]
    );
}

#[test]
fn research_agents_never_mount_sensitive_folders() {
    let t = store();
    let reader = agent("reader");
    t.store.create_agent(&reader, Profile::Research).unwrap();
    let doer = add_agent(&t.store, "doer");
    t.store
        .add_folder("finance", Path::new("/srv/finance"), true)
        .unwrap();
    t.store
        .add_folder("public", Path::new("/srv/public"), false)
        .unwrap();

    // The mount.
    let refusal = invalid(t.store.mount_folder("finance", &reader, false));
    assert!(
        refusal.contains("finance") && refusal.contains("research"),
        "{refusal}"
    );
    t.store.mount_folder("finance", &doer, true).unwrap();

    // The mark.
    t.store.mount_folder("public", &reader, false).unwrap();
    let refusal = invalid(t.store.set_folder_sensitive("public", true));
    assert!(refusal.contains("reader"), "{refusal}");
    assert!(!t.store.get_folder("public").unwrap().sensitive);

    // The profile.
    let refusal = invalid(t.store.set_agent_profile(&doer, Profile::Research));
    assert!(refusal.contains("finance"), "{refusal}");
    assert_eq!(t.store.get_agent(&doer).unwrap().profile, Profile::Action);

    // Unmarked, the same folder may be shared with anyone (read-only across the
    // compartments: see below).
    t.store.set_folder_sensitive("finance", false).unwrap();
    t.store.mount_folder("finance", &doer, false).unwrap();
    t.store.mount_folder("finance", &reader, false).unwrap();
}

/// A folder around a sensitive one shows its files, and one inside it part of them:
/// to a research agent each is as sensitive as the folder it overlaps, whichever is
/// added, marked or mounted first.
#[test]
fn folders_around_or_inside_a_sensitive_one_stay_out_of_research_agents() {
    let t = store();
    let reader = agent("reader");
    t.store.create_agent(&reader, Profile::Research).unwrap();
    let doer = add_agent(&t.store, "doer");
    t.store
        .add_folder("mail", Path::new("/srv/data/mail"), true)
        .unwrap();
    t.store
        .add_folder("data", Path::new("/srv/data"), false)
        .unwrap();
    t.store
        .add_folder("recent", Path::new("/srv/data/mail/2026"), false)
        .unwrap();
    t.store
        .add_folder("datasets", Path::new("/srv/datasets"), false)
        .unwrap();
    for (folder, overlaps) in [("data", "mail"), ("recent", "mail")] {
        let refusal = invalid(t.store.mount_folder(folder, &reader, false));
        assert!(
            refusal.contains(&format!(
                "folder {folder} holds or lies in the sensitive folder {overlaps}"
            )),
            "{refusal}"
        );
        assert_eq!(
            t.store.folder_sensitive_overlap(folder).unwrap().as_deref(),
            Some(overlaps)
        );
    }
    // A name that only starts the same is not inside.
    t.store.mount_folder("datasets", &reader, false).unwrap();
    assert_eq!(t.store.folder_sensitive_overlap("datasets").unwrap(), None);

    // The profile: an action agent mounting the folder around may not become research.
    t.store.mount_folder("data", &doer, false).unwrap();
    let refusal = invalid(t.store.set_agent_profile(&doer, Profile::Research));
    assert!(refusal.contains("data"), "{refusal}");

    // The mark, and a new sensitive folder, inside what a research agent mounts.
    let refusal = invalid(
        t.store
            .add_folder("keys", Path::new("/srv/datasets/keys"), true),
    );
    assert!(
        refusal.contains("reader") && refusal.contains("datasets"),
        "{refusal}"
    );
    t.store
        .add_folder("keys", Path::new("/srv/datasets/keys"), false)
        .unwrap();
    let refusal = invalid(t.store.set_folder_sensitive("keys", true));
    assert!(
        refusal.contains("reader") && refusal.contains("datasets"),
        "{refusal}"
    );
    assert!(!t.store.get_folder("keys").unwrap().sensitive);
}

/// A folder a research agent and an action agent both mount is read-only for both:
/// what one wrote there the other would read past the approval and the sanitizer that
/// messages between the two compartments go through. Whichever change would bring a
/// writable share about (a mount, a remount writable, a folder inside another, a
/// change of profile) is refused and leaves nothing written.
#[test]
fn a_folder_shared_across_compartments_is_read_only_for_both() {
    let t = store();
    let mailer = add_agent(&t.store, "mailer");
    let reader = agent("reader");
    t.store.create_agent(&reader, Profile::Research).unwrap();
    t.store
        .add_folder("pub", Path::new("/srv/pub"), false)
        .unwrap();
    t.store
        .add_folder("inner", Path::new("/srv/pub/inner"), false)
        .unwrap();
    t.store.mount_folder("pub", &mailer, true).unwrap();

    // The research agent may not mount what the action agent writes, even read-only,
    // nor a folder inside it.
    let refused = invalid(t.store.mount_folder("pub", &reader, false));
    assert!(
        refused.contains("agent reader (research) and agent mailer (action)")
            && refused.contains("mailer may write to pub"),
        "{refused}"
    );
    let refused = invalid(t.store.mount_folder("inner", &reader, false));
    assert!(refused.contains("overlaps folder pub"), "{refused}");
    assert!(t.store.agent_folders(&reader).unwrap().is_empty());

    // Read-only for both is allowed; making either side writable again is not.
    t.store.mount_folder("pub", &mailer, false).unwrap();
    t.store.mount_folder("pub", &reader, false).unwrap();
    invalid(t.store.mount_folder("pub", &mailer, true));
    invalid(t.store.mount_folder("pub", &reader, true));
    assert!(
        !t.store.agent_folders(&mailer).unwrap()[0].1,
        "still read-only"
    );

    // Two action agents may share a writable folder; one of them turning research
    // would carry it across.
    let sender = add_agent(&t.store, "sender");
    t.store.unmount_folder("pub", &reader).unwrap();
    t.store.mount_folder("pub", &mailer, true).unwrap();
    t.store.mount_folder("pub", &sender, false).unwrap();
    let refused = invalid(t.store.set_agent_profile(&sender, Profile::Research));
    assert!(refused.contains("would share folder pub"), "{refused}");
    assert_eq!(t.store.get_agent(&sender).unwrap().profile, Profile::Action);
}
