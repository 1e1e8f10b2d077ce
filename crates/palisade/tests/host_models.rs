//! A model the API no longer serves: the real `palisade up` (bubblewrap, the vault
//! in-process) with the testkit's fake Anthropic API answering `404 not_found_error`
//! for the agent's model. `palisade send` exits 1 with one line saying which model is
//! not available and how to choose another, the model is asked once (no retries), and
//! after `palisade agents edit --model` the next message is answered.

mod host_fixture;

use host_fixture::{ok, text, world, KEY};

#[test]
fn a_retired_model_is_one_line_and_changing_it_fixes_the_next_message() {
    let world = world();
    world.upstream.retire_model("claude-test");
    let host = world.up();

    let refused = world.send("helper", "hello?");
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    let stderr = String::from_utf8_lossy(&refused.stderr).into_owned();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with("error: ")
            && lines[0].contains(
                "model claude-test is not available: choose another on the agent page or with `palisade agents edit helper --model M`"
            ),
        "{stderr}"
    );
    assert_eq!(
        world.model_requests().len(),
        1,
        "a model that does not exist is not asked again"
    );

    ok(world
        .palisade
        .run(&["agents", "edit", "helper", "--model", "claude-sonnet-4-6"]));
    let answered = ok(world.send("helper", "and now?"));
    assert!(
        String::from_utf8_lossy(&answered.stdout).contains("echo: and now?"),
        "{}",
        text(&answered)
    );
    let last = world.model_requests().pop().unwrap();
    assert_eq!(last.body_json().unwrap()["model"], "claude-sonnet-4-6");
    world.down(host);
    assert!(!world.palisade.all_output().contains(KEY));
}
