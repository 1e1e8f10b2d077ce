//! Black-box tests of the vault's policy phases: the real `palisade vault serve`, real
//! curl and Python clients through it, and a recording TLS upstream on 127.0.0.1.
//!
//! Each test owns a temporary home, a gateway on a free port and an upstream, so the
//! tests run in parallel. What they check is what the agent and the upstream see:
//! refusals answered before any upstream byte, exact rate limits under concurrency,
//! held requests that send nothing until a person decides, and the audit rows that
//! record who decided.

mod vault_fixture;

use palisade_testkit::{curl, output_text, proxy_url, python, wait_until, Palisade};
use serde_json::Value;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vault_fixture::{ok, CurlReply, Setup};

/// Longest any single client request may take before the test fails instead of hanging.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// A gateway with an upstream behind it and the files clients need.
struct Fixture {
    setup: Setup,
    addr: SocketAddr,
    vault_ca: PathBuf,
}

impl Deref for Fixture {
    type Target = Setup;
    fn deref(&self) -> &Setup {
        &self.setup
    }
}

impl DerefMut for Fixture {
    fn deref_mut(&mut self) -> &mut Setup {
        &mut self.setup
    }
}

impl Fixture {
    /// Starts a gateway that trusts the test CA, with exactly `extra` otherwise.
    fn start(extra: &[&str]) -> Fixture {
        let mut setup = Setup::new();
        let addr = setup.start_vault_exactly(extra);
        let vault_ca = setup.vault_ca();
        Fixture {
            setup,
            addr,
            vault_ca,
        }
    }

    fn local() -> Fixture {
        Fixture::start(&["--allow-local-upstream", "localhost"])
    }

    /// Runs `palisade ARGS…` and requires success.
    fn run(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&ok(&self.palisade.run(args)).stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut full = vec!["--json"];
        full.extend_from_slice(args);
        let text = self.run(&full);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {text}"))
    }

    /// Creates an agent and returns its token for the TCP listener.
    fn agent(&self, name: &str, profile: &str) -> String {
        self.run(&["agents", "create", name, "--profile", profile]);
        let token = self.run(&["agents", "token", name]).trim().to_string();
        token
    }

    /// Creates a rule (in force when the CLI returns).
    fn rule(&self, args: &[&str]) {
        let mut full = vec!["rules", "create"];
        full.extend_from_slice(args);
        self.run(&full);
    }

    fn proxy(&self, token: &str) -> String {
        proxy_url(self.addr, token)
    }

    /// One request through the gateway with curl.
    fn send(&self, token: &str, method: &str, url: &str, body: Option<&Path>) -> CurlReply {
        let proxy = self.proxy(token);
        let ca = self.vault_ca.display().to_string();
        let mut args: Vec<String> = [
            "-sS",
            "-i",
            "--suppress-connect-headers",
            "--max-time",
            "25",
            "--proxy",
            &proxy,
            "--cacert",
            &ca,
            "-X",
            method,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(path) = body {
            args.push("-H".into());
            args.push("content-type: application/octet-stream".into());
            args.push("--data-binary".into());
            args.push(format!("@{}", path.display()));
        }
        args.push(url.to_string());
        CurlReply::parse(&curl(&args, CLIENT_TIMEOUT))
    }

    fn get(&self, token: &str, url: &str) -> CurlReply {
        self.send(token, "GET", url, None)
    }

    fn pending_approvals(&self) -> Vec<Value> {
        self.json(&["approvals", "list"])
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits (up to 10 s) for exactly one pending approval and returns it.
    fn wait_for_pending(&self) -> Value {
        let mut found = Vec::new();
        let seen = wait_until(Duration::from_secs(10), || {
            found = self.pending_approvals();
            !found.is_empty()
        });
        assert!(seen, "no approval became pending within 10 s");
        assert_eq!(found.len(), 1, "one pending approval expected: {found:?}");
        found.remove(0)
    }

    /// The audit rows once `done` holds of them (or after 10 s, whatever is there): the
    /// gateway writes its rows in batches after it has answered.
    fn audit_until(&self, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let mut rows = Vec::new();
        wait_until(Duration::from_secs(10), || {
            rows = self
                .json(&["audit", "list", "--limit", "1000"])
                .as_array()
                .cloned()
                .unwrap_or_default();
            done(&rows)
        });
        rows
    }
}

/// The vault's refusal shape, checked on a curl reply.
trait Refusal {
    fn refused(&self, status: u16, error: &str, retry: bool) -> Value;
}

impl Refusal for CurlReply {
    /// Requires a JSON refusal with `status`, `error` code and `x-should-retry`.
    #[track_caller]
    fn refused(&self, status: u16, error: &str, retry: bool) -> Value {
        assert_eq!(self.status, status, "{}", self.raw);
        let body = self.json();
        assert_eq!(body["error"], error, "{}", self.raw);
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            message.len() > 20,
            "a message an agent can act on: {}",
            self.raw
        );
        assert_eq!(
            self.headers.get("x-should-retry").map(String::as_str),
            Some(if retry { "true" } else { "false" }),
            "{}",
            self.raw
        );
        body
    }
}

/// A listener that stands in for an upstream which must never be contacted.
struct Untouched {
    listener: TcpListener,
}

impl Untouched {
    fn bind() -> Untouched {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        Untouched { listener }
    }
    fn port(&self) -> u16 {
        self.listener.local_addr().expect("address").port()
    }
    #[track_caller]
    fn assert_no_connection(&self) {
        match self.listener.accept() {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Ok((_, peer)) => panic!("the gateway opened a connection upstream from {peer}"),
            Err(e) => panic!("accept failed: {e}"),
        }
    }
}

/// The value of `sha256sum FILE`.
fn sha256_file(path: &Path) -> String {
    let output = ok(&std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("run sha256sum"));
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// A file of `len` bytes that is not a repetition of one byte.
fn body_file(palisade: &Palisade, name: &str, len: usize) -> PathBuf {
    let bytes: Vec<u8> = (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    palisade.write_file(name, bytes)
}

#[test]
fn block_rule_and_default_deny_answer_before_any_upstream_byte() {
    let fx = Fixture::local();
    let research = fx.agent("researcher", "research");
    let action = fx.agent("mailer", "action");
    let never = Untouched::bind();
    fx.rule(&[
        "--name",
        "no-admin",
        "--host-pattern",
        "localhost",
        "--path-pattern",
        "/admin/*",
        "--action",
        "block",
    ]);

    let blocked = fx.get(&research, &fx.upstream.url("/admin/users"));
    let body = blocked.refused(403, "blocked_by_policy", false);
    assert_eq!(body["rule"], "no-admin");
    let blocked = fx.get(
        &research,
        &format!("https://localhost:{}/admin/x", never.port()),
    );
    blocked.refused(403, "blocked_by_policy", false);

    let denied = fx.get(&action, &fx.upstream.url("/anything"));
    let body = denied.refused(403, "blocked_by_default_policy", false);
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("mailer"),
        "the message names the command for this agent: {body}"
    );
    fx.get(&action, &format!("https://localhost:{}/", never.port()))
        .refused(403, "blocked_by_default_policy", false);

    assert_eq!(fx.upstream.count(), 0, "nothing may reach the upstream");
    never.assert_no_connection();

    // The same gateway still forwards what policy allows, so the zero above is real.
    let allowed = fx.get(&research, &fx.upstream.url("/public"));
    assert_eq!(allowed.status, 200, "{}", allowed.raw);
    assert_eq!(fx.upstream.count(), 1);

    let audit = fx.audit_until(|rows| {
        ["blocked", "default_denied"]
            .iter()
            .all(|decision| rows.iter().any(|row| row["decision"] == *decision))
    });
    for decision in ["blocked", "default_denied"] {
        assert!(
            audit.iter().any(|row| row["decision"] == decision),
            "audit has a {decision} row: {audit:?}"
        );
    }
}

#[test]
fn research_reaches_any_allowed_host_and_action_only_named_ones() {
    let fx = Fixture::start(&[
        "--allow-local-upstream",
        "localhost",
        "--allow-local-upstream",
        "127.0.0.1",
    ]);
    let research = fx.agent("browser", "research");
    let action = fx.agent("worker", "action");
    let by_ip = format!("https://127.0.0.1:{}/ip", fx.upstream.port());
    let by_name = fx.upstream.url("/name");

    for url in [&by_ip, &by_name] {
        let reply = fx.get(&research, url);
        assert_eq!(reply.status, 200, "research reaches {url}: {}", reply.raw);
        fx.get(&action, url)
            .refused(403, "blocked_by_default_policy", false);
    }
    assert_eq!(fx.upstream.count(), 2);

    fx.rule(&[
        "--name",
        "worker-local",
        "--host-pattern",
        "localhost",
        "--action",
        "allow",
        "--agent",
        "worker",
    ]);
    let reply = fx.get(&action, &by_name);
    assert_eq!(reply.status, 200, "a rule names the host: {}", reply.raw);
    fx.get(&action, &by_ip)
        .refused(403, "blocked_by_default_policy", false);
    assert_eq!(fx.upstream.count(), 3);
}

#[test]
fn rate_limit_is_exact_under_concurrency() {
    let fx = Fixture::local();
    let token = fx.agent("burst", "research");
    fx.rule(&[
        "--name",
        "ten-per-minute",
        "--host-pattern",
        "localhost",
        "--path-pattern",
        "/limited/*",
        "--action",
        "rate_limit",
        "--rate-limit",
        "10",
        "--rate-window",
        "1m",
    ]);
    let script = r#"
import json, os, requests, concurrent.futures
proxy = os.environ["PROXY"]
url = os.environ["URL"]
ca = os.environ["VAULT_CA"]
def one(i):
    s = requests.Session()
    s.trust_env = False
    try:
        r = s.get(f"{url}/limited/{i}", proxies={"https": proxy}, verify=ca, timeout=40)
        return {"status": r.status_code, "retry_after": r.headers.get("retry-after"),
                "should_retry": r.headers.get("x-should-retry"), "body": r.text}
    except Exception as e:
        return {"status": 0, "body": repr(e)}
with concurrent.futures.ThreadPoolExecutor(max_workers=100) as pool:
    results = list(pool.map(one, range(100)))
print(json.dumps(results))
"#;
    let proxy = fx.proxy(&token);
    let base = fx.upstream.base_url();
    let ca = fx.vault_ca.display().to_string();
    let output = python(
        script,
        &[("PROXY", &proxy), ("URL", &base), ("VAULT_CA", &ca)],
        Duration::from_secs(80),
    );
    let output = ok(&output);
    let results: Vec<Value> =
        serde_json::from_slice(&output.stdout).expect("python printed JSON results");
    assert_eq!(results.len(), 100);
    let admitted = results.iter().filter(|r| r["status"] == 200).count();
    let limited: Vec<&Value> = results.iter().filter(|r| r["status"] == 429).collect();
    assert_eq!(
        (admitted, limited.len()),
        (10, 90),
        "exactly 10 admitted and 90 limited: {results:?}"
    );
    for reply in limited {
        let seconds: u64 = reply["retry_after"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("Retry-After in seconds: {reply}"));
        assert!((1..=60).contains(&seconds), "{reply}");
        assert_eq!(reply["should_retry"], "true", "{reply}");
        let body: Value = serde_json::from_str(reply["body"].as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("JSON body ({e}): {reply}"));
        assert_eq!(body["error"], "rate_limited", "{reply}");
        assert_eq!(body["rule"], "ten-per-minute", "{reply}");
    }
    assert_eq!(fx.upstream.count(), 10, "exactly 10 reached the upstream");

    // The limit counts per rule: other paths are not limited.
    let reply = fx.get(&token, &fx.upstream.url("/free"));
    assert_eq!(reply.status, 200, "{}", reply.raw);
}

#[test]
fn expiring_rule_stops_matching() {
    let fx = Fixture::local();
    let token = fx.agent("temp", "research");
    // A time in the past is refused outright, and nothing is written.
    let past = fx.palisade.run(&[
        "rules",
        "create",
        "--name",
        "already-over",
        "--host-pattern",
        "localhost",
        "--action",
        "block",
        "--expires",
        "2020-01-01T00:00:00Z",
    ]);
    assert!(!past.status.success(), "{}", output_text(&past));
    assert!(
        String::from_utf8_lossy(&past.stderr).contains("past"),
        "{}",
        output_text(&past)
    );
    let reply = fx.get(&token, &fx.upstream.url("/before"));
    assert_eq!(reply.status, 200, "{}", reply.raw);

    fx.run(&[
        "rules",
        "create",
        "--name",
        "briefly-closed",
        "--host-pattern",
        "localhost",
        "--action",
        "block",
        "--expires",
        "3s",
    ]);
    let created = Instant::now();
    let closed = wait_until(Duration::from_secs(2), || {
        fx.get(&token, &fx.upstream.url("/during")).status == 403
    });
    assert!(closed, "the block rule applies while it has not expired");
    assert!(
        created.elapsed() < Duration::from_secs(3),
        "checked before expiry"
    );
    let count = fx.upstream.count();

    let reopened = wait_until(Duration::from_secs(6), || {
        fx.get(&token, &fx.upstream.url("/after")).status == 200
    });
    assert!(reopened, "the rule stops matching once expired");
    assert!(
        created.elapsed() >= Duration::from_millis(2900),
        "it must not stop matching early ({:?})",
        created.elapsed()
    );
    assert_eq!(fx.upstream.count(), count + 1);
}

#[test]
fn body_contains_rule_matches_only_bodies_with_the_text() {
    let fx = Fixture::local();
    let token = fx.agent("writer", "research");
    fx.rule(&[
        "--name",
        "no-drop",
        "--host-pattern",
        "localhost",
        "--method",
        "POST",
        "--action",
        "block",
        "--body-contains",
        "DROP TABLE",
    ]);
    let bad = fx
        .palisade
        .write_file("bad.sql", "SELECT 1; DROP TABLE users;");
    let good = fx
        .palisade
        .write_file("good.sql", "SELECT name FROM users;");
    fx.send(&token, "POST", &fx.upstream.url("/sql"), Some(&bad))
        .refused(403, "blocked_by_policy", false);
    assert_eq!(fx.upstream.count(), 0);

    let reply = fx.send(&token, "POST", &fx.upstream.url("/sql"), Some(&good));
    assert_eq!(reply.status, 200, "{}", reply.raw);
    // A body longer than the prefix read for the rule still arrives whole.
    let big = body_file(&fx.palisade, "big.bin", 300 * 1024);
    let reply = fx.send(&token, "POST", &fx.upstream.url("/upload"), Some(&big));
    assert_eq!(reply.status, 200, "{}", reply.raw);
    assert_eq!(reply.json()["body_sha256"], sha256_file(&big));
    assert_eq!(reply.json()["body_len"], 300 * 1024);
    assert_eq!(fx.upstream.count(), 2);
}

#[test]
fn org_block_beats_a_user_allow() {
    let fx = Fixture::local();
    let token = fx.agent("member", "action");
    fx.run(&[
        "rules",
        "create",
        "--name",
        "user-allows-all",
        "--host-pattern",
        "localhost",
        "--action",
        "allow",
        "--priority",
        "1000",
    ]);
    fx.rule(&[
        "--name",
        "org-no-billing",
        "--scope",
        "org",
        "--host-pattern",
        "localhost",
        "--path-pattern",
        "/billing/*",
        "--action",
        "block",
    ]);
    let body = fx
        .get(&token, &fx.upstream.url("/billing/invoices"))
        .refused(403, "blocked_by_policy", false);
    assert_eq!(body["rule"], "org-no-billing");
    assert_eq!(fx.upstream.count(), 0);
    let reply = fx.get(&token, &fx.upstream.url("/docs"));
    assert_eq!(
        reply.status, 200,
        "the user allow works inside the org boundary: {}",
        reply.raw
    );
}

/// Sends a request on a thread; the handle yields the reply.
fn send_async(
    fx: &Fixture,
    token: &str,
    method: &str,
    url: String,
    body: Option<PathBuf>,
) -> std::thread::JoinHandle<CurlReply> {
    let proxy = fx.proxy(token);
    let ca = fx.vault_ca.clone();
    let method = method.to_string();
    std::thread::spawn(move || {
        let ca = ca.display().to_string();
        let mut args: Vec<String> = vec![
            "-sS".into(),
            "-i".into(),
            "--suppress-connect-headers".into(),
            "--max-time".into(),
            "25".into(),
            "--proxy".into(),
            proxy,
            "--cacert".into(),
            ca,
            "-X".into(),
            method,
        ];
        if let Some(path) = body {
            args.push("--data-binary".into());
            args.push(format!("@{}", path.display()));
        }
        args.push(url);
        CurlReply::parse(&curl(&args, CLIENT_TIMEOUT))
    })
}

#[test]
fn held_request_waits_for_a_person_then_is_approved_or_denied() {
    let fx = Fixture::local();
    let token = fx.agent("poster", "research");
    fx.rule(&[
        "--name",
        "ask-before-post",
        "--host-pattern",
        "localhost",
        "--method",
        "POST",
        "--action",
        "require_approval",
    ]);

    // Approve: a body larger than the 64 KiB summary prefix arrives intact.
    let big = body_file(&fx.palisade, "upload.bin", 200 * 1024 + 7);
    let waiting = send_async(
        &fx,
        &token,
        "POST",
        fx.upstream.url("/upload?draft=1"),
        Some(big.clone()),
    );
    let approval = fx.wait_for_pending();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        fx.upstream.count(),
        0,
        "nothing is sent while the request is held"
    );
    assert_eq!(approval["agent"], "poster");
    assert_eq!(approval["kind"], "credential_use");
    let title = approval["title"].as_str().unwrap_or_default();
    // The person approves the address really contacted, port included.
    assert!(
        title.starts_with(&format!(
            "POST https://localhost:{}/upload",
            fx.upstream.port()
        )),
        "the summary says what is asked: {approval}"
    );
    let everything = approval.to_string();
    assert!(everything.contains("/upload"), "{approval}");
    let id = approval["id"].as_str().expect("approval id").to_string();

    fx.run(&["approvals", "approve", &id]);
    let approved_at = Instant::now();
    assert!(
        fx.upstream.wait_for_count(1, Duration::from_secs(5)),
        "the approved request reaches the upstream"
    );
    let delay = approved_at.elapsed();
    assert!(delay < Duration::from_millis(1500), "released in {delay:?}");
    let reply = waiting.join().expect("client thread");
    assert_eq!(reply.status, 200, "{}", reply.raw);
    let echo = reply.json();
    assert_eq!(echo["body_len"], 200 * 1024 + 7);
    assert_eq!(echo["body_sha256"], sha256_file(&big), "body intact");
    let received = fx.upstream.last_request().expect("recorded");
    assert_eq!(received.method, "POST");
    assert_eq!(received.path_and_query, "/upload?draft=1");

    // Deny with a comment: the agent is told who and why; nothing goes upstream.
    let small = fx.palisade.write_file("small.json", r#"{"to":"everyone"}"#);
    let waiting = send_async(&fx, &token, "POST", fx.upstream.url("/send"), Some(small));
    let approval = fx.wait_for_pending();
    let id = approval["id"].as_str().expect("approval id").to_string();
    fx.run(&["approvals", "deny", &id, "--comment", "no"]);
    let reply = waiting.join().expect("client thread");
    let body = reply.refused(403, "approval_denied", false);
    assert_eq!(body["comment"], "no", "{}", reply.raw);
    let approver = body["approver"].as_str().unwrap_or_default().to_string();
    assert!(
        approver.starts_with("cli:"),
        "the approver is named: {}",
        reply.raw
    );
    assert_eq!(body["approval_id"], id.as_str());
    assert_eq!(fx.upstream.count(), 1, "the denied request never went out");

    // GET is not held by the rule.
    let reply = fx.get(&token, &fx.upstream.url("/read"));
    assert_eq!(reply.status, 200, "{}", reply.raw);

    let audit = fx.audit_until(|rows| {
        ["approved", "denied"].iter().all(|decision| {
            rows.iter()
                .any(|r| r["event"] == "request" && r["decision"] == *decision)
        })
    });
    let row = |decision: &str| {
        audit
            .iter()
            .find(|r| r["event"] == "request" && r["decision"] == decision)
            .unwrap_or_else(|| panic!("an audit row with decision {decision}: {audit:?}"))
            .clone()
    };
    let approved = row("approved");
    assert_eq!(approved["actor"].as_str(), Some(approver.as_str()));
    assert_eq!(approved["rule"], "ask-before-post");
    assert_eq!(approved["status"], 200);
    let denied = row("denied");
    assert_eq!(denied["actor"].as_str(), Some(approver.as_str()));
    assert_eq!(denied["status"], 403);
    assert_eq!(denied["approval_id"], id.as_str());
    ok(&fx.palisade.run(&["audit", "verify"]));
}

#[test]
fn unanswered_approval_times_out() {
    let fx = Fixture::start(&[
        "--allow-local-upstream",
        "localhost",
        "--approval-timeout",
        "2s",
    ]);
    let token = fx.agent("patient", "research");
    fx.rule(&[
        "--name",
        "ask-everything",
        "--host-pattern",
        "localhost",
        "--action",
        "require_approval",
    ]);
    let started = Instant::now();
    let reply = fx.get(&token, &fx.upstream.url("/wait"));
    let elapsed = started.elapsed();
    let body = reply.refused(504, "approval_timed_out", true);
    assert!(body["approval_id"].is_string(), "{}", reply.raw);
    assert!(
        elapsed >= Duration::from_millis(1900) && elapsed < Duration::from_secs(6),
        "answered after the 2 s timeout, took {elapsed:?}"
    );
    assert_eq!(fx.upstream.count(), 0);
    let all = fx.json(&["approvals", "list", "--all"]);
    assert_eq!(all[0]["status"], "timed_out", "{all}");
    let timed_out = |r: &Value| r["decision"] == "timed_out" && r["status"] == 504;
    assert!(fx
        .audit_until(|rows| rows.iter().any(timed_out))
        .iter()
        .any(timed_out));
    ok(&fx.palisade.run(&["audit", "verify"]));
}

#[test]
fn sigterm_answers_held_requests_finishes_in_flight_and_refuses_new_connections() {
    let mut fx = Fixture::local();
    let token = fx.agent("busy", "research");
    fx.rule(&[
        "--name",
        "hold-this",
        "--host-pattern",
        "localhost",
        "--path-pattern",
        "/held",
        "--action",
        "require_approval",
    ]);
    let held = send_async(&fx, &token, "GET", fx.upstream.url("/held"), None);
    fx.wait_for_pending();
    let slow = send_async(&fx, &token, "GET", fx.upstream.url("/slow?ms=1500"), None);
    assert!(
        fx.upstream.wait_for_count(1, Duration::from_secs(5)),
        "the slow request reached the upstream"
    );
    fx.vault_process()
        .signal_group(nix::sys::signal::Signal::SIGTERM)
        .expect("SIGTERM");
    let signalled = Instant::now();

    let refused = wait_until(Duration::from_secs(1), || {
        TcpStream::connect_timeout(&fx.addr, Duration::from_millis(100)).is_err()
    });
    assert!(refused, "new connections are refused once stopping");
    assert!(
        !slow.is_finished(),
        "the listener closed while the slow request was still in flight"
    );

    let reply = held.join().expect("held client");
    reply.refused(503, "gateway_restarting", true);
    let reply = slow.join().expect("slow client");
    assert_eq!(
        reply.status, 200,
        "in-flight request completes: {}",
        reply.raw
    );
    assert!(signalled.elapsed() < Duration::from_secs(5));
    let exited = fx
        .vault_process()
        .wait_timeout(Duration::from_secs(10))
        .expect("wait");
    let status = exited.expect("the gateway exits after draining");
    assert!(
        status.success(),
        "clean exit: {status:?}\n{}",
        fx.vault_process().stderr()
    );
    assert_eq!(fx.upstream.count(), 1, "the held request never went out");
}

#[test]
fn slow_upstream_is_cut_at_the_upstream_timeout() {
    let fx = Fixture::start(&[
        "--allow-local-upstream",
        "localhost",
        "--upstream-timeout",
        "1s",
    ]);
    let token = fx.agent("waiter", "research");
    let started = Instant::now();
    let reply = fx.get(&token, &fx.upstream.url("/slow?ms=3000"));
    let elapsed = started.elapsed();
    reply.refused(504, "upstream_timeout", true);
    assert!(
        elapsed < Duration::from_millis(2500),
        "cut after 1 s, took {elapsed:?}"
    );
    let reply = fx.get(&token, &fx.upstream.url("/slow?ms=100"));
    assert_eq!(reply.status, 200, "{}", reply.raw);
}

#[test]
fn local_upstreams_are_refused_unless_allowed() {
    let fx = Fixture::local();
    let token = fx.agent("curious", "research");
    let port = fx.upstream.port();

    // Allowed by name, refused by IP literal: the pattern is about the name used.
    fx.get(&token, &format!("https://127.0.0.1:{port}/"))
        .refused(403, "local_upstream_refused", false);
    fx.get(&token, &format!("https://[::1]:{port}/"))
        .refused(403, "local_upstream_refused", false);
    assert_eq!(fx.upstream.count(), 0);
    let reply = fx.get(&token, &fx.upstream.url("/ok"));
    assert_eq!(reply.status, 200, "{}", reply.raw);

    // The gateway's own listener is never an upstream, even under an allowed name.
    let own = fx.addr.port();
    for url in [
        format!("http://localhost:{own}/healthz"),
        format!("https://localhost:{own}/healthz"),
    ] {
        fx.get(&token, &url)
            .refused(403, "local_upstream_refused", false);
    }

    // Without --allow-local-upstream, a name resolving to loopback is refused too.
    let strict = Fixture::start(&[]);
    let token = strict.agent("curious", "research");
    let port = strict.upstream.port();
    for url in [
        format!("https://localhost:{port}/"),
        format!("https://127.0.0.1:{port}/"),
        format!("http://localhost:{}/healthz", strict.addr.port()),
    ] {
        strict
            .get(&token, &url)
            .refused(403, "local_upstream_refused", false);
    }
    assert_eq!(strict.upstream.count(), 0);
    let local_refused = |r: &Value| r["decision"] == "local_refused";
    assert!(strict
        .audit_until(|rows| rows.iter().any(local_refused))
        .iter()
        .any(local_refused));
}
