//! The dial at the vault: an agent's approval frequency holds credentialed requests
//! for a person without any rule (`every`, `first-use`, `writes`), a change of dial is
//! in force on the next request, requests without a credential are never held by it, and
//! neither are an agent's calls to its own model.

mod vault_fixture;

use palisade_testkit::{curl, wait_until};
use serde_json::Value;
use std::time::Duration;
use vault_fixture::{split_status, Setup, CLIENT_TIMEOUT};

fn pending(setup: &Setup) -> Vec<Value> {
    let text = setup.cli(&["--json", "approvals", "list"]);
    serde_json::from_str::<Value>(&text)
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Sends `method path` (with `body`, if any, and `headers`) over HTTP/1.1 in the
/// background; returns the thread with curl's status.
fn send(
    setup: &Setup,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[&str],
) -> std::thread::JoinHandle<u16> {
    let mut args: Vec<String> = vec![
        "-sS".into(),
        "-o".into(),
        "/dev/null".into(),
        "-w".into(),
        "\n%{http_code}".into(),
        "--max-time".into(),
        "20".into(),
        "-X".into(),
        method.into(),
    ];
    if let Some(body) = body {
        args.extend(["--data".into(), body.into()]);
    }
    args.push("--http1.1".into());
    for header in headers {
        args.extend(["-H".into(), header.to_string()]);
    }
    args.extend(setup.proxy_args(token));
    args.push(setup.upstream.url(path));
    std::thread::spawn(move || {
        let output = curl(&args, CLIENT_TIMEOUT);
        split_status(&String::from_utf8_lossy(&output.stdout)).0
    })
}

/// Whether `method path` is held: it waits for a person, is approved, then arrives.
fn held_then_approved(setup: &Setup, token: &str, method: &str, path: &str) -> bool {
    held_then_approved_with(setup, token, method, path, None)
}

/// The same with a body.
fn held_then_approved_with(
    setup: &Setup,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> bool {
    let before = setup.upstream.count();
    let request = send(setup, token, method, path, body, &[]);
    let mut found = Vec::new();
    let held = wait_until(Duration::from_secs(3), || {
        found = pending(setup);
        !found.is_empty() || setup.upstream.count() > before
    }) && !found.is_empty();
    if held {
        assert_eq!(
            setup.upstream.count(),
            before,
            "a held request went upstream"
        );
        assert!(
            found[0]["title"]
                .as_str()
                .unwrap_or_default()
                .contains(path)
                || found[0]["context"]["path"] == path,
            "{found:?}"
        );
        setup.cli(&["approvals", "approve", found[0]["id"].as_str().unwrap()]);
    }
    assert_eq!(request.join().unwrap(), 200, "{method} {path}");
    held
}

#[test]
fn the_dial_holds_credentialed_requests_as_set() {
    let mut setup = Setup::new();
    setup.start_vault(&[]);
    let token = setup.agent("mailer");
    setup.secret("key", "localhost", None, "bearer", &["mailer"], "tok-dial");
    let other = setup.agent("plain");

    // No dial: nothing is held.
    assert!(!held_then_approved(&setup, &token, "POST", "/none/write"));

    setup.cli(&["agents", "dial", "mailer", "--approvals", "writes"]);
    assert!(!held_then_approved(&setup, &token, "GET", "/writes/read"));
    assert!(held_then_approved(&setup, &token, "POST", "/writes/write"));
    assert!(held_then_approved(
        &setup,
        &token,
        "DELETE",
        "/writes/delete"
    ));

    // A WebSocket is a write: its handshake is a GET, but the frames after it are never
    // judged. (Before, `writes` let a credentialed WebSocket through unasked.)
    let before = setup.upstream.count();
    let handshake = send(
        &setup,
        &token,
        "GET",
        "/ws",
        None,
        &[
            "Connection: Upgrade",
            "Upgrade: websocket",
            "Sec-WebSocket-Version: 13",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        ],
    );
    let mut found = Vec::new();
    assert!(
        wait_until(Duration::from_secs(5), || {
            found = pending(&setup);
            !found.is_empty()
        }),
        "the WebSocket handshake was not held"
    );
    assert_eq!(
        setup.upstream.count(),
        before,
        "the WebSocket went upstream"
    );
    setup.cli(&["approvals", "deny", found[0]["id"].as_str().unwrap()]);
    assert_eq!(handshake.join().unwrap(), 403);

    setup.cli(&["agents", "dial", "mailer", "--preset", "strict"]);
    assert!(held_then_approved(&setup, &token, "GET", "/every/read"));

    setup.cli(&["agents", "dial", "mailer", "--approvals", "first-use"]);
    assert!(held_then_approved(&setup, &token, "GET", "/first/one"));
    assert!(
        !held_then_approved(&setup, &token, "POST", "/first/two"),
        "approved once, the host is open for the hour"
    );
    // Its row names the dial and the approval it went through on. The gateway writes
    // audit rows in batches after it has answered, so the row may come a moment later.
    let mut passed = Value::Null;
    assert!(
        wait_until(Duration::from_secs(5), || {
            let rows: Value = serde_json::from_str(
                &setup.cli(&["--json", "audit", "list", "--event", "request"]),
            )
            .unwrap();
            if let Some(row) = rows
                .as_array()
                .unwrap()
                .iter()
                .find(|row| row["path"] == "/first/two")
            {
                passed = row.clone();
            }
            !passed.is_null()
        }),
        "no audit row for /first/two"
    );
    assert_eq!(passed["rule"], "dial:first-use", "{passed}");
    assert!(
        passed["detail"]["approved_by"]
            .as_str()
            .is_some_and(|id| id.starts_with("apr_")),
        "{passed}"
    );
    // For that credential: another secret of the same host is another credential the
    // person never saw on a card, and is held the first time too.
    setup.secret(
        "admin-key",
        "localhost",
        Some("/admin/*"),
        "bearer",
        &["mailer"],
        "tok-admin",
    );
    assert!(
        held_then_approved(&setup, &token, "DELETE", "/admin/everything"),
        "an approval of one secret's use opened another's"
    );

    // Requests that carry no credential are never held by a dial.
    setup.cli(&["agents", "dial", "plain", "--preset", "strict"]);
    assert!(!held_then_approved(&setup, &other, "POST", "/plain/write"));
    // Held requests are audited under the dial, not a rule.
    let rows: Value =
        serde_json::from_str(&setup.cli(&["--json", "audit", "list", "--decision", "approved"]))
            .unwrap();
    assert!(rows
        .as_array()
        .unwrap()
        .iter()
        .any(|row| row["rule"] == "dial:writes"));
}

/// The dial never holds an agent's calls to its own model: with `--preset strict` an
/// agent whose model API is an OpenAI-compatible server (its settings' base URL) sends
/// `POST /v1/chat/completions` and `GET /v1/models` there unheld, with its credential,
/// while its other credentialed requests to the same server are held, and the same
/// call by an agent whose model is elsewhere is held. A `require_approval` rule still
/// holds the model call. (Before: every step of a dialed agent's thinking waited for a
/// person, so a `strict` or `balanced` agent could not answer on its own.)
#[test]
fn the_dial_never_holds_an_agents_calls_to_its_own_model() {
    let mut setup = Setup::new();
    setup.start_vault(&[]);
    let thinker = setup.agent("thinker");
    let other = setup.agent("other");
    setup.secret(
        "model-key",
        "localhost",
        None,
        "bearer",
        &["thinker", "other"],
        "tok-model",
    );
    let base_url = setup.upstream.url("/v1");
    setup.cli(&[
        "agents",
        "edit",
        "thinker",
        "--provider",
        "openai",
        "--base-url",
        &base_url,
        "--model",
        "local-model",
    ]);
    setup.cli(&["agents", "dial", "thinker", "--preset", "strict"]);
    setup.cli(&["agents", "dial", "other", "--preset", "strict"]);

    let thought = r#"{"model":"local-model","messages":[{"role":"user","content":"hi"}]}"#;
    assert!(!held_then_approved_with(
        &setup,
        &thinker,
        "POST",
        "/v1/chat/completions",
        Some(thought)
    ));
    assert_eq!(
        setup
            .upstream
            .last_request()
            .unwrap()
            .header("authorization"),
        Some("Bearer tok-model")
    );
    assert!(!held_then_approved(&setup, &thinker, "GET", "/v1/models"));
    // Anything else there carries the credential and is held, as the dial says.
    assert!(held_then_approved(&setup, &thinker, "POST", "/v1/files"));
    assert!(held_then_approved(&setup, &thinker, "GET", "/v1/files"));
    // Another agent's model is elsewhere (Anthropic's API, by default).
    assert!(held_then_approved_with(
        &setup,
        &other,
        "POST",
        "/v1/chat/completions",
        Some(thought)
    ));
    // A rule still holds the model call.
    setup.cli(&[
        "rules",
        "create",
        "--name",
        "ask-thoughts",
        "--host-pattern",
        "localhost",
        "--path-pattern",
        "/v1/chat/*",
        "--action",
        "require_approval",
    ]);
    assert!(held_then_approved_with(
        &setup,
        &thinker,
        "POST",
        "/v1/chat/completions",
        Some(thought)
    ));
}

/// Approval fatigue: after people approve the same request again and again, `approvals
/// suggest` proposes the narrow rule that would have spared them, nothing changes until
/// it is accepted, and once accepted the same request goes through while another path
/// is still held.
#[test]
fn approvals_suggest_proposes_what_people_keep_approving() {
    let mut setup = Setup::new();
    setup.start_vault(&[]);
    let token = setup.agent("mailer");
    setup.cli(&[
        "rules",
        "create",
        "--name",
        "ask-posts",
        "--host-pattern",
        "localhost",
        "--method",
        "POST",
        "--action",
        "require_approval",
    ]);
    for _ in 0..3 {
        assert!(held_then_approved(&setup, &token, "POST", "/labels"));
    }
    assert!(held_then_approved(&setup, &token, "POST", "/other"));
    let suggestions: Value =
        serde_json::from_str(&setup.cli(&["--json", "approvals", "suggest"])).unwrap();
    let list = suggestions.as_array().unwrap();
    assert_eq!(list.len(), 1, "{suggestions}");
    assert_eq!(list[0]["path"], "/labels");
    assert_eq!(list[0]["approvals"], 3);
    // It says the rule would let any query and any body of that path through.
    let said = setup.cli(&["approvals", "suggest"]);
    assert!(
        said.contains("/labels (with any query and any body) without asking"),
        "{said}"
    );
    // Suggesting changed nothing: the same request is still held.
    assert!(held_then_approved(&setup, &token, "POST", "/labels"));
    let created: Value =
        serde_json::from_str(&setup.cli(&["--json", "approvals", "suggest", "--accept", "1"]))
            .unwrap();
    assert_eq!(created[0]["action"], "allow");
    assert!(!held_then_approved(&setup, &token, "POST", "/labels"));
    assert!(held_then_approved(&setup, &token, "POST", "/other"));
    let bad = setup
        .palisade
        .run(&["approvals", "suggest", "--accept", "9"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("there is no suggestion 9"));
}
