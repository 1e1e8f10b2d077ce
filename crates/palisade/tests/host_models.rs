//! A model the API no longer serves: the real `palisade up` (bubblewrap, the vault
//! in-process) with the testkit's fake Anthropic API answering `404 not_found_error`
//! for the agent's model. `palisade send` exits 1 with one line saying which model is
//! not available and how to choose another, the model is asked once (no retries), and
//! after `palisade agents edit --model` the next message is answered. Any other refusal
//! of the model call is an error reply too: `send` exits 1 with its cause, and the
//! session records it as an error.

mod host_fixture;

use host_fixture::{ok, text, world, KEY};
use palisade_testkit::ScriptedTurn;

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
    // With the models the server serves, to choose from.
    assert!(
        lines[0].contains("(the server lists ") && lines[0].contains("claude-sonnet-4-6"),
        "{stderr}"
    );
    assert_eq!(
        world.model_requests().len(),
        1,
        "a model that does not exist is not asked again"
    );
    // For a script too: `--json` prints the error reply and exits 1 (it exited 0).
    let scripted = world
        .palisade
        .run(&["--json", "send", "--agent", "helper", "hello again?"]);
    assert_eq!(scripted.status.code(), Some(1), "{}", text(&scripted));
    let stdout = String::from_utf8_lossy(&scripted.stdout).into_owned();
    let reply: serde_json::Value = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|event| event["type"] == "reply")
        .unwrap_or_else(|| panic!("no reply event: {stdout}"));
    assert_eq!(reply["is_error"], true, "{reply}");

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

/// The model API refuses the call (a wrong key): the reply says why and is an error,
/// so `palisade send` exits 1 with that one line and the session shows it as an error,
/// not as the agent's answer; the next message is answered as usual. (Before: `send`
/// printed the refusal as the agent's words and exited 0.)
#[test]
fn a_refused_model_call_is_an_error_reply_not_an_answer() {
    let world = world();
    world.upstream.script_anthropic(vec![
        ScriptedTurn::error(
            401,
            serde_json::json!({
                "type": "error",
                "error": {"type": "authentication_error", "message": "invalid x-api-key"},
            }),
        ),
        ScriptedTurn::text("fine now"),
    ]);
    let host = world.up();

    let refused = world.send("helper", "hello?");
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    let stderr = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: ") && stderr.contains("invalid x-api-key"),
        "{stderr}"
    );
    // helper has a key, so no word about a missing one.
    assert!(!stderr.contains("has no key"), "{stderr}");
    // The key refused is named: the one the vault sent (a person with an older key
    // for a mistyped address rotated that one instead).
    assert!(
        stderr.contains("the secret claude") && stderr.contains("palisade secrets rotate claude"),
        "{stderr}"
    );
    let session = world.session(world.only_session());
    let reply = &session["messages"][0]["reply"];
    assert_eq!(reply["is_error"], true, "{session}");
    assert!(reply["text"]
        .as_str()
        .unwrap()
        .contains("authentication_error"));

    let answered = ok(world.send("helper", "and now?"));
    assert!(
        String::from_utf8_lossy(&answered.stdout).contains("fine now"),
        "{}",
        text(&answered)
    );
    world.down(host);
}

/// An agent with no key for its model API whose call is refused is told so, with how to
/// get one: here another agent's key for that server, named with the command that
/// grants it, and the command works (the next message is answered). (Before: only the
/// provider's 401; then a `secrets create` with NAME and HOST left for the person.)
#[test]
fn an_agent_without_a_model_key_is_told_it_has_none() {
    let world = world();
    world.create_agent("keyless", "research");
    world.upstream.script_anthropic(vec![ScriptedTurn::error(
        401,
        serde_json::json!({
            "type": "error",
            "error": {"type": "authentication_error", "message": "x-api-key header is required"},
        }),
    )]);
    let host = world.up();
    let refused = world.send("keyless", "hello?");
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("agent keyless has no key for its model API")
            && stderr.contains("`palisade secrets grant claude --agent keyless`"),
        "{stderr}"
    );
    // No key was sent, so there is none to replace.
    assert!(!stderr.contains("secrets rotate"), "{stderr}");
    ok(world
        .palisade
        .run(&["secrets", "grant", "claude", "--agent", "keyless"]));
    let answered = ok(world.send("keyless", "and now?"));
    assert!(
        !String::from_utf8_lossy(&answered.stdout).trim().is_empty(),
        "{}",
        text(&answered)
    );
    assert_eq!(
        world.upstream.last_request().unwrap().header("x-api-key"),
        Some(KEY)
    );
    world.down(host);
}

/// A base URL ending in `/v1` (as the first-run form's hint writes them, and as the
/// model list and `doctor` already read them) reaches the same Messages endpoint: the
/// runner sent `/v1/v1/messages`, and every message failed as "model not available"
/// while the dashboard said the agent was ready.
#[test]
fn an_anthropic_base_url_ending_in_v1_is_the_same_server() {
    let world = world();
    let base = format!("{}/v1/", world.upstream.base_url());
    ok(world
        .palisade
        .run(&["agents", "edit", "helper", "--base-url", &base]));
    let host = world.up();
    // The home's only agent needs no --agent.
    let answered = ok(world.palisade.run(&["send", "through v1?"]));
    assert!(
        String::from_utf8_lossy(&answered.stdout).contains("echo: through v1?"),
        "{}",
        text(&answered)
    );
    let paths: Vec<String> = world
        .upstream
        .requests()
        .iter()
        .map(|r| r.path().to_string())
        .collect();
    assert!(paths.iter().any(|p| p == "/v1/messages"), "{paths:?}");
    assert!(!paths.iter().any(|p| p.contains("/v1/v1")), "{paths:?}");
    // With a choice, the error names the agents.
    ok(world.palisade.run(&["agents", "create", "other"]));
    let refused = world.palisade.run(&["send", "which one?"]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("helper, other"),
        "{}",
        text(&refused)
    );
    world.down(host);
}
