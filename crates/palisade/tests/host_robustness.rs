//! The host against bad input and misbehaving runners, end to end with the real binary:
//! a 10 MB message (CLI and API), a fake runner on the agent's host socket sending
//! malformed frames, a runner that never answers (the turn timeout), an agent handling
//! two conversations at once, an agent on the OpenAI-compatible provider, and the
//! vault's TCP listener served by `palisade up`, and one-time web UI login links.

mod host_fixture;

use host_fixture::*;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

fn curl(args: &[&str]) -> std::process::Output {
    palisade_testkit::curl(args, Duration::from_secs(60))
}

fn host_token(world: &World) -> String {
    let info: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(world.palisade.home().join("run/host.json")).unwrap(),
    )
    .unwrap();
    info["token"].as_str().unwrap().to_string()
}

#[test]
fn a_ten_megabyte_message_is_refused_with_one_line_and_nothing_is_stored() {
    let world = world();
    let host = world.up();
    let huge = vec![b'x'; 10 * 1024 * 1024];

    let output = world
        .palisade
        .run_stdin(&["send", "--agent", "helper", "-"], &huge);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("too large"), "{}", text(&output));
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    // The API answers the JSON error, not a bare 413 page.
    let mut body = b"{\"text\":\"".to_vec();
    body.extend_from_slice(&huge);
    body.extend_from_slice(b"\"}");
    let file = world.palisade.write_file("huge.json", &body);
    let output = curl(&[
        "-sS",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        "-H",
        &format!("Authorization: Bearer {}", host_token(&world)),
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &format!("@{}", file.display()),
        &format!("http://{}/api/agents/helper/messages", world.listen),
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let (json, status) = stdout.rsplit_once('\n').expect("body and status");
    assert_eq!(status, "413", "{}", text(&output));
    let error: serde_json::Value = serde_json::from_str(json).expect("JSON error");
    assert_eq!(error["error"], "message_too_large");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("too large") && !message.contains('\n'),
        "{message}"
    );

    assert_eq!(
        world.sessions().as_array().map(Vec::len),
        Some(0),
        "nothing was stored"
    );
    assert!(world.model_requests().is_empty());
    world.down(host);
}

/// An answer too large for one frame of the host protocol (700 KB, which the history
/// holds again) is cut to fit and stored, saying so, after one model call. (Before, the
/// runner could not send it, the host took it for dead, called the model three more
/// times and lost the answer.)
#[test]
fn an_answer_too_large_for_a_frame_is_cut_and_kept() {
    let world = world();
    world
        .upstream
        .script_anthropic(vec![ScriptedTurn::text(&"long answer ".repeat(60_000))]);
    let host = world.up();
    let output = world.send("helper", "write a lot");
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout)
            .trim_end()
            .ends_with("more bytes than one reply may hold]"),
        "the answer as stored was not the cut one"
    );
    assert_eq!(
        world.model_requests().len(),
        1,
        "the model was called again"
    );
    world.down(host);
}

/// Writes one frame: 4-byte big-endian length, then the bytes.
fn write_frame(stream: &mut UnixStream, payload: &[u8]) {
    stream
        .write_all(&(payload.len() as u32).to_be_bytes())
        .unwrap();
    stream.write_all(payload).unwrap();
}

fn read_frame(stream: &mut UnixStream) -> serde_json::Value {
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).expect("frame length");
    let mut payload = vec![0u8; u32::from_be_bytes(length) as usize];
    stream.read_exact(&mut payload).expect("frame payload");
    serde_json::from_slice(&payload).expect("frame JSON")
}

/// Whether `frame` is the host refusing a second runner for the agent.
fn is_refusal(frame: &serde_json::Value) -> bool {
    frame["type"] == "error"
        && frame["message"]
            .as_str()
            .is_some_and(|m| m.contains("already connected"))
}

/// Connects a fake runner once the agent's place is free. While a runner is connected
/// (or still being stopped) the host refuses another right after the hello; a runner
/// it keeps hears nothing until there is work.
fn fake_runner_when_free(world: &World) -> UnixStream {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut runner = fake_runner(world);
        runner
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        let mut length = [0u8; 4];
        match runner.read(&mut length[..1]) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                runner
                    .set_read_timeout(Some(Duration::from_secs(60)))
                    .unwrap();
                return runner;
            }
            Ok(1) => {
                runner
                    .set_read_timeout(Some(Duration::from_secs(60)))
                    .unwrap();
                runner.read_exact(&mut length[1..]).expect("frame length");
                let mut payload = vec![0u8; u32::from_be_bytes(length) as usize];
                runner.read_exact(&mut payload).expect("frame payload");
                let frame: serde_json::Value =
                    serde_json::from_slice(&payload).expect("frame JSON");
                assert!(is_refusal(&frame), "{frame}");
            }
            other => panic!("the host closed the fake runner: {other:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "the stopped runner's place stayed taken"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends a message (`round`, numbered) with `palisade send` and takes its delivery as
/// a fake runner: the runner, the sender, the `deliver` frame and the message's text.
/// The fake runner must be the one the message is delivered to. On a loaded machine
/// the host can stop it as idle before `send` has queued the message (a real runner
/// then answers that one), or refuse it while the previous runner is still being
/// stopped: then it starts again with a new message.
fn message_to_fake_runner(
    world: &World,
    round: &str,
) -> (UnixStream, ChildGuard, serde_json::Value, String) {
    for attempt in 1..=5 {
        let mut runner = fake_runner_when_free(world);
        let message = format!("{round} ({attempt})");
        let mut sender = world
            .palisade
            .spawn(&["send", "--agent", "helper", &message]);
        let frame = read_frame(&mut runner);
        if frame["type"] == "deliver" {
            return (runner, sender, frame, message);
        }
        assert!(
            frame["type"] == "shutdown" || is_refusal(&frame),
            "{round}: {frame}"
        );
        sent_ok(&mut sender, Duration::from_secs(120), round);
    }
    panic!("{round}: the fake runner never got a message");
}

/// Waits (at most `wait`) for a `palisade send` to finish, and asserts it succeeded;
/// `context` says which, and is shown with its output when it did not.
fn sent_ok(sender: &mut ChildGuard, wait: Duration, context: &str) {
    let status = sender
        .wait_timeout(wait)
        .unwrap()
        .unwrap_or_else(|| panic!("{context}: send did not finish in {wait:?}"));
    assert!(
        status.success(),
        "{context}: {}\n{}",
        sender.stdout(),
        sender.stderr()
    );
}

/// A host whose runners stop after 3 s idle (so a fake runner can take the agent's
/// place), with the agent's host socket opened by a first message.
fn host_with_fake_runner_room(world: &World) -> ChildGuard {
    let host = world.up_with(&["--idle-timeout", "3s"]);
    ok(world.send("helper", "warm up"));
    host
}

/// Connects to the agent's host socket as a runner and says hello.
fn fake_runner(world: &World) -> UnixStream {
    let socket = world.palisade.home().join("run/hosts/helper.sock");
    let mut stream = UnixStream::connect(socket).expect("connect to the host socket");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write_frame(&mut stream, br#"{"type":"hello","version":1}"#);
    let hello = read_frame(&mut stream);
    assert_eq!(hello["type"], "hello", "{hello}");
    assert_eq!(hello["agent"], "helper");
    stream
}

/// A sandbox that connects to its host socket and hangs up in a loop (100,000 times in
/// 10 s from inside one) does not write a log line each time: `palisade up --detach`
/// appends the log to a file on the store's disk, never rotated. One line a second at
/// most, counting those left out; the socket still takes a runner afterwards.
#[test]
fn a_flood_of_connections_on_the_host_socket_writes_a_line_a_second_at_most() {
    let world = world();
    let host = host_with_fake_runner_room(&world);
    let socket = world.palisade.home().join("run/hosts/helper.sock");
    let started = Instant::now();
    let mut made = 0;
    let mut last_error = None;
    while made < 3000 && started.elapsed() < Duration::from_secs(20) {
        match UnixStream::connect(&socket) {
            Ok(stream) => {
                drop(stream);
                made += 1;
            }
            Err(error) => last_error = Some(error),
        }
    }
    assert_eq!(made, 3000, "connections made in 20 s: {last_error:?}");
    let seconds = started.elapsed().as_secs() + 2;
    // Let the last handshakes end, and a line counting them be written.
    std::thread::sleep(Duration::from_millis(1500));
    let _ = UnixStream::connect(&socket);
    wait_for_log(&host, "similar_lines_suppressed", 1);
    let lines = count_in(&host, "on the host socket");
    assert!(
        lines <= seconds as usize + 2,
        "{lines} lines in about {seconds} s: {}",
        host.stderr()
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
    drop(fake_runner_when_free(&world));
}

/// What a sandbox sends is not trusted in the host's log either: a malformed frame
/// whose type carries terminal escapes and a newline (quoted back by the parse error
/// the host logs) is written with them escaped, so it can neither set the title of
/// the terminal `palisade up` runs in nor start a forged log line.
#[test]
fn a_frame_with_terminal_escapes_is_logged_escaped() {
    let world = world();
    let host = world.up();
    // The agent's first message opens its host socket.
    ok(world.send("helper", "warm up"));
    let socket = world.palisade.home().join("run/hosts/helper.sock");
    let mut stream = UnixStream::connect(&socket).expect("connect to the host socket");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write_frame(
        &mut stream,
        br#"{"type":"\u001b]0;PWNED\u0007\nFORGED  INFO line"}"#,
    );
    let answer = read_frame(&mut stream);
    assert_eq!(answer["type"], "error", "{answer}");
    wait_for_log(&host, "PWNED", 1);
    let log = host.stderr();
    assert!(
        !log.contains('\u{1b}')
            && !log.contains('\u{7}')
            && !log.lines().any(|line| line.starts_with("FORGED")),
        "{log}"
    );
    world.down(host);
}

/// A runner that goes away while a host tool waits for a person is noticed at once:
/// the approval card it asked for is cancelled (it asked for nothing anyone waits on)
/// instead of staying pending until its expiry, and the message is delivered again.
#[test]
fn a_runner_gone_while_an_approval_waits_cancels_the_card() {
    let world = world();
    let host = host_with_fake_runner_room(&world);
    let (mut runner, mut sender, deliver, _) = message_to_fake_runner(&world, "ask");
    let call = serde_json::json!({
        "type": "tool_call", "call_id": "c1", "message_id": deliver["message_id"],
        "name": "request_approval", "input": {"action": "delete the old backups"},
    });
    write_frame(&mut runner, call.to_string().as_bytes());
    let statuses = || -> Vec<String> {
        let listed = ok(world
            .palisade
            .run(&["approvals", "list", "--all", "--json"]));
        let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
        listed
            .as_array()
            .map(|all| {
                all.iter()
                    .map(|a| a["status"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(
        palisade_testkit::wait_until(Duration::from_secs(20), || statuses() == ["pending"]),
        "no card: {:?}",
        statuses()
    );
    drop(runner);
    assert!(
        palisade_testkit::wait_until(Duration::from_secs(10), || statuses() == ["cancelled"]),
        "the card of a runner that went away stayed: {:?}",
        statuses()
    );
    sent_ok(&mut sender, Duration::from_secs(120), "ask");
    world.down(host);
}

#[test]
fn malformed_frames_from_a_runner_end_it_and_the_message_is_retried_and_answered() {
    let world = world();
    // The real runner stops between rounds so the fake one is taken.
    let host = host_with_fake_runner_room(&world);
    // Each case: a name and the bad bytes to send, given (message id, session id).
    type BadFrame = Box<dyn Fn(i64, i64) -> Vec<u8>>;
    let cases: Vec<(&str, BadFrame)> = vec![
        (
            "oversized",
            Box::new(|_, _| {
                let mut bytes = 0x7fff_ffffu32.to_be_bytes().to_vec();
                bytes.extend_from_slice(b"{\"type\":");
                bytes
            }),
        ),
        (
            "bad-json",
            Box::new(|_, _| {
                let payload = b"{\"type\": \"reply\", \"message_id\": ";
                let mut bytes = (payload.len() as u32).to_be_bytes().to_vec();
                bytes.extend_from_slice(payload);
                bytes
            }),
        ),
        (
            "wrong-session",
            Box::new(|message_id, session_id| {
                let payload = serde_json::json!({
                    "type": "reply", "message_id": message_id,
                    "session_id": session_id + 1000, "text": "forged", "history": [],
                })
                .to_string();
                let mut bytes = (payload.len() as u32).to_be_bytes().to_vec();
                bytes.extend_from_slice(payload.as_bytes());
                bytes
            }),
        ),
        (
            "unknown-type",
            Box::new(|message_id, _| {
                let payload = serde_json::json!({"type": "format_disk", "message_id": message_id})
                    .to_string();
                let mut bytes = (payload.len() as u32).to_be_bytes().to_vec();
                bytes.extend_from_slice(payload.as_bytes());
                bytes
            }),
        ),
    ];
    for (name, frame) in &cases {
        let (mut runner, mut sender, deliver, message) =
            message_to_fake_runner(&world, &format!("round {name}"));
        assert_eq!(deliver["type"], "deliver", "{deliver}");
        assert_eq!(deliver["text"], message.as_str());
        // A dial never turned is balanced, for web pages too.
        assert_eq!(deliver["agent"]["sanitize_web"], "balanced", "{deliver}");
        let message_id = deliver["message_id"].as_i64().unwrap();
        let session_id = deliver["session_id"].as_i64().unwrap();
        // Half an answer streams first; the turn then starts again from the start.
        let half = serde_json::json!({
            "type": "event", "message_id": message_id,
            "event": {"kind": "text_delta", "text": "HALF-AN-ANSWER "},
        });
        write_frame(&mut runner, half.to_string().as_bytes());
        runner
            .write_all(&frame(message_id, session_id))
            .expect("send the bad frame");
        // The host ends this runner's connection.
        let mut rest = Vec::new();
        let _ = runner.read_to_end(&mut rest);

        sent_ok(
            &mut sender,
            Duration::from_secs(120),
            &format!("{name}; host: {}", host.stderr()),
        );
        // Captured output holds the answer once, and nothing of the attempt that failed.
        assert_eq!(
            sender.stdout().trim_end(),
            format!("echo: {message}"),
            "{name}"
        );
        // The ids the runner was given are its own, not the store's: the message is
        // found by its text.
        let stored = world
            .sessions()
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|session| session["id"].as_i64())
            .flat_map(|id| {
                world.session(id)["messages"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .find(|m| m["message"]["text"] == message.as_str())
            .unwrap_or_else(|| panic!("{name}: the message is not stored"));
        assert_ne!(
            stored["message"]["id"], message_id,
            "{name}: the store's id was shown"
        );
        assert_eq!(stored["message"]["attempts"], 2, "{name}: {stored}");
        assert_eq!(stored["reply"]["text"], format!("echo: {message}"));
    }
    assert!(!world
        .model_requests()
        .iter()
        .any(|r| String::from_utf8_lossy(&r.body).contains("forged")));
    world.down(host);
}

/// The turn timeout holds while a host tool waits: an agent that asks a person and
/// waits (up to the approval's own timeout, 10 min by default) is stopped at its turn
/// timeout like any other, and the card it left, which now asks about nothing, is
/// cancelled. (Before, the wait ran past the turn timeout, one tool call at a time.)
#[test]
fn the_turn_timeout_ends_a_turn_that_waits_on_a_host_tool() {
    let world = world();
    world.upstream.script_anthropic(vec![ScriptedTurn::tool_use(
        "request_approval",
        serde_json::json!({"action": "delete the old backups"}),
    )]);
    let _host = world.up_with(&["--turn-timeout", "4s"]);
    let output = world.send("helper", "clean up");
    assert!(!output.status.success(), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("turn timeout (4s)"),
        "{}",
        text(&output)
    );
    let cancelled = || {
        let listed = ok(world
            .palisade
            .run(&["approvals", "list", "--all", "--json"]));
        let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
        listed
            .as_array()
            .is_some_and(|all| all.len() == 1 && all[0]["status"] == "cancelled")
    };
    assert!(
        palisade_testkit::wait_until(Duration::from_secs(10), cancelled),
        "the card was not cancelled: {}",
        String::from_utf8_lossy(&world.palisade.run(&["approvals", "list", "--all"]).stdout)
    );
}

/// Whatever a runner streams in a turn, text and progress events alike (status lines,
/// tool names: up to 64 KiB each), at most 4 MiB of it reaches the people watching,
/// then one line says the rest waits for the answer. (Status events were not counted:
/// a fake runner sent 180 MB of them in 3 s to every client of the conversation.)
#[test]
fn a_runner_cannot_flood_the_conversations_watchers_with_progress() {
    let world = world();
    let host = host_with_fake_runner_room(&world);
    let (mut runner, mut sender, deliver, _) = message_to_fake_runner(&world, "flood");
    let message_id = deliver["message_id"].as_i64().unwrap();
    let session_id = deliver["session_id"].as_i64().unwrap();
    let line = "s".repeat(60 * 1024);
    for _ in 0..120 {
        let frame = serde_json::json!({
            "type": "event", "message_id": message_id,
            "event": {"kind": "status", "message": line},
        });
        write_frame(&mut runner, frame.to_string().as_bytes());
    }
    let reply = serde_json::json!({
        "type": "reply", "message_id": message_id, "session_id": session_id,
        "text": "done flooding", "history": [],
    });
    write_frame(&mut runner, reply.to_string().as_bytes());
    sent_ok(
        &mut sender,
        Duration::from_secs(120),
        &format!("host: {}", host.stderr()),
    );
    assert!(sender.stdout().contains("done flooding"));
    let shown = sender.stderr();
    assert!(shown.contains("the rest is not shown"), "no notice");
    assert!(
        shown.len() < (4 << 20) + (256 << 10),
        "{} bytes of progress shown",
        shown.len()
    );
}

#[test]
fn a_runner_that_never_answers_is_stopped_at_the_turn_timeout_with_an_error_reply() {
    let world = world();
    world.upstream.script_anthropic(vec![
        ScriptedTurn::tool_use("bash", serde_json::json!({"command": "sleep 600"})),
        ScriptedTurn::tool_use("bash", serde_json::json!({"command": "sleep 600"})),
    ]);
    // The host's limit, then an agent's own (which wins).
    let host = world.up_with(&["--turn-timeout", "4s"]);
    let output = world.send("helper", "take forever");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Progress lines (`[bash]`), then one error line.
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("turn timeout (4s)"), "{}", text(&output));
    let session_id = world.only_session();
    let session = world.session(session_id);
    let message = &session["messages"][0];
    assert_eq!(message["message"]["status"], "answered");
    assert_eq!(message["message"]["attempts"], 1, "not retried");
    assert_eq!(message["reply"]["is_error"], true);
    assert_eq!(world.model_requests().len(), 1);
    wait_for_log(&host, "turn timeout; stopping the runner", 1);

    ok(world
        .palisade
        .run(&["agents", "edit", "helper", "--turn-timeout", "5s"]));
    let shown = ok(world.palisade.run(&["agents", "show", "helper"]));
    assert!(String::from_utf8_lossy(&shown.stdout).contains("5s"));
    let output = world.send("helper", "again");
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("turn timeout (5s)"),
        "{}",
        text(&output)
    );

    // The stuck runner was replaced: a new one answers the next message.
    ok(world
        .palisade
        .run(&["agents", "edit", "helper", "--turn-timeout", "10m"]));
    let output = ok(world.send("helper", "quick one"));
    assert!(String::from_utf8_lossy(&output.stdout).contains("echo: quick one"));
    assert!(count_in(&host, "runner started") >= 2);
    let bad = world
        .palisade
        .run(&["agents", "edit", "helper", "--turn-timeout", "soon"]);
    assert!(!bad.status.success());
    let bad = world.palisade.run(&["up", "--turn-timeout", "0s"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("at least 1s"),
        "{}",
        text(&bad)
    );
    world.down(host);
}

#[test]
fn an_openai_compatible_agent_streams_and_round_trips_a_tool_call_through_the_vault() {
    let world = world();
    const OPENAI_KEY: &str = "sk-openai-test-93c1aa";
    let base = format!("{}/v1", world.upstream.base_url());
    ok(world.palisade.run(&[
        "agents",
        "create",
        "local",
        "--provider",
        "openai",
        "--model",
        "gpt-test",
        "--base-url",
        &base,
    ]));
    let key_file = world.palisade.write_file("openai.txt", OPENAI_KEY);
    ok(world.palisade.run(&[
        "secrets",
        "create",
        "--name",
        "openai",
        "--host-pattern",
        "localhost",
        "--path-pattern",
        "/v1/chat/*",
        "--inject",
        "bearer",
        "--agent",
        "local",
        "--value-file",
        key_file.to_str().unwrap(),
    ]));
    world.upstream.script_openai(vec![
        ScriptedTurn::tool_use(
            "bash",
            serde_json::json!({"command": "echo tool-ran-$((6*7)) | tee out.txt"}),
        ),
        ScriptedTurn::text("the tool printed its line"),
    ]);
    let host = world.up();
    let output = ok(world.send("local", "run the tool"));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("the tool printed its line"),
        "{}\nhost: {}",
        text(&output),
        host.stderr()
    );
    assert_eq!(
        std::fs::read_to_string(world.workspace("local").join("out.txt")).unwrap(),
        "tool-ran-42\n"
    );
    let requests: Vec<_> = world
        .upstream
        .requests()
        .into_iter()
        .filter(|r| r.path() == "/v1/chat/completions")
        .collect();
    assert_eq!(requests.len(), 2, "tool call, then the answer");
    for request in &requests {
        // The runner speaks HTTP/2 where the tunnel offers it, so its model calls go
        // over the vault's pooled HTTP/2 connection, kept after a request with a body
        // (an HTTP/1.1 one is closed after each, against request desync).
        assert_eq!(request.version, "HTTP/2", "the runner's model call");
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {OPENAI_KEY}").as_str()),
            "the vault injected the key as a bearer token"
        );
        let body = request.body_json().unwrap();
        assert_eq!(body["stream"], true);
        assert_eq!(body["model"], "gpt-test");
    }
    let second = requests[1].body_json().unwrap();
    let tool_message = second["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .cloned()
        .expect("the tool result went back to the model");
    assert!(
        tool_message["content"].to_string().contains("tool-ran-42"),
        "{tool_message}"
    );
    assert!(world.model_requests().is_empty(), "no Anthropic call");
    world.down(host);
    assert!(!world.palisade.all_output().contains(OPENAI_KEY));
}

#[test]
fn up_can_serve_the_vaults_tcp_listener_for_agents_outside_a_sandbox() {
    let world = world();
    let vault = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    // Issued before the start, so the gateway's first policy snapshot has it.
    let token = String::from_utf8(ok(world.palisade.run(&["agents", "token", "helper"])).stdout)
        .unwrap()
        .trim()
        .to_string();
    let host = world.up_with(&["--vault-listen", &vault.to_string()]);
    assert!(wait_for_tcp(vault, STARTUP), "{}", host.stderr());
    let ca = String::from_utf8(ok(world.palisade.run(&["vault", "ca-cert"])).stdout).unwrap();
    let ca_file = world.palisade.write_file("vault-ca.pem", ca);

    // curl as an agent outside any sandbox: the vault injects the key.
    let output = curl(&[
        "-sS",
        "--fail-with-body",
        "--proxy",
        &format!("http://x:{token}@{vault}"),
        "--cacert",
        ca_file.to_str().unwrap(),
        "-H",
        "content-type: application/json",
        "--data",
        r#"{"model":"claude-test","max_tokens":10,"messages":[{"role":"user","content":"via the listener"}]}"#,
        &world.upstream.url("/v1/messages"),
    ]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("echo: via the listener"));
    assert_eq!(world.model_requests().last().unwrap().api_key(), Some(KEY));

    // A wrong token is refused (407).
    let output = curl(&[
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_connect}",
        "--proxy",
        &format!("http://x:wrong@{vault}"),
        "--cacert",
        ca_file.to_str().unwrap(),
        &world.upstream.url("/v1/messages"),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "407",
        "{}",
        text(&output)
    );

    // The OneCLI-compatible admin API on the same listener.
    let admin = String::from_utf8(ok(world.palisade.run(&["vault", "admin-key"])).stdout)
        .unwrap()
        .trim()
        .to_string();
    let output = curl(&[
        "-sS",
        "--fail-with-body",
        "-H",
        &format!("Authorization: Bearer {admin}"),
        &format!("http://{vault}/v1/container-config?agent=helper"),
    ]);
    assert!(output.status.success(), "{}", text(&output));
    let config: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let env = config["env"].to_string();
    assert!(
        env.contains(&token) && env.contains(&vault.port().to_string()),
        "{config}"
    );
    // The host's own agents still work through their sockets.
    let output = ok(world.send("helper", "still sandboxed"));
    assert!(String::from_utf8_lossy(&output.stdout).contains("echo: still sandboxed"));
    world.down(host);
    assert!(
        !wait_for_tcp(vault, Duration::from_millis(500)),
        "listener closed with the host"
    );
}

#[test]
fn an_agent_with_concurrency_two_answers_another_conversation_while_one_is_busy() {
    let world = world();
    let host = world.up();
    // The agent starts with one slot; raising its concurrency applies at the next message.
    ok(world.palisade.run(&[
        "send",
        "--agent",
        "helper",
        "--conversation",
        "warm-up",
        "hello",
    ]));
    ok(world
        .palisade
        .run(&["agents", "edit", "helper", "--concurrency", "2"]));
    let shown = ok(world.palisade.run(&["agents", "show", "helper"]));
    assert!(String::from_utf8_lossy(&shown.stdout).contains("concurrency"));
    let bad = world
        .palisade
        .run(&["agents", "edit", "helper", "--concurrency", "99"]);
    assert!(!bad.status.success());
    // Conversation `a`'s first message keeps its runner in a sleeping tool.
    world.upstream.script_anthropic(vec![ScriptedTurn::tool_use(
        "bash",
        serde_json::json!({"command": "sleep 8; echo slept"}),
    )]);
    let requests_before = world.model_requests().len();
    let mut first = world.palisade.spawn(&[
        "send",
        "--agent",
        "helper",
        "--conversation",
        "a",
        "slow in a",
    ]);
    assert!(
        world.upstream.wait_for_count(requests_before + 1, STARTUP),
        "{}",
        host.stderr()
    );
    // A second message in the same conversation waits for the first...
    let _queued = world.palisade.spawn(&[
        "send",
        "--agent",
        "helper",
        "--conversation",
        "a",
        "next in a",
    ]);
    let session_a = world
        .sessions()
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["conversation"] == "a")
        .and_then(|s| s["id"].as_i64())
        .expect("session a");
    let deadline = std::time::Instant::now() + STARTUP;
    while world.session(session_a)["messages"]
        .as_array()
        .map(Vec::len)
        != Some(2)
    {
        assert!(std::time::Instant::now() < deadline, "never queued");
        std::thread::sleep(Duration::from_millis(50));
    }
    // ...while another conversation is answered by the second runner meanwhile.
    let output = ok(world.palisade.run(&[
        "send",
        "--agent",
        "helper",
        "--conversation",
        "b",
        "quick in b",
    ]));
    assert!(String::from_utf8_lossy(&output.stdout).contains("echo: quick in b"));
    let a = world.session(session_a);
    assert!(
        a["messages"][0]["reply"].is_null(),
        "a's first is still in flight: {a}"
    );
    assert_eq!(a["messages"][1]["message"]["status"], "pending", "{a}");
    assert_eq!(a["messages"][1]["message"]["attempts"], 0);
    assert_eq!(
        count_in(&host, "runner started"),
        2,
        "the second slot's runner"
    );

    sent_ok(&mut first, Duration::from_secs(60), "the slow send");
    let a = world.wait_answered(session_a, 2, &host);
    let replies: Vec<i64> = a["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["reply"]["id"].as_i64().unwrap())
        .collect();
    assert!(
        replies[0] < replies[1],
        "a's messages were answered in order"
    );
    assert_eq!(a["messages"][1]["reply"]["text"], "echo: next in a");

    // Back to one: the second slot closes when it next looks for work.
    ok(world
        .palisade
        .run(&["agents", "edit", "helper", "--concurrency", "1"]));
    let second_socket = world.palisade.home().join("run/hosts/helper.2.sock");
    assert!(second_socket.exists());
    ok(world.send("helper", "one"));
    ok(world.send("helper", "two"));
    let deadline = std::time::Instant::now() + STARTUP;
    while second_socket.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the second slot stayed open"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    world.down(host);
}

/// The status code and `set-cookie` header curl saw for a GET of `url`.
fn login_attempt(url: &str) -> (String, bool) {
    let output = ok(curl(&["-sS", "-o", "/dev/null", "-D", "-", url]));
    let head = String::from_utf8_lossy(&output.stdout).to_ascii_lowercase();
    let status = head
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .unwrap_or_default()
        .to_string();
    (status, head.contains("\nset-cookie: palisade_admin="))
}

#[test]
fn login_links_work_once_and_palisade_login_prints_a_fresh_one() {
    let world = world();
    let refused = world.palisade.run(&["login"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("palisade up"), "{stderr}");

    let host = world.up();
    // The link is printed just after run/host.json is written.
    assert!(palisade_testkit::wait_until(
        Duration::from_secs(10),
        || host.stdout().contains("/login?token=")
    ));
    let printed = host
        .stdout()
        .split_whitespace()
        .find(|word| word.contains("/login?token="))
        .expect("palisade up printed a login link")
        .to_string();
    assert_eq!(login_attempt(&printed), ("303".to_string(), true));
    assert_eq!(login_attempt(&printed), ("401".to_string(), false));

    let answer: serde_json::Value =
        serde_json::from_slice(&ok(world.palisade.run(&["--json", "login"])).stdout)
            .expect("login --json prints JSON");
    let fresh = answer["url"].as_str().expect("a url").to_string();
    assert!(
        fresh.starts_with(&format!("http://{}/login?token=", world.listen)),
        "{fresh}"
    );
    assert_ne!(fresh, printed);
    assert_eq!(answer["expires_in_seconds"], 600);
    assert_eq!(login_attempt(&fresh), ("303".to_string(), true));
    assert_eq!(login_attempt(&fresh), ("401".to_string(), false));
    world.down(host);
}
