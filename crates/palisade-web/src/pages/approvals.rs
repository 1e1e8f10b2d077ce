//! Approvals: everything waiting for the admin, with its summary (method, host, path,
//! agent, redacted context), and the choices its kind offers (approve once, approve
//! for 1 h, always allow, deny, with an optional comment), decided through the approval
//! engine exactly like `palisade approvals approve|deny`, with the web admin as
//! approver. The pending list is also served as a fragment the script polls (every
//! 2 s, at most 100 approvals), so it updates without a reload. Rules suggested from
//! the approvals people keep giving are on their own page, [`super::suggestions`].
//!
//! A decision made without the script redirects back here naming what it came to as a
//! fixed code and the approval's id (`?decided=approved&id=apr_…`), never as text: the
//! page writes the line itself, and only for an approval that really ended that way
//! ([`Flash`]), so a link cannot put words of its choosing on the page.

use super::layout::{self, Nav};
use super::{blocking, PageError, PageResult};
use crate::WebState;
use axum::extract::{Form, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use palisade_approvals::{ApprovalError, ApprovalKind, ApproverIdentity, Choice};
use palisade_store::StoreError;
use palisade_store::{Approval, ApprovalStatus};
use serde::Deserialize;

/// Most pending approvals shown (the oldest beyond this wait for the next refresh).
const PENDING_LIMIT: usize = 100;
/// Longest comment accepted.
const MAX_COMMENT_BYTES: usize = 2000;

fn pending_markup(pending: &[Approval]) -> Markup {
    let ids: Vec<&str> = pending.iter().map(|a| a.id.as_str()).collect();
    html! {
        div #pending data-count=(pending.len()) data-ids=(ids.join(",")) {
            @if pending.is_empty() {
                p.muted.empty-state { "Nothing is waiting for you. Held requests appear here as they come in." }
            }
            @for approval in pending {
                article.card.approval data-id=(approval.id) {
                    div.row-between {
                        h3 { (approval.title) }
                        span.muted.small { "times out " (super::relative(approval.expires_at_ms)) }
                    }
                    div.approval-meta {
                        (layout::pill(&approval.kind, "warn")) " "
                        "agent " a href={ "/agents/" (approval.agent) } { strong { (approval.agent) } }
                        " · asked " (super::relative(approval.created_at_ms))
                        " · " code.small { (approval.id) }
                    }
                    @if !approval.lines.is_empty() {
                        ul.summary {
                            @for line in &approval.lines { li { (line) } }
                        }
                    }
                    @if !approval.detail.is_empty() {
                        details {
                            summary { "Full request" }
                            pre { (approval.detail) }
                        }
                    }
                    @if !approval.context.is_null() {
                        details {
                            summary { "Context" }
                            pre { (visible_json(&approval.context)) }
                        }
                    }
                    form.decide method="post" action={ "/approvals/" (approval.id) "/decide" } {
                        (layout::csrf_field())
                        // A text area, not a one-line input: Enter in a one-line input
                        // submits the form with its first button, Approve, so a person
                        // typing the reason for a denial would approve.
                        textarea name="comment" rows="2" maxlength=(MAX_COMMENT_BYTES) placeholder="Comment (optional; a denial's comment is returned to the agent)" {}
                        @let kind = approval.kind.parse::<ApprovalKind>().ok();
                        // A request no exact pattern can name (a path with
                        // `;parameters`) is approved once only, as on chat cards.
                        @let exact = palisade_approvals::engine::exact_patterns(approval).is_ok();
                        // Disabled until the script arms them, a second after they
                        // are shown (see app.js: a double-click another page asked for
                        // must not land on them).
                        button.primary type="submit" name="decision" value="approve" disabled data-arm { "Approve" }
                        @if exact && kind.is_some_and(|k| k.offers(Choice::ForHour)) {
                            button.secondary type="submit" name="decision" value="1h" disabled data-arm title="Also allow this agent the same host, method and path for one hour" { "Approve for 1 h" }
                        }
                        @if exact && kind.is_some_and(|k| k.offers(Choice::Always)) {
                            button.secondary type="submit" name="decision" value="always" disabled data-arm title="Create a rule allowing this agent the same host, method and path (revoke it on the Vault page or with palisade rules delete)" { "Always allow" }
                        }
                        button.danger type="submit" name="decision" value="deny" disabled data-arm { "Deny" }
                        noscript { p.muted.small { "Deciding here needs JavaScript; or run " code { "palisade approvals approve " (approval.id) } "." } }
                    }
                }
            }
        }
    }
}

fn decided_markup(decided: &[Approval]) -> Markup {
    html! {
        @if decided.is_empty() {
            p.muted { "No decisions yet." }
        } @else {
            (super::charts::decision_times(decided))
            table {
                thead { tr { th { "Request" } th { "Agent" } th { "Status" } th { "Choice" } th { "By" } th { "Comment" } th { "Took" } th { "When" } } }
                tbody {
                    @for approval in decided {
                        tr {
                            td { (approval.title) }
                            td { (approval.agent) }
                            td {
                                @let tone = match approval.status { ApprovalStatus::Approved => "good", ApprovalStatus::Denied => "bad", _ => "neutral" };
                                (layout::pill(approval.status.as_str(), tone))
                            }
                            td {
                                (approval.choice.as_deref().unwrap_or(""))
                                @if let Some(rule) = &approval.granted_rule { br; span.muted.small { "rule " code { (rule) } } }
                            }
                            td { (approval.approver.as_deref().unwrap_or("")) }
                            td { (approval.comment.as_deref().unwrap_or("")) }
                            td.nowrap.took { (approval.decided_at_ms.map(|at| super::charts::seconds(at - approval.created_at_ms)).unwrap_or_default()) }
                            td.muted { (approval.decided_at_ms.map(super::relative).unwrap_or_default()) }
                        }
                    }
                }
            }
        }
    }
}

async fn load(state: &WebState) -> Result<(Vec<Approval>, Vec<Approval>), PageError> {
    let store = state.store.clone();
    blocking(move || {
        let mut pending = store.list_approvals(Some(ApprovalStatus::Pending), PENDING_LIMIT)?;
        // Oldest first: the one that times out soonest leads.
        pending.reverse();
        let decided: Vec<Approval> = store
            .list_approvals(None, 60)?
            .into_iter()
            .filter(|a| a.status != ApprovalStatus::Pending)
            .take(20)
            .collect();
        Ok((pending, decided))
    })
    .await
}

#[derive(Deserialize)]
pub(crate) struct PageQuery {
    /// A [`Flash`] code.
    decided: Option<String>,
    /// The approval the code is about.
    id: Option<String>,
}

/// What a decision made on this page came to, as the redirect after it names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flash {
    Approved,
    ApprovedForHour,
    AlwaysAllowed,
    Denied,
}

impl Flash {
    const ALL: [Flash; 4] = [
        Flash::Approved,
        Flash::ApprovedForHour,
        Flash::AlwaysAllowed,
        Flash::Denied,
    ];

    fn of(choice: Choice) -> Flash {
        match choice {
            Choice::Once => Flash::Approved,
            Choice::ForHour => Flash::ApprovedForHour,
            Choice::Always => Flash::AlwaysAllowed,
            Choice::Deny => Flash::Denied,
        }
    }

    fn code(self) -> &'static str {
        match self {
            Flash::Approved => "approved",
            Flash::ApprovedForHour => "approved_1h",
            Flash::AlwaysAllowed => "always_allowed",
            Flash::Denied => "denied",
        }
    }

    /// `None` for any code this page did not write.
    fn from_code(code: &str) -> Option<Flash> {
        Flash::ALL.into_iter().find(|flash| flash.code() == code)
    }

    /// The line the page shows for `approval`, when it was decided as this code says;
    /// `None` otherwise (pending, decided another way, timed out), so a link cannot
    /// claim an outcome that did not happen.
    fn message(self, approval: &Approval) -> Option<String> {
        let choice = approval.choice.as_deref()?.parse::<Choice>().ok()?;
        let status = match choice.approves() {
            true => ApprovalStatus::Approved,
            false => ApprovalStatus::Denied,
        };
        (Flash::of(choice) == self && approval.status == status).then(|| {
            format!(
                "{}: {} ({})",
                choice.past_tense(),
                approval.title,
                approval.id
            )
        })
    }
}

/// The flash line for `query`: empty unless it names a known code and an approval that
/// was decided so.
async fn flash_message(state: &WebState, query: &PageQuery) -> Result<String, PageError> {
    let (Some(flash), Some(id)) = (
        query.decided.as_deref().and_then(Flash::from_code),
        query.id.clone(),
    ) else {
        return Ok(String::new());
    };
    let store = state.store.clone();
    let approval = blocking(move || match store.get_approval(&id) {
        Ok(approval) => Ok(Some(approval)),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(error) => Err(error.into()),
    })
    .await?;
    Ok(approval
        .and_then(|approval| flash.message(&approval))
        .unwrap_or_default())
}

pub(crate) async fn page(
    State(state): State<WebState>,
    Query(query): Query<PageQuery>,
) -> PageResult {
    let (pending, decided) = load(&state).await?;
    let flash = flash_message(&state, &query).await?;
    let body = html! {
        div.page-head.row-between {
            div {
                h1 { "Approvals" }
                p.muted { "Requests an agent made that a rule holds until you decide. Nothing is sent upstream before you approve." }
            }
            a.button #suggested-rules href="/approvals/suggest" title="Rules that would have spared the approvals people keep giving" { "Suggested rules" }
        }
        p #approval-flash.flash hidden[flash.is_empty()] { (flash) }
        section #approvals-live data-poll="/approvals/pending" {
            (pending_markup(&pending))
        }
        section.card {
            h2 { "Recently decided" }
            div #decided { (decided_markup(&decided)) }
        }
    };
    Ok(layout::render(&state, Nav::Approvals, "Approvals", body).await)
}

/// The pending list and the recent decisions alone, for the script's polling.
pub(crate) async fn pending_fragment(State(state): State<WebState>) -> PageResult {
    let (pending, decided) = load(&state).await?;
    let fragment = html! {
        (pending_markup(&pending))
        div #decided { (decided_markup(&decided)) }
    };
    Ok((
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        fragment.into_string(),
    )
        .into_response())
}

#[derive(Deserialize)]
pub(crate) struct DecideForm {
    decision: String,
    #[serde(default)]
    comment: Option<String>,
}

fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

pub(crate) async fn decide(
    State(state): State<WebState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<DecideForm>,
) -> Response {
    let json = wants_json(&headers);
    let refuse = |status: StatusCode, code: &str, message: String| -> Response {
        if json {
            (
                status,
                axum::Json(serde_json::json!({ "error": code, "message": message })),
            )
                .into_response()
        } else {
            PageError::BadRequest(message).into_response()
        }
    };
    let Ok(choice) = form.decision.parse::<Choice>() else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_decision",
            "the decision must be approve, 1h, always or deny".into(),
        );
    };
    let comment = form
        .comment
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty());
    if comment
        .as_ref()
        .is_some_and(|c| c.len() > MAX_COMMENT_BYTES)
    {
        return refuse(
            StatusCode::BAD_REQUEST,
            "comment_too_long",
            format!("the comment is longer than {MAX_COMMENT_BYTES} bytes; shorten it"),
        );
    }
    let engine = state.engine.clone();
    let lookup = id.clone();
    let result = tokio::task::spawn_blocking(move || {
        engine.decide(
            &lookup,
            &ApproverIdentity::web(),
            choice,
            comment.as_deref(),
        )
    })
    .await;
    match result {
        Ok(Ok(approval)) => {
            let message = format!(
                "{} {}: {}",
                approval.status.as_str(),
                approval.id,
                approval.title
            );
            if json {
                axum::Json(serde_json::json!({
                    "id": approval.id,
                    "status": approval.status.as_str(),
                    "message": message,
                }))
                .into_response()
            } else {
                Redirect::to(&format!(
                    "/approvals?decided={}&id={}",
                    Flash::of(choice).code(),
                    super::query_value(&approval.id)
                ))
                .into_response()
            }
        }
        Ok(Err(error @ (ApprovalError::AlreadyDecided { .. } | ApprovalError::Expired(_)))) => {
            refuse(StatusCode::CONFLICT, "already_decided", error.to_string())
        }
        Ok(Err(ApprovalError::NotFound(_))) => refuse(
            StatusCode::NOT_FOUND,
            "unknown_approval",
            format!("there is no approval {id}"),
        ),
        Ok(Err(error @ ApprovalError::ChoiceNotOffered { .. })) => refuse(
            StatusCode::BAD_REQUEST,
            "choice_not_offered",
            error.to_string(),
        ),
        Ok(Err(error)) => refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            error.to_string(),
        ),
        Err(error) => refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            error.to_string(),
        ),
    }
}

/// `value` as indented JSON with every invisible or reordering character (a
/// right-to-left override an agent put in a header, say) written as its `\u` escape,
/// as the summary lines mark them: the context holds the request as the agent sent it.
fn visible_json(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value)
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if palisade_approvals::summary::is_invisible(c) {
                format!("\\u{{{:04x}}}", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{visible_json, Flash};
    use palisade_store::{Approval, ApprovalStatus};

    fn decided(status: ApprovalStatus, choice: Option<&str>) -> Approval {
        Approval {
            id: "apr_abcdefghijkl".into(),
            kind: "credential_use".into(),
            agent: "mailer".parse().unwrap(),
            status,
            title: "Send e-mail to bob@example.com".into(),
            lines: vec![],
            detail: String::new(),
            context: serde_json::Value::Null,
            created_at_ms: 0,
            expires_at_ms: 0,
            decided_at_ms: Some(1),
            approver: Some("web:admin".into()),
            comment: None,
            choice: choice.map(str::to_string),
            approver_channel: None,
            approver_user: None,
            approver_name: None,
            granted_rule: None,
            holder: None,
            request_key: None,
        }
    }

    /// Only codes the page writes are read, and each names an outcome in the server's
    /// words, shown only for an approval that ended so.
    #[test]
    fn a_flash_is_a_known_code_for_an_approval_that_ended_so() {
        for flash in Flash::ALL {
            assert_eq!(Flash::from_code(flash.code()), Some(flash));
        }
        for unknown in [
            "",
            "Approved: all requests are safe",
            "APPROVED",
            "approved ",
        ] {
            assert_eq!(Flash::from_code(unknown), None, "{unknown}");
        }
        let approved = decided(ApprovalStatus::Approved, Some("once"));
        assert_eq!(
            Flash::Approved.message(&approved).as_deref(),
            Some("Approved: Send e-mail to bob@example.com (apr_abcdefghijkl)")
        );
        assert_eq!(Flash::Denied.message(&approved), None);
        assert_eq!(Flash::AlwaysAllowed.message(&approved), None);
        let always = decided(ApprovalStatus::Approved, Some("always"));
        assert!(Flash::AlwaysAllowed
            .message(&always)
            .is_some_and(|m| m.starts_with("Always allowed: ")));
        let denied = decided(ApprovalStatus::Denied, Some("deny"));
        assert!(Flash::Denied
            .message(&denied)
            .is_some_and(|m| m.starts_with("Denied: ")));
        for unsettled in [
            decided(ApprovalStatus::Pending, None),
            decided(ApprovalStatus::TimedOut, None),
            decided(ApprovalStatus::Cancelled, Some("once")),
        ] {
            for flash in Flash::ALL {
                assert_eq!(flash.message(&unsettled), None, "{:?}", unsettled.status);
            }
        }
    }

    #[test]
    fn the_context_shows_reordering_characters_as_escapes() {
        let shown = visible_json(&serde_json::json!({"x-note": "abc\u{202e}def\u{200b}"}));
        assert!(shown.contains("abc\\u{202e}def\\u{200b}"), "{shown}");
        assert!(!shown.contains('\u{202e}') && !shown.contains('\u{200b}'));
    }
}
