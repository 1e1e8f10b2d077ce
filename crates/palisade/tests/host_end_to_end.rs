//! `palisade up` + `palisade send` end to end: the real binary, a temporary home, the
//! vault in-process, runners in bubblewrap sandboxes, and the testkit's fake Anthropic
//! API on 127.0.0.1 (TLS with a test CA) reached only through the vault, which injects
//! the key. Also crash recovery (kill -9 of the host with a message in flight) and bad
//! input, including garbage on an agent's host socket.

mod host_fixture;

use host_fixture::*;
use std::io::Write;
use std::time::{Duration, Instant};

/// A tool command that connects to the host socket as a second runner: it gets the
/// host's hello, then is told a runner is already connected (before, it was kept
/// waiting to become the next runner).
const SECOND_RUNNER: &str = r#"
import json, socket, struct
s = socket.socket(socket.AF_UNIX)
s.settimeout(5)
s.connect("\0palisade-host")
hello = json.dumps({"type": "hello", "version": 1}).encode()
s.sendall(struct.pack(">I", len(hello)) + hello)
def frame():
    head = b""
    while len(head) < 4:
        chunk = s.recv(4 - len(head))
        if not chunk:
            return None
        head += chunk
    (length,) = struct.unpack(">I", head)
    body = b""
    while len(body) < length:
        body += s.recv(length - len(body))
    return json.loads(body)
try:
    print(frame())
    print(frame())
except socket.timeout:
    print("no answer")
"#;

#[test]
fn a_message_wakes_a_sandboxed_runner_that_uses_the_model_through_the_vault() {
    let world = world();
    world.upstream.script_anthropic(vec![
        ScriptedTurn::tool_use(
            "bash",
            serde_json::json!({"command": format!("echo from-the-agent > note.txt; env > env.txt; cat /proc/self/environ > environ.bin; cat /proc/self/mountinfo > mounts.txt; runner=$(for p in /proc/[0-9]*; do case \"$(tr '\\0' ' ' < $p/cmdline 2>/dev/null)\" in '/run/palisade/palisade runner '*) echo ${{p#/proc/}};; esac; done | head -1); if (exec 3< /proc/$runner/mem) 2>/dev/null; then echo mem-open:$runner; else echo mem-denied:$runner; fi > runner.txt; python3 - > second-runner.txt 2>&1 <<'PY'\n{SECOND_RUNNER}\nPY\n")}),
        ),
        ScriptedTurn::text("done: the note is written"),
    ]);
    let mut host = world.up();

    let output = world.send("helper", "please write a note");
    assert!(
        output.status.success(),
        "{}\nhost: {}",
        text(&output),
        host.stderr()
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("done: the note is written"),
        "{}",
        text(&output)
    );

    // The bash tool ran in the agent's workspace, inside the sandbox.
    let workspace = world.workspace("helper");
    let note = std::fs::read_to_string(workspace.join("note.txt")).expect("note.txt");
    assert_eq!(note, "from-the-agent\n");
    let env = std::fs::read_to_string(workspace.join("env.txt")).expect("env.txt");
    assert!(env.contains("HTTPS_PROXY=http://127.0.0.1:3128"), "{env}");
    assert!(
        !env.contains(KEY),
        "the key reached the sandbox's environment"
    );
    let environ = std::fs::read(workspace.join("environ.bin")).unwrap();
    assert!(!String::from_utf8_lossy(&environ).contains(KEY));
    let second = std::fs::read_to_string(workspace.join("second-runner.txt")).unwrap();
    assert!(
        second.contains("a runner is already connected"),
        "a second runner connection was not refused: {second}"
    );
    // The runner's memory, which holds the conversation, is out of the command's reach.
    let runner = std::fs::read_to_string(workspace.join("runner.txt")).expect("runner.txt");
    assert!(
        runner.starts_with("mem-denied:") && runner.trim().len() > "mem-denied:".len(),
        "{runner}"
    );
    // No socket is mounted into the runner's sandbox (host and vault are reached through
    // its parent), and the home shows only as the workspace's source.
    let mounts = std::fs::read_to_string(workspace.join("mounts.txt")).expect("mounts.txt");
    let home = world.palisade.home().display().to_string();
    for line in mounts.lines() {
        assert!(!line.contains(".sock"), "a socket is mounted: {line}");
        if line.contains(&home) {
            assert_eq!(line.split(' ').nth(4), Some("/workspace"), "{line}");
        }
    }

    // Every model call carried the injected key; the runner only had a placeholder.
    let requests = world.model_requests();
    assert_eq!(
        requests.len(),
        2,
        "one call for the tool use, one for the answer"
    );
    for request in &requests {
        assert_eq!(request.api_key(), Some(KEY));
        assert!(request.tls);
    }

    // A warm runner answers the next message (the fake API echoes once unscripted).
    // With --json every event is a line; the runner says `started` as soon as it has
    // the message, before the model answers.
    let output = ok(world
        .palisade
        .run(&["--json", "send", "--agent", "helper", "and now?"]));
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(kinds.first(), Some(&"accepted"), "{}", text(&output));
    assert_eq!(kinds.get(1), Some(&"started"), "{}", text(&output));
    assert_eq!(kinds.last(), Some(&"reply"), "{}", text(&output));
    let reply = events.last().unwrap()["text"].as_str().unwrap_or_default();
    assert!(reply.contains("echo: and now?"), "{}", text(&output));

    let sessions = world.sessions();
    assert_eq!(sessions.as_array().map(Vec::len), Some(1), "{sessions}");
    assert_eq!(sessions[0]["agent"], "helper");
    assert_eq!(sessions[0]["messages"], 2);

    let status = ok(world.palisade.run(&["status", "--json"]));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["running"], true);

    world.stop(&mut host);
    let logs = format!("{}{}", host.stdout(), host.stderr());
    assert!(!logs.contains(KEY), "the key reached the host's output");
    assert!(!world.palisade.all_output().contains(KEY));
}

/// An agent whose dial is `strict` (a person approves every request that carries one
/// of its credentials) still thinks on its own: its calls to its own model carry the
/// key and are not held, so a message is answered with nobody asked. (Before: the model
/// call itself waited for a person, and the turn never ended unattended.)
#[test]
fn a_strict_agent_still_thinks_without_asking_anyone() {
    let world = world();
    ok(world
        .palisade
        .run(&["agents", "dial", "helper", "--preset", "strict"]));
    // Were the model call held, the turn would end here, not at the approval timeout.
    ok(world
        .palisade
        .run(&["agents", "edit", "helper", "--turn-timeout", "45s"]));
    world
        .upstream
        .script_anthropic(vec![ScriptedTurn::text("thought it through")]);
    let mut host = world.up();

    let output = world.send("helper", "think it over");
    assert!(
        output.status.success(),
        "{}\nhost: {}",
        text(&output),
        host.stderr()
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("thought it through"),
        "{}",
        text(&output)
    );
    let calls = world.model_requests();
    assert!(!calls.is_empty());
    assert!(calls
        .iter()
        .all(|call| call.header("x-api-key") == Some(KEY)));
    let approvals: serde_json::Value = serde_json::from_slice(
        &ok(world
            .palisade
            .run(&["--json", "approvals", "list", "--all"]))
        .stdout,
    )
    .unwrap();
    assert_eq!(approvals, serde_json::json!([]), "nobody was to be asked");
    world.stop(&mut host);
}

/// A turn that waits for a person says so: the agent's tool makes a request that a rule
/// holds, and `palisade send` prints (on stderr) that it waits for approval and how to
/// give it, then that it was approved, then the answer. (Before: nothing was printed
/// while it waited, and the command looked hung.)
#[test]
fn a_turn_held_for_approval_says_where_to_decide() {
    let world = world();
    ok(world.palisade.run(&[
        "rules",
        "create",
        "--name",
        "ask-report",
        "--host-pattern",
        "localhost",
        "--path-pattern",
        "/held/*",
        "--action",
        "require_approval",
    ]));
    let command = format!(
        "env -u NO_PROXY -u no_proxy curl -sS --max-time 100 {}",
        world.upstream.url("/held/report")
    );
    world.upstream.script_anthropic(vec![
        ScriptedTurn::tool_use("bash", serde_json::json!({ "command": command })),
        ScriptedTurn::text("got the report"),
    ]);
    let mut host = world.up();

    std::thread::scope(|scope| {
        let sent = scope.spawn(|| world.send("helper", "fetch the report"));
        let deadline = Instant::now() + Duration::from_secs(60);
        let id = loop {
            let list = ok(world.palisade.run(&["approvals", "list", "--json"]));
            let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
            if let Some(id) = list[0]["id"].as_str() {
                break id.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "nothing was held: {}",
                host.stderr()
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        ok(world.palisade.run(&["approvals", "approve", &id]));
        let output = sent.join().unwrap();
        assert!(output.status.success(), "{}", text(&output));
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stdout.contains("got the report"), "{}", text(&output));
        assert!(
            stderr.contains("waiting for a person to approve")
                && stderr.contains(&format!("palisade approvals approve {id}")),
            "{stderr}"
        );
        assert!(
            stderr.contains(&format!("{id}: ✅ Approved by")),
            "{stderr}"
        );
    });
    world.stop(&mut host);
}

#[test]
fn a_message_in_flight_when_the_host_is_killed_is_answered_once_after_restart() {
    let world = world();
    // The first delivery makes the runner sleep in a tool, so the host dies mid-turn.
    world.upstream.script_anthropic(vec![
        ScriptedTurn::tool_use("bash", serde_json::json!({"command": "sleep 30"})),
        ScriptedTurn::text("answered after the restart"),
    ]);
    let mut host = world.up();
    let mut sender = world
        .palisade
        .spawn(&["send", "--agent", "helper", "survive a crash"]);
    assert!(
        world.upstream.wait_for_count(1, STARTUP),
        "the runner never called the model: {}",
        host.stderr()
    );
    // kill -9 of the host process only, as a crash would; its sandboxes die with it.
    host.child_mut().kill().expect("kill -9");
    let _ = host.wait_timeout(Duration::from_secs(10));
    let status = sender
        .wait_timeout(Duration::from_secs(30))
        .unwrap()
        .expect("send ended");
    assert!(!status.success(), "send cannot succeed without its host");
    assert!(
        sender.stderr().contains("stays queued") || sender.stderr().contains("connection"),
        "{}",
        sender.stderr()
    );

    let mut host = world.up();
    let sessions = world.sessions();
    let session_id = sessions[0]["id"].as_i64().expect("session id");
    let deadline = Instant::now() + STARTUP;
    let session = loop {
        let session = world.session(session_id);
        if session["messages"][0]["reply"].is_object() {
            break session;
        }
        assert!(
            Instant::now() < deadline,
            "never answered: {session}\n{}",
            host.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let messages = session["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["message"]["status"], "answered");
    assert_eq!(messages[0]["message"]["attempts"], 2);
    assert_eq!(messages[0]["reply"]["text"], "answered after the restart");
    // Nothing answers it again: no further model call arrives.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(world.model_requests().len(), 2);

    let output = ok(world.send("helper", "still there?"));
    assert!(String::from_utf8_lossy(&output.stdout).contains("echo: still there?"));
    ok(world.palisade.run(&["down"]));
    let _ = host.wait_timeout(Duration::from_secs(30));
}

#[test]
fn bad_input_gets_one_line_errors_and_garbage_on_the_host_socket_is_survived() {
    let world = world();
    // Host not running.
    let output = world.send("helper", "hello");
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("not running"),
        "{}",
        text(&output)
    );

    let mut host = world.up();
    let output = world.send("nobody", "hello");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("unknown agent \"nobody\""),
        "{}",
        text(&output)
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    let output = world.send("helper", "   ");
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("empty"),
        "{}",
        text(&output)
    );

    let huge = vec![b'x'; 2 * 1024 * 1024];
    let output = world
        .palisade
        .run_stdin(&["send", "--agent", "helper", "-"], &huge);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("too large"),
        "{}",
        text(&output)
    );
    assert_eq!(
        world.sessions().as_array().map(Vec::len),
        Some(0),
        "nothing was accepted"
    );

    // The agent's host socket exists once it has had a message.
    let output = ok(world.send("helper", "first"));
    assert!(String::from_utf8_lossy(&output.stdout).contains("echo: first"));
    let socket = world.palisade.home().join("run/hosts/helper.sock");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o600
    );
    for garbage in [
        &b"\xff\xff\xff\xffnot a frame"[..],
        b"\x00\x00\x00\x04null",
        b"\x00\x00\x00\x11{\"type\":\"hello\"}",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let mut stream = std::os::unix::net::UnixStream::connect(&socket).expect("connect");
        let _ = stream.write_all(garbage);
        drop(stream);
    }
    let output = ok(world.send("helper", "second"));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("echo: second"),
        "{}",
        text(&output)
    );
    assert!(host.try_wait().unwrap().is_none(), "the host died");
    ok(world.palisade.run(&["down"]));
    let _ = host.wait_timeout(Duration::from_secs(30));
}
