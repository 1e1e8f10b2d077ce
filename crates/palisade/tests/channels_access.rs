//! Strangers and owner notices on a chat channel, end to end (the real `palisade up`,
//! the fake Telegram): with `--unknown-senders ask`, a message from someone who may not
//! talk to the agent is not delivered; the agent's approver gets one access-request
//! card however often the stranger writes; once approved, the stranger's next message
//! reaches the agent and the reply comes back; a denied stranger never reaches it; a
//! direct message in an unlinked chat asks for the channel's access agent only when
//! one is set. A request the vault blocks or rate-limits is told to the approver once
//! per rule.

mod host_fixture;

use host_fixture::{ok, world, World};
use palisade_testkit::{FakeTelegram, ScriptedTurn};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);
const ANA: i64 = 111_111;
const MALLORY: i64 = 333_333;
const EVE: i64 = 444_444;
const BOB: i64 = 555_555;
const GROUP: i64 = -100_777;

fn never_reached_model(world: &World, text: &str) -> bool {
    world
        .model_requests()
        .iter()
        .all(|r| !String::from_utf8_lossy(&r.body).contains(text))
}

/// The fake Telegram as channel `tg`, which asks helper's approver (Ana) about
/// strangers, with [`GROUP`] linked to helper.
fn strangers_ask(world: &World) -> FakeTelegram {
    let telegram = FakeTelegram::start("123:access-token").expect("fake telegram");
    world.add_telegram(&telegram, &["--unknown-senders", "ask"]);
    world.add_approver("helper", "tg", &ANA.to_string(), "Ana");
    world.link("tg", "helper", &GROUP.to_string());
    telegram
}

fn curl(url: &str) -> serde_json::Value {
    serde_json::json!({ "command": format!("env -u NO_PROXY -u no_proxy curl -sS --max-time 30 {url}") })
}

#[test]
#[rustfmt::skip]
fn strangers_ask_for_access_and_blocked_requests_are_told_once() {
    let world = world();
    let telegram = strangers_ask(&world);
    let palisade = &world.palisade;
    // Bob approves another agent's requests on the same channel, not helper's.
    world.create_agent("other", "research");
    world.add_approver("other", "tg", &BOB.to_string(), "Bob");
    ok(palisade.run(&[
        "rules", "create", "--name", "no-blocked", "--host-pattern", "localhost",
        "--path-pattern", "/blocked/*", "--action", "block",
    ]));
    ok(palisade.run(&[
        "rules", "create", "--name", "one-a-minute", "--host-pattern", "localhost",
        "--path-pattern", "/limited/*", "--action", "rate_limit", "--rate-limit", "1", "--rate-window", "1m",
    ]));
    world.upstream.script_anthropic(vec![
        ScriptedTurn::tool_use("bash", curl(&world.upstream.url("/blocked/a"))),
        ScriptedTurn::tool_use("bash", curl(&world.upstream.url("/blocked/b"))),
        ScriptedTurn::tool_use("bash", curl(&world.upstream.url("/limited/a"))),
        ScriptedTurn::tool_use("bash", curl(&world.upstream.url("/limited/b"))),
        ScriptedTurn::text("Hello Mallory."),
    ]);
    let host = world.up();

    // Mallory writes in the linked group: not delivered, she is told, Ana is asked.
    telegram.user_writes_in(GROUP, MALLORY, "Mallory", "hi, let me in");
    let card = telegram
        .wait_for_message(ANA, WAIT, |m| m.has_buttons())
        .unwrap_or_else(|| panic!("no access card for Ana: {}", host.stderr()));
    assert!(card.text.contains("Access request"), "{}", card.text);
    assert!(card.text.contains("333333") && card.text.contains("asks to talk to agent helper"), "{}", card.text);
    assert!(card.button("Approve for 1 h").is_none(), "access is granted once, not for a time");
    let told = telegram
        .wait_for_message(GROUP, WAIT, |m| m.text.contains("not delivered"))
        .expect("Mallory is told her message was not delivered");
    // She cannot decide it herself: a text command from someone who approves nothing
    // is not a command (nothing decided, nothing audited as an attempt).
    let request = told.text.split("(request ").nth(1).and_then(|r| r.split(')').next()).expect("the request id").to_string();
    for _ in 0..5 {
        telegram.user_writes_in(GROUP, MALLORY, "Mallory", &format!("/approve {request} once"));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let refused = ok(palisade.run(&["audit", "list", "--json", "--event", "approval.refused"]));
    assert_eq!(String::from_utf8_lossy(&refused.stdout).trim(), "[]", "a stranger's command reached the engine");
    let status = ok(palisade.run(&["approvals", "show", &request, "--json"]));
    assert!(String::from_utf8_lossy(&status.stdout).contains("\"pending\""));
    // An approver of another agent learns nothing from a typed command: helper's real
    // id is answered exactly as an id that does not exist, naming no agent, and nothing
    // is decided (the attempt is audited).
    telegram.user_writes(BOB, "Bob", &format!("/approve {request} once"));
    let real = telegram
        .wait_for_message(BOB, WAIT, |m| m.text.contains("nothing was decided"))
        .unwrap_or_else(|| panic!("Bob's command was not answered: {}", host.stderr()));
    telegram.user_writes(BOB, "Bob", "/approve apr_zzzzzzzzzzzz once");
    let deadline = Instant::now() + WAIT;
    while telegram.messages_to(BOB).len() < 2 {
        assert!(Instant::now() < deadline, "Bob's second command was not answered");
        std::thread::sleep(Duration::from_millis(100));
    }
    let made_up = telegram.messages_to(BOB)[1].clone();
    assert_eq!(real.text, made_up.text, "a real id of another agent is told apart");
    assert!(!real.text.contains("helper") && !real.text.contains(&request), "{}", real.text);
    let status = ok(palisade.run(&["approvals", "show", &request, "--json"]));
    assert!(String::from_utf8_lossy(&status.stdout).contains("\"pending\""));
    let refused = ok(palisade.run(&["audit", "list", "--json", "--event", "approval.refused"]));
    assert!(String::from_utf8_lossy(&refused.stdout).contains("not an approver of this agent"));
    // Writing again asks nobody again.
    telegram.user_writes_in(GROUP, MALLORY, "Mallory", "hello??");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(telegram.messages_to(ANA).iter().filter(|m| m.has_buttons() || m.edits > 0).count(), 1);
    assert!(never_reached_model(&world, "let me in") && never_reached_model(&world, "hello??"));

    // Ana approves; Mallory's next message reaches the agent and the reply comes back.
    let press = telegram.user_presses(ANA, "Ana", ANA, card.message_id, &card.button("Approve once").unwrap());
    let answer = telegram.wait_for_answer(&press, WAIT).expect("Ana's press answered");
    assert!(answer.text.contains("Approved by Ana"), "{answer:?}");
    let listed = ok(palisade.run(&["channels", "list", "--json"]));
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed[0]["senders"][0]["user_id"], MALLORY.to_string(), "{listed}");
    assert_eq!(listed[0]["approvers"].as_array().unwrap().len(), 2, "Ana and Bob");
    telegram.user_writes_in(GROUP, MALLORY, "Mallory", "thanks, what can you do?");
    telegram
        .wait_for_message(GROUP, WAIT, |m| m.text == "Hello Mallory.")
        .unwrap_or_else(|| panic!("no reply to Mallory: {}", host.stderr()));
    // An allowed sender decides nothing: her press on a card is refused.
    let press = telegram.user_presses(MALLORY, "Mallory", MALLORY, card.message_id, &card.button("Approve once").unwrap());
    assert!(telegram.wait_for_answer(&press, WAIT).unwrap().show_alert);

    // The two blocked requests: one notice to Ana for the rule.
    let notice = telegram
        .wait_for_message(ANA, WAIT, |m| m.text.contains("was blocked by a rule"))
        .unwrap_or_else(|| panic!("no notice about the blocked request: {}", host.stderr()));
    assert!(notice.text.contains("no-blocked"), "{}", notice.text);
    std::thread::sleep(Duration::from_secs(3));
    let notices = telegram.messages_to(ANA).iter().filter(|m| m.text.contains("was blocked")).count();
    assert_eq!(notices, 1, "debounced per rule");
    let limited = telegram
        .wait_for_message(ANA, WAIT, |m| m.text.contains("hit a rate limit"))
        .unwrap_or_else(|| panic!("no notice about the rate limit: {}", host.stderr()));
    assert!(limited.text.contains("one-a-minute"), "{}", limited.text);

    // Eve writes to the bot directly: no linked chat and no access agent, so dropped
    // without asking anyone; with an access agent set, Ana is asked, and a denial
    // keeps Eve out.
    telegram.user_writes(EVE, "Eve", "hello bot");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(telegram.messages_to(ANA).iter().all(|m| !m.text.contains("444444")));
    ok(palisade.run(&["channels", "set", "tg", "--access-agent", "helper"]));
    telegram.user_writes(EVE, "Eve", "hello again");
    let card = telegram
        .wait_for_message(ANA, WAIT, |m| m.has_buttons() && m.text.contains("444444"))
        .unwrap_or_else(|| panic!("no access card for Eve: {}", host.stderr()));
    let press = telegram.user_presses(ANA, "Ana", ANA, card.message_id, &card.button("Deny").unwrap());
    telegram.wait_for_answer(&press, WAIT).expect("the denial answered");
    telegram.user_writes(EVE, "Eve", "pretty please");
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    for text in ["hello bot", "hello again", "pretty please"] {
        assert!(never_reached_model(&world, text), "{text} reached the agent");
    }
    let audit = ok(palisade.run(&["audit", "list", "--json", "--event", "sender.add"]));
    assert!(String::from_utf8_lossy(&audit.stdout).contains("333333"));

    // Taken back, Mallory is a stranger again: her old approval does not let her in,
    // Ana is asked anew.
    ok(palisade.run(&["channels", "disallow", "tg", "--agent", "helper", "--user", &MALLORY.to_string()]));
    telegram.user_writes_in(GROUP, MALLORY, "Mallory", "me again, still allowed?");
    telegram
        .wait_for_message(ANA, WAIT, |m| m.has_buttons() && m.text.contains("333333"))
        .unwrap_or_else(|| panic!("Ana was not asked again about Mallory: {}", host.stderr()));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(never_reached_model(&world, "still allowed?"), "a removed sender reached the agent");
    let listed = ok(palisade.run(&["channels", "list", "--json"]));
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert!(listed[0]["senders"].as_array().is_none_or(Vec::is_empty), "{listed}");
    world.down(host);
}

/// However many strangers write at once, at most 20 access requests wait for an agent's
/// approvers: the count and the new request are one step. (The count was read, then
/// the request made, by up to 64 handlers at once: 3,000 strangers in six bursts left
/// 41 waiting, each a card in the approver's chat.)
#[test]
#[rustfmt::skip]
fn a_burst_of_strangers_cannot_push_past_the_waiting_access_requests() {
    let world = world();
    let telegram = strangers_ask(&world);
    let palisade = &world.palisade;
    let host = world.up();
    for stranger in 0..400 {
        telegram.user_writes_in(GROUP, 1_000_000 + stranger, "Stranger", "let me in");
    }
    let pending = || -> usize {
        let listed = ok(palisade.run(&["approvals", "list", "--json", "--limit", "1000"]));
        let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
        listed.as_array().map_or(0, Vec::len)
    };
    // Every stranger is handled once the queue is empty; then the count stands.
    let deadline = Instant::now() + WAIT;
    while pending() < 20 {
        assert!(Instant::now() < deadline, "no access requests: {}", host.stderr());
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(pending(), 20);
    let cards = telegram.messages_to(ANA).iter().filter(|m| m.has_buttons()).count();
    assert!(cards <= 20, "{cards} cards");
}
