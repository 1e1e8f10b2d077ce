//! The web UI over real HTTP on 127.0.0.1 with a real client (reqwest): login and the
//! cookie's attributes, 401 without it, CSRF refusals that change nothing, the Host
//! check, security headers, secret values absent from every page, escaping of what
//! agents, models and the store hold, chat streaming and its errors, and audit paging.
//! The host runs in-process with a fake runner on the real host socket, so these tests
//! need no sandbox; the full `palisade up` in headless Chromium is tested in the
//! palisade crate (`tests/web_ui.rs`).

mod common;

use futures_util::future::BoxFuture;
use palisade_host::api::ApiTokens;
use palisade_host::protocol::{HostFrame, RunnerConnection, RunnerFrame, PROTOCOL_VERSION};
use palisade_host::{Host, HostConfig, HostError, RunnerLauncher, RunnerProcess};
use palisade_policy::{AgentName, HostPattern, Injection, Profile, SecretValue};
use palisade_store::{
    ApprovalStatus, AuditEntry, AuditFilter, Home, NewApproval, NewSecret, Store,
};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::StatusCode;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::net::UnixStream;

const SECRET_VALUE: &str = "sk-live-Zq8v-7c1d-TOP-SECRET-4e2b";
const COOKIE_NAME: &str = "palisade_admin";

struct FakeLauncher;

struct FakeProcess(Option<tokio::task::JoinHandle<()>>);

impl RunnerProcess for FakeProcess {
    fn exited(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            match &mut self.0 {
                Some(handle) => {
                    let _ = handle.await;
                    self.0 = None;
                }
                None => std::future::pending::<()>().await,
            }
        })
    }
    fn kill(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(handle) = self.0.take() {
                handle.abort();
                let _ = handle.await;
            }
        })
    }
}

impl RunnerLauncher for FakeLauncher {
    fn launch(
        &self,
        _agent: &AgentName,
        host_socket: &Path,
    ) -> Result<Box<dyn RunnerProcess>, HostError> {
        let socket = host_socket.to_path_buf();
        Ok(Box::new(FakeProcess(Some(tokio::spawn(async move {
            let _ = echo_runner(&socket).await;
        })))))
    }
}

/// Streams "echo: " then answers "echo: TEXT".
async fn echo_runner(socket: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let stream = UnixStream::connect(socket).await?;
    let mut conn: RunnerConnection<UnixStream> = RunnerConnection::new(stream);
    conn.send(&RunnerFrame::Hello {
        version: PROTOCOL_VERSION,
    })
    .await?;
    conn.expect().await?;
    loop {
        match conn.recv().await? {
            None | Some(HostFrame::Shutdown) => return Ok(()),
            Some(HostFrame::Deliver(delivery)) => {
                conn.send(&RunnerFrame::Event {
                    message_id: delivery.message_id,
                    event: serde_json::json!({"kind": "text_delta", "text": "echo: "}),
                })
                .await?;
                let mut history = delivery.history.as_array().cloned().unwrap_or_default();
                history.push(serde_json::json!(delivery.text));
                conn.send(&RunnerFrame::Reply {
                    message_id: delivery.message_id,
                    session_id: delivery.session_id,
                    text: format!("echo: {}", delivery.text),
                    history: serde_json::Value::Array(history),
                    is_error: false,
                })
                .await?;
            }
            Some(_) => {}
        }
    }
}

struct Web {
    _dir: tempfile::TempDir,
    home: Home,
    store: Store,
    tokens: ApiTokens,
    /// The cookie of the session [`Web::start`] logged in with.
    session: String,
    addr: SocketAddr,
    client: reqwest::Client,
    stop: tokio::sync::watch::Sender<bool>,
    host: Host,
}

impl Web {
    async fn start() -> Web {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().join("home"));
        let store = Store::open(&home).unwrap();
        let agent = AgentName::new("helper").unwrap();
        store.create_agent(&agent, Profile::Research).unwrap();
        palisade_host::settings::write_instructions(&home, "helper", "Be brief.\n").unwrap();
        let mut config = HostConfig::new(home.clone());
        config.start_timeout = Duration::from_secs(10);
        let host = Host::start(store.clone(), config, std::sync::Arc::new(FakeLauncher))
            .await
            .unwrap();
        let tokens = ApiTokens::generate();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let app = palisade_web::app(host.clone(), tokens.clone(), stopped.clone(), addr);
        tokio::spawn(palisade_web::serve(listener, app, stopped));
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .no_proxy()
            .build()
            .unwrap();
        // With a link of its own: the printed one is left for the tests of logging in.
        let session =
            common::log_in(&client, &format!("http://{addr}"), &tokens.logins.issue()).await;
        Web {
            _dir: dir,
            home,
            store,
            tokens,
            session,
            addr,
            client,
            stop,
            host,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Logs in with the printed token, as a browser's first visit does.
    async fn login(&self) -> reqwest::Response {
        self.client
            .get(self.url(&format!("/login?token={}", self.tokens.admin_login)))
            .send()
            .await
            .unwrap()
    }

    fn cookie(&self) -> String {
        self.session.clone()
    }

    /// The CSRF token, read from a page as the browser's script does.
    async fn csrf(&self) -> String {
        let page = self.get("/").await.text().await.unwrap();
        let marker = "name=\"csrf-token\" content=\"";
        let start = page.find(marker).expect("csrf meta") + marker.len();
        page[start..start + 64].to_string()
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .header("cookie", self.cookie())
            .send()
            .await
            .unwrap()
    }

    async fn get_text(&self, path: &str) -> String {
        let response = self.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.text().await.unwrap()
    }

    /// A form post as a browser on our page sends it.
    async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header("cookie", self.cookie())
            .header("origin", self.origin())
            .form(form)
            .send()
            .await
            .unwrap()
    }

    fn pending_approval(&self, title: &str) -> String {
        self.store
            .create_approval(NewApproval {
                kind: "credential_use".into(),
                agent: AgentName::new("helper").unwrap(),
                title: title.into(),
                lines: vec!["POST https://api.example.com/v1/send".into()],
                detail: "POST /v1/send HTTP/1.1\nauthorization: [redacted]".into(),
                context: serde_json::json!({"method": "POST", "host": "api.example.com"}),
                expires_at_ms: palisade_store::now_ms() + 600_000,
                holder: None,
                request_key: None,
            })
            .unwrap()
            .id
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        self.host.shutdown().await;
    }
}

const PAGES: &[&str] = &[
    "/",
    "/chat",
    "/chat?agent=helper",
    "/agents",
    "/agents/helper",
    "/sessions",
    "/approvals",
    "/approvals/pending",
    "/channels",
    "/audit",
    "/vault",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_exchanges_the_token_for_a_strict_http_only_cookie() {
    let web = Web::start().await;
    let response = web.login().await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()["location"], "/");
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    let parts: Vec<&str> = cookie.split(';').map(str::trim).collect();
    assert!(parts[0].starts_with(&format!("{COOKIE_NAME}=")), "{cookie}");
    assert_ne!(
        parts[0],
        web.cookie(),
        "a login starts a session of its own"
    );
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(parts.contains(&attribute), "{attribute} missing: {cookie}");
    }
    assert_eq!(
        response.headers()["referrer-policy"],
        "no-referrer",
        "the token in the URL must not leak on"
    );

    // The cookie opens the dashboard.
    let dashboard = web
        .client
        .get(web.url("/"))
        .header("cookie", parts[0])
        .send()
        .await
        .unwrap();
    assert_eq!(dashboard.status(), StatusCode::OK);
    assert!(dashboard.text().await.unwrap().contains("Dashboard"));

    // A wrong or missing token gets a clear page and no cookie.
    for path in ["/login?token=0123456789abcdef", "/login", "/login?token="] {
        let response = web.client.get(web.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert!(response.headers().get("set-cookie").is_none());
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        let body = response.text().await.unwrap();
        assert!(body.contains("palisade up"), "{path}: {body}");
    }
    web.stop().await;
}

/// `curl` for `url` with `cookie` (and `extra` headers), as `user` when given; the
/// status it got.
async fn curl_status(user: Option<&str>, cookie: &str, url: &str) -> String {
    curl_status_with(user, cookie, url, &[]).await
}

async fn curl_status_with(user: Option<&str>, cookie: &str, url: &str, extra: &[&str]) -> String {
    let mut command = match user {
        Some(user) => {
            let mut command = tokio::process::Command::new("runuser");
            command.args(["-u", user, "--", "curl"]);
            command
        }
        None => tokio::process::Command::new("curl"),
    };
    command
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "20",
        ])
        .args(["--noproxy", "*", "-H", &format!("Cookie: {cookie}")])
        .args(extra.iter().flat_map(|header| ["-H", header]))
        .arg(url)
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .expect("curl finished")
        .expect("curl ran");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Browsers send 127.0.0.1's cookies to every port of it, so another local user's
/// server there can collect the session cookie. Replayed from that user's connection
/// it opens nothing: the session is bound to the user whose browser logged in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_cookie_is_good_only_for_the_user_who_logged_in() {
    use std::os::unix::fs::MetadataExt;
    const TEST_USER: &str = "palisade-test";
    if std::fs::metadata("/proc/self").unwrap().uid() != 0 {
        eprintln!(
            "SKIPPING: another user's connection can be made only when the tests run as root"
        );
        return;
    }
    let known = std::process::Command::new("id").arg(TEST_USER).output();
    if !known.map(|o| o.status.success()).unwrap_or(false) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/test-user.sh");
        let made = std::process::Command::new("bash")
            .arg(script)
            .current_dir("/")
            .status()
            .unwrap();
        assert!(made.success(), "scripts/test-user.sh failed");
    }
    let web = Web::start().await;
    let url = web.url("/");
    // The login binds its session to this user.
    let response = web.login().await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cookie = common::session_cookie(&response).expect("a session cookie");
    assert_eq!(curl_status(None, &cookie, &url).await, "200");
    assert_eq!(
        curl_status(Some(TEST_USER), &cookie, &url).await,
        "401",
        "another user's replay of the cookie was let in"
    );
    // An Authorization that is not the CLI's token does not lift the binding (the API
    // goes on to the cookie after one).
    assert_eq!(
        curl_status_with(
            Some(TEST_USER),
            &cookie,
            &web.url("/api/status"),
            &["Authorization: Basic eDp5"]
        )
        .await,
        "401"
    );
    // Every page alike, and the JSON API, which takes the cookie for reads.
    for path in ["/approvals", "/api/status"] {
        assert_eq!(
            curl_status(None, &cookie, &web.url(path)).await,
            "200",
            "{path}"
        );
        assert_eq!(
            curl_status(Some(TEST_USER), &cookie, &web.url(path)).await,
            "401",
            "{path}"
        );
    }
    web.stop().await;
}

/// The CSRF token a page served with `cookie` carries.
async fn csrf_of(web: &Web, cookie: &str) -> String {
    let page = web
        .client
        .get(web.url("/"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let marker = "name=\"csrf-token\" content=\"";
    let start = page.find(marker).expect("csrf meta") + marker.len();
    page[start..start + 64].to_string()
}

/// `GET path` with `cookie`: its status.
async fn status_with(web: &Web, path: &str, cookie: &str) -> StatusCode {
    web.client
        .get(web.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .status()
}

/// `POST /logout` as a page of this server sends it, with `cookie` and `csrf`.
async fn log_out(web: &Web, cookie: &str, csrf: &str) -> reqwest::Response {
    web.client
        .post(web.url("/logout"))
        .header("cookie", cookie)
        .header("origin", web.origin())
        .form(&[("csrf", csrf)])
        .send()
        .await
        .unwrap()
}

/// Each login is a session of its own, with its own cookie and CSRF token; Log out ends
/// only the session that asks, and only with that session's CSRF token and our origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_login_is_its_own_session_and_log_out_ends_only_it() {
    let web = Web::start().await;
    let base = web.origin();
    let first = common::log_in(&web.client, &base, &web.tokens.logins.issue()).await;
    let second = common::log_in(&web.client, &base, &web.tokens.logins.issue()).await;
    assert_ne!(first, second);
    for cookie in [&first, &second] {
        assert_eq!(status_with(&web, "/", cookie).await, StatusCode::OK);
        assert_eq!(
            status_with(&web, "/api/status", cookie).await,
            StatusCode::OK
        );
    }
    let (first_csrf, second_csrf) = (csrf_of(&web, &first).await, csrf_of(&web, &second).await);
    assert_ne!(first_csrf, second_csrf, "the CSRF token is the session's");
    assert!(
        web.get_text("/").await.contains("action=\"/logout\""),
        "every page offers Log out"
    );

    // Another session's CSRF token, none, or another origin: refused, nothing ends.
    assert_eq!(
        log_out(&web, &first, &second_csrf).await.status(),
        StatusCode::FORBIDDEN
    );
    let no_origin = web
        .client
        .post(web.url("/logout"))
        .header("cookie", &first)
        .form(&[("csrf", first_csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(no_origin.status(), StatusCode::FORBIDDEN);
    assert_eq!(status_with(&web, "/", &first).await, StatusCode::OK);

    let response = log_out(&web, &first, &first_csrf).await;
    assert_eq!(response.status(), StatusCode::OK);
    let cleared = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        cleared.starts_with(&format!("{COOKIE_NAME}=;")) && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    assert!(response.text().await.unwrap().contains("palisade login"));
    for path in ["/", "/approvals", "/api/status"] {
        assert_eq!(
            status_with(&web, path, &first).await,
            StatusCode::UNAUTHORIZED,
            "{path} after logout"
        );
        assert_eq!(
            status_with(&web, path, &second).await,
            StatusCode::OK,
            "{path}"
        );
    }
    // A write with the ended session's cookie and token changes nothing either.
    assert_eq!(
        log_out(&web, &first, &first_csrf).await.status(),
        StatusCode::UNAUTHORIZED
    );
    web.stop().await;
}

/// A session unused for longer than its idle expiry is refused, pages and the JSON
/// API alike; the CLI's bearer token is no session and goes on working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_is_refused_and_the_cli_token_still_works() {
    use palisade_host::admin_sessions::{ABSOLUTE_EXPIRY, IDLE_EXPIRY};
    let web = Web::start().await;
    let clock = web.tokens.sessions.clock().clone();
    let cookie = web.cookie();
    assert_eq!(status_with(&web, "/", &cookie).await, StatusCode::OK);
    clock.advance(IDLE_EXPIRY - Duration::from_secs(60));
    assert_eq!(status_with(&web, "/", &cookie).await, StatusCode::OK);
    clock.advance(IDLE_EXPIRY - Duration::from_secs(60));
    assert_eq!(
        status_with(&web, "/", &cookie).await,
        StatusCode::OK,
        "used within the idle expiry, it lives on"
    );
    clock.advance(IDLE_EXPIRY + Duration::from_secs(60));
    for path in ["/", "/api/status"] {
        let response = web
            .client
            .get(web.url(path))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert!(
            response.text().await.unwrap().contains("palisade login"),
            "{path}"
        );
    }
    // However busy, a session ends at its absolute expiry.
    let busy = common::log_in(&web.client, &web.origin(), &web.tokens.logins.issue()).await;
    let mut age = Duration::ZERO;
    while age + Duration::from_secs(11 * 3600) < ABSOLUTE_EXPIRY {
        clock.advance(Duration::from_secs(11 * 3600));
        age += Duration::from_secs(11 * 3600);
        assert_eq!(
            status_with(&web, "/", &busy).await,
            StatusCode::OK,
            "{age:?}"
        );
    }
    clock.advance(ABSOLUTE_EXPIRY - age);
    assert_eq!(
        status_with(&web, "/", &busy).await,
        StatusCode::UNAUTHORIZED
    );

    let status = web
        .client
        .get(web.url("/api/status"))
        .header("authorization", format!("Bearer {}", web.tokens.cli))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::OK, "the CLI's token");
    web.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_tokens_work_once_and_only_the_cli_can_ask_for_more() {
    let web = Web::start().await;
    let login = |token: String| {
        let url = web.url(&format!("/login?token={token}"));
        let client = web.client.clone();
        async move { client.get(url).send().await.unwrap() }
    };
    let first = login(web.tokens.admin_login.clone()).await;
    assert_eq!(first.status(), StatusCode::SEE_OTHER);
    // The printed link, used once, is worth nothing: no second cookie from scrollback.
    let again = login(web.tokens.admin_login.clone()).await;
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
    assert!(again.headers().get("set-cookie").is_none());
    assert!(again.text().await.unwrap().contains("palisade login"));

    // A login token is no API credential, and a browser session cannot mint links.
    let fresh = web.tokens.logins.issue();
    for credential in [
        ("authorization", format!("Bearer {fresh}")),
        (
            "authorization",
            format!("Bearer {}", web.tokens.admin_login),
        ),
        ("cookie", web.cookie()),
    ] {
        let response = web
            .client
            .post(web.url("/api/login-links"))
            .header(credential.0, credential.1.clone())
            .header("origin", web.origin())
            .send()
            .await
            .unwrap();
        assert!(
            matches!(
                response.status(),
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
            ),
            "{credential:?}: {}",
            response.status()
        );
    }
    // An unused link issued earlier still works, once.
    assert_eq!(login(fresh.clone()).await.status(), StatusCode::SEE_OTHER);
    assert_eq!(login(fresh).await.status(), StatusCode::UNAUTHORIZED);

    // The CLI's bearer token gets a fresh link, which works once.
    let answer: serde_json::Value = web
        .client
        .post(web.url("/api/login-links"))
        .header("authorization", format!("Bearer {}", web.tokens.cli))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["expires_in_seconds"], 600);
    let path = answer["path"].as_str().expect("a login path").to_string();
    let token = path
        .strip_prefix("/login?token=")
        .expect("a login link")
        .to_string();
    assert_ne!(token, web.tokens.admin_login);
    // A HEAD (a link previewer's) spends nothing and gets no session.
    let head = web.client.head(web.url(&path)).send().await.unwrap();
    assert!(head.headers().get("set-cookie").is_none(), "{head:?}");
    assert_eq!(login(token.clone()).await.status(), StatusCode::SEE_OTHER);
    assert_eq!(login(token).await.status(), StatusCode::UNAUTHORIZED);
    web.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_answers_401_with_a_hint_without_the_cookie() {
    let web = Web::start().await;
    for path in PAGES {
        let response = web.client.get(web.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
        let body = response.text().await.unwrap();
        assert!(body.contains("palisade login"), "{path}: {body}");
        assert!(!body.contains("helper"), "{path} leaked data: {body}");
        // A forged cookie is no better.
        let response = web
            .client
            .get(web.url(path))
            .header("cookie", format!("{COOKIE_NAME}=forged"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    for path in PAGES {
        assert_eq!(web.get(path).await.status(), StatusCode::OK, "{path}");
    }
    // The JSON API keeps its own rule: the cookie reads, a write needs the bearer token.
    let status = web.get("/api/status").await;
    assert_eq!(status.status(), StatusCode::OK);
    let write = web
        .client
        .post(web.url("/api/agents/helper/messages"))
        .header("cookie", web.cookie())
        .header("origin", web.origin())
        .json(&serde_json::json!({"text": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), StatusCode::UNAUTHORIZED);
    let cli = web
        .client
        .post(web.url("/api/agents/helper/messages"))
        .bearer_auth(&web.tokens.cli)
        .json(&serde_json::json!({"text": "from the cli"}))
        .send()
        .await
        .unwrap();
    assert_eq!(cli.status(), StatusCode::OK);
    assert!(cli.text().await.unwrap().contains("echo: from the cli"));
    web.stop().await;
}

/// Buttons that decide come disabled, for the page's script to arm a second after they
/// are shown. A page on another port of 127.0.0.1 is the same site to the browser (the
/// session cookie goes along): it could open the approvals page or a confirmation page
/// under the pointer between the two clicks of a double-click it asked for, and the
/// second click approved a held request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buttons_that_decide_come_disarmed() {
    let web = Web::start().await;
    let id = web.pending_approval("send the report");
    let page = web.get_text("/approvals").await;
    let start = page.find(&format!("data-id=\"{id}\"")).expect("the card");
    let card = &page[start..start + page[start..].find("</article>").expect("its end")];
    for decision in ["approve", "deny"] {
        let button = format!("name=\"decision\" value=\"{decision}\" disabled data-arm>");
        assert!(
            card.contains(&button),
            "{decision} is armed at once: {card}"
        );
    }
    let confirm = web.get_text("/agents/helper/delete").await;
    assert!(
        confirm.contains("id=\"confirm\" type=\"submit\" disabled data-arm>"),
        "{confirm}"
    );
    // One click could turn approvals off: the dial's buttons are armed the same way.
    let agent = web.get_text("/agents/helper").await;
    for id in ["apply-preset", "save-dial"] {
        let start = agent.find(&format!("id=\"{id}\"")).expect(id);
        let tag = &agent[start..start + agent[start..].find('>').unwrap()];
        assert!(tag.contains("disabled data-arm"), "{id}: {tag}");
    }
    let script = web.get_text("/assets/app.js").await;
    assert!(script.contains("button[data-arm]") && script.contains("ARM_MS = 1000"));
    web.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_without_a_valid_csrf_token_and_origin_are_refused_and_change_nothing() {
    let web = Web::start().await;
    let csrf = web.csrf().await;
    let id = web.pending_approval("send the report");
    let decide = format!("/approvals/{id}/decide");
    let instructions_before = std::fs::read_to_string(palisade_host::settings::instructions_path(
        &web.home, "helper",
    ))
    .unwrap();
    // A session with history, to try resetting it.
    let (accepted, mut events) = web
        .host
        .submit(
            &AgentName::new("helper").unwrap(),
            "web",
            "web",
            "remember me",
        )
        .await
        .unwrap();
    while !matches!(
        tokio::time::timeout(Duration::from_secs(20), events.recv())
            .await
            .unwrap(),
        Ok(palisade_host::StreamEvent::Reply { .. })
    ) {}
    let session = accepted.session_id;
    let audit_before = web.store.list_audit(&AuditFilter::default()).unwrap().len();

    let attempts: Vec<Attempt> = vec![
        (
            "no token",
            headers(&[("cookie", &web.cookie()), ("origin", &web.origin())]),
            vec![],
        ),
        (
            "wrong token",
            headers(&[("cookie", &web.cookie()), ("origin", &web.origin())]),
            vec![("csrf", "0".repeat(64))],
        ),
        (
            "wrong header token",
            headers(&[
                ("cookie", &web.cookie()),
                ("origin", &web.origin()),
                ("x-csrf-token", &"f".repeat(64)),
            ]),
            vec![("csrf", csrf.clone())],
        ),
        (
            "foreign origin",
            headers(&[("cookie", &web.cookie()), ("origin", "http://evil.example")]),
            vec![("csrf", csrf.clone())],
        ),
        (
            "foreign referer and no origin",
            headers(&[
                ("cookie", &web.cookie()),
                ("referer", "http://evil.example/page"),
            ]),
            vec![("csrf", csrf.clone())],
        ),
        (
            "no origin or referer",
            headers(&[("cookie", &web.cookie())]),
            vec![("csrf", csrf.clone())],
        ),
        (
            "origin with another port",
            headers(&[("cookie", &web.cookie()), ("origin", "http://127.0.0.1:1")]),
            vec![("csrf", csrf.clone())],
        ),
    ];
    for (what, headers, extra) in &attempts {
        for (path, mut form) in [
            (
                decide.as_str(),
                vec![("decision", "approve".to_string()), ("comment", "x".into())],
            ),
            (
                "/agents/helper/instructions",
                vec![("instructions", "PWNED".to_string())],
            ),
            (&*format!("/sessions/{session}/reset"), vec![]),
        ] {
            form.extend(extra.iter().cloned());
            let response = web
                .client
                .post(web.url(path))
                .headers(headers.clone())
                .form(&form)
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::FORBIDDEN,
                "{what} on {path} was not refused"
            );
        }
        // The chat send (JSON) is refused the same way.
        let mut json_headers = headers.clone();
        if let (Some((_, token)), false) =
            (extra.first(), json_headers.contains_key("x-csrf-token"))
        {
            json_headers.insert("x-csrf-token", HeaderValue::from_str(token).unwrap());
        }
        let response = web
            .client
            .post(web.url("/chat/helper/send"))
            .headers(json_headers)
            .json(&serde_json::json!({"text": "PWNED"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{what} on chat");
    }
    // Without the cookie, even the right token and origin are not enough.
    let response = web
        .client
        .post(web.url(&decide))
        .header("origin", web.origin())
        .form(&[("decision", "approve"), ("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // Nothing changed.
    let approval = web.store.get_approval(&id).unwrap();
    assert_eq!(approval.status, ApprovalStatus::Pending);
    let instructions = std::fs::read_to_string(palisade_host::settings::instructions_path(
        &web.home, "helper",
    ))
    .unwrap();
    assert_eq!(instructions, instructions_before);
    let history = web.store.get_session(session).unwrap().history;
    assert_eq!(history.as_array().map(Vec::len), Some(1), "{history}");
    let messages = web.store.session_messages(session).unwrap();
    assert!(messages.iter().all(|(m, _)| m.text != "PWNED"));
    assert_eq!(
        web.store.list_audit(&AuditFilter::default()).unwrap().len(),
        audit_before
    );

    // With cookie, token and origin each write goes through.
    let response = web
        .post_form(
            &decide,
            &[
                ("decision", "approve"),
                ("comment", "ok once"),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let approval = web.store.get_approval(&id).unwrap();
    assert_eq!(approval.status, ApprovalStatus::Approved);
    assert_eq!(approval.approver.as_deref(), Some("web:admin"));
    assert_eq!(approval.comment.as_deref(), Some("ok once"));
    let decided = web
        .store
        .list_audit(&AuditFilter {
            event: Some("approval.decide".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(decided.len(), 1);
    assert_eq!(decided[0].entry.actor.as_deref(), Some("web:admin"));
    assert_eq!(decided[0].entry.approval_id.as_deref(), Some(id.as_str()));
    // Deciding again is refused with a reason.
    let again = web
        .client
        .post(web.url(&decide))
        .header("cookie", web.cookie())
        .header("origin", web.origin())
        .header("x-csrf-token", &csrf)
        .header("accept", "application/json")
        .form(&[("decision", "deny")])
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::CONFLICT);
    assert!(again.text().await.unwrap().contains("already decided"));

    let response = web
        .post_form(
            "/agents/helper/instructions",
            &[
                ("instructions", "Answer in French.\r\nAlways."),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let instructions = std::fs::read_to_string(palisade_host::settings::instructions_path(
        &web.home, "helper",
    ))
    .unwrap();
    assert_eq!(instructions, "Answer in French.\nAlways.");

    let response = web
        .post_form(&format!("/sessions/{session}/reset"), &[("csrf", &csrf)])
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let history = web.store.get_session(session).unwrap().history;
    assert_eq!(history, serde_json::json!([]));
    common::assert_audited_as_admin(
        &web.store,
        Some("helper"),
        &["agent.instructions", "session.reset"],
    );
    web.stop().await;
}

/// What a refused write carries: a label, its headers, and extra form fields.
type Attempt = (&'static str, HeaderMap, Vec<(&'static str, String)>);

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.insert(*name, HeaderValue::from_str(value).unwrap());
    }
    map
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_host_header_is_refused_everywhere() {
    let web = Web::start().await;
    let port = web.addr.port();
    for host in [
        format!("evil.example:{port}"),
        "evil.example".to_string(),
        format!("127.0.0.1:{}", port.wrapping_add(1)),
        format!("localhost.evil.example:{port}"),
    ] {
        for path in [
            "/",
            "/login?token=x",
            "/api/status",
            "/assets/app.js",
            "/vault",
        ] {
            let response = web
                .client
                .get(web.url(path))
                .header("host", &host)
                .header("cookie", web.cookie())
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::MISDIRECTED_REQUEST,
                "Host {host} on {path}"
            );
            assert!(!response.text().await.unwrap().contains("helper"));
        }
    }
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}")] {
        let response = web
            .client
            .get(web.url("/agents"))
            .header("host", &host)
            .header("cookie", web.cookie())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "Host {host}");
    }
    // Sent raw, as no browser would: a target naming another host than the header, and
    // two Host headers, are refused whichever comes first.
    async fn status_of(addr: std::net::SocketAddr, head: String) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let _ =
            tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        answer.lines().next().unwrap_or_default().to_string()
    }
    let own = format!("127.0.0.1:{port}");
    for (head, expected) in [
        (format!("GET http://evil.example/healthz HTTP/1.1\r\nHost: {own}\r\nConnection: close\r\n\r\n"), "421"),
        (format!("GET /healthz HTTP/1.1\r\nHost: {own}\r\nHost: evil.example\r\nConnection: close\r\n\r\n"), "421"),
        (format!("GET /healthz HTTP/1.1\r\nHost: evil.example\r\nHost: {own}\r\nConnection: close\r\n\r\n"), "421"),
        (format!("GET http://{own}/healthz HTTP/1.1\r\nHost: {own}\r\nConnection: close\r\n\r\n"), "200"),
    ] {
        let status = status_of(web.addr, head.clone()).await;
        assert!(status.contains(&format!(" {expected} ")), "{head:?}: {status}");
    }
    web.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_carries_the_security_headers() {
    let web = Web::start().await;
    let mut responses = Vec::new();
    for path in PAGES {
        responses.push((path.to_string(), web.get(path).await));
    }
    for path in [
        "/assets/style.css",
        "/assets/app.js",
        "/api/status",
        "/nope",
    ] {
        responses.push((path.to_string(), web.get(path).await));
    }
    responses.push((
        "unauthenticated /".into(),
        web.client.get(web.url("/")).send().await.unwrap(),
    ));
    for (path, response) in responses {
        let h = response.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        // Referrers only to this origin: a form post needs its Origin, which a browser
        // sends as `null` under `no-referrer`.
        assert_eq!(h["referrer-policy"], "same-origin", "{path}");
        assert_eq!(h["cache-control"], "no-store", "{path}");
    }
    // No page has inline script or inline event handlers (the CSP would block them).
    for path in PAGES {
        let body = web.get_text(path).await;
        assert!(!body.contains("<script>"), "{path} has an inline script");
        assert!(!body.contains(" onclick="), "{path} has an inline handler");
        assert!(!body.contains("style=\""), "{path} has an inline style");
    }
    web.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_page_ever_contains_a_secret_value() {
    let web = Web::start().await;
    web.store
        .create_secret(NewSecret {
            name: "mail-token".into(),
            host: HostPattern::parse("api.mail.example").unwrap(),
            path: None,
            injection: "bearer".parse::<Injection>().unwrap(),
            value: SecretValue::new(SECRET_VALUE.into()),
            agents: vec![AgentName::new("helper").unwrap()],
            priority: 0,
            sensitive: false,
        })
        .unwrap();
    let id = web.pending_approval("use mail-token");
    let vault = web.get_text("/vault").await;
    assert!(vault.contains("mail-token"));
    assert!(vault.contains("api.mail.example"));
    assert!(vault.contains("bearer"));
    let agent = web.get_text("/agents/helper").await;
    assert!(agent.contains("mail-token"), "grants list the secret");
    let mut paths: Vec<String> = PAGES.iter().map(|p| p.to_string()).collect();
    paths.extend([
        "/audit?q=mail".to_string(),
        "/api/status".to_string(),
        format!("/approvals?decided=approved&id={id}"),
    ]);
    let needles = [
        SECRET_VALUE.to_string(),
        SECRET_VALUE[8..24].to_string(),
        hex_of(SECRET_VALUE),
    ];
    for path in &paths {
        let body = web.get(path).await.bytes().await.unwrap();
        let text = String::from_utf8_lossy(&body);
        for needle in &needles {
            assert!(!text.contains(needle.as_str()), "{path} shows the secret");
        }
    }
    web.stop().await;
}

fn hex_of(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_from_instructions_messages_and_approvals_renders_inert() {
    let web = Web::start().await;
    let payload = "<script>alert('x')</script><img src=x onerror=alert(1)>";
    palisade_host::settings::write_instructions(&web.home, "helper", payload).unwrap();
    palisade_host::settings::append_memory(&web.home, "helper", payload).unwrap();
    web.pending_approval(payload);
    web.store
        .append_audit(&AuditEntry {
            event: "request".into(),
            agent: Some("helper".into()),
            host: Some("x.example".into()),
            path: Some(format!("/{payload}")),
            decision: Some("blocked".into()),
            ..Default::default()
        })
        .unwrap();
    // The message and the model's echo of it both land in the chat history.
    let csrf = web.csrf().await;
    let response = web
        .client
        .post(web.url("/chat/helper/send"))
        .header("cookie", web.cookie())
        .header("origin", web.origin())
        .header("x-csrf-token", &csrf)
        .json(&serde_json::json!({ "text": payload }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.unwrap();
    for path in [
        "/agents/helper",
        "/chat?agent=helper",
        "/approvals",
        "/approvals/pending",
        "/audit",
        "/",
        "/sessions/1",
    ] {
        let body = web.get_text(path).await;
        assert!(!body.contains("<script>alert"), "{path} renders the script");
        assert!(!body.contains("<img src=x"), "{path} renders the tag");
        assert!(
            body.contains("&lt;script&gt;alert") || body.contains("&lt;script&gt;"),
            "{path} does not show the text at all"
        );
    }
    web.stop().await;
}

/// The approvals page's flash line, as rendered: `None` when hidden.
fn approval_flash(page: &str) -> Option<String> {
    let start = page.find("id=\"approval-flash\"")?;
    let tag_end = start + page[start..].find('>')?;
    if page[start..tag_end].contains("hidden") {
        return None;
    }
    let end = tag_end + page[tag_end..].find("</p>")?;
    Some(page[tag_end + 1..end].to_string())
}

/// The flash after a decision says what the server decided, in its words: a link that
/// carries other words, an unknown code, or a code that does not match how the named
/// approval ended shows nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_approvals_flash_shows_only_what_the_server_wrote() {
    let web = Web::start().await;
    web.login().await;
    let id = web.pending_approval("send the report");
    let spoofs = [
        "/approvals?decided=Approved%3A%20all%20requests%20are%20safe".to_string(),
        format!("/approvals?decided=Approved%3A%20all%20requests%20are%20safe&id={id}"),
        format!("/approvals?decided=approved&id={id}"),
        "/approvals?decided=approved".to_string(),
        "/approvals?decided=approved&id=apr_doesnotexist".to_string(),
    ];
    for path in &spoofs {
        let page = web.get_text(path).await;
        assert_eq!(approval_flash(&page), None, "{path}");
        assert!(!page.contains("all requests are safe"), "{path}");
    }

    let csrf = web.csrf().await;
    let response = web
        .post_form(
            &format!("/approvals/{id}/decide"),
            &[("decision", "approve"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(
        location,
        format!("/approvals?decided=approved&id={}", id.replace('_', "%5F"))
    );
    let page = web.get_text(&location).await;
    assert_eq!(
        approval_flash(&page).as_deref(),
        Some(format!("Approved: send the report ({id})").as_str())
    );
    // A code that is not how this approval ended says nothing.
    for code in ["denied", "always_allowed", "approved_1h", "nonsense"] {
        let page = web
            .get_text(&format!("/approvals?decided={code}&id={id}"))
            .await;
        assert_eq!(approval_flash(&page), None, "{code}");
    }
    web.stop().await;
}

/// A hidden character in what an agent asks for reaches the page marked where it is,
/// with the summary's warning, never as the character itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_characters_on_the_approvals_page_are_marked() {
    let web = Web::start().await;
    let summary = palisade_approvals::summary::action(
        "helper",
        "mail al\u{202E}ice@example.com",
        "<b\u{200B}ob@example.com>",
    );
    web.store
        .create_approval(NewApproval {
            kind: "tool_action".into(),
            agent: AgentName::new("helper").unwrap(),
            title: summary.title,
            lines: summary.lines,
            detail: summary.detail,
            context: serde_json::json!({}),
            expires_at_ms: palisade_store::now_ms() + 600_000,
            holder: None,
            request_key: None,
        })
        .unwrap();
    for path in ["/approvals", "/approvals/pending"] {
        let body = web.get_text(path).await;
        assert!(body.contains("al⟨U+202E⟩ice@example.com"), "{path}: {body}");
        assert!(body.contains("&lt;b⟨U+200B⟩ob@example.com&gt;"), "{path}");
        assert!(
            body.contains(palisade_approvals::summary::HIDDEN_CHARACTERS_NOTICE),
            "{path}"
        );
        assert!(
            !body.contains('\u{202E}') && !body.contains('\u{200B}'),
            "{path}"
        );
    }
    web.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_sends_stream_the_reply_and_errors_come_back_as_json() {
    let web = Web::start().await;
    let csrf = web.csrf().await;
    let post = |body: serde_json::Value, agent: &str| {
        web.client
            .post(web.url(&format!("/chat/{agent}/send")))
            .header("cookie", web.cookie())
            .header("origin", web.origin())
            .header("x-csrf-token", &csrf)
            .json(&body)
            .send()
    };
    let idle = web.get_text("/agents").await;
    assert!(idle.contains("pill neutral\">idle"), "{idle}");
    let response = post(serde_json::json!({"text": "hello there"}), "helper")
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let body = response.text().await.unwrap();
    let events: Vec<serde_json::Value> = body
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(events[0]["type"], "accepted");
    let last = events.last().unwrap();
    assert_eq!(last["type"], "reply");
    assert_eq!(last["text"], "echo: hello there");
    // The runner stays warm after answering (the idle timeout is minutes).
    let warm = web.get_text("/agents").await;
    assert!(warm.contains("pill good\">warm"), "{warm}");
    // It is the web conversation's session, shown on the chat page.
    let sessions = web
        .store
        .list_sessions(Some(&AgentName::new("helper").unwrap()))
        .unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].conversation, "web");
    let page = web.get_text("/chat?agent=helper").await;
    assert!(page.contains("hello there"));
    assert!(page.contains("echo: hello there"));
    // The page marks the reply for acknowledgement; the script acknowledges it.
    let id = events[0]["message_id"].as_i64().unwrap();
    assert!(page.contains(&format!("data-ack=\"{id}\"")), "{page}");
    let ack = format!("/chat/messages/{id}/delivered");
    let refused = web
        .client
        .post(web.url(&ack))
        .header("cookie", web.cookie())
        .header("origin", web.origin())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN, "no CSRF token");
    assert!(!web.store.get_reply(id).unwrap().unwrap().delivered);
    let acked = web
        .client
        .post(web.url(&ack))
        .header("cookie", web.cookie())
        .header("origin", web.origin())
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(acked.status(), StatusCode::OK);
    assert!(web.store.get_reply(id).unwrap().unwrap().delivered);
    let page = web.get_text("/chat?agent=helper").await;
    assert!(
        !page.contains("data-ack="),
        "acknowledged replies are not offered again"
    );

    for (body, agent, status, needle) in [
        (serde_json::json!({"text": "   "}), "helper", 400, "empty"),
        (
            serde_json::json!({"text": "hi"}),
            "nobody",
            404,
            "unknown agent",
        ),
        (serde_json::json!({"text": "hi"}), "Not A Name", 400, ""),
        (
            serde_json::json!({"text": "x".repeat(palisade_host::MAX_MESSAGE_BYTES + 1)}),
            "helper",
            413,
            "too large",
        ),
        (serde_json::json!({"words": "hi"}), "helper", 400, "text"),
    ] {
        let response = post(body, agent).await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{agent} {needle}");
        let json: serde_json::Value = response.json().await.unwrap();
        let message = json["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{message}");
    }
    assert_eq!(
        web.store.session_messages(sessions[0].id).unwrap().len(),
        1,
        "no refused message was stored"
    );
    // A body past the web's limit is refused before anything is read into the host.
    // (The server may answer 413 and close while the client still writes; then the
    // client sees the connection closed instead of the answer.)
    let huge = "y".repeat(4 * 1024 * 1024);
    match post(serde_json::json!({ "text": huge }), "helper").await {
        Ok(response) => assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE),
        Err(error) => assert!(error.is_request(), "{error}"),
    }
    assert_eq!(
        web.store.session_messages(sessions[0].id).unwrap().len(),
        1,
        "the oversized message was not stored"
    );
    web.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_page_filters_and_pages_with_a_bounded_page_size() {
    let web = Web::start().await;
    let entries: Vec<(i64, AuditEntry)> = (1..=250)
        .map(|i| {
            (
                i * 1000,
                AuditEntry {
                    event: "request".into(),
                    agent: Some(if i % 2 == 0 { "even" } else { "odd" }.into()),
                    host: Some(format!("host{i}.example")),
                    decision: Some("allowed".into()),
                    ..Default::default()
                },
            )
        })
        .collect();
    web.store.append_audit_batch(&entries).unwrap();
    let rows = |page: &str| page.matches("<tr>").count() - 1;
    let page = web.get_text("/audit").await;
    assert_eq!(rows(&page), 50);
    assert!(page.contains("host250.example"));
    assert!(!page.contains("host200.example"));
    let older = page
        .split("href=\"")
        .filter_map(|s| s.split('"').next())
        .find(|href| href.contains("before="))
        .expect("an Older link")
        .replace("&amp;", "&");
    let page = web.get_text(&older).await;
    assert!(page.contains("host200.example"));
    assert!(!page.contains("host250.example"));

    let page = web.get_text("/audit?limit=100000").await;
    assert_eq!(rows(&page), 200, "bounded page size");
    let page = web.get_text("/audit?agent=odd&q=HOST7").await;
    // host7, host71, host73, ... host79 among odd rows
    assert_eq!(rows(&page), 6, "{page}");
    let page = web
        .get_text("/audit?since=1970-01-01%2000:00:10&until=1970-01-01T00:00:20")
        .await;
    assert_eq!(rows(&page), 10);
    let response = web.get("/audit?since=yesterday-ish").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.text().await.unwrap().contains("not a time"));
    web.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_channels_page_adds_links_and_removes_through_the_cli_code_behind_csrf() {
    let web = Web::start().await;
    let csrf = web.csrf().await;
    assert!(web.get_text("/channels").await.contains("No channels yet"));
    let token = "123456:web-typed-bot-token-93af";
    let add = |csrf: &str| {
        vec![
            ("csrf", csrf.to_string()),
            ("name", "tg".to_string()),
            ("platform", "telegram".to_string()),
            ("token", token.to_string()),
            ("api_base", "http://127.0.0.1:9".to_string()),
            ("unknown_senders", "ask".to_string()),
        ]
    };
    // Without the CSRF token nothing is added.
    let form: Vec<(&str, String)> = add("0000").into_iter().collect();
    let refused = web
        .client
        .post(web.url("/channels"))
        .header("cookie", web.cookie())
        .header("origin", web.origin())
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(web.store.list_channels().unwrap().is_empty());

    let form = add(&csrf);
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let added = web.post_form("/channels", &pairs).await;
    assert_eq!(added.status(), StatusCode::SEE_OTHER);
    let after = added.headers()["location"].to_str().unwrap().to_string();
    assert!(
        web.get_text(&after)
            .await
            .contains("pill good\">channel added"),
        "{after}"
    );
    // A link cannot put words of its choosing on the page in a success's green.
    let forged = web
        .get_text("/channels?done=Palisade%20needs%20an%20update%3A%20run%20curl")
        .await;
    assert!(!forged.contains("needs an update"), "{forged}");
    let record = web.store.get_channel("tg").unwrap();
    assert_eq!(record.settings["unknown_senders"], "ask");
    // Sealed: never on a page, never in the database file in clear.
    let page = web.get_text("/channels").await;
    assert!(page.contains("tg") && !page.contains(token), "{page}");
    let database = std::fs::read(web.home.root().join("palisade.db")).unwrap_or_default();
    assert!(!String::from_utf8_lossy(&database).contains(token));

    // The same checks as the CLI: Slack needs an app token or a signing secret, a
    // Discord key is 32 bytes of hex, a token never goes in clear to a remote host,
    // a name must fit in a URL.
    for (name, platform, extra, expected) in [
        ("team", "slack", ("api_base", ""), "app-level token"),
        ("dc", "discord", ("public_key", "abcd"), "32-byte"),
        (
            "tg2",
            "telegram",
            ("api_base", "http://api.telegram.org"),
            "in clear",
        ),
        ("<script>", "telegram", ("api_base", ""), "invalid"),
    ] {
        let answer = web
            .post_form(
                "/channels",
                &[
                    ("csrf", &csrf),
                    ("name", name),
                    ("platform", platform),
                    ("token", "t"),
                    extra,
                ],
            )
            .await;
        assert_eq!(answer.status(), StatusCode::BAD_REQUEST, "{name}");
        let text = answer.text().await.unwrap();
        assert!(text.contains(expected), "{name}: {text}");
        assert!(!text.contains("<script>"), "{text}");
    }
    assert_eq!(web.store.list_channels().unwrap().len(), 1);

    for (path, form) in [
        (
            "/channels/tg/link",
            vec![("agent", "helper"), ("chat", "4242")],
        ),
        (
            "/channels/tg/approvers",
            vec![
                ("agent", "helper"),
                ("user", "111"),
                ("display_name", "Ana"),
            ],
        ),
        (
            "/channels/tg/access",
            vec![("unknown_senders", "drop"), ("access_agent", "helper")],
        ),
    ] {
        let mut form = form;
        form.push(("csrf", &csrf));
        let answer = web.post_form(path, &form).await;
        assert_eq!(answer.status(), StatusCode::SEE_OTHER, "{path}");
    }
    let page = web.get_text("/channels").await;
    assert!(page.contains("4242") && page.contains("Ana"), "{page}");
    let record = web.store.get_channel("tg").unwrap();
    assert_eq!(record.settings["unknown_senders"], "drop");
    assert_eq!(record.settings["access_agent"], "helper");
    let approvers = web.store.list_approvers(None).unwrap();
    assert_eq!(approvers.len(), 1);
    let audit = web.store.list_audit(&AuditFilter::default()).unwrap();
    assert!(audit
        .iter()
        .any(|r| r.entry.event == "approver.add" && r.entry.actor.as_deref() == Some("web:admin")));

    // Unlinking a chat and removing an approver ask first: the first post shows a
    // page with the confirmed form, and only that changes anything.
    for (path, form, asks) in [
        (
            "/channels/tg/unlink",
            vec![("chat", "4242")],
            "Unlink chat 4242 of tg?",
        ),
        (
            "/channels/tg/approvers/remove",
            vec![("agent", "helper"), ("user", "111")],
            "Remove approver 111 of helper on tg?",
        ),
    ] {
        let mut form = form;
        form.push(("csrf", &csrf));
        let before = (
            web.store.list_approvers(None).unwrap().len(),
            web.store.list_links(Some("tg")).unwrap().len(),
        );
        let answer = web.post_form(path, &form).await;
        assert_eq!(answer.status(), StatusCode::OK, "{path}");
        let page = answer.text().await.unwrap();
        assert!(
            page.contains(asks) && page.contains("name=\"confirmed\""),
            "{page}"
        );
        let after = (
            web.store.list_approvers(None).unwrap().len(),
            web.store.list_links(Some("tg")).unwrap().len(),
        );
        assert_eq!(
            before, after,
            "{path} changed something before it was confirmed"
        );
        form.push(("confirmed", "1"));
        let answer = web.post_form(path, &form).await;
        assert_eq!(answer.status(), StatusCode::SEE_OTHER, "{path}");
    }
    assert!(web.store.list_approvers(None).unwrap().is_empty());
    assert!(web.store.list_links(Some("tg")).unwrap().is_empty());

    // Removal asks first, and needs the CSRF token like every write.
    let confirm = web.get_text("/channels/tg/remove").await;
    assert!(confirm.contains("Remove channel tg?"), "{confirm}");
    let refused = web.post_form("/channels/tg/remove", &[]).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(web.store.get_channel("tg").is_ok());
    let removed = web
        .post_form("/channels/tg/remove", &[("csrf", &csrf)])
        .await;
    assert_eq!(removed.status(), StatusCode::SEE_OTHER);
    assert!(web.store.list_channels().unwrap().is_empty());
    web.stop().await;
}

/// Connections that send nothing, or a request head a byte at a time, cannot take the
/// host's descriptors: past [`palisade_web::MAX_CONNECTIONS`] new ones are closed at
/// once, every idle one is closed after [`palisade_web::HEADER_READ_TIMEOUT`], and
/// the pages answer again as soon as they are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_bounded_and_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let web = Web::start().await;
    let extra = 20;
    let mut idle = Vec::new();
    for _ in 0..palisade_web::MAX_CONNECTIONS + extra {
        idle.push(tokio::net::TcpStream::connect(web.addr).await.unwrap());
    }
    // One of them dribbles a request head, a byte every half second.
    let slow = tokio::spawn({
        let addr = web.addr;
        async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let head = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
            for byte in head {
                if stream.write_all(&[*byte]).await.is_err() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            false
        }
    });
    // The ones past the limit are closed at once (the last ones opened, give or take
    // the order in which the server took them); every other one within the timeout.
    async fn closed(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(within, stream.read(&mut byte)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
    let mut closed_at_once = 0;
    for stream in idle.iter_mut().rev().take(2 * extra) {
        if closed(stream, Duration::from_millis(200)).await {
            closed_at_once += 1;
        }
    }
    assert!(
        closed_at_once >= extra,
        "only {closed_at_once} of the {extra} connections past the limit were closed at once"
    );
    let limit = palisade_web::HEADER_READ_TIMEOUT + Duration::from_secs(20);
    let started = std::time::Instant::now();
    for stream in &mut idle {
        let left = limit.saturating_sub(started.elapsed());
        assert!(
            closed(stream, left).await,
            "an idle connection is still open after {:?}",
            started.elapsed()
        );
    }
    assert!(
        tokio::time::timeout(Duration::from_secs(30), slow)
            .await
            .unwrap()
            .unwrap(),
        "a request head sent a byte at a time was never cut off"
    );
    drop(idle);
    web.login().await;
    assert_eq!(web.get("/").await.status(), StatusCode::OK);
    web.stop().await;
}

/// A request whose body comes a byte at a time is cut off once
/// [`palisade_web::BODY_READ_TIMEOUT`] has passed, with or without credentials: the
/// head's deadline alone let such a sender hold its connection for as long as it
/// liked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_sent_a_byte_at_a_time_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let web = Web::start().await;
    let host = web.addr;
    let heads = [
        format!("POST /api/agents/helper/messages HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"),
        format!("POST /api/agents/helper/messages HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n", web.tokens.cli),
    ];
    let trickles = heads.map(|head| {
        let addr = web.addr;
        tokio::spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.write_all(head.as_bytes()).await.unwrap();
            let started = std::time::Instant::now();
            let limit = palisade_web::BODY_READ_TIMEOUT + Duration::from_secs(20);
            let mut buffer = [0u8; 4096];
            while started.elapsed() < limit {
                if stream.write_all(b" ").await.is_err() {
                    return true;
                }
                // An answer (a 401, or a 400 for the body that never came) and then the
                // end, or the end at once.
                match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buffer)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return true,
                    Ok(Ok(_)) | Err(_) => {}
                }
            }
            false
        })
    });
    for (trickle, with) in trickles
        .into_iter()
        .zip(["no credentials", "the CLI's token"])
    {
        assert!(
            trickle.await.unwrap(),
            "a body sent a byte at a time with {with} held its connection"
        );
    }
    web.stop().await;
}

/// Another user of this machine who opens every connection it can leaves the owner's
/// own served: connections from anyone but the user running the host share
/// [`palisade_web::OTHERS_MAX_CONNECTIONS`] of the places.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_user_cannot_take_every_connection() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPING: acting as another user needs root");
        return;
    }
    let web = Web::start().await;
    // The other user's script says it holds its connections by creating a file in a
    // folder it may write to.
    let signal = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        signal.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let ready = signal.path().join("ready");
    let script = format!(
        "import socket, sys\nheld = []\nfor _ in range({}):\n    try:\n        held.append(socket.create_connection(('127.0.0.1', {}), timeout=5))\n    except OSError:\n        pass\nopen({:?}, 'w').write(str(len(held)))\nsys.stdin.read()\n",
        palisade_web::MAX_CONNECTIONS + 20,
        web.addr.port(),
        ready.to_str().unwrap()
    );
    let other = palisade_testkit::ChildGuard::spawn(
        std::process::Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "/usr/bin/python3",
                "-c",
                &script,
            ])
            .stdin(std::process::Stdio::piped()),
    )
    .expect("setpriv");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !ready.exists() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        ready.exists(),
        "the other user's script did not get to hold its connections"
    );
    // What the server took of them: those past the others' share were closed at once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The owner's browser is served on a new connection, though the other user holds
    // what it may.
    let fresh = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let page = fresh
        .get(web.url("/"))
        .header("cookie", web.cookie())
        .send()
        .await
        .expect("the owner's page");
    assert_eq!(page.status(), StatusCode::OK);
    let status = fresh
        .get(web.url("/api/status"))
        .bearer_auth(&web.tokens.cli)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::OK);
    drop(other);
    web.stop().await;
}

/// An error reply reads as Palisade's notice, not as CLI output: no `palisade: `
/// prefix, and the commands it names as code; what it holds stays escaped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_reply_shows_its_commands_as_code() {
    let web = Web::start().await;
    web.login().await;
    let agent = AgentName::new("helper").unwrap();
    let accepted = web
        .store
        .accept_message(&agent, "web", "web", "hello")
        .unwrap();
    web.store
        .store_reply(
            accepted.message_id,
            "palisade: this message was not answered: raise it with `palisade agents edit helper --turn-timeout 20m` <b>now</b>",
            None,
            true,
        )
        .unwrap();
    let page = web.get_text("/chat?agent=helper").await;
    assert!(
        page.contains("this message was not answered: raise it with <code>palisade agents edit helper --turn-timeout 20m</code> &lt;b&gt;now&lt;/b&gt;"),
        "{page}"
    );
    assert!(!page.contains("palisade: this message"), "{page}");
    web.stop().await;
}

/// A bidi control in a reply, a message or a conversation key (`U+202E` shows
/// `gpj.exe` as `exe.jpg`) is shown as a marker on every page that shows them, as the
/// approval cards show it, never raw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn characters_that_reorder_text_are_shown_as_markers() {
    let web = Web::start().await;
    let agent = AgentName::new("helper").unwrap();
    let accepted = web
        .store
        .accept_message(&agent, "key\u{202E}cba", "web", "open invoice\u{2067}.pdf")
        .unwrap();
    web.store
        .store_reply(accepted.message_id, "saved to gpj\u{202E}.exe", None, false)
        .unwrap();
    let session = web.store.list_sessions(Some(&agent)).unwrap()[0].id;
    for path in [
        format!("/sessions/{session}"),
        "/sessions?agent=helper".to_string(),
    ] {
        let page = web.get_text(&path).await;
        assert!(page.contains("key⟨U+202E⟩cba"), "{path}: {page}");
        for raw in ['\u{202E}', '\u{2067}'] {
            assert!(!page.contains(raw), "{path} shows {raw:?} raw");
        }
    }
    let page = web.get_text(&format!("/sessions/{session}")).await;
    assert!(page.contains("gpj⟨U+202E⟩.exe"), "{page}");
    assert!(page.contains("invoice⟨U+2067⟩.pdf"), "{page}");
    web.stop().await;
}
