//! Black-box tests of the OneCLI-compatible admin API on the vault's TCP listener,
//! first with curl against the wire contract, then with the real `@onecli-sh/sdk`
//! npm package (what NanoClaw uses) pointed at the gateway's URL and admin key.
//!
//! The npm package is installed once per target directory (under
//! `CARGO_TARGET_TMPDIR`), with a time limit; a missing `node`/`npm` fails the test
//! with the command that installs them, because skipping would hide a broken contract.

mod vault_fixture;

use palisade_testkit::{curl, output_text, proxy_url, run_with_timeout, wait_until};
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use vault_fixture::{ok, CurlReply, Setup};

const CLIENT_TIMEOUT: Duration = Duration::from_secs(40);
const NPM_TIMEOUT: Duration = Duration::from_secs(180);
const SDK_PACKAGE: &str = "@onecli-sh/sdk";

/// A gateway allowed to reach `localhost` upstreams, and its admin key.
struct Fixture {
    setup: Setup,
    addr: SocketAddr,
    vault_ca: PathBuf,
    admin_key: String,
}

impl Deref for Fixture {
    type Target = Setup;
    fn deref(&self) -> &Setup {
        &self.setup
    }
}

impl Fixture {
    fn start() -> Fixture {
        let mut setup = Setup::new();
        let addr = setup.start_vault_exactly(&["--allow-local-upstream", "localhost"]);
        let vault_ca = setup.vault_ca();
        let admin_key = setup.cli(&["vault", "admin-key"]).trim().to_string();
        assert!(admin_key.len() >= 20, "a real admin key: {admin_key:?}");
        Fixture {
            setup,
            addr,
            vault_ca,
            admin_key,
        }
    }

    fn run(&self, args: &[&str]) -> String {
        self.cli(args)
    }

    fn agent(&self, name: &str) -> String {
        self.run(&["agents", "create", name]);
        let token = self.run(&["agents", "token", name]).trim().to_string();
        token
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A direct (not proxied) call to the admin API.
    fn admin(&self, method: &str, path: &str, key: Option<&str>, body: Option<&str>) -> CurlReply {
        let url = format!("{}{path}", self.base());
        let mut args: Vec<String> = ["-sS", "-i", "--max-time", "35", "-X", method]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if let Some(key) = key {
            args.push("-H".into());
            args.push(format!("Authorization: Bearer {key}"));
        }
        if let Some(body) = body {
            args.push("-H".into());
            args.push("content-type: application/json".into());
            args.push("--data".into());
            args.push(body.to_string());
        }
        args.push(url);
        CurlReply::parse(&curl(&args, CLIENT_TIMEOUT))
    }

    fn key(&self) -> Option<&str> {
        Some(self.admin_key.as_str())
    }

    /// Starts a proxied request on a thread (held by a require_approval rule).
    fn send_async(&self, token: &str, path: &str) -> std::thread::JoinHandle<CurlReply> {
        let proxy = proxy_url(self.addr, token);
        let ca = self.vault_ca.display().to_string();
        let url = self.upstream.url(path);
        std::thread::spawn(move || {
            let args = [
                "-sS",
                "-i",
                "--suppress-connect-headers",
                "--max-time",
                "35",
                "--proxy",
                &proxy,
                "--cacert",
                &ca,
                "-X",
                "POST",
                "--data",
                "hello=world&api_key=sk-leak-4411",
                &url,
            ];
            CurlReply::parse(&curl(&args, CLIENT_TIMEOUT))
        })
    }

    fn pending_ids(&self) -> Vec<String> {
        let listed: Value =
            serde_json::from_str(&self.run(&["--json", "approvals", "list"])).expect("JSON");
        listed
            .as_array()
            .map(|all| {
                all.iter()
                    .filter_map(|a| a["id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn wait_for_pending(&self, n: usize) -> Vec<String> {
        let mut ids = Vec::new();
        let reached = wait_until(Duration::from_secs(10), || {
            ids = self.pending_ids();
            ids.len() >= n
        });
        assert!(reached, "{n} approvals pending within 10 s, got {ids:?}");
        ids
    }

    fn hold_posts(&self) {
        self.run(&[
            "rules",
            "create",
            "--name",
            "ask-before-post",
            "--host-pattern",
            "localhost",
            "--method",
            "POST",
            "--action",
            "require_approval",
        ]);
    }
}

#[test]
fn healthz_and_container_config() {
    let fx = Fixture::start();
    let token = fx.agent("nano");

    let health = fx.admin("GET", "/healthz", None, None);
    assert_eq!(health.status, 200, "{}", health.raw);

    let path = "/v1/container-config?agent=nano";
    for key in [None, Some("wrong-key"), Some("")] {
        let reply = fx.admin("GET", path, key, None);
        assert_eq!(reply.status, 401, "key {key:?}: {}", reply.raw);
        assert_eq!(reply.json()["error"], "unauthorized");
        assert!(!reply.body.contains(&token), "no token without the key");
    }
    // The agent's proxy token is not an admin key either.
    let reply = fx.admin("GET", path, Some(&token), None);
    assert_eq!(reply.status, 401, "{}", reply.raw);

    let reply = fx.admin("GET", path, fx.key(), None);
    assert_eq!(reply.status, 200, "{}", reply.raw);
    let config = reply.json();
    let env: HashMap<String, String> =
        serde_json::from_value(config["env"].clone()).expect("env is a string map");
    for name in ["HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"] {
        let value = env
            .get(name)
            .unwrap_or_else(|| panic!("{name} in {config}"));
        assert!(value.starts_with("http://"), "{name}={value}");
        assert!(
            value.contains(&format!("x:{token}@")),
            "{name} carries the token: {value}"
        );
        assert!(
            value.ends_with(&format!(":{}", fx.addr.port())),
            "{name}={value}"
        );
    }
    let ca_path = config["caCertificateContainerPath"]
        .as_str()
        .expect("caCertificateContainerPath");
    assert!(ca_path.starts_with('/'), "{config}");
    for name in [
        "NODE_EXTRA_CA_CERTS",
        "SSL_CERT_FILE",
        "CURL_CA_BUNDLE",
        "REQUESTS_CA_BUNDLE",
        "GIT_SSL_CAINFO",
    ] {
        assert_eq!(env.get(name).map(String::as_str), Some(ca_path), "{name}");
    }
    assert_eq!(env.get("NODE_USE_ENV_PROXY").map(String::as_str), Some("1"));
    let vault_pem = std::fs::read_to_string(&fx.vault_ca).expect("vault CA");
    assert_eq!(config["caCertificate"].as_str(), Some(vault_pem.as_str()));
    assert!(
        !env.contains_key("ANTHROPIC_API_KEY"),
        "no placeholder without an anthropic secret: {config}"
    );

    // Unknown agent: a clear 404, not someone else's token.
    let reply = fx.admin("GET", "/v1/container-config?agent=ghost", fx.key(), None);
    assert_eq!(reply.status, 404, "{}", reply.raw);

    // Granting an anthropic secret adds the placeholder (and only a placeholder).
    let real_key = "sk-ant-real-key-never-shown";
    ok(&fx.palisade.run_stdin(
        &[
            "secrets",
            "create",
            "--name",
            "claude",
            "--host-pattern",
            "api.anthropic.com",
            "--inject",
            "anthropic",
            "--agent",
            "nano",
        ],
        real_key.as_bytes(),
    ));
    let mut config = Value::Null;
    let appeared = wait_until(Duration::from_secs(3), || {
        config = fx.admin("GET", path, fx.key(), None).json();
        config["env"]["ANTHROPIC_API_KEY"].is_string()
    });
    assert!(appeared, "ANTHROPIC_API_KEY appears once granted: {config}");
    let placeholder = config["env"]["ANTHROPIC_API_KEY"]
        .as_str()
        .unwrap_or_default();
    assert!(!placeholder.is_empty() && placeholder != real_key);
    assert!(!config.to_string().contains(real_key));

    // `palisade vault env` prints the same variables for a shell.
    let env_json: Value =
        serde_json::from_str(&fx.run(&["--json", "vault", "env", "--agent", "nano"]))
            .expect("vault env --json");
    for name in ["HTTPS_PROXY", "NODE_EXTRA_CA_CERTS", "ANTHROPIC_API_KEY"] {
        assert!(env_json[name].is_string(), "{name} in {env_json}");
    }
    assert!(env_json["HTTPS_PROXY"]
        .as_str()
        .is_some_and(|p| p.contains(&token)));
}

#[test]
fn approvals_long_poll_exclude_and_decision() {
    let fx = Fixture::start();
    let token = fx.agent("nano");
    fx.hold_posts();

    // An empty long-poll waits, then answers with no requests (checked with a short
    // client timeout: it must still be waiting after 1.5 s).
    let started = Instant::now();
    let output = curl(
        &[
            "-sS",
            "--max-time",
            "1.5",
            "-H",
            &format!("Authorization: Bearer {}", fx.admin_key),
            &format!("{}/v1/approvals/pending", fx.base()),
        ],
        CLIENT_TIMEOUT,
    );
    assert!(
        !output.status.success() && started.elapsed() >= Duration::from_millis(1400),
        "an empty poll is held open: {}",
        output_text(&output)
    );

    let first = fx.send_async(&token, "/first");
    let first_id = fx.wait_for_pending(1).remove(0);
    let poll = fx.admin("GET", "/v1/approvals/pending", fx.key(), None);
    assert_eq!(poll.status, 200, "{}", poll.raw);
    let body = poll.json();
    let requests = body["requests"].as_array().expect("requests array");
    assert_eq!(requests.len(), 1, "{body}");
    let request = &requests[0];
    assert_eq!(request["id"], first_id.as_str());
    assert_eq!(request["method"], "POST");
    assert_eq!(request["host"], "localhost");
    assert_eq!(request["path"], "/first");
    assert!(
        request["url"]
            .as_str()
            .is_some_and(|u| u.contains("/first")),
        "{request}"
    );
    assert_eq!(request["agent"]["name"], "nano");
    assert!(request["bodyPreview"]
        .as_str()
        .is_some_and(|b| b.contains("hello=world")));
    // Credential-like fields are redacted there as on the card (review: the web page's
    // context showed what the card hid).
    assert!(
        request["bodyPreview"]
            .as_str()
            .is_some_and(|b| b.contains("api_key=[redacted]") && !b.contains("sk-leak")),
        "{request}"
    );
    let headers = request["headers"].to_string();
    assert!(
        !headers.contains(&token),
        "no proxy token in the card: {headers}"
    );
    assert!(body["timeoutSeconds"].as_u64().is_some(), "{body}");
    assert_eq!(fx.upstream.count(), 0);

    // A poll excluding the first waits, and wakes when a second request is held.
    let base = fx.base();
    let key = fx.admin_key.clone();
    let exclude = first_id.clone();
    let excluding = std::thread::spawn(move || {
        let started = Instant::now();
        let output = curl(
            &[
                "-sS",
                "--max-time",
                "35",
                "-H",
                &format!("Authorization: Bearer {key}"),
                &format!("{base}/v1/approvals/pending?exclude={exclude}"),
            ],
            CLIENT_TIMEOUT,
        );
        (output, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        !excluding.is_finished(),
        "the excluded one does not end the poll"
    );
    let second = fx.send_async(&token, "/second");
    let (output, waited) = excluding.join().expect("poll thread");
    let body: Value = serde_json::from_slice(&ok(&output).stdout).expect("JSON poll");
    let ids: Vec<&str> = body["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 1, "{body}");
    assert_ne!(ids[0], first_id, "excluded id not returned: {body}");
    assert!(
        waited < Duration::from_secs(10),
        "woken by the new hold, after {waited:?}"
    );
    let second_id = ids[0].to_string();

    // Decisions through the API release or refuse the held requests.
    let bad = fx.admin(
        "POST",
        &format!("/v1/approvals/{first_id}/decision"),
        fx.key(),
        Some(r#"{"decision":"maybe"}"#),
    );
    assert_eq!(bad.status, 400, "{}", bad.raw);
    let unauthorized = fx.admin(
        "POST",
        &format!("/v1/approvals/{first_id}/decision"),
        None,
        Some(r#"{"decision":"approve"}"#),
    );
    assert_eq!(unauthorized.status, 401, "{}", unauthorized.raw);
    assert_eq!(fx.upstream.count(), 0);

    let decided = Instant::now();
    let reply = fx.admin(
        "POST",
        &format!("/v1/approvals/{first_id}/decision"),
        fx.key(),
        Some(r#"{"decision":"approve"}"#),
    );
    assert_eq!(reply.status, 200, "{}", reply.raw);
    let released = first.join().expect("first client");
    assert_eq!(released.status, 200, "{}", released.raw);
    assert!(
        decided.elapsed() < Duration::from_secs(2),
        "released at once"
    );
    assert_eq!(
        fx.upstream.last_request().expect("recorded").path(),
        "/first"
    );

    let reply = fx.admin(
        "POST",
        &format!("/v1/approvals/{second_id}/decision"),
        fx.key(),
        Some(r#"{"decision":"deny"}"#),
    );
    assert_eq!(reply.status, 200, "{}", reply.raw);
    let refused = second.join().expect("second client");
    assert_eq!(refused.status, 403, "{}", refused.raw);
    assert_eq!(refused.json()["error"], "approval_denied");
    assert_eq!(fx.upstream.count(), 1);

    // A second decision on the same approval changes nothing.
    let again = fx.admin(
        "POST",
        &format!("/v1/approvals/{second_id}/decision"),
        fx.key(),
        Some(r#"{"decision":"approve"}"#),
    );
    assert_eq!(again.status, 410, "{}", again.raw);
    assert_eq!(fx.upstream.count(), 1);
    ok(&fx.palisade.run(&["audit", "verify"]));
}

/// Where the SDK is installed: once per target directory.
fn sdk_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("onecli-sdk")
}

fn require_tool(name: &str) {
    let found = Command::new(name)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "`{name}` is needed for the @onecli-sh/sdk test and was not found; install Node.js and npm (scripts/install-deps.sh does)"
    );
}

/// Installs the SDK into [`sdk_dir`] unless it is there, into a fresh folder first so
/// an interrupted install never leaves a half package behind.
fn install_sdk() -> PathBuf {
    let dir = sdk_dir();
    let package = dir.join("node_modules").join(SDK_PACKAGE);
    if package.join("package.json").exists() {
        return package;
    }
    require_tool("npm");
    let parent = dir.parent().expect("target tmp dir");
    std::fs::create_dir_all(parent).expect("create the target tmp dir");
    let staging = tempfile::Builder::new()
        .prefix("onecli-sdk-install")
        .tempdir_in(parent)
        .expect("staging folder");
    std::fs::write(staging.path().join("package.json"), r#"{"private":true}"#)
        .expect("package.json");
    let mut command = Command::new("npm");
    command
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            SDK_PACKAGE,
        ])
        .current_dir(staging.path());
    let started = Instant::now();
    let output = run_with_timeout(&mut command, None, NPM_TIMEOUT);
    assert!(
        output.status.success(),
        "npm install {SDK_PACKAGE} failed after {:?}: {}",
        started.elapsed(),
        output_text(&output)
    );
    let staged = staging.keep();
    if std::fs::rename(&staged, &dir).is_err() {
        // Another run installed it meanwhile; use that one.
        let _ = std::fs::remove_dir_all(&staged);
    }
    assert!(
        package.join("package.json").exists(),
        "{SDK_PACKAGE} installed"
    );
    package
}

/// Applies the container config to a docker argument list, then approves the first
/// held request through `configureManualApproval`, and prints what it saw.
const NODE_SCRIPT: &str = r#"
const { OneCLI } = require(process.env.SDK);
const onecli = new OneCLI({ url: process.env.ONECLI_URL, apiKey: process.env.ONECLI_KEY });
const fail = (e) => { console.error(e && e.stack ? e.stack : String(e)); process.exit(1); };
setTimeout(() => fail(new Error("no approval request within 30 s")), 30000).unref();
(async () => {
  const args = ["run", "--rm"];
  const applied = await onecli.applyContainerConfig(args, { agent: process.env.AGENT });
  let wrong = null;
  try {
    await onecli.applyContainerConfig([], { agent: "no-such-agent" });
  } catch (e) {
    wrong = e.statusCode || String(e);
  }
  const seen = await new Promise((resolve) => {
    let handle;
    handle = onecli.configureManualApproval(async (request) => {
      // Give the SDK time to submit the decision, then stop polling.
      setTimeout(() => { handle.stop(); resolve(request); }, 1000);
      return request.path === "/from-sdk" ? "approve" : "deny";
    });
  });
  console.log(JSON.stringify({ applied, args, wrong, seen }));
  process.exit(0);
})().catch(fail);
"#;

#[test]
fn onecli_sdk_works_against_palisade_unchanged() {
    require_tool("node");
    let package = install_sdk();
    let fx = Fixture::start();
    let token = fx.agent("nanoclaw");
    fx.hold_posts();

    let held = fx.send_async(&token, "/from-sdk");
    fx.wait_for_pending(1);
    assert_eq!(fx.upstream.count(), 0);

    let node_tmp = fx.palisade.dir().join("node-tmp");
    std::fs::create_dir_all(&node_tmp).expect("node tmp dir");
    let mut command = Command::new("node");
    command
        .arg("-e")
        .arg(NODE_SCRIPT)
        .env("SDK", &package)
        .env("ONECLI_URL", fx.base())
        .env("ONECLI_KEY", &fx.admin_key)
        .env("AGENT", "nanoclaw")
        // The SDK writes CA files to the temp dir; keep them inside the test's folder.
        .env("TMPDIR", &node_tmp);
    for name in [
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "no_proxy",
        "NODE_USE_ENV_PROXY",
        "ONECLI_GATEWAY_URL",
        "ONECLI_PROJECT_ID",
    ] {
        command.env_remove(name);
    }
    let output = run_with_timeout(&mut command, None, Duration::from_secs(45));
    let result: Value = serde_json::from_slice(&ok(&output).stdout)
        .unwrap_or_else(|e| panic!("node printed JSON ({e}): {}", output_text(&output)));

    assert_eq!(result["applied"], true, "{result}");
    assert_eq!(
        result["wrong"], 404,
        "an unknown agent is an error: {result}"
    );
    let args: Vec<String> =
        serde_json::from_value(result["args"].clone()).expect("args are strings");
    let env_flags: Vec<&str> = args
        .windows(2)
        .filter(|pair| pair[0] == "-e")
        .map(|pair| pair[1].as_str())
        .collect();
    let flag = |name: &str| {
        env_flags
            .iter()
            .find_map(|f| f.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("-e {name}=… in {args:?}"))
            .to_string()
    };
    for name in ["HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"] {
        assert!(
            flag(name).contains(&format!("x:{token}@")),
            "{name} in {args:?}"
        );
    }
    for name in [
        "NODE_EXTRA_CA_CERTS",
        "CURL_CA_BUNDLE",
        "REQUESTS_CA_BUNDLE",
        "GIT_SSL_CAINFO",
    ] {
        assert!(flag(name).starts_with('/'), "{name} in {args:?}");
    }
    assert_eq!(flag("NODE_USE_ENV_PROXY"), "1");
    let mounts: Vec<&str> = args
        .windows(2)
        .filter(|pair| pair[0] == "-v")
        .map(|pair| pair[1].as_str())
        .collect();
    let ca_mount = mounts
        .iter()
        .find(|m| m.ends_with(&format!("{}:ro", flag("NODE_EXTRA_CA_CERTS"))))
        .unwrap_or_else(|| panic!("the CA is mounted where the env says: {args:?}"));
    let host_ca = Path::new(ca_mount.split(':').next().unwrap_or_default());
    let vault_pem = std::fs::read_to_string(&fx.vault_ca).expect("vault CA");
    assert_eq!(
        std::fs::read_to_string(host_ca).expect("the SDK wrote the CA file"),
        vault_pem
    );

    let seen = &result["seen"];
    assert_eq!(seen["path"], "/from-sdk", "{result}");
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["agent"]["name"], "nanoclaw");

    let reply = held.join().expect("held client");
    assert_eq!(reply.status, 200, "approved through the SDK: {}", reply.raw);
    assert_eq!(fx.upstream.count(), 1);
    assert_eq!(
        fx.upstream.last_request().expect("recorded").path(),
        "/from-sdk"
    );
    let approved: Value =
        serde_json::from_str(&fx.run(&["--json", "approvals", "list", "--status", "approved"]))
            .expect("JSON");
    assert!(
        approved[0]["approver"]
            .as_str()
            .is_some_and(|a| a.starts_with("api:")),
        "the decision is recorded as the admin API's: {approved}"
    );
}
