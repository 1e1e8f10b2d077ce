//! The web UI of `palisade up` in a real headless Chromium (driven over WebDriver by
//! chromedriver, via fantoccini): log in with the printed URL, chat with an agent and
//! see its reply stream in, then approve a request the vault holds — the agent's bash
//! tool runs curl inside its bubblewrap sandbox, a `require_approval` rule holds it,
//! the approval appears on the approvals page without a reload, a click on Approve
//! lets it through, and the final reply appears in the chat. The upstream sees the
//! held request exactly once, and only after the click.
//!
//! Screenshots of the chat and the approvals page are kept under the cargo target dir
//! in `web-ui/`. chromedriver (and the Chromium it starts, in its process group) and
//! palisade are ChildGuards, killed even when the test fails; every wait is bounded.

mod browser;
mod host_fixture;

use browser::{
    browser, click, save_screenshot, screenshot_dir, start_chromedriver, start_palisade,
    wait_for_text, WAIT,
};
use fantoccini::Locator;
use host_fixture::{ok, world_with_secret_path, KEY};
use palisade_testkit::{ScriptedTurn, Upstream};
use std::time::{Duration, Instant};

fn held_requests(upstream: &Upstream) -> usize {
    upstream
        .requests()
        .iter()
        .filter(|r| r.path().starts_with("/approve-me"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_in_chat_with_a_streamed_reply_and_approve_a_held_request_in_chromium() {
    // The key only on the model API: the held request goes to the same test server,
    // whose echo would hand an injected key back to the agent.
    let world = world_with_secret_path(Some("/v1/*"));
    let (palisade, ca, upstream, listen) =
        (&world.palisade, &world.ca, &world.upstream, world.listen);
    ok(palisade.run(&[
        "rules",
        "create",
        "--name",
        "ask-first",
        "--host-pattern",
        "localhost",
        "--path-pattern",
        "/approve-me/*",
        "--action",
        "require_approval",
    ]));
    let held_url = upstream.url("/approve-me/report");
    let port = listen.port();
    // The sandbox exempts localhost from the proxy; the test upstream lives there. First
    // the agent tries the web UI itself: through the vault (which may reach `localhost`
    // in this test, yet refuses the host's own address) and directly (no network).
    let proxied = "env -u NO_PROXY -u no_proxy curl -s -o /dev/null --max-time 10";
    let command = format!(
        "{proxied} -w 'web-ui-via-vault-http:%{{http_code}}\\n' http://localhost:{port}/api/status; \
         {proxied} -w 'web-ui-via-vault-https:%{{http_code}}\\n' https://localhost:{port}/api/status; \
         curl -s -o /dev/null --max-time 10 -w 'web-ui-direct:%{{http_code}}\\n' http://127.0.0.1:{port}/api/status; \
         env -u NO_PROXY -u no_proxy curl -sS --max-time 100 {held_url}"
    );
    upstream.script_anthropic(vec![
        // With a bidi override, which the page shows as a marker, not raw.
        ScriptedTurn::text("Hello from the sandbox, streamed to your browser. gpj\u{202E}.exe"),
        ScriptedTurn::tool_use("bash", serde_json::json!({ "command": command })),
        ScriptedTurn::text("The held request went through after your approval."),
    ]);

    let (mut host, login_url) = start_palisade(palisade, ca, listen);
    let shots = screenshot_dir();
    let (mut driver, driver_port) = start_chromedriver(palisade.dir());
    let profile = palisade.dir().join("chromium-profile");
    std::fs::create_dir_all(&profile).unwrap();
    let client = browser(driver_port, &profile).await;

    // Log in: the token is exchanged for the cookie and leaves the address bar.
    client.goto(&login_url).await.expect("open the login URL");
    wait_for_text(&client, "h1", "the dashboard", |t| t == "Dashboard").await;
    let url = client.current_url().await.unwrap();
    assert_eq!(url.path(), "/");
    assert!(
        url.query().is_none(),
        "the token stayed in the address bar: {url}"
    );

    // The approvals page, open in its own tab before anything is held.
    let chat_tab = client.window().await.unwrap();
    let approvals_tab = client.new_window(true).await.unwrap().handle;
    client
        .switch_to_window(approvals_tab.clone())
        .await
        .unwrap();
    client
        .goto(&format!("http://{listen}/approvals"))
        .await
        .unwrap();
    wait_for_text(&client, "#pending", "the empty approvals list", |t| {
        t.contains("Nothing is waiting")
    })
    .await;

    // Chat: the reply streams into the page.
    client.switch_to_window(chat_tab.clone()).await.unwrap();
    client
        .goto(&format!("http://{listen}/chat?agent=helper"))
        .await
        .unwrap();
    let input = client.find(Locator::Css("#message")).await.unwrap();
    input.send_keys("Hello, agent!").await.unwrap();
    client
        .find(Locator::Css("#send"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(&client, ".msg.user .bubble", "my message", |t| {
        t == "Hello, agent!"
    })
    .await;
    wait_for_text(
        &client,
        ".msg.agent:not(.streaming) .bubble",
        "the reply",
        |t| {
            t.contains("Hello from the sandbox, streamed to your browser.")
                && t.contains("gpj⟨U+202E⟩.exe")
                && !t.contains('\u{202E}')
        },
    )
    .await;
    // It came as text deltas (the script counts them), not only as the final reply.
    let deltas = client
        .find(Locator::Css(".msg.agent[data-deltas]"))
        .await
        .expect("the reply was not streamed")
        .attr("data-deltas")
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(deltas.parse::<u32>().unwrap_or(0) >= 1, "deltas: {deltas}");
    save_screenshot(&client, "chat.png").await;

    // A request the vault holds.
    let input = client.find(Locator::Css("#message")).await.unwrap();
    input.send_keys("Please fetch the report.").await.unwrap();
    client
        .find(Locator::Css("#send"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // The tool's request is held: the chat says the turn waits for a person, and where
    // to decide (it used to say only "running bash" until the approval).
    wait_for_text(&client, "#chat-status", "the wait for approval", |t| {
        t.contains("waiting for a person to approve")
            && t.contains("palisade approvals approve apr_")
    })
    .await;

    // The vault holds it (seen from the CLI, so a failure below is the page's).
    let deadline = Instant::now() + WAIT;
    loop {
        let list = ok(palisade.run(&["approvals", "list", "--json"]));
        let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
        if list.as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nothing was held; upstream saw {:?}\nhost: {}",
            upstream
                .requests()
                .iter()
                .map(|r| format!("{} {}", r.path(), String::from_utf8_lossy(&r.body)))
                .collect::<Vec<_>>(),
            host.stderr()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // It shows up on the approvals page without a reload.
    client.switch_to_window(approvals_tab).await.unwrap();
    let card = wait_for_text(&client, "article.approval", "the held request", |t| {
        t.contains("/approve-me/report")
    })
    .await;
    assert!(card.contains("helper"), "{card}");
    assert!(card.contains("GET"), "{card}");
    let badge = client
        .find(Locator::Css("#approvals-badge"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(badge, "1");
    let source = client.source().await.unwrap();
    assert!(!source.contains(KEY), "the approvals page shows the key");
    assert_eq!(held_requests(upstream), 0, "sent before approval");
    save_screenshot(&client, "approvals.png").await;

    // Enter in the comment box starts a new line and decides nothing (in a one-line
    // input it submitted the form with its first button, Approve: a person typing the
    // reason for a denial approved).
    let comment = client
        .find(Locator::Css("article.approval textarea[name=comment]"))
        .await
        .unwrap();
    comment
        .send_keys(&format!(
            "no, wrong recipient{}",
            char::from(fantoccini::key::Key::Enter)
        ))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let still = ok(palisade.run(&["approvals", "list", "--json"]));
    let still: serde_json::Value = serde_json::from_slice(&still.stdout).unwrap();
    assert_eq!(
        still.as_array().map(Vec::len),
        Some(1),
        "Enter in the comment decided the approval: {still}"
    );
    assert_eq!(held_requests(upstream), 0, "Enter sent the held request");
    comment.clear().await.unwrap();

    click(&client, "article.approval button[value=approve]").await;
    wait_for_text(&client, "#approval-flash", "the decision", |t| {
        t.starts_with("approved")
    })
    .await;
    wait_for_text(&client, "#pending", "the emptied list", |t| {
        t.contains("Nothing is waiting")
    })
    .await;
    wait_for_text(&client, "#decided", "the decision in the history", |t| {
        t.contains("web:admin")
    })
    .await;

    // The curl completes and the final reply appears in the chat.
    client.switch_to_window(chat_tab).await.unwrap();
    wait_for_text(
        &client,
        ".msg.agent:not(.streaming) .bubble",
        "the final reply",
        |t| t.contains("The held request went through after your approval."),
    )
    .await;
    assert_eq!(
        held_requests(upstream),
        1,
        "the held request reached upstream once"
    );
    // The web UI was out of the sandbox's reach: the vault refused it (403, where the
    // UI itself would have answered 401) and there is no direct route (000).
    let tool_result = upstream
        .requests()
        .iter()
        .filter(|r| r.path().starts_with("/v1/messages"))
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .find(|body| body.contains("web-ui-direct:"))
        .expect("the probe's output reached the model");
    for expected in [
        "web-ui-via-vault-http:403",
        "web-ui-via-vault-https:403",
        "web-ui-direct:000",
    ] {
        assert!(
            tool_result.contains(expected),
            "{expected} missing: {tool_result}"
        );
    }
    save_screenshot(&client, "chat-after-approval.png").await;

    // The page acknowledged the replies it showed (as `palisade chat` does).
    let deadline = Instant::now() + WAIT;
    loop {
        let sessions = ok(palisade.run(&["sessions", "list", "--json"]));
        let sessions: serde_json::Value = serde_json::from_slice(&sessions.stdout).unwrap();
        let id = sessions[0]["id"].as_i64().expect("a session");
        let session = ok(palisade.run(&["sessions", "show", &id.to_string(), "--json"]));
        let session: serde_json::Value = serde_json::from_slice(&session.stdout).unwrap();
        let messages = session["messages"].as_array().cloned().unwrap_or_default();
        if messages.len() == 2 && messages.iter().all(|m| m["reply"]["delivered"] == true) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replies not acknowledged: {session}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Decided by the web admin, in the audit chain.
    let audit = ok(palisade.run(&["audit", "list", "--event", "approval.decide", "--json"]));
    let rows: serde_json::Value = serde_json::from_slice(&audit.stdout).unwrap();
    assert_eq!(rows[0]["actor"], "web:admin", "{rows}");
    assert_eq!(rows[0]["decision"], "approved", "{rows}");

    // A channel whose platform cannot be reached, for the Channels page to show failing.
    world.add_telegram_at("123:web-ui-test-token", "http://127.0.0.1:9", &[]);
    world.add_approver("helper", "tg", "111", "Ana");
    ok(palisade.run(&[
        "channels", "link", "tg", "--agent", "helper", "--chat", "111",
    ]));
    tokio::time::sleep(Duration::from_secs(5)).await;

    // The other pages render with what this run produced (kept for a look).
    for (path, heading, name) in [
        ("/", "Dashboard", "dashboard.png"),
        ("/agents/helper", "helper", "agent.png"),
        ("/sessions", "Sessions", "sessions.png"),
        ("/audit", "Audit log", "audit.png"),
        ("/vault", "Vault", "vault.png"),
    ] {
        client
            .goto(&format!("http://{listen}{path}"))
            .await
            .unwrap();
        wait_for_text(&client, "h1", heading, |t| t.starts_with(heading)).await;
        save_screenshot(&client, name).await;
    }
    let vault = client.source().await.unwrap();
    assert!(vault.contains("ask-first") && vault.contains("claude"));
    assert!(!vault.contains(KEY), "the vault page shows the key");
    client
        .goto(&format!("http://{listen}/channels"))
        .await
        .unwrap();
    wait_for_text(&client, "h1", "Channels", |t| t.starts_with("Channels")).await;
    save_screenshot(&client, "channels.png").await;
    let channels = client.source().await.unwrap();
    assert!(
        channels.contains("failing") && channels.contains("Ana"),
        "{channels}"
    );
    assert!(
        !channels.contains("web-ui-test-token"),
        "the Channels page shows a token"
    );

    // A session the host no longer knows (it restarted, or the browser lost its
    // cookie): the approvals page says it is logged out instead of going on showing a
    // list that no longer updates.
    client
        .goto(&format!("http://{listen}/approvals"))
        .await
        .unwrap();
    wait_for_text(&client, "h1", "Approvals", |t| t.starts_with("Approvals")).await;
    client.delete_all_cookies().await.unwrap();
    wait_for_text(&client, "#approval-flash", "the logged-out notice", |t| {
        t.contains("You are logged out") && t.contains("palisade login")
    })
    .await;

    client.close().await.expect("end the WebDriver session");
    let _ = driver.terminate();
    ok(palisade.run(&["down"]));
    let _ = host.wait_timeout(Duration::from_secs(30));
    assert!(
        !palisade.all_output().contains(KEY),
        "the key reached an output"
    );
    assert!(shots.join("chat.png").exists() && shots.join("approvals.png").exists());
}
