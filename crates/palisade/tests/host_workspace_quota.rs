//! The workspace quota with a running host: an agent writing past its quota is refused
//! inside its sandbox (one file cannot grow past it; many files get the sandbox
//! stopped with a message), while the host and its store keep serving other agents.

mod host_fixture;

use host_fixture::*;

#[test]
fn writing_past_the_quota_fails_inside_while_other_agents_are_served() {
    let world = world();
    ok(world
        .palisade
        .run(&["agents", "create", "filler", "--workspace-quota", "16M"]));
    let show = ok(world.palisade.run(&["agents", "show", "filler"]));
    assert!(
        String::from_utf8_lossy(&show.stdout).contains("workspace quota:  16M"),
        "{}",
        text(&show)
    );
    let mut host = world.up();
    // As root, `up` has given the agent's workspace a filesystem of its own (an image)
    // before any sandbox of it started.
    if nix::unistd::geteuid().is_root() {
        use std::os::unix::fs::MetadataExt;
        let workspace = world.workspace("filler");
        let device = |p: &std::path::Path| std::fs::metadata(p).unwrap().dev();
        assert_ne!(
            device(&workspace),
            device(workspace.parent().unwrap()),
            "the workspace is not mounted after up"
        );
    }

    // One file: RLIMIT_FSIZE refuses the write past the quota, inside.
    let one_file = world.palisade.run(&[
        "sandbox",
        "run",
        "--agent",
        "filler",
        "--",
        "python3",
        "-c",
        "f = open('/workspace/big', 'wb')\ntry:\n    for _ in range(32):\n        f.write(b'x' * (1 << 20))\n        f.flush()\nexcept OSError as e:\n    print('WRITE-REFUSED', e.errno)\n",
    ]);
    let all = text(&one_file);
    assert!(
        all.contains("WRITE-REFUSED 27"),
        "{all}\nhost: {}",
        host.stderr()
    );
    let big = world.workspace("filler").join("big");
    assert!(std::fs::metadata(&big).unwrap().len() <= 16 << 20);
    std::fs::remove_file(&big).unwrap();

    // Many files: the watcher stops the sandbox, with a message, and the next start is
    // stopped at once until space is freed.
    let many = world.palisade.run(&[
        "sandbox",
        "run",
        "--agent",
        "filler",
        "--",
        "bash",
        "-c",
        "for i in $(seq 1 12); do head -c 2M /dev/zero > /workspace/f$i; done; sleep 20; echo SURVIVED",
    ]);
    let all = text(&many);
    assert_eq!(many.status.code(), Some(122), "{all}");
    assert!(
        !all.contains("SURVIVED")
            && all.contains("the workspace reached its quota")
            && all.contains("--workspace-quota"),
        "{all}"
    );

    // The host, its store and other agents are unaffected.
    let reply = world.send("helper", "still there?");
    assert!(
        reply.status.success()
            && String::from_utf8_lossy(&reply.stdout).contains("echo: still there?"),
        "{}\nhost: {}",
        text(&reply),
        host.stderr()
    );
    let again = world
        .palisade
        .run(&["sandbox", "run", "--agent", "filler", "--", "true"]);
    assert_eq!(again.status.code(), Some(122), "{}", text(&again));
    // Raising the quota lets the agent run again.
    ok(world
        .palisade
        .run(&["agents", "edit", "filler", "--workspace-quota", "1G"]));
    ok(world
        .palisade
        .run(&["sandbox", "run", "--agent", "filler", "--", "true"]));
    world.stop(&mut host);
    // Stopped, Palisade leaves no workspace mounted (so the home can be removed).
    let mounted = palisade_sandbox::volume::mounts_under(world.palisade.home());
    assert!(mounted.is_empty(), "still mounted after down: {mounted:?}");
    // A standalone sandbox mounts the workspace too; `down` with no host running
    // unmounts it as well.
    ok(world
        .palisade
        .run(&["sandbox", "run", "--agent", "filler", "--", "true"]));
    ok(world.palisade.run(&["down"]));
    let mounted = palisade_sandbox::volume::mounts_under(world.palisade.home());
    assert!(
        mounted.is_empty(),
        "still mounted after a sandbox run and down: {mounted:?}"
    );
}
