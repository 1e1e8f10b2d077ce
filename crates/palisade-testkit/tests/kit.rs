//! Tests of the test kit itself, with the same real clients Palisade's tests use.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use palisade_testkit::{
    curl, output_text, python, wait_until, ChildGuard, Palisade, ScriptedTurn, TestCa, Upstream,
};
use serde_json::{json, Value};

const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

fn fixture() -> (TestCa, Upstream) {
    let ca = TestCa::new().expect("test CA");
    let upstream = Upstream::start(&ca).expect("upstream");
    (ca, upstream)
}

/// Runs curl with the test CA and returns stdout, failing the test on error.
fn curl_ok(ca: &TestCa, args: &[&str]) -> String {
    let mut full = vec!["--silent", "--show-error", "--cacert"];
    let ca_path = ca.pem_path().to_str().expect("utf-8 path");
    full.push(ca_path);
    full.extend_from_slice(args);
    let output = curl(&full, CLIENT_TIMEOUT);
    assert!(output.status.success(), "{}", output_text(&output));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn curl_json(ca: &TestCa, args: &[&str]) -> Value {
    let text = curl_ok(ca, args);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn python_ok(script: &str, env: &[(&str, &str)]) -> String {
    let output = python(script, env, CLIENT_TIMEOUT);
    assert!(output.status.success(), "{}", output_text(&output));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn echo_over_http1_and_h2() {
    let (ca, upstream) = fixture();
    let url = upstream.url("/anything/here?a=1&b=two");

    let echo = curl_json(
        &ca,
        &[
            "--http1.1",
            "-H",
            "X-Test: one",
            "-H",
            "X-Test: two",
            "--data-binary",
            "hello",
            &url,
        ],
    );
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/anything/here");
    assert_eq!(echo["query"], "a=1&b=two");
    assert_eq!(echo["version"], "HTTP/1.1");
    assert_eq!(echo["body_len"], 5);
    assert_eq!(
        echo["body_sha256"],
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    );
    assert_eq!(echo["headers"]["x-test"], json!(["one", "two"]));

    let echo = curl_json(&ca, &["--http2", &url]);
    assert_eq!(echo["version"], "HTTP/2");
    assert_eq!(echo["method"], "GET");
    assert!(echo["headers"]["host"][0]
        .as_str()
        .is_some_and(|h| h.starts_with("localhost:")));

    assert!(upstream.wait_for_count(2, Duration::from_secs(5)));
    let requests = upstream.requests();
    assert_eq!(requests[0].version, "HTTP/1.1");
    assert_eq!(requests[0].path_and_query, "/anything/here?a=1&b=two");
    assert_eq!(requests[0].path(), "/anything/here");
    assert_eq!(requests[0].header_all("x-test"), vec!["one", "two"]);
    assert_eq!(requests[0].body_len, 5);
    assert!(requests[0].tls);
    assert_eq!(requests[1].version, "HTTP/2");
}

#[test]
fn plain_http_ipv6_and_extra_names() {
    let ca = TestCa::new().expect("test CA");
    let upstream = Upstream::builder()
        .plain_http()
        .name("api.anthropic.test")
        .start(&ca)
        .expect("upstream");
    let plain = format!("{}/echo", upstream.http_base_url().expect("plain port"));
    let echo = curl_json(&ca, &[&plain]);
    assert_eq!(echo["path"], "/echo");
    assert!(!upstream.requests()[0].tls);

    // The certificate covers the extra name; resolve it to loopback for curl.
    let resolve = format!("api.anthropic.test:{}:127.0.0.1", upstream.port());
    let named = format!("{}/echo", upstream.base_url_for("api.anthropic.test"));
    let echo = curl_json(&ca, &["--resolve", &resolve, &named]);
    assert_eq!(echo["path"], "/echo");

    // IPv6 only where the machine has ::1.
    if std::net::TcpListener::bind("[::1]:0").is_ok() {
        let upstream = Upstream::builder().ipv6().start(&ca).expect("upstream");
        assert!(upstream.addr().is_ipv6());
        let echo = curl_json(&ca, &["-g", &upstream.url("/v6")]);
        assert_eq!(echo["path"], "/v6");
    }
}

#[test]
fn special_endpoints() {
    let (ca, upstream) = fixture();
    let code = curl_ok(
        &ca,
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &upstream.url("/status/418"),
        ],
    );
    assert_eq!(code, "418");

    let headers = curl_ok(
        &ca,
        &["-D", "-", "-o", "/dev/null", &upstream.url("/redirect")],
    );
    assert!(headers.starts_with("HTTP/2 302"), "{headers}");
    assert!(headers.to_ascii_lowercase().contains("location: /echo"));

    let size = curl_ok(
        &ca,
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
            &upstream.url("/bytes?n=200000"),
        ],
    );
    assert_eq!(size, "200000");

    let started = Instant::now();
    let echo = curl_json(&ca, &[&upstream.url("/slow?ms=300")]);
    assert_eq!(echo["path"], "/slow");
    assert!(started.elapsed() >= Duration::from_millis(300));

    let output = curl(
        &[
            "--silent",
            "--http1.1",
            "--cacert",
            ca.pem_path().to_str().expect("utf-8"),
            &upstream.url("/close"),
        ],
        CLIENT_TIMEOUT,
    );
    assert!(!output.status.success(), "{}", output_text(&output));
    assert_eq!(upstream.count(), 5);
}

#[test]
fn sse_events_arrive_spread_over_time() {
    let (ca, upstream) = fixture();
    let script = r#"
import json, os, time, httpx
times, lines = [], []
with httpx.Client(verify=os.environ["CA"]) as client:
    with client.stream("GET", os.environ["URL"]) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                times.append(time.monotonic())
                lines.append(line)
print(json.dumps({"lines": lines, "spread": times[-1] - times[0]}))
"#;
    let out = python_ok(
        script,
        &[
            ("CA", ca.pem_path().to_str().expect("utf-8")),
            ("URL", &upstream.url("/sse?n=4&interval_ms=150")),
        ],
    );
    let result: Value = serde_json::from_str(out.trim()).expect("JSON from python");
    assert_eq!(
        result["lines"],
        json!([
            "data: event-0",
            "data: event-1",
            "data: event-2",
            "data: event-3"
        ])
    );
    let spread = result["spread"].as_f64().expect("spread");
    assert!(spread >= 0.35, "events were not spread over time: {spread}");
}

#[test]
fn websocket_echo_reports_handshake_headers() {
    let (ca, upstream) = fixture();
    let script = r#"
import json, os, ssl, websocket
ws = websocket.create_connection(
    os.environ["URL"], sslopt={"ca_certs": os.environ["CA"]},
    header=["X-Handshake: seen"], timeout=10)
greeting = json.loads(ws.recv())
ws.send("ping-text")
echoed = ws.recv()
ws.close()
print(json.dumps({"handshake": greeting.get("x-handshake"), "echoed": echoed}))
"#;
    let url = format!("wss://localhost:{}/ws", upstream.port());
    let out = python_ok(
        script,
        &[
            ("CA", ca.pem_path().to_str().expect("utf-8")),
            ("URL", &url),
        ],
    );
    let result: Value = serde_json::from_str(out.trim()).expect("JSON from python");
    assert_eq!(result["handshake"], json!(["seen"]));
    assert_eq!(result["echoed"], "ping-text");
    let handshake = &upstream.requests()[0];
    assert_eq!(handshake.path(), "/ws");
    assert_eq!(handshake.header("x-handshake"), Some("seen"));
}

#[test]
fn anthropic_sdk_parses_fake_messages_api() {
    let (ca, upstream) = fixture();
    upstream.script_anthropic(vec![
        ScriptedTurn::text("scripted hello"),
        ScriptedTurn::tool_use("bash", json!({"command": "ls -la"})),
    ]);
    let script = r#"
import json, os, anthropic
# DefaultHttpxClient is whichever httpx the installed SDK is built on (anthropic 2.x
# moved to httpx2 and rejects a plain httpx.Client).
client = anthropic.Anthropic(base_url=os.environ["BASE"], api_key="placeholder",
                             http_client=anthropic.DefaultHttpxClient(verify=os.environ["CA"]),
                             max_retries=0)
out = {}
m = client.messages.create(model="claude-test-model", max_tokens=64,
                           messages=[{"role": "user", "content": "first"}])
out["first"] = [m.content[0].text, m.model, m.stop_reason, m.role]
events = []
with client.messages.stream(model="claude-test-model", max_tokens=64,
                            messages=[{"role": "user", "content": "second"}]) as stream:
    for event in stream:
        events.append(event.type)
    final = stream.get_final_message()
block = final.content[0]
out["tool"] = [block.type, block.name, block.input, final.stop_reason]
out["events"] = events
with client.messages.stream(model="claude-test-model", max_tokens=64,
                            messages=[{"role": "user", "content": [{"type": "text", "text": "third"}]}]) as stream:
    out["echo"] = "".join(stream.text_stream)
print(json.dumps(out))
"#;
    let out = python_ok(
        script,
        &[
            ("CA", ca.pem_path().to_str().expect("utf-8")),
            ("BASE", &upstream.base_url()),
        ],
    );
    let result: Value = serde_json::from_str(out.trim().lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("bad JSON ({e}): {out}"));
    assert_eq!(
        result["first"],
        json!([
            "scripted hello",
            "claude-test-model",
            "end_turn",
            "assistant"
        ])
    );
    assert_eq!(
        result["tool"],
        json!(["tool_use", "bash", {"command": "ls -la"}, "tool_use"])
    );
    let events: Vec<&str> = result["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(events.contains(&"message_start"), "{events:?}");
    assert!(events.contains(&"content_block_stop"), "{events:?}");
    assert!(events.contains(&"message_stop"), "{events:?}");
    assert_eq!(result["echo"], "echo: third");

    let requests = upstream.requests();
    assert_eq!(requests.len(), 3);
    // Older SDKs send x-api-key, current ones `Authorization: Bearer`.
    assert_eq!(requests[0].api_key(), Some("placeholder"));
    assert_eq!(requests[0].path(), "/v1/messages");
}

#[test]
fn anthropic_stream_wire_format() {
    let (ca, upstream) = fixture();
    let body = r#"{"model":"m","max_tokens":8,"stream":true,"messages":[{"role":"user","content":"hi there"}]}"#;
    let text = curl_ok(
        &ca,
        &[
            "-N",
            "-H",
            "content-type: application/json",
            "-H",
            "authorization: Bearer k",
            "-D",
            "-",
            "--data",
            body,
            &upstream.url("/v1/messages"),
        ],
    );
    assert!(text.contains("x-test-key-header: authorization"), "{text}");
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(names[1..3], ["content_block_start", "ping"]);
    assert_eq!(
        names[names.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    let streamed: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|v| v["type"] == "content_block_delta")
        .map(|v| v["delta"]["text"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(streamed, "echo: hi there");
}

#[test]
fn openai_chat_completions_echo_and_script() {
    let (ca, upstream) = fixture();
    let url = upstream.url("/v1/chat/completions");
    let body = r#"{"model":"local","messages":[{"role":"user","content":"hey"}]}"#;
    let reply = curl_json(
        &ca,
        &["-H", "content-type: application/json", "--data", body, &url],
    );
    assert_eq!(reply["object"], "chat.completion");
    assert_eq!(reply["choices"][0]["message"]["content"], "echo: hey");
    assert_eq!(reply["choices"][0]["finish_reason"], "stop");

    upstream.script_openai(vec![ScriptedTurn::tool_use("read", json!({"path": "a"}))]);
    let reply = curl_json(
        &ca,
        &["-H", "content-type: application/json", "--data", body, &url],
    );
    let call = &reply["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "read");
    assert_eq!(call["function"]["arguments"], r#"{"path":"a"}"#);

    let stream_body =
        r#"{"model":"local","stream":true,"messages":[{"role":"user","content":"yo"}]}"#;
    let text = curl_ok(
        &ca,
        &[
            "-N",
            "-H",
            "content-type: application/json",
            "--data",
            stream_body,
            &url,
        ],
    );
    let datas: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(datas.last(), Some(&"[DONE]"));
    let content: String = datas
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(content, "echo: yo");
}

#[test]
fn upstream_counts_and_stops_on_drop() {
    let (_ca, upstream) = fixture();
    assert_eq!(upstream.count(), 0);
    let started = Instant::now();
    assert!(!upstream.wait_for_count(1, Duration::from_millis(200)));
    assert!(started.elapsed() >= Duration::from_millis(200));
    let addr = upstream.addr();
    assert!(TcpStream::connect(addr).is_ok());
    drop(upstream);
    assert!(
        TcpStream::connect(addr).is_err(),
        "listener still open after drop"
    );
}

fn process_alive(pid: i32) -> bool {
    // A zombie is dead for this purpose: it runs nothing and holds no socket.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn spawn_group(script: &str) -> (ChildGuard, i32) {
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("grandchild.pid");
    let mut command = std::process::Command::new("sh");
    command
        .arg("-c")
        .arg(script)
        .env("PID_FILE", &pid_file)
        .stdin(std::process::Stdio::null());
    let guard = ChildGuard::spawn(&mut command).expect("spawn sh");
    assert!(wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&pid_file).is_ok_and(|s| s.ends_with('\n'))
    }));
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    (guard, pid)
}

#[test]
fn child_guard_kills_the_whole_group() {
    let (guard, grandchild) = spawn_group(r#"sleep 300 & echo $! > "$PID_FILE"; wait"#);
    let leader = guard.id() as i32;
    assert!(process_alive(grandchild));
    drop(guard);
    assert!(!process_alive(leader));
    assert!(wait_until(Duration::from_secs(5), || !process_alive(
        grandchild
    )));
}

#[test]
fn child_guard_escalates_to_sigkill() {
    let (guard, grandchild) =
        spawn_group(r#"trap '' TERM; sleep 300 & echo $! > "$PID_FILE"; wait; wait"#);
    let started = Instant::now();
    drop(guard);
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "SIGTERM was not ignored?"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(wait_until(Duration::from_secs(5), || !process_alive(
        grandchild
    )));
}

#[test]
fn client_timeout_kills_the_client() {
    let started = Instant::now();
    let output = python(
        "import time; time.sleep(60)",
        &[],
        Duration::from_millis(500),
    );
    assert!(!output.status.success());
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(String::from_utf8_lossy(&output.stderr).contains("timed out"));
}

#[test]
fn palisade_helper_sets_home_and_keeps_output() {
    // Any program works; sh stands in for the palisade binary here.
    let palisade = Palisade::new("/bin/sh");
    let output = palisade.run(&["-c", "printf %s \"$PALISADE_HOME\""]);
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        palisade.home().to_string_lossy()
    );

    let output = palisade.run_stdin(&["-c", "cat"], b"from stdin");
    assert_eq!(output.stdout, b"from stdin");

    let mut service = palisade.spawn(&["-c", "echo service-line; exec sleep 300"]);
    assert!(wait_until(Duration::from_secs(10), || service
        .stdout()
        .contains("service-line")));
    assert!(service.try_wait().expect("try_wait").is_none());
    drop(service);
    let all = palisade.all_output();
    assert!(all.contains("service-line") && all.contains("from stdin"));
}

#[test]
fn model_list_in_both_shapes_with_paging_and_retired_models() {
    let (ca, upstream) = fixture();
    let anthropic = |query: &str| -> Value {
        let text = curl_ok(
            &ca,
            &[
                "-H",
                "x-api-key: k",
                "-H",
                "anthropic-version: 2023-06-01",
                &upstream.url(&format!("/v1/models{query}")),
            ],
        );
        serde_json::from_str(&text).expect("model list JSON")
    };
    let all = anthropic("?limit=1000");
    let ids: Vec<&str> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(
        ids.first(),
        Some(&"claude-sonnet-4-6"),
        "newest first: {ids:?}"
    );
    assert_eq!(ids.len(), palisade_testkit::DEFAULT_MODELS.len());
    assert_eq!(all["has_more"], false);
    let first = anthropic("?limit=2");
    assert_eq!(first["has_more"], true);
    let next = anthropic(&format!(
        "?limit=2&after_id={}",
        first["last_id"].as_str().unwrap()
    ));
    assert_eq!(next["data"][0]["id"], ids[2]);

    let openai: Value = serde_json::from_str(&curl_ok(
        &ca,
        &["-H", "authorization: Bearer k", &upstream.url("/v1/models")],
    ))
    .unwrap();
    assert_eq!(openai["object"], "list");
    assert!(openai["data"][0]["created"].as_u64().unwrap() > 1_700_000_000);
    let unauthenticated = curl_ok(
        &ca,
        &[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &upstream.url("/v1/models"),
        ],
    );
    assert_eq!(unauthenticated, "401");

    upstream.set_models(&[
        ("claude-sonnet-9-9", "2027-01-01T00:00:00Z"),
        ("gone-1", "2020-01-01T00:00:00Z"),
    ]);
    upstream.retire_model("gone-1");
    let listed = anthropic("");
    assert_eq!(listed["data"].as_array().unwrap().len(), 1, "{listed}");
    let refused = curl_ok(
        &ca,
        &[
            "-s",
            "-H",
            "content-type: application/json",
            "-H",
            "x-api-key: k",
            "--data",
            r#"{"model":"gone-1","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}"#,
            "-w",
            " %{http_code}",
            &upstream.url("/v1/messages"),
        ],
    );
    assert!(
        refused.ends_with(" 404") && refused.contains("not_found_error"),
        "{refused}"
    );
}
