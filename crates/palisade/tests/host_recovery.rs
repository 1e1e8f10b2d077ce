//! Nothing is lost and nothing is answered twice: `kill -9` of `palisade up` at the
//! points a message passes through (accepted but not yet delivered, mid-turn after the
//! agent sent a message to the conversation, reply stored but not yet read by its
//! client), and agent memory surviving a runner's stop. The kill points are reached
//! with real timing: a model turn that makes the runner sleep in a tool holds a message
//! in flight, and a client that stops reading holds a stored reply unread. The fake
//! model server's recorded requests and `palisade sessions show` say what happened.

mod host_fixture;

use host_fixture::*;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

fn kill_9(host: &mut ChildGuard) {
    host.child_mut().kill().expect("kill -9 of the host");
    let _ = host.wait_timeout(Duration::from_secs(10));
}

/// Waits until session `id` has `count` messages stored.
fn wait_for_messages(world: &World, id: i64, count: usize, host: &ChildGuard) -> serde_json::Value {
    let deadline = Instant::now() + STARTUP;
    loop {
        let session = world.session(id);
        if session["messages"].as_array().map(Vec::len) == Some(count) {
            return session;
        }
        assert!(
            Instant::now() < deadline,
            "session {id} never had {count} messages: {session}\n{}",
            host.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_for_session(world: &World, host: &ChildGuard) -> i64 {
    let deadline = Instant::now() + STARTUP;
    loop {
        let sessions = world.sessions();
        if let Some(id) = sessions[0]["id"].as_i64() {
            return id;
        }
        assert!(Instant::now() < deadline, "no session: {}", host.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_message_accepted_but_not_yet_delivered_is_answered_once_after_a_crash() {
    let world = world();
    // The first message holds the agent's one runner (per-agent concurrency 1) in a
    // sleeping tool, so the second is accepted and waits undelivered.
    world.upstream.script_anthropic(vec![
        ScriptedTurn::tool_use("bash", serde_json::json!({"command": "sleep 60"})),
        ScriptedTurn::text("first answered after the restart"),
    ]);
    let mut host = world.up();
    let _first = world
        .palisade
        .spawn(&["send", "--agent", "helper", "first"]);
    assert!(
        world.upstream.wait_for_count(1, STARTUP),
        "the runner never called the model: {}",
        host.stderr()
    );
    let _second = world
        .palisade
        .spawn(&["send", "--agent", "helper", "second"]);
    let session_id = wait_for_session(&world, &host);
    let session = wait_for_messages(&world, session_id, 2, &host);
    let messages = session["messages"].as_array().unwrap();
    assert_eq!(messages[0]["message"]["status"], "delivered");
    assert_eq!(messages[1]["message"]["status"], "pending", "{session}");
    assert_eq!(messages[1]["message"]["attempts"], 0);
    assert_eq!(
        world.model_requests().len(),
        1,
        "one message in flight at a time"
    );

    kill_9(&mut host);
    // Stored as it was: both unanswered.
    let session = world.session(session_id);
    assert!(session["messages"][0]["reply"].is_null());
    assert!(session["messages"][1]["reply"].is_null());

    let host = world.up();
    let session = world.wait_answered(session_id, 2, &host);
    let messages = session["messages"].as_array().unwrap();
    assert_eq!(messages[0]["message"]["attempts"], 2);
    assert_eq!(
        messages[0]["reply"]["text"],
        "first answered after the restart"
    );
    assert_eq!(messages[1]["message"]["attempts"], 1);
    assert_eq!(messages[1]["reply"]["text"], "echo: second");
    // The sleeping call, the first message again, the second: nothing more comes.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(world.model_requests().len(), 3);
    world.down(host);
}

#[test]
fn a_message_the_agent_sent_before_a_crash_is_kept_and_not_repeated() {
    let world = world();
    world.upstream.script_anthropic(vec![
        ScriptedTurn::tool_use("send_message", serde_json::json!({"text": "working on it"})),
        ScriptedTurn::tool_use("bash", serde_json::json!({"command": "sleep 60"})),
        ScriptedTurn::text("finished"),
    ]);
    let mut host = world.up();
    let mut sender = world
        .palisade
        .spawn(&["send", "--agent", "helper", "do the job"]);
    // The second model call comes after the send_message result: the note is sent.
    assert!(
        world.upstream.wait_for_count(2, STARTUP),
        "{}",
        host.stderr()
    );
    let deadline = Instant::now() + STARTUP;
    while !sender.stdout().contains("working on it") {
        assert!(Instant::now() < deadline, "send never showed the note");
        std::thread::sleep(Duration::from_millis(50));
    }
    kill_9(&mut host);
    let _ = sender.wait_timeout(Duration::from_secs(30));

    // With the host down, the store has the note and no reply.
    let session_id = world.only_session();
    let session = world.session(session_id);
    let message = &session["messages"][0];
    assert!(message["reply"].is_null(), "{session}");
    assert_eq!(
        message["sent"].as_array().map(Vec::len),
        Some(1),
        "{session}"
    );
    assert_eq!(message["sent"][0]["text"], "working on it");
    let shown = ok(world
        .palisade
        .run(&["sessions", "show", &session_id.to_string()]));
    assert!(String::from_utf8_lossy(&shown.stdout).contains("(sent) working on it"));

    let host = world.up();
    let session = world.wait_answered(session_id, 1, &host);
    let message = &session["messages"][0];
    assert_eq!(message["reply"]["text"], "finished");
    assert_eq!(
        message["sent"].as_array().map(Vec::len),
        Some(1),
        "{session}"
    );
    world.down(host);
}

/// A client of the API that sends a message and reads only up to `accepted`.
fn post_and_stop_reading(world: &World, text: &str) -> (std::net::TcpStream, i64) {
    let info: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(world.palisade.home().join("run/host.json")).unwrap(),
    )
    .unwrap();
    let token = info["token"].as_str().unwrap();
    let body = serde_json::json!({"text": text, "conversation": "cli"}).to_string();
    let mut stream = std::net::TcpStream::connect(world.listen).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "POST /api/agents/helper/messages HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        world.listen,
        body.len()
    )
    .unwrap();
    let mut seen = Vec::new();
    let mut buffer = [0u8; 1];
    // One byte at a time, so nothing past the `accepted` line is read.
    loop {
        let n = stream.read(&mut buffer).expect("read the accepted event");
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&seen));
        seen.push(buffer[0]);
        let textual = String::from_utf8_lossy(&seen);
        if let Some(at) = textual.find("\"accepted\"") {
            if textual[at..].contains('\n') {
                let line = textual[..]
                    .lines()
                    .find(|l| l.contains("\"accepted\""))
                    .unwrap();
                let event: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
                return (stream, event["message_id"].as_i64().unwrap());
            }
        }
        assert!(seen.len() < 64 * 1024);
    }
}

#[test]
fn a_reply_stored_but_not_yet_read_survives_a_crash_and_is_not_answered_again() {
    let world = world();
    let mut host = world.up();
    let (client, message_id) = post_and_stop_reading(&world, "ping");
    let session_id = wait_for_session(&world, &host);
    world.wait_answered(session_id, 1, &host);
    kill_9(&mut host);
    drop(client);
    assert_eq!(world.model_requests().len(), 1);

    let host = world.up();
    // The stored reply is there for the client to fetch, and nothing is redelivered.
    let info: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(world.palisade.home().join("run/host.json")).unwrap(),
    )
    .unwrap();
    let output = palisade_testkit::curl(
        &[
            "-sS",
            "--fail-with-body",
            "-H",
            &format!("Authorization: Bearer {}", info["token"].as_str().unwrap()),
            &format!("http://{}/api/messages/{message_id}", world.listen),
        ],
        Duration::from_secs(30),
    );
    assert!(output.status.success(), "{}", text(&output));
    let fetched: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(fetched["reply"]["text"], "echo: ping");
    assert_eq!(fetched["message"]["status"], "answered");
    assert_eq!(fetched["message"]["attempts"], 1);
    assert_eq!(
        fetched["reply"]["delivered"], false,
        "its client never got it"
    );
    let shown = ok(world
        .palisade
        .run(&["sessions", "show", &session_id.to_string()]));
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains("echo: ping (not seen yet"),
        "{}",
        text(&shown)
    );
    // A client that fetched it says so through the API (the CLI does it by itself).
    let bearer = format!("Authorization: Bearer {}", info["token"].as_str().unwrap());
    let ack = |id: i64| {
        palisade_testkit::curl(
            &[
                "-sS",
                "-X",
                "POST",
                "-w",
                "\n%{http_code}",
                "-H",
                &bearer,
                &format!("http://{}/api/messages/{id}/delivered", world.listen),
            ],
            Duration::from_secs(30),
        )
    };
    let unknown = ack(message_id + 1000);
    assert!(
        String::from_utf8_lossy(&unknown.stdout).ends_with("404"),
        "{}",
        text(&unknown)
    );
    let acked = ack(message_id);
    assert!(
        String::from_utf8_lossy(&acked.stdout).ends_with("200"),
        "{}",
        text(&acked)
    );
    let stored = world.session(session_id);
    assert_eq!(
        stored["messages"][0]["reply"]["delivered"], true,
        "{stored}"
    );
    // So a chat in that conversation does not offer it as unseen.
    let output = ok(world
        .palisade
        .run_stdin(&["chat", "--agent", "helper"], b"/exit\n"));
    assert!(!String::from_utf8_lossy(&output.stdout).contains("echo: ping"));
    ok(world.send("helper", "next"));
    assert_eq!(
        world.model_requests().len(),
        2,
        "ping was not answered again"
    );
    let session = world.session(session_id);
    assert_eq!(session["messages"].as_array().map(Vec::len), Some(2));
    world.down(host);
}

#[test]
fn memory_written_in_one_turn_reaches_the_model_after_the_runner_stopped() {
    let world = world();
    world.upstream.script_anthropic(vec![
        ScriptedTurn::tool_use(
            "memory_append",
            serde_json::json!({"note": "the user's cat is called Miso"}),
        ),
        ScriptedTurn::text("noted"),
    ]);
    // The agent's own short idle timeout (the host's is 10 min) stops the runner
    // between the two turns.
    ok(world
        .palisade
        .run(&["agents", "edit", "helper", "--idle-timeout", "1s"]));
    let host = world.up();
    let output = ok(world.send("helper", "my cat is called Miso"));
    assert!(String::from_utf8_lossy(&output.stdout).contains("noted"));
    wait_for_log(&host, "runner idle; stopping it", 1);
    assert_eq!(count_in(&host, "runner started"), 1);

    // A new conversation, so the note can only come from memory, not history.
    let output = ok(world.palisade.run(&[
        "send",
        "--agent",
        "helper",
        "--conversation",
        "later",
        "what is my cat called?",
    ]));
    assert!(String::from_utf8_lossy(&output.stdout).contains("echo: what is my cat called?"));
    assert_eq!(
        count_in(&host, "runner started"),
        2,
        "a new runner answered"
    );
    let requests = world.model_requests();
    let system = |i: usize| requests[i].body_json().unwrap()["system"].to_string();
    assert!(!system(0).contains("Miso"), "memory was empty at first");
    let last = system(requests.len() - 1);
    assert!(last.contains("the user's cat is called Miso"), "{last}");
    // The memory file is the agent's, on the host, outside the workspace.
    let memory =
        std::fs::read_to_string(world.palisade.home().join("agents/helper/memory.md")).unwrap();
    assert!(memory.contains("Miso"));
    assert!(!world.workspace("helper").join("memory.md").exists());
    world.down(host);
}
