//! Shared set-up for the host's black-box tests (`host_end_to_end.rs`, `host_chat.rs`,
//! `host_recovery.rs`, `host_robustness.rs`, `web_ui.rs`): a temporary home with agent `helper`
//! whose model API is the testkit's fake server on 127.0.0.1 (TLS with a test CA),
//! its key stored as a vault secret, and `palisade up` started with the real binary,
//! the vault in-process and runners in bubblewrap sandboxes.

#![allow(dead_code)]

#[allow(unused_imports)]
pub use palisade_testkit::{
    free_port, wait_for_tcp, ChildGuard, Palisade, ScriptedTurn, TestCa, Upstream,
};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

pub const BINARY: &str = env!("CARGO_BIN_EXE_palisade");
pub const KEY: &str = "sk-ant-test-4b1d9c2e7f";
pub const STARTUP: Duration = Duration::from_secs(60);

pub struct World {
    pub palisade: Palisade,
    pub ca: TestCa,
    pub upstream: Upstream,
    pub listen: SocketAddr,
}

pub fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

pub fn ok(output: Output) -> Output {
    assert!(output.status.success(), "{}", text(&output));
    output
}

/// A home with agent `helper` whose model API is the fake upstream, and its key
/// stored as a vault secret for the upstream's host.
/// Creates agent `name` with `profile`, thinking with `upstream`'s fake Anthropic API.
pub fn create_agent(palisade: &Palisade, upstream: &Upstream, name: &str, profile: &str) {
    ok(palisade.run(&[
        "agents",
        "create",
        name,
        "--provider",
        "anthropic",
        "--model",
        "claude-test",
        "--base-url",
        &upstream.base_url(),
        "--profile",
        profile,
    ]));
}

pub fn world() -> World {
    world_with_secret_path(None)
}

/// As [`world`], with the key's secret limited to `path_pattern` (e.g. `/v1/*`, so a
/// request to another path of the same test server carries no key).
pub fn world_with_secret_path(path_pattern: Option<&str>) -> World {
    let ca = TestCa::new().expect("test CA");
    let upstream = Upstream::start(&ca).expect("upstream");
    let palisade = Palisade::new(BINARY);
    create_agent(&palisade, &upstream, "helper", "research");
    let key_file = palisade.write_file("key.txt", KEY);
    let mut secret = vec![
        "secrets",
        "create",
        "--name",
        "claude",
        "--host-pattern",
        "localhost",
        "--inject",
        "anthropic",
        "--agent",
        "helper",
        "--value-file",
        key_file.to_str().unwrap(),
    ];
    if let Some(path_pattern) = path_pattern {
        secret.extend(["--path-pattern", path_pattern]);
    }
    ok(palisade.run(&secret));
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    World {
        palisade,
        ca,
        upstream,
        listen,
    }
}

impl World {
    pub fn up(&self) -> ChildGuard {
        self.up_with(&[])
    }

    /// `palisade -v up` on the world's address with extra options, waiting until the
    /// API listens.
    pub fn up_with(&self, extra: &[&str]) -> ChildGuard {
        let listen = self.listen.to_string();
        let ca = self.ca.pem_path().to_str().unwrap().to_string();
        let mut args: Vec<&str> = vec![
            "-v",
            "up",
            "--listen",
            &listen,
            "--upstream-ca",
            &ca,
            "--allow-local-upstream",
            "localhost",
        ];
        args.extend_from_slice(extra);
        let mut guard = self.palisade.spawn(&args);
        let deadline = Instant::now() + STARTUP;
        // A host killed with -9 leaves its run/host.json behind: wait for this one's.
        let pid = guard.id();
        let written_by_this_host = || {
            std::fs::read_to_string(self.palisade.home().join("run/host.json"))
                .ok()
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
                .and_then(|info| info["pid"].as_u64())
                == Some(u64::from(pid))
        };
        while !written_by_this_host() {
            if let Ok(Some(status)) = guard.try_wait() {
                panic!("palisade up exited ({status}): {}", guard.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "palisade up did not start: {}",
                guard.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(wait_for_tcp(self.listen, STARTUP), "API not listening");
        guard
    }

    /// [`create_agent`] in this world.
    pub fn create_agent(&self, name: &str, profile: &str) {
        create_agent(&self.palisade, &self.upstream, name, profile);
    }

    /// Adds the fake Telegram `telegram` as channel `tg`, with `extra` options (such
    /// as `--unknown-senders ask`).
    pub fn add_telegram(&self, telegram: &palisade_testkit::FakeTelegram, extra: &[&str]) {
        self.add_telegram_at(telegram.token(), &telegram.api_base(), extra);
    }

    /// Adds a Telegram bot with `token` at `api_base` as channel `tg`.
    pub fn add_telegram_at(&self, token: &str, api_base: &str, extra: &[&str]) {
        let token = self.palisade.write_file("tg-token.txt", token);
        let mut args = vec![
            "channels",
            "add",
            "telegram",
            "tg",
            "--token-file",
            token.to_str().unwrap(),
            "--api-base",
            api_base,
        ];
        args.extend_from_slice(extra);
        ok(self.palisade.run(&args));
    }

    /// Makes `user` (shown as `name`) an approver of `agent` on `channel`.
    pub fn add_approver(&self, agent: &str, channel: &str, user: &str, name: &str) {
        ok(self.palisade.run(&[
            "approvers",
            "add",
            "--agent",
            agent,
            "--channel",
            channel,
            "--user",
            user,
            "--display-name",
            name,
        ]));
    }

    /// Links `chat` of `channel` to `agent`.
    pub fn link(&self, channel: &str, agent: &str, chat: &str) {
        ok(self.palisade.run(&[
            "channels", "link", channel, "--agent", agent, "--chat", chat,
        ]));
    }

    pub fn send(&self, agent: &str, message: &str) -> Output {
        self.palisade.run(&["send", "--agent", agent, message])
    }

    pub fn workspace(&self, agent: &str) -> PathBuf {
        self.palisade
            .home()
            .join("agents")
            .join(agent)
            .join("workspace")
    }

    pub fn model_requests(&self) -> Vec<palisade_testkit::RecordedRequest> {
        self.upstream
            .requests()
            .into_iter()
            .filter(|r| r.path().starts_with("/v1/messages"))
            .collect()
    }

    pub fn sessions(&self) -> serde_json::Value {
        let output = ok(self.palisade.run(&["sessions", "list", "--json"]));
        serde_json::from_slice(&output.stdout).expect("sessions JSON")
    }

    pub fn session(&self, id: i64) -> serde_json::Value {
        let output = ok(self
            .palisade
            .run(&["sessions", "show", &id.to_string(), "--json"]));
        serde_json::from_slice(&output.stdout).expect("session JSON")
    }
}

impl World {
    /// Waits until session `id` has `count` messages, all answered; returns it.
    pub fn wait_answered(&self, id: i64, count: usize, host: &ChildGuard) -> serde_json::Value {
        let deadline = Instant::now() + STARTUP;
        loop {
            let session = self.session(id);
            let messages = session["messages"].as_array().cloned().unwrap_or_default();
            if messages.len() == count && messages.iter().all(|m| m["reply"].is_object()) {
                return session;
            }
            assert!(
                Instant::now() < deadline,
                "session {id} not answered: {session}\nhost: {}",
                host.stderr()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The first pending approval (`approvals list --json`) that `wanted` accepts,
    /// waiting for one as long as a host takes to start.
    pub fn wait_for_approval(
        &self,
        host: &ChildGuard,
        wanted: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + STARTUP;
        loop {
            let output = ok(self.palisade.run(&["approvals", "list", "--json"]));
            let list: serde_json::Value =
                serde_json::from_slice(&output.stdout).expect("approvals JSON");
            let pending = list.as_array().cloned().unwrap_or_default();
            if let Some(found) = pending.into_iter().find(|approval| wanted(approval)) {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "no such approval appeared: {list}\nhost: {}",
                host.stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The id of the only session.
    pub fn only_session(&self) -> i64 {
        let sessions = self.sessions();
        assert_eq!(sessions.as_array().map(Vec::len), Some(1), "{sessions}");
        sessions[0]["id"].as_i64().expect("session id")
    }

    /// Stops the host with `palisade down`.
    pub fn down(&self, mut host: ChildGuard) {
        self.stop(&mut host);
    }

    /// As [`World::down`], keeping the guard for reading the host's output afterwards.
    pub fn stop(&self, host: &mut ChildGuard) {
        let down = self.palisade.run(&["down"]);
        assert!(
            down.status.success(),
            "{}\nhost: {}",
            text(&down),
            host.stderr()
        );
        let _ = host.wait_timeout(Duration::from_secs(30));
    }
}

/// How many times `needle` occurs in the host's stderr.
pub fn count_in(host: &ChildGuard, needle: &str) -> usize {
    host.stderr().matches(needle).count()
}

/// Waits until `needle` occurs `n` times in the host's stderr.
pub fn wait_for_log(host: &ChildGuard, needle: &str, n: usize) {
    let deadline = Instant::now() + STARTUP;
    while count_in(host, needle) < n {
        assert!(
            Instant::now() < deadline,
            "host never logged {needle:?} {n} times: {}",
            host.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
