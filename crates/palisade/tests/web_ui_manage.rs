//! A new user's first run, and managing Palisade, in a real headless Chromium
//! (chromedriver + fantoccini) against the real `palisade up` (bubblewrap, the vault
//! in-process, the testkit's fake Anthropic API on 127.0.0.1 over TLS).
//!
//! From a fresh home with no key and no terminal, `palisade up` says what to do; the
//! dashboard starts with the first-run form; the key typed there goes into the vault,
//! the model list is read from the fake's `/v1/models` through the vault and the newest
//! of the default family chosen; the first message's reply streams in. When the API
//! then answers `not_found_error` for the model, the chat and `palisade send` show the
//! one line. Agents, secrets and rules are then created, edited and deleted from the
//! browser and, side by side, with the CLI: `--json` shows the same result, and bad
//! input gets the CLI's own line; an agent's dial and allow-list set in the browser read
//! back as the CLI's. The key and a secret's value appear in no page, page
//! source, log or (in plain text) the database. Screenshots go to `web-ui/` under the
//! cargo target dir.

mod browser;

use browser::{
    browser, choose, click, fill, open, save_screenshot, start_chromedriver, start_palisade,
    wait_for_text, WAIT,
};
use fantoccini::{Client, Locator};
use palisade_testkit::{free_port, Palisade, TestCa, Upstream};
use serde_json::Value;
use std::net::SocketAddr;
use std::process::Output;
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_palisade");
const KEY: &str = "sk-ant-first-run-8d3c1f-NEVER-IN-A-PAGE";
const VALUE: &str = "ghp_browser-secret-5a7e-NEVER-IN-A-PAGE";
const ROTATED: &str = "ghp_rotated-secret-2b9d-NEVER-IN-A-PAGE";
const NEWEST: &str = "claude-sonnet-4-7-20261120";

fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn ok(output: Output) -> Output {
    assert!(output.status.success(), "{}", text(&output));
    output
}

fn json(palisade: &Palisade, args: &[&str]) -> Value {
    let mut full = vec!["--json"];
    full.extend_from_slice(args);
    let output = ok(palisade.run(&full));
    serde_json::from_slice(&output.stdout).expect("JSON")
}

/// The CLI's refusal: exit 1 and one line, returned without `error: `.
fn cli_error(output: Output) -> String {
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    lines[0]
        .strip_prefix("error: ")
        .expect("an error line")
        .to_string()
}

/// The element of `list` whose `name` is `name`.
fn named<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .expect("a list")
        .iter()
        .find(|item| item["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {list}"))
}

/// `value` without the fields that differ between two things made alike.
fn essence(value: &Value, drop: &[&str]) -> Value {
    let mut value = value.clone();
    if let Some(object) = value.as_object_mut() {
        for key in drop {
            object.remove(*key);
        }
    }
    value
}

/// The page's form error line.
async fn form_error(client: &Client) -> String {
    wait_for_text(client, "#form-error", "the form's error line", |t| {
        !t.is_empty()
    })
    .await
}

struct Sources(Vec<(String, String)>);

impl Sources {
    async fn keep(&mut self, client: &Client) {
        let url = client
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_default();
        let source = client.source().await.unwrap_or_default();
        self.0.push((url, source));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_run_to_first_answer_and_managing_everything_in_chromium() {
    let ca = TestCa::new().expect("test CA");
    let upstream = Upstream::start(&ca).expect("upstream");
    upstream.set_models(&[
        ("claude-sonnet-4-5-20250929", "2025-09-29T00:00:00Z"),
        ("claude-sonnet-4-6", "2026-02-17T00:00:00Z"),
        (NEWEST, "2026-11-20T00:00:00Z"),
        ("claude-opus-4-7", "2026-12-01T00:00:00Z"),
    ]);
    // No key anywhere: not in the environment, and no terminal to ask on.
    let palisade = Palisade::new(BINARY).env("ANTHROPIC_API_KEY", "");
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let (mut host, login_url) = start_palisade(&palisade, &ca, listen);
    let told = host.stderr();
    assert!(
        told.contains("no model key is stored") && told.contains("web UI"),
        "{told}"
    );
    let (mut driver, driver_port) = start_chromedriver(palisade.dir());
    let profile = palisade.dir().join("chromium-profile");
    std::fs::create_dir_all(&profile).unwrap();
    let client = browser(driver_port, &profile).await;
    let mut sources = Sources(Vec::new());

    // ---- First run ----
    client.goto(&login_url).await.expect("open the login URL");
    wait_for_text(&client, "h1", "the dashboard", |t| t == "Dashboard").await;
    wait_for_text(&client, "#first-run h2", "the first-run form", |t| {
        t.contains("model key")
    })
    .await;
    save_screenshot(&client, "first-run.png").await;
    fill(&client, "#key-form", "base_url", &upstream.base_url()).await;
    fill(&client, "#key-form", "key", KEY).await;
    click(&client, "#store-key").await;
    let model = wait_for_text(&client, "#ready-model", "the chosen model", |t| {
        !t.is_empty()
    })
    .await;
    assert_eq!(model, NEWEST, "the newest of the default family");
    sources.keep(&client).await;
    save_screenshot(&client, "first-run-ready.png").await;
    let assistant = json(&palisade, &["agents", "show", "assistant"]);
    assert_eq!(assistant["settings"]["model"], NEWEST);
    assert_eq!(assistant["settings"]["base_url"], upstream.base_url());
    let listed: Vec<_> = upstream
        .requests()
        .into_iter()
        .filter(|r| r.path() == "/v1/models")
        .collect();
    assert!(!listed.is_empty(), "the model list was not asked");
    assert_eq!(listed[0].api_key(), Some(KEY), "the vault injected the key");

    // The first message: its reply streams in.
    click(&client, "#first-message").await;
    wait_for_text(&client, "h1", "the chat", |t| t.contains("assistant")).await;
    client
        .find(Locator::Css("#message"))
        .await
        .unwrap()
        .send_keys("Hello from a new user!")
        .await
        .unwrap();
    click(&client, "#send").await;
    wait_for_text(
        &client,
        ".msg.agent:not(.streaming) .bubble",
        "the reply",
        |t| t.contains("echo: Hello from a new user!"),
    )
    .await;
    let deltas = client
        .find(Locator::Css(".msg.agent[data-deltas]"))
        .await
        .expect("the reply was not streamed")
        .attr("data-deltas")
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(deltas.parse::<u32>().unwrap_or(0) >= 1, "deltas: {deltas}");
    let asked = upstream
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.path() == "/v1/messages")
        .expect("a model request");
    assert_eq!(asked.body_json().unwrap()["model"], NEWEST);
    sources.keep(&client).await;
    save_screenshot(&client, "first-run-chat.png").await;

    // The model is retired: one line in the chat and from `palisade send`.
    upstream.retire_model(NEWEST);
    let line = format!(
        "model {NEWEST} is not available: choose another on the agent page or with `palisade agents edit assistant --model M`"
    );
    client
        .find(Locator::Css("#message"))
        .await
        .unwrap()
        .send_keys("Still there?")
        .await
        .unwrap();
    click(&client, "#send").await;
    // The page shows the command as code, without the backticks.
    let shown = line.replace('`', "");
    wait_for_text(
        &client,
        ".msg.agent.error .bubble",
        "the one-line error",
        |t| t.contains(&shown),
    )
    .await;
    let command = client
        .find(Locator::Css(".msg.agent.error .bubble code"))
        .await
        .expect("the command is shown as code")
        .text()
        .await
        .unwrap();
    assert_eq!(command, "palisade agents edit assistant --model M");
    save_screenshot(&client, "model-not-available.png").await;
    let sent = palisade.run(&["send", "--agent", "assistant", "are you there?"]);
    assert!(cli_error(sent).contains(&line));

    // Choosing another model on the agent page: the provider's list through the vault.
    open(&client, listen, "/agents/assistant", "assistant").await;
    choose(&client, "#settings-form", "model", "claude-sonnet-4-6").await;
    click(&client, "#save-settings").await;
    wait_for_text(&client, "#saved", "the saved note", |t| {
        t.contains("Settings saved")
    })
    .await;
    assert_eq!(
        json(&palisade, &["agents", "show", "assistant"])["settings"]["model"],
        "claude-sonnet-4-6"
    );
    sources.keep(&client).await;

    // ---- Agents, from the browser and from the CLI ----
    open(&client, listen, "/agents/new", "New agent").await;
    fill(&client, "#agent-form", "name", "web-agent").await;
    choose(&client, "#agent-form", "profile", "action").await;
    fill(&client, "#agent-form", "model", "claude-opus-4-6").await;
    fill(&client, "#agent-form", "concurrency", "2").await;
    fill(&client, "#agent-form", "idle_timeout", "1h").await;
    fill(&client, "#agent-form", "workspace_quota", "2G").await;
    click(&client, "#create-agent").await;
    wait_for_text(&client, "#saved", "the created agent", |t| {
        t.contains("Agent created")
    })
    .await;
    save_screenshot(&client, "agent-created.png").await;
    ok(palisade.run(&[
        "agents",
        "create",
        "cli-agent",
        "--profile",
        "action",
        "--model",
        "claude-opus-4-6",
        "--concurrency",
        "2",
        "--idle-timeout",
        "1h",
        "--workspace-quota",
        "2G",
    ]));
    let same = |web: &Value, cli: &Value| {
        assert_eq!(web["profile"], cli["profile"]);
        assert_eq!(web["settings"], cli["settings"]);
    };
    same(
        &json(&palisade, &["agents", "show", "web-agent"]),
        &json(&palisade, &["agents", "show", "cli-agent"]),
    );
    // Bad input: the CLI's line.
    open(&client, listen, "/agents/new", "New agent").await;
    fill(&client, "#agent-form", "name", "x").await;
    fill(&client, "#agent-form", "turn_timeout", "soon").await;
    click(&client, "#create-agent").await;
    let shown = form_error(&client).await;
    let expected = cli_error(palisade.run(&["agents", "create", "x", "--turn-timeout", "soon"]));
    assert_eq!(shown, expected);
    // Edit.
    open(&client, listen, "/agents/web-agent", "web-agent").await;
    fill(&client, "#settings-form", "turn_timeout", "5m").await;
    fill(&client, "#settings-form", "model", "claude-sonnet-4-6").await;
    click(&client, "#save-settings").await;
    wait_for_text(&client, "#saved", "the saved settings", |t| {
        t.contains("Settings saved")
    })
    .await;
    ok(palisade.run(&[
        "agents",
        "edit",
        "cli-agent",
        "--turn-timeout",
        "5m",
        "--model",
        "claude-sonnet-4-6",
    ]));
    same(
        &json(&palisade, &["agents", "show", "web-agent"]),
        &json(&palisade, &["agents", "show", "cli-agent"]),
    );

    // ---- The dial and the allow-list, beside `agents dial|allow` ----
    open(&client, listen, "/agents/web-agent", "web-agent").await;
    choose(&client, "#dial-preset-form", "preset", "strict").await;
    click(&client, "#apply-preset").await;
    wait_for_text(&client, "#dial-preset", "the strict preset", |t| {
        t == "preset strict"
    })
    .await;
    choose(&client, "#dial-knobs-form", "approvals", "first-use").await;
    click(&client, "#save-dial").await;
    // One knob off the preset: custom.
    wait_for_text(&client, "#dial-preset", "the custom dial", |t| {
        t == "custom"
    })
    .await;
    ok(palisade.run(&["agents", "dial", "cli-agent", "--preset", "strict"]));
    ok(palisade.run(&["agents", "dial", "cli-agent", "--approvals", "first-use"]));
    let dial = |agent: &str| {
        let mut value = json(&palisade, &["agents", "dial", agent]);
        value.as_object_mut().unwrap().remove("agent");
        value
    };
    assert_eq!(dial("web-agent"), dial("cli-agent"));
    assert_eq!(dial("web-agent")["approvals"], "first-use");
    choose(&client, "#allow-form", "agent", "cli-agent").await;
    choose(&client, "#allow-form", "approve", "inbound").await;
    click(&client, "#allow").await;
    wait_for_text(&client, "#saved", "the allowed agent", |t| {
        t.contains("Allowed")
    })
    .await;
    let links = json(&palisade, &["agents", "links", "web-agent"]);
    assert_eq!(links.as_array().map(Vec::len), Some(1), "{links}");
    assert_eq!(links[0]["from"], "web-agent");
    assert_eq!(links[0]["to"], "cli-agent");
    assert_eq!(links[0]["approve_inbound"], true);
    open(&client, listen, "/agents/web-agent#dial", "web-agent").await;
    let explained = wait_for_text(&client, "#dial-explain", "the dial in words", |t| {
        t.contains("Approvals (first-use)")
    })
    .await;
    assert!(explained.contains("Sanitizing (strict)"), "{explained}");
    sources.keep(&client).await;
    save_screenshot(&client, "agent-dial.png").await;

    // ---- Secrets ----
    open(&client, listen, "/vault/secrets/new", "New secret").await;
    fill(&client, "#secret-form", "name", "web-gh").await;
    fill(&client, "#secret-form", "host_pattern", "api.github.com").await;
    fill(&client, "#secret-form", "path_pattern", "/repos/*").await;
    fill(
        &client,
        "#secret-form",
        "inject",
        "header:Authorization:token {value}",
    )
    .await;
    fill(&client, "#secret-form", "priority", "3").await;
    fill(&client, "#secret-form", "value", VALUE).await;
    click(&client, "#secret-form input[name=agent][value=web-agent]").await;
    click(&client, "#create-secret").await;
    wait_for_text(&client, "#saved", "the added secret", |t| {
        t.contains("Secret added")
    })
    .await;
    sources.keep(&client).await;
    save_screenshot(&client, "secret.png").await;
    ok(palisade.run_stdin(
        &[
            "secrets",
            "create",
            "--name",
            "cli-gh",
            "--host-pattern",
            "api.github.com",
            "--path-pattern",
            "/repos/*",
            "--inject",
            "header:Authorization:token {value}",
            "--priority",
            "3",
            "--agent",
            "web-agent",
        ],
        VALUE.as_bytes(),
    ));
    let secrets = json(&palisade, &["secrets", "list"]);
    let drop = ["name", "id", "created_at_ms"];
    assert_eq!(
        essence(named(&secrets, "web-gh"), &drop),
        essence(named(&secrets, "cli-gh"), &drop)
    );
    open(&client, listen, "/vault/secrets/new", "New secret").await;
    fill(&client, "#secret-form", "name", "bad").await;
    fill(&client, "#secret-form", "host_pattern", "a.*.com").await;
    fill(&client, "#secret-form", "inject", "bearer").await;
    fill(&client, "#secret-form", "value", VALUE).await;
    click(&client, "#create-secret").await;
    let shown = form_error(&client).await;
    sources.keep(&client).await;
    let expected = cli_error(palisade.run_stdin(
        &[
            "secrets",
            "create",
            "--name",
            "bad",
            "--host-pattern",
            "a.*.com",
            "--inject",
            "bearer",
        ],
        VALUE.as_bytes(),
    ));
    assert_eq!(shown, expected);
    // Rotate, revoke (confirmed), delete (confirmed).
    open(&client, listen, "/vault/secrets/web-gh", "Secret web-gh").await;
    fill(&client, "#rotate-form", "value", ROTATED).await;
    click(&client, "#rotate-form input[name=confirm]").await;
    click(&client, "#rotate").await;
    wait_for_text(&client, "#saved", "the rotation", |t| {
        t.contains("Value replaced")
    })
    .await;
    sources.keep(&client).await;
    click(&client, "#grants a.danger").await;
    wait_for_text(&client, "h1", "the revoke confirmation", |t| {
        t.starts_with("Revoke")
    })
    .await;
    assert_eq!(
        named(&json(&palisade, &["secrets", "list"]), "web-gh")["agents"],
        serde_json::json!(["web-agent"]),
        "asking changed nothing"
    );
    click(&client, "#confirm").await;
    wait_for_text(&client, "#saved", "the revocation", |t| {
        t.contains("revoked")
    })
    .await;
    ok(palisade.run(&["secrets", "revoke", "cli-gh", "--agent", "web-agent"]));
    let secrets = json(&palisade, &["secrets", "list"]);
    assert_eq!(named(&secrets, "web-gh")["agents"], serde_json::json!([]));
    assert_eq!(
        essence(named(&secrets, "web-gh"), &drop),
        essence(named(&secrets, "cli-gh"), &drop)
    );
    click(&client, "#delete-secret").await;
    wait_for_text(&client, "h1", "the delete confirmation", |t| {
        t.starts_with("Delete secret")
    })
    .await;
    click(&client, "#confirm").await;
    wait_for_text(&client, "h1", "the vault page", |t| t == "Vault").await;
    ok(palisade.run(&["secrets", "delete", "cli-gh"]));
    let names: Vec<Value> = json(&palisade, &["secrets", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].clone())
        .collect();
    assert_eq!(names, vec![serde_json::json!("anthropic")]);

    // ---- Rules ----
    open(&client, listen, "/vault/rules/new", "New rule").await;
    fill(&client, "#rule-form", "name", "web-rule").await;
    choose(&client, "#rule-form", "action", "rate_limit").await;
    fill(&client, "#rule-form", "host_pattern", "localhost").await;
    fill(&client, "#rule-form", "path_pattern", "/v1/*").await;
    fill(&client, "#rule-form", "method", "POST").await;
    choose(&client, "#rule-form", "agent", "assistant").await;
    fill(&client, "#rule-form", "rate_limit", "100").await;
    fill(&client, "#rule-form", "rate_window", "1h").await;
    fill(&client, "#rule-form", "priority", "4").await;
    click(&client, "#preview-rule").await;
    // The model requests of this run were injected: the preview finds them.
    let count = wait_for_text(&client, "#preview-count", "the preview", |t| !t.is_empty()).await;
    assert!(
        count.parse::<u32>().unwrap_or(0) >= 1,
        "preview matched {count}"
    );
    save_screenshot(&client, "rule-preview.png").await;
    assert!(json(&palisade, &["rules", "list"])
        .as_array()
        .unwrap()
        .is_empty());
    click(&client, "#save-rule").await;
    wait_for_text(&client, "#saved", "the saved rule", |t| {
        t.contains("Rule saved")
    })
    .await;
    ok(palisade.run(&[
        "rules",
        "create",
        "--name",
        "cli-rule",
        "--action",
        "rate_limit",
        "--host-pattern",
        "localhost",
        "--path-pattern",
        "/v1/*",
        "--method",
        "POST",
        "--agent",
        "assistant",
        "--rate-limit",
        "100",
        "--rate-window",
        "1h",
        "--priority",
        "4",
    ]));
    let drop = ["name", "id", "created_at_ms"];
    let rules = json(&palisade, &["rules", "list"]);
    assert_eq!(
        essence(named(&rules, "web-rule"), &drop),
        essence(named(&rules, "cli-rule"), &drop)
    );
    open(&client, listen, "/vault/rules/new", "New rule").await;
    fill(&client, "#rule-form", "name", "x").await;
    choose(&client, "#rule-form", "action", "rate_limit").await;
    fill(&client, "#rule-form", "host_pattern", "a.com").await;
    click(&client, "#save-rule").await;
    let shown = form_error(&client).await;
    let expected = cli_error(palisade.run(&[
        "rules",
        "create",
        "--name",
        "x",
        "--host-pattern",
        "a.com",
        "--action",
        "rate_limit",
    ]));
    assert_eq!(shown, expected);
    // Edit, disable, delete (confirmed).
    let id = named(&rules, "web-rule")["id"].as_i64().unwrap();
    open(
        &client,
        listen,
        &format!("/vault/rules/{id}/edit"),
        "Edit rule",
    )
    .await;
    fill(&client, "#rule-form", "rate_limit", "250").await;
    click(&client, "#save-rule").await;
    wait_for_text(&client, "#saved", "the edited rule", |t| {
        t.contains("Rule saved")
    })
    .await;
    ok(palisade.run(&["rules", "edit", "cli-rule", "--rate-limit", "250"]));
    click(&client, "tr[data-rule=web-rule] form.inline button").await;
    wait_for_text(
        &client,
        "tr[data-rule=web-rule]",
        "the disabled rule",
        |t| t.contains("disabled"),
    )
    .await;
    ok(palisade.run(&["rules", "disable", "cli-rule"]));
    let rules = json(&palisade, &["rules", "list"]);
    assert_eq!(named(&rules, "web-rule")["enabled"], false);
    assert_eq!(named(&rules, "web-rule")["rate_limit"], 250);
    assert_eq!(
        essence(named(&rules, "web-rule"), &drop),
        essence(named(&rules, "cli-rule"), &drop)
    );
    save_screenshot(&client, "vault-managed.png").await;
    click(&client, "tr[data-rule=web-rule] a.danger").await;
    wait_for_text(&client, "h1", "the rule's delete confirmation", |t| {
        t.starts_with("Delete rule")
    })
    .await;
    click(&client, "#confirm").await;
    wait_for_text(&client, "h1", "the vault page", |t| t == "Vault").await;
    ok(palisade.run(&["rules", "delete", "cli-rule"]));
    assert!(json(&palisade, &["rules", "list"])
        .as_array()
        .unwrap()
        .is_empty());

    // Deleting an agent asks first.
    open(&client, listen, "/agents/web-agent", "web-agent").await;
    click(&client, "#delete-agent").await;
    wait_for_text(&client, "h1", "the agent's delete confirmation", |t| {
        t.starts_with("Delete agent")
    })
    .await;
    assert!(ok(palisade.run(&["agents", "show", "web-agent"]))
        .status
        .success());
    click(&client, "#confirm").await;
    wait_for_text(&client, "h1", "the agents page", |t| t == "Agents").await;
    ok(palisade.run(&["agents", "delete", "cli-agent", "--yes"]));
    let agents: Vec<Value> = json(&palisade, &["agents", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].clone())
        .collect();
    assert_eq!(agents, vec![serde_json::json!("assistant")]);

    // The audit log's retention: too short is refused and changes nothing; a good one
    // is saved, shown, and what the CLI reads; then every row is kept again.
    open(&client, listen, "/audit", "Audit log").await;
    wait_for_text(&client, "#retention-now", "no retention yet", |t| {
        t == "Every row is kept."
    })
    .await;
    fill(&client, "#retention", "keep", "12h").await;
    click(&client, "#save-retention").await;
    wait_for_text(&client, "#form-error", "the refused retention", |t| {
        t.contains("at least 24 hours")
    })
    .await;
    assert_eq!(
        json(&palisade, &["audit", "retention"])["keep_ms"],
        Value::Null
    );
    open(&client, listen, "/audit", "Audit log").await;
    fill(&client, "#retention", "keep", "400d").await;
    click(&client, "#save-retention").await;
    wait_for_text(&client, "#retention-saved", "the saved retention", |t| {
        t.contains("Retention saved. 0 older rows were pruned now.")
    })
    .await;
    wait_for_text(&client, "#retention-now", "the retention shown", |t| {
        t.starts_with("Rows are kept for 400d;")
    })
    .await;
    assert_eq!(json(&palisade, &["audit", "retention"])["keep"], "400d");
    save_screenshot(&client, "audit-retention.png").await;
    click(&client, "#keep-every-row").await;
    wait_for_text(&client, "#retention-now", "the retention off", |t| {
        t == "Every row is kept."
    })
    .await;
    assert_eq!(
        json(&palisade, &["audit", "retention"])["keep_ms"],
        Value::Null
    );

    // Every change from the browser is audited as the web admin.
    let audit = json(&palisade, &["audit", "list", "--limit", "500"]);
    let by_web: Vec<String> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| row["actor"] == "web:admin")
        .filter_map(|row| row["event"].as_str().map(str::to_string))
        .collect();
    for event in [
        "secret.create",
        "agent.create",
        "agent.update",
        "agent.delete",
        "secret.rotate",
        "secret.revoke",
        "secret.delete",
        "rule.create",
        "rule.update",
        "rule.disable",
        "rule.delete",
        "audit.retention",
    ] {
        assert!(by_web.iter().any(|e| e == event), "{event}: {by_web:?}");
    }

    // The traffic chart shows this run's model requests (counted by the vault).
    let deadline = Instant::now() + WAIT;
    loop {
        open(&client, listen, "/agents/assistant", "assistant").await;
        let source = client.source().await.unwrap_or_default();
        if source.contains("class=\"bar injected\"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no injected requests in the chart"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    sources.keep(&client).await;
    save_screenshot(&client, "agent-traffic.png").await;
    open(&client, listen, "/", "Dashboard").await;
    sources.keep(&client).await;
    save_screenshot(&client, "dashboard-traffic.png").await;
    open(&client, listen, "/health", "Health").await;
    wait_for_text(&client, "#health-summary", "the health summary", |t| {
        !t.is_empty()
    })
    .await;
    sources.keep(&client).await;
    save_screenshot(&client, "health.png").await;
    for path in ["/vault", "/audit", "/approvals", "/agents"] {
        open(&client, listen, path, "").await;
        sources.keep(&client).await;
    }

    client.close().await.expect("end the WebDriver session");
    let _ = driver.terminate();
    ok(palisade.run(&["down"]));
    let _ = host.wait_timeout(Duration::from_secs(30));

    // The key and the secret's values: in no page, no log, not in the database as text.
    for (url, source) in &sources.0 {
        for value in [KEY, VALUE, ROTATED] {
            assert!(!source.contains(value), "{url} shows {value}");
        }
    }
    let mut logs = palisade.all_output();
    if let Ok(entries) = std::fs::read_dir(palisade.home().join("logs")) {
        for entry in entries.flatten() {
            logs.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
    }
    for value in [KEY, VALUE, ROTATED] {
        assert!(!logs.contains(value), "a log holds {value}");
    }
    for file in ["palisade.db", "palisade.db-wal"] {
        let bytes = std::fs::read(palisade.home().join(file)).unwrap_or_default();
        for value in [KEY, VALUE, ROTATED] {
            assert!(
                !bytes.windows(value.len()).any(|w| w == value.as_bytes()),
                "{file} holds {value} in plain text"
            );
        }
    }
}

/// Creates a pending approval for agent `mailer` straight in the store (as a gateway
/// holding a request would) and returns its id.
fn hold(palisade: &Palisade, title: &str) -> String {
    let store = palisade_store::Store::open(&palisade_store::Home::at(palisade.home()))
        .expect("open the store");
    store
        .create_approval(palisade_store::NewApproval {
            kind: "credential_use".into(),
            agent: palisade_policy::AgentName::new("mailer").unwrap(),
            title: title.into(),
            lines: vec![format!("POST https://api.example.com/{title}")],
            detail: String::new(),
            context: serde_json::json!({"method": "POST", "host": "api.example.com"}),
            expires_at_ms: palisade_store::now_ms() + 600_000,
            holder: None,
            request_key: None,
        })
        .expect("create an approval")
        .id
}

/// Where a card is on the page (its top edge).
async fn top_of(client: &Client, id: &str) -> f64 {
    client
        .find(Locator::Css(&format!("article[data-id=\"{id}\"]")))
        .await
        .unwrap_or_else(|_| panic!("no card for {id}"))
        .rectangle()
        .await
        .unwrap()
        .1
}

/// The live approvals list never moves a card under the pointer: when the card above
/// another is decided elsewhere (here with the CLI), it stays in its place, greyed and
/// without buttons, so a click aimed at the card below cannot land on the one that
/// moves up into its place; a new approval is added at the end; the card a person
/// decides on the page goes. (Before: the whole list was replaced, and every card below
/// a closed one moved up.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_cards_never_move_under_the_pointer() {
    let ca = TestCa::new().expect("test CA");
    let palisade = Palisade::new(BINARY).env("ANTHROPIC_API_KEY", "");
    ok(palisade.run(&["agents", "create", "mailer"]));
    let first = hold(&palisade, "first");
    let second = hold(&palisade, "second");
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let (mut host, login_url) = start_palisade(&palisade, &ca, listen);
    let (mut driver, driver_port) = start_chromedriver(palisade.dir());
    let profile = palisade.dir().join("chromium-profile");
    std::fs::create_dir_all(&profile).unwrap();
    let client = browser(driver_port, &profile).await;
    client.goto(&login_url).await.expect("open the login URL");
    wait_for_text(&client, "h1", "the dashboard", |t| t == "Dashboard").await;
    open(&client, listen, "/approvals", "Approvals").await;
    let second_top = top_of(&client, &second).await;
    assert!(top_of(&client, &first).await < second_top);

    // Decided elsewhere: the first card stays where it was, closed.
    ok(palisade.run(&["approvals", "deny", &first]));
    let closed = format!("article[data-id=\"{first}\"] .closed-note");
    wait_for_text(&client, &closed, "the closed card's note", |t| {
        t.contains("No longer waiting")
    })
    .await;
    assert_eq!(
        top_of(&client, &second).await,
        second_top,
        "the card below a closed one moved"
    );
    let first_buttons = client
        .find_all(Locator::Css(&format!(
            "article[data-id=\"{first}\"] button"
        )))
        .await
        .unwrap();
    for button in first_buttons {
        assert_eq!(
            button.attr("disabled").await.unwrap().as_deref(),
            Some("true"),
            "a closed card can still be clicked"
        );
    }
    // A new one is added at the end.
    let third = hold(&palisade, "third");
    let third_card = format!("article[data-id=\"{third}\"]");
    wait_for_text(&client, &third_card, "the new card", |t| {
        t.contains("third")
    })
    .await;
    assert!(top_of(&client, &third).await > second_top);
    assert_eq!(top_of(&client, &second).await, second_top);

    // The card decided here closes where it is (removed, the one below would move up
    // under the pointer for the second click of a double-click).
    click(
        &client,
        &format!("article[data-id=\"{second}\"] button[value=deny]"),
    )
    .await;
    wait_for_text(&client, "#approval-flash", "the decision", |t| {
        t.starts_with("denied")
    })
    .await;
    let closed = format!("article[data-id=\"{second}\"] .closed-note");
    wait_for_text(&client, &closed, "the decided card's note", |t| {
        t.contains("Decided here")
    })
    .await;
    assert!(
        top_of(&client, &third).await > second_top,
        "the card below the decided one moved up"
    );

    // A card that arrives comes with its buttons disabled (seen by an observer as it is
    // inserted), and they are armed afterwards.
    client
        .execute(
            "window.insertedDisabled = []; new MutationObserver(function (changes) { changes.forEach(function (change) { change.addedNodes.forEach(function (node) { if (node.querySelectorAll) node.querySelectorAll('button').forEach(function (b) { window.insertedDisabled.push(b.disabled); }); }); }); }).observe(document.getElementById('pending'), { childList: true });",
            vec![],
        )
        .await
        .unwrap();
    let fourth = hold(&palisade, "fourth");
    let fourth_approve = format!("article[data-id=\"{fourth}\"] button[value=approve]");
    let deadline = Instant::now() + WAIT;
    let button = loop {
        if let Ok(button) = client.find(Locator::Css(&fourth_approve)).await {
            break button;
        }
        assert!(Instant::now() < deadline, "the fourth card never came");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    while !button.is_enabled().await.unwrap() {
        assert!(Instant::now() < deadline, "the new card was never armed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let inserted = client
        .execute("return window.insertedDisabled;", vec![])
        .await
        .unwrap();
    let inserted = inserted.as_array().cloned().unwrap_or_default();
    assert!(
        !inserted.is_empty() && inserted.iter().all(|d| d == true),
        "a new card's buttons worked as it came: {inserted:?}"
    );

    client.close().await.expect("end the WebDriver session");
    let _ = driver.terminate();
    ok(palisade.run(&["down"]));
    let _ = host.wait_timeout(Duration::from_secs(30));
}
