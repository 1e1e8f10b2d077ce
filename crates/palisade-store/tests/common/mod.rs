//! Shared helpers: a store in a temporary home that is removed when the test ends.
#![allow(dead_code)]

use palisade_policy::{
    AgentName, HostPattern, Injection, MethodPattern, PathPattern, Profile, RuleAction, Scope,
    SecretValue,
};
use palisade_store::{Home, NewRule, NewSecret, Store};

pub struct TestStore {
    pub dir: tempfile::TempDir,
    pub home: Home,
    pub store: Store,
}

pub fn store() -> TestStore {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = Home::at(dir.path().join("home"));
    let store = Store::open(&home).expect("open store");
    TestStore { dir, home, store }
}

pub fn agent(name: &str) -> AgentName {
    AgentName::new(name).expect("valid agent name")
}

pub fn add_agent(store: &Store, name: &str) -> AgentName {
    let name = agent(name);
    store
        .create_agent(&name, Profile::Action)
        .expect("create agent");
    name
}

/// A Telegram channel named `name` with empty settings and credentials.
pub fn add_channel(store: &Store, name: &str) {
    store
        .create_channel(palisade_store::NewChannel {
            name: name.into(),
            platform: "telegram".into(),
            settings: serde_json::json!({}),
            credentials: SecretValue::new("{}".to_string()),
        })
        .expect("create channel");
}

pub fn new_secret(name: &str, value: &str, agents: &[&str]) -> NewSecret {
    NewSecret {
        name: name.to_string(),
        host: HostPattern::parse("api.example.com").expect("host"),
        path: Some(PathPattern::parse("/v1/*").expect("path")),
        injection: "bearer".parse::<Injection>().expect("injection"),
        value: SecretValue::new(value.to_string()),
        agents: agents.iter().map(|a| agent(a)).collect(),
        priority: 0,
        sensitive: false,
    }
}

pub fn new_rule(name: &str, action: RuleAction, agent_name: Option<&str>) -> NewRule {
    NewRule {
        name: name.to_string(),
        host: HostPattern::parse("*.example.com").expect("host"),
        path: None,
        method: MethodPattern::parse("POST").expect("method"),
        action,
        agent: agent_name.map(agent),
        priority: 5,
        expires_at_ms: None,
        body_contains: None,
        scope: Scope::User,
        approval_timeout_ms: None,
    }
}

/// A second raw connection for inspecting or tampering with the database.
pub fn raw(home: &Home) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(home.database()).expect("raw open");
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .expect("busy timeout");
    conn
}

pub fn audit_events(store: &Store) -> Vec<String> {
    let mut rows = store
        .list_audit(&palisade_store::AuditFilter::default())
        .expect("list audit");
    rows.reverse();
    rows.into_iter().map(|r| r.entry.event).collect()
}
