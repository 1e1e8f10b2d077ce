//! A client that gives up on a held plain-HTTP request (an absolute-form request to the
//! proxy, no tunnel) cancels its approval at once and frees its agent's hold slot:
//! approving the card afterwards sends nothing upstream. Checked on the vault's TCP
//! listener and from inside a bubblewrap sandbox, where the client's connection reaches
//! the vault's agent socket through the shim's relay.
//!
//! The real binary: `palisade vault serve` with one hold per agent (so a slot left taken
//! shows as a refusal of the next held request), the testkit's upstream on plain HTTP
//! counting what reaches it, and `palisade sandbox run`, which finds the running
//! gateway's socket for its agent.

use palisade_testkit::{curl, wait_until, ChildGuard, Palisade, TestCa, Upstream};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_palisade");
/// How long after its client left a held approval may still be pending.
const CANCELLED_WITHIN: Duration = Duration::from_secs(5);

struct World {
    palisade: Palisade,
    upstream: Upstream,
    vault: ChildGuard,
    listen: SocketAddr,
    /// The upstream's plain HTTP base URL (`http://127.0.0.1:PORT`).
    base: String,
}

/// Agent `a`, a rule holding its POSTs to the upstream, and the vault serving it.
fn world() -> World {
    let ca = TestCa::new().expect("test CA");
    let upstream = Upstream::builder()
        .plain_http()
        .start(&ca)
        .expect("upstream");
    let base = upstream.http_base_url().expect("plain HTTP listener");
    let palisade = Palisade::new(BINARY);
    ok(
        &palisade,
        &["agents", "create", "a", "--profile", "research"],
    );
    ok(
        &palisade,
        &[
            "rules",
            "create",
            "--name",
            "ask",
            "--host-pattern",
            "127.0.0.1",
            "--method",
            "POST",
            "--action",
            "require_approval",
        ],
    );
    let (vault, listen) = palisade.spawn_vault(&[
        "--allow-local-upstream",
        "127.0.0.1",
        "--approval-timeout",
        "10m",
        "--max-holds-per-agent",
        "1",
    ]);
    World {
        palisade,
        upstream,
        vault,
        listen,
        base,
    }
}

fn ok(palisade: &Palisade, args: &[&str]) -> String {
    let output = palisade.run(args);
    assert!(
        output.status.success(),
        "palisade {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

impl World {
    fn approvals(&self, status: &str) -> Vec<Value> {
        let text = ok(
            &self.palisade,
            &["approvals", "list", "--status", status, "--json"],
        );
        serde_json::from_str::<Value>(&text)
            .expect("approvals JSON")
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The id of the approval of `status` whose title names `path`, waiting up to `limit`.
    fn wait_for(&self, status: &str, path: &str, limit: Duration) -> Option<String> {
        let mut found = None;
        wait_until(limit, || {
            found = self
                .approvals(status)
                .into_iter()
                .find(|a| a["title"].as_str().is_some_and(|t| t.ends_with(path)))
                .and_then(|a| a["id"].as_str().map(str::to_string));
            found.is_some()
        });
        found
    }

    /// What must hold once the client of the held `path` has left: its approval is
    /// cancelled within [`CANCELLED_WITHIN`], and approving it sends nothing.
    fn assert_abandoned(&self, path: &str, left_at: Instant) {
        let id = self
            .wait_for("cancelled", path, CANCELLED_WITHIN)
            .unwrap_or_else(|| {
                panic!(
                    "{path}: its client left {:?} ago, yet its approval is not cancelled; pending: {:?}\nvault: {}",
                    left_at.elapsed(),
                    self.approvals("pending")
                        .iter()
                        .map(|a| format!("{} {}", a["id"], a["title"]))
                        .collect::<Vec<_>>(),
                    self.vault.stderr()
                )
            });
        let approve = self.palisade.run(&["approvals", "approve", &id]);
        assert!(
            !approve.status.success(),
            "a cancelled approval was approved"
        );
        assert!(
            !self.upstream.wait_for_count(1, Duration::from_secs(1)),
            "an abandoned request was sent upstream: {:?}",
            self.upstream
                .requests()
                .iter()
                .map(|r| r.path().to_string())
                .collect::<Vec<_>>()
        );
    }

    /// Approves the pending approval of `path` once it shows (the hold slot was free)
    /// and waits for the request upstream.
    fn approve_next(&self, path: &str, limit: Duration, client: &dyn Fn() -> String) {
        let id = self.wait_for("pending", path, limit).unwrap_or_else(|| {
            panic!(
                "{path} was never held (the agent's one hold slot still taken?): {}\nvault: {}",
                client(),
                self.vault.stderr()
            )
        });
        ok(&self.palisade, &["approvals", "approve", &id]);
        assert!(
            self.upstream.wait_for_count(1, Duration::from_secs(20)),
            "the approved request did not arrive: {}",
            client()
        );
        let paths: Vec<String> = self
            .upstream
            .requests()
            .iter()
            .map(|r| r.path().to_string())
            .collect();
        assert_eq!(paths, [path], "only the approved request went upstream");
    }
}

#[test]
fn a_client_that_gives_up_on_the_tcp_listener_cancels_its_hold() {
    let world = world();
    let token = ok(&world.palisade, &["agents", "token", "a"]);
    let token = token.trim();
    let proxy = format!("http://{}", world.listen);
    let user = format!("x:{token}");
    let post = |path: &str, seconds: &str| {
        let url = format!("{}{path}", world.base);
        curl(
            &[
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-m",
                seconds,
                "-x",
                &proxy,
                "-U",
                &user,
                "-X",
                "POST",
                "-d",
                "x",
                &url,
            ],
            Duration::from_secs(90),
        )
    };
    let gave_up = post("/held/abandoned", "3");
    let left_at = Instant::now();
    assert_eq!(gave_up.status.code(), Some(28), "curl timed out while held");
    world.assert_abandoned("/held/abandoned", left_at);

    // The one slot is free: once the agent may be held again (an abandoned hold costs
    // it up to 10 s), its next request is held, approved and sent.
    let next = std::thread::scope(|scope| {
        let client = scope.spawn(|| {
            let deadline = Instant::now() + Duration::from_secs(40);
            loop {
                let output = post("/held/next", "60");
                let status = String::from_utf8_lossy(&output.stdout).into_owned();
                if status != "429" || Instant::now() > deadline {
                    return status;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        world.approve_next("/held/next", Duration::from_secs(40), &|| String::new());
        client.join().expect("client thread")
    });
    assert_eq!(next, "200");
}

/// Inside the sandbox: the first POST gives up after 3 s (curl exit 28, which closes
/// its connection to the shim); the second is retried while refused 429 and waits
/// for its answer.
const SANDBOX_SCRIPT: &str = r#"
post() { curl -sS -o /dev/null -w '%{http_code}' --noproxy '' -x http://127.0.0.1:3128 -X POST -d x -m "$2" "$BASE$1"; }
post /held/abandoned 3; echo " abandoned exit $?"
for try in $(seq 80); do
  code=$(post /held/next 60)
  echo "next $code"
  [ "$code" = 429 ] || break
  sleep 0.5
done
"#;

#[test]
fn a_client_in_a_sandbox_that_gives_up_cancels_its_hold() {
    let world = world();
    let script = format!("BASE={}\n{SANDBOX_SCRIPT}", world.base);
    let mut sandbox = world.palisade.spawn(&[
        "sandbox",
        "run",
        "--agent",
        "a",
        "--timeout",
        "120s",
        "--",
        "bash",
        "-c",
        &script,
    ]);
    let output = |sandbox: &ChildGuard| format!("{}{}", sandbox.stdout(), sandbox.stderr());
    assert!(
        wait_until(Duration::from_secs(60), || sandbox
            .stdout()
            .contains("abandoned exit")),
        "the held request did not end: {}",
        output(&sandbox)
    );
    let left_at = Instant::now();
    assert!(
        sandbox.stdout().contains("000 abandoned exit 28"),
        "curl gave up while held: {}",
        output(&sandbox)
    );
    world.assert_abandoned("/held/abandoned", left_at);

    world.approve_next("/held/next", Duration::from_secs(60), &|| output(&sandbox));
    assert!(
        wait_until(Duration::from_secs(30), || matches!(
            sandbox.try_wait(),
            Ok(Some(_))
        )),
        "the sandbox did not end: {}",
        output(&sandbox)
    );
    assert!(
        sandbox.stdout().ends_with("next 200\n"),
        "the approved request was answered: {}",
        output(&sandbox)
    );
}
