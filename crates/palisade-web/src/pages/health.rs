//! The Health page: `palisade doctor` in the browser (the same report, from
//! [`palisade_host::doctor`]). Asking each agent's model one tiny question through the
//! vault is a separate, explicit button, as `--online` is on the command line.

use super::layout::{self, Nav};
use super::{PageError, PageResult};
use crate::WebState;
use axum::extract::State;
use maud::html;
use palisade_host::doctor::{self, HostState, Report, Status};
use std::time::Duration;

/// How long each online probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

async fn offline(state: &WebState) -> Result<Report, PageError> {
    let home = state.store.home().clone();
    let listen = state.listen.to_string();
    tokio::task::spawn_blocking(move || doctor::offline(&home, HostState::This { listen }))
        .await
        .map_err(|e| PageError::Internal(format!("the health check failed: {e}")))
}

async fn render(state: &WebState, report: Report, online: bool) -> PageResult {
    let worst = report.worst();
    let body = html! {
        div.page-head.row-between {
            div {
                h1 { "Health" }
                p.muted { "What Palisade needs on this machine, and how to fix what is missing. The same as " code { "palisade doctor" } "." }
            }
            form method="post" action="/health/online" {
                (layout::csrf_field())
                button #online type="submit" title="one tiny request per agent with a key, through the vault" { "Ask each model" }
            }
        }
        section.card {
            p #health-summary {
                @match worst {
                    Status::Ok => { (layout::pill("all good", "good")) }
                    Status::Warn => { (layout::pill("works, with warnings", "warn")) }
                    Status::Fail => { (layout::pill("needs fixing", "bad")) }
                }
                @if online { " " span.muted.small { "(models asked)" } }
            }
            table #findings {
                thead { tr { th { "" } th { "Area" } th { "Finding" } } }
                tbody {
                    @for finding in &report.findings {
                        tr class={ "finding " (finding.status.as_str().to_ascii_lowercase()) } {
                            td {
                                @match finding.status {
                                    Status::Ok => { (layout::pill("ok", "good")) }
                                    Status::Warn => { (layout::pill("warn", "warn")) }
                                    Status::Fail => { (layout::pill("fail", "bad")) }
                                }
                            }
                            td.muted { (finding.area) }
                            td {
                                (finding.what)
                                @if let Some(fix) = &finding.fix { div.fix.small { "Fix: " (fix) } }
                            }
                        }
                    }
                }
            }
        }
        section.card {
            details {
                summary { "The sandbox probe in full (" code { "palisade sandbox doctor" } ")" }
                pre { (report.sandbox.render()) }
            }
        }
    };
    Ok(layout::render(state, Nav::Health, "Health", body).await)
}

pub(crate) async fn page(State(state): State<WebState>) -> PageResult {
    let report = offline(&state).await?;
    render(&state, report, false).await
}

pub(crate) async fn online(State(state): State<WebState>) -> PageResult {
    let mut report = offline(&state).await?;
    let host = state.host.clone();
    doctor::online(
        &mut report,
        &state.store,
        |agent| host.vault_socket(agent),
        PROBE_TIMEOUT,
    )
    .await;
    render(&state, report, true).await
}
