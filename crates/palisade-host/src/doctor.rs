//! `palisade doctor` and the web UI's Health page: everything a person needs for
//! Palisade to work, each problem with its fix in one line.
//!
//! One report for both, built here: the sandbox runtimes and their limits (the
//! sandbox crate's own probe, `palisade sandbox doctor`, included as it is), the store
//! and its master key, the audit chain, the vault's CA, which agents have a model key,
//! free disk under the home, and whether the host runs. [`online`] adds, only when
//! asked, one tiny request per agent to its model through the vault.

use crate::settings::AgentSettings;
use palisade_sandbox::doctor::DoctorReport;
use palisade_sandbox::LimitMechanism;
use palisade_store::{Home, Store};
use serde::Serialize;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

/// Free space under the home below which the doctor warns, and fails.
const DISK_WARN_BYTES: u64 = 1 << 30;
const DISK_FAIL_BYTES: u64 = 100 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    /// Works, but weaker or incomplete; the fix says how to get the rest.
    Warn,
    /// Does not work until fixed.
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        }
    }
}

/// One fact about the machine.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    /// `sandbox`, `store`, `vault`, `model`, `disk`, `host`.
    pub area: &'static str,
    pub status: Status,
    pub what: String,
    /// One line saying what to do, when something is to be done.
    pub fix: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// The sandbox probe in full (`palisade sandbox doctor`'s report).
    pub sandbox: DoctorReport,
}

impl Report {
    /// The worst status found.
    pub fn worst(&self) -> Status {
        self.findings
            .iter()
            .map(|f| f.status)
            .max()
            .unwrap_or(Status::Ok)
    }

    /// One line per finding, its fix on the next, indented.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for finding in &self.findings {
            out.push_str(&format!(
                "{:<4} {:<8} {}\n",
                finding.status.as_str(),
                finding.area,
                finding.what
            ));
            if let Some(fix) = &finding.fix {
                out.push_str(&format!("              fix: {fix}\n"));
            }
        }
        out
    }
}

fn finding(
    area: &'static str,
    status: Status,
    what: impl Into<String>,
    fix: Option<String>,
) -> Finding {
    Finding {
        area,
        status,
        what: what.into(),
        fix,
    }
}

/// Whether a host is running for the home, as the caller knows it.
#[derive(Clone, Debug)]
pub enum HostState {
    /// This process is the host (the web UI asks).
    This {
        listen: String,
    },
    Running {
        pid: u32,
        listen: String,
    },
    NotRunning,
}

/// Everything but the online check. Blocking (it runs probe sandboxes).
pub fn offline(home: &Home, host: HostState) -> Report {
    let sandbox = palisade_sandbox::doctor::diagnose();
    let mut findings = sandbox_findings(&sandbox);
    // A doctor does not create what it examines: a mistyped --home would otherwise
    // become a new, empty home that looks healthy.
    if !home.root().exists() {
        findings.push(finding(
            "store",
            Status::Warn,
            format!("no Palisade home at {} yet", home.root().display()),
            Some("`palisade up` creates it; if yours is elsewhere, give --home DIR or set PALISADE_HOME".into()),
        ));
        findings.push(disk_finding(home.root()));
        findings.push(host_finding(host));
        return Report { findings, sandbox };
    }
    let store = match Store::open(home) {
        Ok(store) => {
            findings.push(finding(
                "store",
                Status::Ok,
                format!("database {} opens", home.database().display()),
                None,
            ));
            Some(store)
        }
        Err(error) => {
            findings.push(finding(
                "store",
                Status::Fail,
                format!("the store does not open: {error}"),
                Some(format!(
                    "check that {} belongs to you and that the master key is the one the database was written with",
                    home.root().display()
                )),
            ));
            None
        }
    };
    findings.push(master_key_finding(home));
    if let Some(store) = &store {
        findings.push(match store.verify_audit() {
            Ok(report) if report.ok => finding(
                "store",
                Status::Ok,
                match report.starts_at {
                    Some(first) => format!(
                        "audit chain intact ({} rows from row {first}; older rows were pruned)",
                        report.rows
                    ),
                    None => format!("audit chain intact ({} rows)", report.rows),
                },
                None,
            ),
            Ok(report) => finding(
                "store",
                Status::Fail,
                format!(
                    "audit chain broken at row {}: {}",
                    report.first_bad_id.unwrap_or(0),
                    report.problem.unwrap_or_default()
                ),
                Some("the log was edited or damaged; keep a copy of the database and see `palisade audit verify`".into()),
            ),
            Err(error) => finding(
                "store",
                Status::Fail,
                format!("the audit chain cannot be read: {error}"),
                None,
            ),
        });
    }
    if let Some(store) = &store {
        findings.push(match store.audit_retention() {
            Ok(Some(keep)) => finding(
                "store",
                Status::Ok,
                format!(
                    "audit rows are kept for {}; the gateway prunes older ones hourly",
                    palisade_store::input::duration_text(keep)
                ),
                None,
            ),
            Ok(None) => finding(
                "store",
                Status::Ok,
                "audit rows are kept for ever (no retention set)",
                None,
            ),
            Err(error) => finding(
                "store",
                Status::Fail,
                error.to_string(),
                Some("set it again with `palisade audit retention DURATION` (or `--off`)".into()),
            ),
        });
    }
    findings.push(ca_finding(home));
    if let Some(store) = &store {
        findings.extend(gateway_findings(home, store));
        findings.extend(model_findings(store));
    }
    findings.push(disk_finding(home.root()));
    findings.push(host_finding(host));
    Report { findings, sandbox }
}

/// Whether every running gateway of the home enforces the configuration in the
/// database: one that cannot load it keeps an older one, whatever commands changed.
fn gateway_findings(home: &Home, store: &Store) -> Vec<Finding> {
    let Ok(version) = store.config_version() else {
        return Vec::new();
    };
    let synced = palisade_store::gateways::sync_gateways(home, version);
    let mut findings: Vec<Finding> = synced
        .unconfirmed
        .iter()
        .map(|gateway| {
            if gateway.refused {
                finding(
                    "vault",
                    Status::Fail,
                    gateway.describe(),
                    Some("fix or delete what it names (`palisade rules list`, `palisade rules delete ID`); it loads the change at once".into()),
                )
            } else {
                finding(
                    "vault",
                    Status::Warn,
                    gateway.describe(),
                    Some("if it stays so, restart the host (`palisade down`, then `palisade up`)".into()),
                )
            }
        })
        .collect();
    let confirmed = synced.confirmed;
    if findings.is_empty() && confirmed > 0 {
        findings.push(finding(
            "vault",
            Status::Ok,
            format!(
                "{confirmed} running gateway{} enforce{} the current configuration (version {version})",
                if confirmed == 1 { "" } else { "s" },
                if confirmed == 1 { "s" } else { "" },
            ),
            None,
        ));
    }
    findings
}

fn host_finding(host: HostState) -> Finding {
    match host {
        HostState::This { listen } => finding(
            "host",
            Status::Ok,
            format!("running on http://{listen} (this page)"),
            None,
        ),
        HostState::Running { pid, listen } => finding(
            "host",
            Status::Ok,
            format!("running (pid {pid}) on http://{listen}"),
            None,
        ),
        HostState::NotRunning => finding(
            "host",
            Status::Warn,
            "not running: agents answer nobody and the web UI is down",
            Some("start it with `palisade up` (or `palisade up --detach`)".into()),
        ),
    }
}

fn sandbox_findings(report: &DoctorReport) -> Vec<Finding> {
    let mut findings = Vec::new();
    for runtime in &report.runtimes {
        let default = runtime.runtime == "bwrap";
        match &runtime.problem {
            Some(problem) => {
                // Only bubblewrap (the default) is needed; podman and docker are options.
                let status = if default { Status::Fail } else { Status::Ok };
                let what = if default {
                    format!("{}: not usable: {problem}", runtime.runtime)
                } else {
                    format!("{} (optional, not used): {problem}", runtime.runtime)
                };
                let fix = (status != Status::Ok).then(|| sandbox_fix(&runtime.runtime, problem));
                findings.push(finding("sandbox", status, what, fix));
                continue;
            }
            None => findings.push(finding(
                "sandbox",
                Status::Ok,
                format!("{}: usable", runtime.runtime),
                None,
            )),
        }
        for check in runtime.checks.iter().filter(|c| !c.active) {
            findings.push(finding(
                "sandbox",
                Status::Fail,
                format!("{}: {} is missing ({})", runtime.runtime, check.name, check.detail),
                Some(format!(
                    "this kernel or {} does not give sandboxes {}; see docs/sandbox.md, or use another --runtime",
                    runtime.runtime, check.name
                )),
            ));
        }
        for limit in &runtime.limits {
            let weaker = matches!(
                limit.mechanism,
                LimitMechanism::NotApplied | LimitMechanism::Rlimit
            );
            if !weaker {
                continue;
            }
            let note = limit.note.clone().unwrap_or_default();
            // The sandbox's notes end with how to get the limit ("…; to enforce it, …")
            // when there is a way; otherwise the general one.
            let (cause, fix) = match note.rsplit_once("; ") {
                Some((cause, fix)) if fix.starts_with("to enforce it") => {
                    (cause.to_string(), fix.to_string())
                }
                // Already root: the runtime has nothing stronger for this limit.
                _ if nix::unistd::geteuid().is_root() => (
                    note.clone(),
                    "this runtime has no stronger way to apply it, even as root; see docs/sandbox.md, or use another --runtime".to_string(),
                ),
                _ => (
                    note.clone(),
                    "to enforce it, run palisade as root, or on a cgroup v2 host that delegates cgroup controllers to this user (systemd: Delegate=yes)".to_string(),
                ),
            };
            let fix = Some(fix);
            let applied = if limit.mechanism == LimitMechanism::NotApplied {
                "cannot be applied"
            } else {
                "is only an rlimit"
            };
            findings.push(finding(
                "sandbox",
                Status::Warn,
                format!(
                    "{}: the {} limit ({}) {applied}: {cause}",
                    runtime.runtime, limit.limit, limit.value
                ),
                fix,
            ));
        }
    }
    findings
}

/// What to do about a runtime that is not usable, from its problem.
fn sandbox_fix(runtime: &str, problem: &str) -> String {
    let lower = problem.to_ascii_lowercase();
    if lower.contains("not installed") || lower.contains("not found") {
        return match runtime {
            "bwrap" => {
                "install bubblewrap (Debian/Ubuntu: `sudo apt-get install bubblewrap`)".into()
            }
            other => format!("install {other}, or keep using bubblewrap (the default)"),
        };
    }
    if lower.contains("user namespace") {
        return "allow unprivileged user namespaces (Debian: `sudo sysctl -w kernel.unprivileged_userns_clone=1`; Ubuntu 24.04+: an AppArmor profile for bwrap), or run palisade as root".into();
    }
    if let Some((_, hint)) = problem.split_once("; ") {
        return hint.to_string();
    }
    format!("see `palisade sandbox doctor` and docs/sandbox.md for {runtime}")
}

fn master_key_finding(home: &Home) -> Finding {
    if std::env::var_os(palisade_store::crypto::MASTER_KEY_ENV).is_some() {
        return finding(
            "store",
            Status::Ok,
            format!("master key from {}", palisade_store::crypto::MASTER_KEY_ENV),
            None,
        );
    }
    let path = home.master_key();
    match std::fs::metadata(&path) {
        Ok(meta) if meta.permissions().mode() & 0o077 == 0 => finding(
            "store",
            Status::Ok,
            format!(
                "master key {} (mode {:o})",
                path.display(),
                meta.permissions().mode() & 0o777
            ),
            None,
        ),
        Ok(meta) => finding(
            "store",
            Status::Fail,
            format!(
                "master key {} is readable by others (mode {:o})",
                path.display(),
                meta.permissions().mode() & 0o777
            ),
            Some(format!("run `chmod 600 {}`", path.display())),
        ),
        Err(error) => finding(
            "store",
            Status::Fail,
            format!("master key {}: {error}", path.display()),
            Some(
                "it is created on first use; restore it from a backup if the home has secrets"
                    .into(),
            ),
        ),
    }
}

fn ca_finding(home: &Home) -> Finding {
    let cert = home.ca_dir().join("ca.pem");
    let key = home.ca_dir().join("ca.key");
    let pem = match std::fs::read_to_string(&cert) {
        Ok(pem) => pem,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return finding(
                "vault",
                Status::Warn,
                format!("no vault CA yet ({})", cert.display()),
                Some("it is created on the vault's first start (`palisade up` or `palisade vault serve`)".into()),
            )
        }
        Err(error) => {
            return finding("vault", Status::Fail, format!("vault CA {}: {error}", cert.display()), None)
        }
    };
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return finding(
            "vault",
            Status::Fail,
            format!("vault CA {} is not a PEM certificate", cert.display()),
            Some(format!(
                "move {} away; a new CA is created on the next start (clients must trust it again)",
                home.ca_dir().display()
            )),
        );
    }
    match std::fs::metadata(&key) {
        Ok(meta) if meta.permissions().mode() & 0o077 == 0 => finding(
            "vault",
            Status::Ok,
            format!("vault CA {} (its key is private)", cert.display()),
            None,
        ),
        Ok(_) => finding(
            "vault",
            Status::Fail,
            format!("the vault CA's key {} is readable by others", key.display()),
            Some(format!("run `chmod 600 {}`", key.display())),
        ),
        Err(error) => finding(
            "vault",
            Status::Fail,
            format!("the vault CA's key {}: {error}", key.display()),
            Some(format!(
                "move {} away; a new CA is created on the next start",
                home.ca_dir().display()
            )),
        ),
    }
}

fn model_findings(store: &Store) -> Vec<Finding> {
    let (agents, secrets) = match (store.list_agents(), store.list_secrets()) {
        (Ok(agents), Ok(secrets)) => (agents, secrets),
        (Err(error), _) | (_, Err(error)) => {
            return vec![finding(
                "model",
                Status::Fail,
                format!("agents cannot be read: {error}"),
                None,
            )]
        }
    };
    if agents.is_empty() {
        return vec![finding(
            "model",
            Status::Warn,
            "no agents",
            Some("`palisade up` creates `assistant`, or `palisade agents create NAME`".into()),
        )];
    }
    agents
        .iter()
        .map(|agent| {
            let settings = match AgentSettings::from_json(&agent.settings) {
                Ok(settings) => settings,
                Err(error) => {
                    return finding(
                        "model",
                        Status::Fail,
                        format!("agent {}: {error}", agent.name),
                        Some(format!("fix them with `palisade agents edit {}`", agent.name)),
                    )
                }
            };
            // With the port when the base URL names one, as the first run stores it.
            let host = crate::setup::model_key_host_pattern(&settings).unwrap_or_default();
            match crate::setup::model_key_secret(agent, &secrets) {
                // Anthropic's default model asked of an OpenAI-compatible server: what a
                // first run leaves when the server's model list could not be read.
                Some(_) if settings.has_anthropics_default_at_openai() => {
                    finding(
                        "model",
                        Status::Warn,
                        format!(
                            "agent {}: the OpenAI-compatible server at {host} is asked for model {}, the default for Anthropic's API",
                            agent.name, settings.model
                        ),
                        Some(format!(
                            "choose a model that server serves on the agent's page or with `palisade agents edit {} --model M`",
                            agent.name
                        )),
                    )
                }
                Some(secret) => finding(
                    "model",
                    Status::Ok,
                    format!(
                        "agent {}: {} model {} at {}, key in vault secret {}",
                        agent.name, settings.provider, settings.model, host, secret.name
                    ),
                    None,
                ),
                None => finding(
                    "model",
                    Status::Warn,
                    format!("agent {}: no model key is granted to it for {host}", agent.name),
                    crate::setup::model_key_advice(agent, &secrets),
                ),
            }
        })
        .collect()
}

fn disk_finding(root: &Path) -> Finding {
    let probe = if root.exists() {
        root.to_path_buf()
    } else {
        root.ancestors()
            .find(|p| p.exists())
            .unwrap_or(Path::new("/"))
            .to_path_buf()
    };
    match nix::sys::statvfs::statvfs(&probe) {
        Ok(stat) => {
            let free = stat.blocks_available().saturating_mul(stat.fragment_size());
            let text = format!("{:.1} GiB", free as f64 / (1u64 << 30) as f64);
            let (status, fix) = if free < DISK_FAIL_BYTES {
                (Status::Fail, Some(format!("free space on the file system of {}: agents' workspaces and the database need room (`palisade audit retention 90d` prunes old audit rows now and hourly from then on)", probe.display())))
            } else if free < DISK_WARN_BYTES {
                (
                    Status::Warn,
                    Some(format!(
                        "free space on the file system of {} soon (below 1 GiB free, by default, the vault lets each agent send only 10 credentialed requests a second)",
                        probe.display()
                    )),
                )
            } else {
                (Status::Ok, None)
            };
            finding(
                "disk",
                status,
                format!("{text} free under {}", probe.display()),
                fix,
            )
        }
        Err(error) => finding(
            "disk",
            Status::Warn,
            format!("free space under {} unknown: {error}", probe.display()),
            None,
        ),
    }
}

/// One tiny request per agent that has a model key, to its model through the vault
/// (`vault_socket(agent)` names the agent's vault socket). Added to `report`.
pub async fn online(
    report: &mut Report,
    store: &Store,
    vault_socket: impl Fn(&palisade_policy::AgentName) -> std::path::PathBuf,
    timeout: Duration,
) {
    let (agents, secrets) = {
        let store = store.clone();
        match tokio::task::spawn_blocking(move || {
            Ok::<_, palisade_store::StoreError>((store.list_agents()?, store.list_secrets()?))
        })
        .await
        {
            Ok(Ok(pair)) => pair,
            _ => return,
        }
    };
    for agent in &agents {
        let Ok(settings) = AgentSettings::from_json(&agent.settings) else {
            continue;
        };
        if crate::setup::model_key_secret(agent, &secrets).is_none() {
            continue;
        }
        let socket = vault_socket(&agent.name);
        let result = crate::models::probe(&socket, &settings, timeout).await;
        report.findings.push(match result {
            Ok(model) => finding(
                "model",
                Status::Ok,
                format!("agent {}: {model} answered through the vault", agent.name),
                None,
            ),
            Err(error) if error.is_model_not_found() => finding(
                "model",
                Status::Fail,
                format!("agent {}: {error}", agent.name),
                Some(palisade_policy::models::model_unavailable_message(&settings.model, agent.name.as_str())),
            ),
            Err(error @ crate::models::ModelsError::Vault { .. }) => finding(
                "model",
                Status::Fail,
                format!("agent {}: {error}", agent.name),
                Some("start the host (`palisade up`) or the vault (`palisade vault serve`), then ask again".into()),
            ),
            Err(error) => finding(
                "model",
                Status::Fail,
                format!("agent {}: the model did not answer: {error}", agent.name),
                Some(unanswered_fix(&error, &settings, agent.name.as_str())),
            ),
        });
    }
}

/// What to do about a model that did not answer: the vault's own refusals say what is
/// wrong (a local address not allowed, nothing answering), and then the key is not the
/// cause; otherwise it may be.
fn unanswered_fix(
    error: &crate::models::ModelsError,
    settings: &AgentSettings,
    agent: &str,
) -> String {
    let kind = match error {
        crate::models::ModelsError::Refused { kind, .. } => kind.as_str(),
        _ => "",
    };
    if matches!(
        error,
        crate::models::ModelsError::Refused { status: 404, .. }
    ) && !error.is_model_not_found()
    {
        return format!(
            "the server has no such endpoint: check the agent's provider ({}; most local servers are OpenAI-compatible: `palisade agents edit {agent} --provider openai`) and its base URL {}",
            settings.provider,
            settings.effective_base_url()
        );
    }
    match kind {
        "local_upstream_refused" => format!(
            "its model server is at a local address agents may not reach: allow it with `palisade vault local allow {}` (in force at once, and remembered)",
            crate::setup::model_server_allowance(settings).unwrap_or_default()
        ),
        "upstream_unreachable" | "upstream_timeout" => format!(
            "nothing answered at its base URL {}: is the model server running, and on that port? (`palisade agents show {agent}`)",
            settings.effective_base_url()
        ),
        _ => format!(
            "check the key (rotate it on the web UI's Vault page or `palisade secrets rotate`) and the agent's model and base URL (`palisade agents show {agent}`)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A first run that stored a key for an OpenAI-compatible server whose model list
    /// could not be read leaves Anthropic's default model asked of it: named, with the
    /// way out (it said ok). With a model of that server's, ok again.
    #[test]
    fn anthropics_default_model_at_an_openai_server_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&Home::at(dir.path().join("home"))).unwrap();
        crate::setup::ensure_default_agent(&store).unwrap();
        let first = crate::setup::ModelKey {
            agent: crate::setup::DEFAULT_AGENT.into(),
            provider: "openai".into(),
            base_url: Some("http://127.0.0.1:8080/v1".into()),
            key: Some(palisade_policy::SecretValue::new("sk-local".to_string())),
            model: None,
        };
        crate::setup::store_model_key(&store, first).unwrap();
        let findings = model_findings(&store);
        assert_eq!(findings.len(), 1);
        assert!(matches!(findings[0].status, Status::Warn), "{findings:?}");
        assert!(
            findings[0].what.contains("is asked for model claude-"),
            "{findings:?}"
        );
        assert!(findings[0]
            .fix
            .as_deref()
            .is_some_and(|fix| fix.contains("palisade agents edit assistant --model M")));

        crate::agents::edit(
            &store,
            crate::setup::DEFAULT_AGENT,
            &crate::agents::AgentDraft {
                model: Some("llama".into()),
                ..Default::default()
            },
        )
        .unwrap();
        let findings = model_findings(&store);
        assert!(matches!(findings[0].status, Status::Ok), "{findings:?}");
    }

    #[test]
    fn fixes_for_runtimes() {
        assert!(sandbox_fix("bwrap", "bubblewrap (bwrap) is not installed; install it (Debian/Ubuntu: `apt-get install bubblewrap`) or use --runtime podman").contains("apt-get install bubblewrap"));
        assert!(sandbox_fix("podman", "podman is not installed").contains("install podman"));
        assert_eq!(
            sandbox_fix(
                "docker",
                "cannot talk to the daemon; start it with `systemctl start docker`"
            ),
            "start it with `systemctl start docker`"
        );
    }
}
