//! Channels: every chat channel with the running host's view of it (connected,
//! connecting, failing and why), its linked chats, approvers and allowed senders, and
//! forms to add a channel, link a chat, add or remove an approver or sender, change
//! what it does with strangers, and remove it (behind a confirmation page). Every
//! change goes through `palisade_channels::manage`, the code behind `palisade channels`
//! and `palisade approvers`, and passes the CSRF check like every form. Tokens typed
//! here are sealed by the store and never shown again.

use super::layout::{self, Nav};
use super::{blocking, PageError, PageResult};
use crate::WebState;
use axum::extract::{Form, Path, Query, State};
use axum::response::{IntoResponse, Redirect};
use maud::{html, Markup};
use palisade_approvals::Platform;
use palisade_channels::manage::{self, AddChannel, ManageError, UnknownSenders};
use palisade_channels::ChannelState;
use palisade_policy::{AgentName, SecretValue};
use serde::Deserialize;

impl From<ManageError> for PageError {
    fn from(error: ManageError) -> Self {
        match error {
            ManageError::Store(store) => store.into(),
            ManageError::Invalid(message) => PageError::BadRequest(message),
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    done: Option<String>,
}

fn state_pill(status: Option<&palisade_channels::ChannelStatus>) -> Markup {
    match status {
        Some(status) => match status.state {
            ChannelState::Connected => layout::pill("connected", "good"),
            ChannelState::Connecting => layout::pill("connecting", "neutral"),
            ChannelState::Failing => layout::pill("failing", "bad"),
        },
        None => layout::pill("starting", "neutral"),
    }
}

pub(crate) async fn page(
    State(state): State<WebState>,
    Query(query): Query<ListQuery>,
) -> PageResult {
    let store = state.store.clone();
    let (channels, agents) = blocking(move || {
        let home = store.home().clone();
        Ok((manage::overview(&store, &home, true)?, store.list_agents()?))
    })
    .await?;
    let agent_options = html! {
        @for agent in &agents { option value=(agent.name) { (agent.name) } }
    };
    let body = html! {
        div.page-head.row-between {
            div {
                h1 { "Channels" }
                p.muted { "Slack, Telegram and Discord: where people talk to agents and decide approvals. The same as " code { "palisade channels" } " and " code { "palisade approvers" } "." }
            }
            @if let Some(done) = query.done.as_deref().and_then(done_words) { span.pill.good { (done) } }
        }
        @if channels.is_empty() {
            section.card { p.muted { "No channels yet. Add one below." } }
        }
        @for channel in &channels {
            @let name = &channel.record.name;
            section.card.channel id={ "channel-" (name) } {
                div.row-between {
                    h2 { (name) " " span.muted { "(" (channel.record.platform) ")" } " " (state_pill(channel.status.as_ref())) }
                    a.button.small.danger href={ "/channels/" (name) "/remove" } { "Remove" }
                }
                @if let Some(detail) = channel.status.as_ref().and_then(|s| s.detail.as_deref()) {
                    p.muted.small.status-detail { (detail) }
                }
                h3 { "Linked chats" }
                @if channel.links.is_empty() { p.muted.small { "None: messages are heard only in linked chats." } }
                ul.plain {
                    @for link in &channel.links {
                        li {
                            code { (link.chat) } " → " strong { (link.agent) } " "
                            form.inline method="post" action={ "/channels/" (name) "/unlink" } {
                                (layout::csrf_field())
                                input type="hidden" name="chat" value=(link.chat);
                                button.small type="submit" { "Unlink" }
                            }
                        }
                    }
                }
                form.inline-form method="post" action={ "/channels/" (name) "/link" } {
                    (layout::csrf_field())
                    select name="agent" required { (agent_options) }
                    input type="text" name="chat" placeholder="chat id" required maxlength="128";
                    button.small type="submit" { "Link chat" }
                }
                h3 { "Approvers" }
                p.muted.small { "They get a card for each of the agent's approvals, and may talk to it." }
                ul.plain {
                    @for approver in &channel.approvers {
                        li {
                            strong { (approver.display_name) } " " code { (approver.user_id) } " for " (approver.agent) " "
                            form.inline method="post" action={ "/channels/" (name) "/approvers/remove" } {
                                (layout::csrf_field())
                                input type="hidden" name="agent" value=(approver.agent);
                                input type="hidden" name="user" value=(approver.user_id);
                                button.small type="submit" { "Remove" }
                            }
                        }
                    }
                }
                form.inline-form method="post" action={ "/channels/" (name) "/approvers" } {
                    (layout::csrf_field())
                    select name="agent" required { (agent_options) }
                    input type="text" name="user" placeholder="platform user id" required maxlength="128";
                    input type="text" name="display_name" placeholder="name shown" maxlength="128";
                    button.small type="submit" { "Add approver" }
                }
                h3 { "Allowed senders" }
                p.muted.small { "They may talk to the agent but decide nothing." }
                ul.plain {
                    @for sender in &channel.senders {
                        li {
                            strong { (sender.display_name) } " " code { (sender.user_id) } " → " (sender.agent) " "
                            form.inline method="post" action={ "/channels/" (name) "/senders/remove" } {
                                (layout::csrf_field())
                                input type="hidden" name="agent" value=(sender.agent);
                                input type="hidden" name="user" value=(sender.user_id);
                                button.small type="submit" { "Remove" }
                            }
                        }
                    }
                }
                h3 { "Strangers" }
                @let ask = channel.record.settings["unknown_senders"] == "ask";
                form.inline-form method="post" action={ "/channels/" (name) "/access" } {
                    (layout::csrf_field())
                    select name="unknown_senders" {
                        option value="drop" selected[!ask] { "drop their messages" }
                        option value="ask" selected[ask] { "drop, and ask the approvers to let them in" }
                    }
                    select name="access_agent" {
                        option value="" { "(direct messages in unlinked chats: dropped)" }
                        @for agent in &agents {
                            option value=(agent.name) selected[channel.record.settings["access_agent"] == agent.name.as_str()] { "direct messages ask for " (agent.name) }
                        }
                    }
                    button.small type="submit" { "Save" }
                }
            }
        }
        section.card {
            h2 { "Add a channel" }
            p.muted.small { "Tokens are sealed in the store and never shown again. Telegram and Discord take one bot token; Slack a bot token (xoxb-…) with an app-level token (xapp-…, Socket Mode) or a signing secret (Events API), or both." }
            form.stacked method="post" action="/channels" autocomplete="off" {
                (layout::csrf_field())
                label { "Name " input type="text" name="name" required maxlength="64" pattern="[A-Za-z0-9._-]+"; }
                label { "Platform "
                    select name="platform" {
                        option value="telegram" { "Telegram" }
                        option value="slack" { "Slack" }
                        option value="discord" { "Discord" }
                    }
                }
                label { "Bot token " input type="password" name="token" required autocomplete="off"; }
                label { "Slack app-level token " input type="password" name="app_token" autocomplete="off"; }
                label { "Slack signing secret " input type="password" name="signing_secret" autocomplete="off"; }
                label { "Discord public key (hex) " input type="text" name="public_key" maxlength="64"; }
                label { "API base URL (optional) " input type="url" name="api_base"; }
                label { "Discord gateway URL (optional) " input type="url" name="gateway_url"; }
                label { "Strangers "
                    select name="unknown_senders" {
                        option value="drop" { "drop their messages" }
                        option value="ask" { "ask the approvers to let them in" }
                    }
                }
                div.form-actions { button.primary type="submit" { "Add channel" } }
            }
        }
    };
    Ok(layout::render(&state, Nav::Channels, "Channels", body).await)
}

fn secret(value: Option<String>) -> Option<SecretValue> {
    value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .map(SecretValue::new)
}

#[derive(Deserialize)]
pub(crate) struct AddForm {
    name: String,
    platform: String,
    token: String,
    app_token: Option<String>,
    signing_secret: Option<String>,
    public_key: Option<String>,
    api_base: Option<String>,
    gateway_url: Option<String>,
    unknown_senders: Option<String>,
}

pub(crate) async fn add(State(state): State<WebState>, Form(form): Form<AddForm>) -> PageResult {
    let platform: Platform = form.platform.parse().map_err(PageError::BadRequest)?;
    let unknown_senders = match form.unknown_senders.as_deref() {
        Some(mode) => mode.parse().map_err(PageError::BadRequest)?,
        None => UnknownSenders::Drop,
    };
    let add = AddChannel {
        name: form.name.trim().to_string(),
        platform,
        token: SecretValue::new(form.token.trim().to_string()),
        app_token: secret(form.app_token),
        signing_secret: secret(form.signing_secret),
        api_base: form.api_base,
        gateway_url: form.gateway_url,
        public_key: form.public_key,
        unknown_senders,
        access_agent: None,
    };
    let store = state.store.clone();
    blocking(move || Ok(manage::add_channel(&store, add)?)).await?;
    Ok(done("added"))
}

/// What the page says after a change: one of these codes in `?done=`, each shown as
/// its own fixed words, so a link cannot put words of its choosing on the page (it
/// showed whatever `done` held, in the green of a success).
const DONE: [(&str, &str); 8] = [
    ("added", "channel added"),
    ("linked", "linked"),
    ("unlinked", "unlinked"),
    ("approver-added", "approver added"),
    ("approver-removed", "approver removed"),
    ("sender-removed", "sender removed"),
    ("saved", "saved"),
    ("removed", "channel removed"),
];

fn done(code: &str) -> axum::response::Response {
    debug_assert!(DONE.iter().any(|(known, _)| *known == code));
    Redirect::to(&format!("/channels?done={code}")).into_response()
}

/// The words for a `?done=` code; nothing for one this page did not send.
fn done_words(code: &str) -> Option<&'static str> {
    DONE.iter()
        .find(|(known, _)| *known == code)
        .map(|(_, words)| *words)
}

#[derive(Deserialize)]
pub(crate) struct LinkForm {
    agent: String,
    chat: String,
}

pub(crate) async fn link(
    State(state): State<WebState>,
    Path(name): Path<String>,
    Form(form): Form<LinkForm>,
) -> PageResult {
    let agent = AgentName::new(&form.agent)?;
    let store = state.store.clone();
    blocking(move || Ok(manage::link(&store, &name, &agent, &form.chat)?)).await?;
    Ok(done("linked"))
}

#[derive(Deserialize)]
pub(crate) struct ChatForm {
    chat: String,
    /// Set by the confirmation page's button; without it the page is shown.
    confirmed: Option<String>,
}

/// A page asking before a removal: the same form again, confirmed.
async fn confirm(
    state: &WebState,
    heading: String,
    text: &str,
    action: String,
    fields: &[(&str, &str)],
    button: &str,
) -> PageResult {
    let body = html! {
        section.card.narrow {
            h1 { (heading) }
            p { (text) }
            form method="post" action=(action) {
                (layout::csrf_field())
                @for (field, value) in fields {
                    input type="hidden" name=(field) value=(value);
                }
                input type="hidden" name="confirmed" value="1";
                div.form-actions {
                    a.button href="/channels" { "Keep it" }
                    " "
                    button.danger type="submit" { (button) }
                }
            }
        }
    };
    Ok(layout::render(state, Nav::Channels, "Confirm", body).await)
}

pub(crate) async fn unlink(
    State(state): State<WebState>,
    Path(name): Path<String>,
    Form(form): Form<ChatForm>,
) -> PageResult {
    if form.confirmed.is_none() {
        return confirm(
            &state,
            format!("Unlink chat {} of {name}?", form.chat),
            "Messages in that chat no longer reach its agent, and its replies no longer go there.",
            format!("/channels/{name}/unlink"),
            &[("chat", &form.chat)],
            "Unlink",
        )
        .await;
    }
    let store = state.store.clone();
    blocking(move || Ok(manage::unlink(&store, &name, &form.chat)?)).await?;
    Ok(done("unlinked"))
}

#[derive(Deserialize)]
pub(crate) struct PersonForm {
    agent: String,
    user: String,
    display_name: Option<String>,
    /// Set by the confirmation page's button (removals only).
    confirmed: Option<String>,
}

pub(crate) async fn add_approver(
    State(state): State<WebState>,
    Path(name): Path<String>,
    Form(form): Form<PersonForm>,
) -> PageResult {
    let agent = AgentName::new(&form.agent)?;
    let store = state.store.clone();
    blocking(move || {
        Ok(manage::add_approver(
            &store,
            &agent,
            &name,
            &form.user,
            form.display_name.as_deref(),
        )?)
    })
    .await?;
    Ok(done("approver-added"))
}

pub(crate) async fn remove_approver(
    State(state): State<WebState>,
    Path(name): Path<String>,
    Form(form): Form<PersonForm>,
) -> PageResult {
    let agent = AgentName::new(&form.agent)?;
    if form.confirmed.is_none() {
        return confirm(
            &state,
            format!("Remove approver {} of {agent} on {name}?", form.user),
            "They no longer get the agent's cards, and their presses no longer count.",
            format!("/channels/{name}/approvers/remove"),
            &[("agent", agent.as_str()), ("user", &form.user)],
            "Remove approver",
        )
        .await;
    }
    let store = state.store.clone();
    blocking(move || Ok(manage::remove_approver(&store, &agent, &name, &form.user)?)).await?;
    Ok(done("approver-removed"))
}

pub(crate) async fn remove_sender(
    State(state): State<WebState>,
    Path(name): Path<String>,
    Form(form): Form<PersonForm>,
) -> PageResult {
    let agent = AgentName::new(&form.agent)?;
    if form.confirmed.is_none() {
        return confirm(
            &state,
            format!("Remove sender {} of {agent} on {name}?", form.user),
            "Their messages no longer reach the agent; writing again asks the approvers anew.",
            format!("/channels/{name}/senders/remove"),
            &[("agent", agent.as_str()), ("user", &form.user)],
            "Remove sender",
        )
        .await;
    }
    let store = state.store.clone();
    blocking(move || Ok(manage::disallow_sender(&store, &agent, &name, &form.user)?)).await?;
    Ok(done("sender-removed"))
}

#[derive(Deserialize)]
pub(crate) struct AccessForm {
    unknown_senders: String,
    access_agent: Option<String>,
}

pub(crate) async fn set_access(
    State(state): State<WebState>,
    Path(name): Path<String>,
    Form(form): Form<AccessForm>,
) -> PageResult {
    let mode: UnknownSenders = form
        .unknown_senders
        .parse()
        .map_err(PageError::BadRequest)?;
    let agent = match form.access_agent.as_deref().map(str::trim) {
        Some("") | None => None,
        Some(agent) => Some(AgentName::new(agent)?),
    };
    let store = state.store.clone();
    blocking(move || Ok(manage::set_access(&store, &name, Some(mode), Some(agent))?)).await?;
    Ok(done("saved"))
}

pub(crate) async fn confirm_remove(
    State(state): State<WebState>,
    Path(name): Path<String>,
) -> PageResult {
    let store = state.store.clone();
    let lookup = name.clone();
    let record = blocking(move || Ok(store.get_channel(&lookup)?)).await?;
    confirm(
        &state,
        format!("Remove channel {}?", record.name),
        "Its sealed credentials, linked chats, approvers and allowed senders go with it; cards already posted are no longer edited. The platform's app or bot itself is not touched.",
        format!("/channels/{}/remove", record.name),
        &[],
        &format!("Remove {}", record.name),
    )
    .await
}

pub(crate) async fn remove(State(state): State<WebState>, Path(name): Path<String>) -> PageResult {
    let store = state.store.clone();
    blocking(move || Ok(manage::remove_channel(&store, &name)?)).await?;
    Ok(done("removed"))
}
