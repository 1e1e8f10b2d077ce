//! Host folders in agents' sandboxes, end to end with the real `palisade up` and
//! bubblewrap: a folder is where it was given (read-only unless writable), the agent's
//! instructions name it, and taking it away is in force when `folders unmount`
//! returns — even for a turn that is running inside the sandbox at that moment.

mod host_fixture;

use host_fixture::*;
use palisade_testkit::ScriptedTurn;
use serde_json::Value;

/// Everything the model was shown in request `index`: system prompt and messages.
fn shown(world: &World, index: usize) -> String {
    let requests = world.model_requests();
    let request = requests
        .get(index)
        .unwrap_or_else(|| panic!("no model request {index}: {} made", requests.len()));
    let body: Value = request.body_json().expect("model request body");
    format!("{}\n{}", body["system"], body["messages"])
}

#[test]
fn a_folder_is_mounted_where_given_and_gone_as_soon_as_it_is_taken_away() {
    let world = world();
    let folder = tempfile::tempdir().expect("folder");
    // Readable by others, as a folder shared with an agent must be: when root runs
    // Palisade the agent is a subordinate uid of its own, not root.
    std::fs::set_permissions(
        folder.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(folder.path().join("hello.txt"), "the folder says hi").unwrap();
    let path = folder.path().to_str().unwrap();
    ok(world
        .palisade
        .run(&["folders", "add", "notes", "--path", path]));
    ok(world
        .palisade
        .run(&["folders", "mount", "notes", "--agent", "helper"]));

    world.upstream.script_anthropic(vec![
        ScriptedTurn::tool_use(
            "bash",
            serde_json::json!({"command": "cat /mnt/notes/hello.txt; echo new > /mnt/notes/new.txt && echo wrote"}),
        ),
        ScriptedTurn::text("read it"),
        // The second message: reads, then sleeps while the folder is taken away.
        ScriptedTurn::tool_use(
            "bash",
            serde_json::json!({"command": "cat /mnt/notes/hello.txt; sleep 60"}),
        ),
        // Delivered again to a sandbox without the folder.
        ScriptedTurn::tool_use(
            "bash",
            serde_json::json!({"command": "ls /mnt/notes 2>&1; echo status=$?"}),
        ),
        ScriptedTurn::text("it is gone"),
    ]);
    let host = world.up();
    let output = world.send("helper", "read the notes");
    assert!(
        output.status.success(),
        "{}\nhost: {}",
        text(&output),
        host.stderr()
    );
    let first = shown(&world, 1);
    assert!(
        first.contains("/mnt/notes (read-only)"),
        "the instructions name the folder: {first}"
    );
    assert!(first.contains("the folder says hi"), "{first}");
    assert!(
        first.contains("Read-only file system"),
        "a read-only folder was written: {first}"
    );
    assert!(!folder.path().join("new.txt").exists());

    std::thread::scope(|scope| {
        let asked = scope.spawn(|| world.send("helper", "read them again"));
        assert!(
            world.upstream.wait_for_count(3, STARTUP),
            "the runner never called the model: {}",
            host.stderr()
        );
        // The tool is running (or about to) in the sandbox; take the folder away.
        std::thread::sleep(std::time::Duration::from_millis(500));
        let unmounted = world
            .palisade
            .run(&["folders", "unmount", "notes", "--agent", "helper"]);
        assert!(
            unmounted.status.success(),
            "{}\nhost: {}",
            text(&unmounted),
            host.stderr()
        );
        let output = asked.join().unwrap();
        assert!(
            output.status.success(),
            "{}\nhost: {}",
            text(&output),
            host.stderr()
        );
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("it is gone"),
            "{}",
            text(&output)
        );
    });
    // The sleeping turn never returned a result; the new sandbox has no folder.
    let requests = world.model_requests();
    assert_eq!(
        requests.len(),
        5,
        "{:?}",
        requests
            .iter()
            .map(|r| r.path().to_string())
            .collect::<Vec<_>>()
    );
    let last = shown(&world, 4);
    assert!(!last.contains("/mnt/notes (read-only)"), "{last}");
    assert!(last.contains("No such file or directory"), "{last}");
    // Once, from the first message's turn: the killed turn's output never came back.
    assert_eq!(last.matches("the folder says hi").count(), 1, "{last}");
    assert!(
        host.stderr().contains("folders changed"),
        "{}",
        host.stderr()
    );
    world.down(host);
}
