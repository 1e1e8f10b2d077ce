//! `palisade chat` end to end: the real binary against a running host (runners in
//! bubblewrap, the fake model API behind the vault), driven through a pipe and under a
//! pseudo-terminal. The fake model records every request, so the tests see what
//! history the agent was given: continued from `palisade send`, then forgotten after
//! `/reset`.

mod host_fixture;

use host_fixture::*;
use std::time::Duration;

/// The user texts of one recorded model request, in order.
fn user_texts(request: &palisade_testkit::RecordedRequest) -> Vec<String> {
    let body = request.body_json().expect("model request body is JSON");
    body["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| match &m["content"] {
            serde_json::Value::String(text) => text.clone(),
            serde_json::Value::Array(blocks) => blocks
                .iter()
                .filter_map(|block| block["text"].as_str())
                .collect::<Vec<_>>()
                .join(""),
            other => other.to_string(),
        })
        .collect()
}

#[test]
fn chat_through_a_pipe_continues_the_session_resets_and_exits() {
    let world = world();

    // No host yet: one clear line, non-zero exit.
    let output = world
        .palisade
        .run_stdin(&["chat", "--agent", "helper"], b"hello\n");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not running"), "{}", text(&output));
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    let host = world.up();
    // An unknown agent is refused before anything is read or sent.
    let output = world
        .palisade
        .run_stdin(&["chat", "--agent", "nobody"], b"hello\n");
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("nobody"),
        "{}",
        text(&output)
    );

    // `send` starts the conversation; `chat` continues the same session.
    ok(world.send("helper", "remember pelican"));
    let session = world.only_session();
    let input = b"what was the word?\n/frobnicate\n\n/reset\nafter the reset\n/exit\nnever sent\n";
    let output = world
        .palisade
        .run_stdin(&["chat", "--agent", "helper"], input);
    assert!(output.status.success(), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stdout.contains("echo: what was the word?"),
        "{}",
        text(&output)
    );
    assert!(
        stdout.contains("echo: after the reset"),
        "{}",
        text(&output)
    );
    assert!(!stdout.contains("you>"), "no prompts on a pipe: {stdout}");
    assert!(
        stderr.contains(&format!("session {session}, 1 earlier message")),
        "{stderr}"
    );
    assert!(stderr.contains("unknown command /frobnicate"), "{stderr}");
    assert!(
        stderr.contains(&format!("session {session} reset")),
        "{stderr}"
    );

    let requests = world.model_requests();
    assert_eq!(
        requests.len(),
        3,
        "send, two chat lines; /exit stopped the rest"
    );
    // The chat's first message came with the history `send` left.
    assert_eq!(
        user_texts(&requests[1]),
        vec!["remember pelican", "what was the word?"]
    );
    // After /reset the agent starts afresh.
    assert_eq!(user_texts(&requests[2]), vec!["after the reset"]);
    let shown = world.session(session);
    let messages = shown["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3);
    assert_eq!(messages[1]["message"]["channel"], "chat");
    // Every reply was printed, so each is acknowledged as delivered.
    assert!(
        messages.iter().all(|m| m["reply"]["delivered"] == true),
        "{shown}"
    );

    // End of input (Ctrl-D on a terminal) ends the chat cleanly; another conversation
    // key is another session.
    let output = world.palisade.run_stdin(
        &["chat", "--agent", "helper", "--conversation", "side"],
        b"on the side\n",
    );
    assert!(output.status.success(), "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("echo: on the side"));
    assert!(String::from_utf8_lossy(&output.stderr).contains("new session"));
    assert_eq!(world.sessions().as_array().map(Vec::len), Some(2));

    // --session continues by id, and must belong to the agent named.
    let output = world.palisade.run_stdin(
        &[
            "chat",
            "--agent",
            "helper",
            "--session",
            &session.to_string(),
        ],
        b"by id\n",
    );
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(
        user_texts(world.model_requests().last().unwrap()),
        vec!["after the reset", "by id"]
    );
    // A chat opened on a session that was reset says the agent has none of its
    // messages, though they stay listed (4 of them here).
    let output = world.palisade.run_stdin(
        &["chat", "--agent", "helper"],
        b"/reset
",
    );
    assert!(output.status.success(), "{}", text(&output));
    let output = world
        .palisade
        .run_stdin(&["chat", "--agent", "helper"], b"");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains(&format!(
            "session {session}, 4 earlier message(s), none of which the agent remembers (the session was reset, or they were not answered)"
        )),
        "{}",
        text(&output)
    );
    ok(world.palisade.run(&["agents", "create", "other"]));
    let output = world.palisade.run_stdin(
        &[
            "chat",
            "--agent",
            "other",
            "--session",
            &session.to_string(),
        ],
        b"hijack\n",
    );
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("belongs to agent \"helper\""),
        "{}",
        text(&output)
    );

    // A line over the size limit is refused with one line; the chat goes on.
    let mut input = vec![b'x'; 300 * 1024];
    input.extend_from_slice(b"\nstill here\n");
    let output = world.palisade.run_stdin(
        &["chat", "--agent", "helper", "--conversation", "big"],
        &input,
    );
    assert!(output.status.success(), "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("too large"));
    assert!(String::from_utf8_lossy(&output.stdout).contains("echo: still here"));
    assert!(world
        .model_requests()
        .iter()
        .all(|r| r.body_len < 300 * 1024));
    world.down(host);
}

#[test]
fn chat_under_a_terminal_prompts_streams_and_ends_on_ctrl_d() {
    let world = world();
    let host = world.up();
    // Python's pty module gives the chat a real terminal; it types a line, waits for
    // the streamed answer and the next prompt, then sends Ctrl-D (end of input).
    let script = r#"
import os, pty, select, sys, time
binary, home = sys.argv[1], sys.argv[2]
pid, fd = pty.fork()
if pid == 0:
    os.environ["PALISADE_HOME"] = home
    os.execv(binary, [binary, "chat", "--agent", "helper"])
seen = b""
def wait_for(needle, after=0):
    global seen
    deadline = time.time() + 60
    while seen.find(needle, after) < 0:
        if time.time() > deadline:
            sys.stdout.write("TIMEOUT waiting for %r; saw %r\n" % (needle, seen))
            sys.exit(3)
        ready, _, _ = select.select([fd], [], [], 1)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                chunk = b""
            if not chunk:
                sys.stdout.write("EOF waiting for %r; saw %r\n" % (needle, seen))
                sys.exit(4)
            seen += chunk
    return seen.find(needle, after) + len(needle)
at = wait_for(b"you> ")
os.write(fd, b"hello from a terminal\n")
at = wait_for(b"helper> ", at)
at = wait_for(b"echo: hello from a terminal", at)
at = wait_for(b"you> ", at)
os.write(fd, b"\x04")
deadline = time.time() + 30
while True:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        break
    if time.time() > deadline:
        os.kill(pid, 9)
        sys.stdout.write("chat did not end on Ctrl-D; saw %r\n" % seen)
        sys.exit(5)
    try:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            seen += os.read(fd, 4096)
    except OSError:
        pass
code = os.waitstatus_to_exitcode(status)
sys.stdout.write("EXIT %d\n" % code)
sys.stdout.write(repr(seen) + "\n")
"#;
    let home = world.palisade.home().to_str().unwrap().to_string();
    let output = std::process::Command::new("timeout")
        .args(["120", "python3", "-c", script, BINARY, &home])
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", text(&output));
    assert!(stdout.contains("EXIT 0"), "{stdout}");
    let sessions = world.sessions();
    assert_eq!(sessions[0]["messages"], 1, "{sessions}");
    world.down(host);
}

#[test]
fn chat_says_so_when_the_host_dies_mid_reply_and_the_message_is_answered_after_restart() {
    let world = world();
    world.upstream.script_anthropic(vec![
        ScriptedTurn::tool_use("bash", serde_json::json!({"command": "sleep 60"})),
        ScriptedTurn::text("answered after all"),
    ]);
    let mut host = world.up();
    let mut command = world.palisade.command(&["chat", "--agent", "helper"]);
    command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut chat = ChildGuard::spawn(&mut command).expect("start chat");
    {
        use std::io::Write;
        let mut stdin = chat.child_mut().stdin.take().unwrap();
        stdin.write_all(b"slow one\nnext one\n").unwrap();
    }
    assert!(
        world.upstream.wait_for_count(1, STARTUP),
        "{}",
        host.stderr()
    );
    host.child_mut().kill().expect("kill -9");
    let _ = host.wait_timeout(Duration::from_secs(10));
    let status = chat
        .wait_timeout(Duration::from_secs(60))
        .unwrap()
        .expect("chat ended");
    let mut stderr = String::new();
    {
        use std::io::Read;
        chat.child_mut()
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
    }
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("stays queued"), "{stderr}");
    assert!(stderr.contains("the host stopped"), "{stderr}");
    // Only the first line was accepted; it is answered once the host is back.
    let session = world.only_session();
    let host = world.up();
    let shown = world.wait_answered(session, 1, &host);
    assert_eq!(shown["messages"][0]["reply"]["text"], "answered after all");
    assert_eq!(
        shown["messages"][0]["reply"]["delivered"], false,
        "no one saw it yet"
    );
    // The next chat shows the reply its user missed, once.
    let output = world
        .palisade
        .run_stdin(&["chat", "--agent", "helper"], b"/exit\n");
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("answered after all"),
        "{}",
        text(&output)
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("not seen yet"));
    let output = world
        .palisade
        .run_stdin(&["chat", "--agent", "helper"], b"/exit\n");
    assert!(!String::from_utf8_lossy(&output.stdout).contains("answered after all"));
    world.down(host);
}
