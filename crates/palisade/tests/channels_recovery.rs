//! An agent's `request_approval` survives `kill -9` of `palisade up` and is decided from
//! the card posted before the crash: the restarted host redelivers the message, the
//! runner asks again and finds the same approval (keyed by message and action), the
//! old card's button decides it (no "unknown approval"), no second card is posted, the
//! agent goes on, and its reply reaches the chat the message came from although the
//! process that received the message is gone.

mod host_fixture;

use host_fixture::{ok, world, ChildGuard};
use palisade_testkit::{FakeTelegram, ScriptedTurn};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);
const ANA: i64 = 111_111;

#[test]
#[rustfmt::skip]
fn a_request_approval_is_decided_from_its_card_after_a_kill_9() {
    let world = world();
    let telegram = FakeTelegram::start("123:recovery-token").expect("fake telegram");
    let palisade = &world.palisade;
    let token = palisade.write_file("tg.txt", telegram.token());
    ok(palisade.run(&[
        "channels", "add", "telegram", "tg", "--token-file", token.to_str().unwrap(),
        "--api-base", &telegram.api_base(),
    ]));
    ok(palisade.run(&[
        "approvers", "add", "--agent", "helper", "--channel", "tg", "--user", &ANA.to_string(),
        "--display-name", "Ana",
    ]));
    ok(palisade.run(&["channels", "link", "tg", "--agent", "helper", "--chat", &ANA.to_string()]));
    let ask = ScriptedTurn::tool_use(
        "request_approval",
        serde_json::json!({"action": "wire 20 EUR to Bob", "details": "his share of the rent"}),
    );
    // The turn before the crash asks; the turn redelivered after it asks the same.
    world.upstream.script_anthropic(vec![ask.clone(), ask, ScriptedTurn::text("Wired.")]);
    let mut host = world.up();
    telegram.user_writes(ANA, "Ana", "please pay Bob");
    let card = telegram
        .wait_for_message(ANA, WAIT, |m| m.has_buttons())
        .unwrap_or_else(|| panic!("no card: {}", host.stderr()));
    assert!(card.text.contains("helper asks: wire 20 EUR to Bob"), "{}", card.text);
    assert!(card.button("Always allow").is_none());

    // Killed once the card's reference is stored (the host logs it then). Killed
    // between the post and that write, the host posts the card again after the restart
    // (both copies' buttons work; only the new one is edited): no platform here takes
    // an idempotency key for a message.
    host_fixture::wait_for_log(&host, "approval card posted", 1);
    kill_9(&mut host);
    let host = world.up();
    // The old card decides the approval the restarted runner waits on.
    std::thread::sleep(Duration::from_millis(500));
    let press = telegram.user_presses(ANA, "Ana", ANA, card.message_id, &card.button("Approve once").unwrap());
    let answer = telegram.wait_for_answer(&press, WAIT).expect("the press answered");
    assert!(!answer.show_alert && answer.text.contains("Approved by Ana"), "{answer:?}");
    telegram
        .wait_for_message(ANA, WAIT, |m| m.text == "Wired.")
        .unwrap_or_else(|| panic!("the reply never reached the chat: {}", host.stderr()));
    let edited = telegram
        .wait_for_message(ANA, WAIT, |m| m.message_id == card.message_id && m.edits > 0)
        .unwrap_or_else(|| panic!("the card was not edited: {}", host.stderr()));
    assert!(edited.text.contains("Approved by Ana"));
    assert_eq!(
        telegram.messages_to(ANA).iter().filter(|m| m.text.contains("wire 20 EUR")).count(),
        1,
        "one card for one approval"
    );
    // The agent was told who approved.
    let told = world
        .model_requests()
        .iter()
        .any(|r| String::from_utf8_lossy(&r.body).contains("approved by Ana"));
    assert!(told, "the decision did not reach the agent");
    // Delivered by the channel's recovery of owed replies (the receiving process died).
    host_fixture::wait_for_log(&host, "a reply owed from before was delivered", 1);
    world.down(host);
}

fn kill_9(host: &mut ChildGuard) {
    host.child_mut().kill().expect("kill -9 of the host");
    let _ = host.wait_timeout(Duration::from_secs(10));
}
