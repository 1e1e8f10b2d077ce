//! The one trait every platform implements, and what flows through it.
//!
//! A channel receives (messages, button clicks, comments for a denial) and sends
//! (messages, approval cards, card edits). Everything it receives has been verified as
//! far as the platform allows (a Slack request's signature, a Discord interaction's
//! Ed25519 signature, Telegram updates fetched from the Bot API over TLS) and carries
//! the platform's user id; it is still untrusted input: the hub decides whether that
//! user may talk to an agent or decide an approval.

use crate::card::Card;
use futures_util::future::BoxFuture;
use palisade_approvals::Platform;
use tokio::sync::{mpsc, watch};

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
    #[error("{0}")]
    Platform(String),
    #[error("the channel is shutting down")]
    Stopped,
    /// The channel's own code failed (a panic, or its receive loop ended unasked);
    /// the hub starts it again.
    #[error("the channel stopped on an internal error ({0}); it is started again")]
    Crashed(String),
}

impl ChannelError {
    /// Whether retrying later could help.
    pub fn is_transient(&self) -> bool {
        match self {
            ChannelError::Http(e) => e.is_transient(),
            ChannelError::Platform(_) | ChannelError::Crashed(_) => true,
            ChannelError::Config(_) | ChannelError::Stopped => false,
        }
    }

    /// How long the platform asked to wait before trying again (a rate limit's
    /// `Retry-After`), bounded by [`crate::http::MAX_RETRY_AFTER`].
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            ChannelError::Http(crate::http::HttpError::Status { retry_after, .. }) => *retry_after,
            _ => None,
        }
    }
}

/// A platform user as the platform identified them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlatformUser {
    pub id: String,
    /// What the platform says the name is (shown in logs only: decisions record the
    /// name the approver was listed under).
    pub name: String,
}

/// A message someone wrote.
#[derive(Clone, Debug)]
pub struct Inbound {
    pub chat: String,
    /// The thread it belongs to, where the platform has threads.
    pub thread: Option<String>,
    pub user: PlatformUser,
    pub text: String,
    /// Whether the chat is a one-to-one conversation with the bot.
    pub direct: bool,
    /// Whether its text may be read as a typed command (`/approve …`): the sender's
    /// own words (not a message forwarded from someone else, not an inline bot's) and,
    /// where a command can name a bot (`/approve@name`), naming this one.
    pub may_command: bool,
}

/// How a click is answered, privately to the person who clicked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClickAnswer {
    /// Taken: a short confirmation.
    Done(String),
    /// Taken from a card's button or comment prompt: the confirmation and the card as
    /// it now reads (platforms that edit the pressed message in their answer use it:
    /// Discord's "update message").
    Decided { text: String, card: Box<Card> },
    /// Refused or not taken: why (only the clicker sees it).
    Refused(String),
    /// The clicker chose "deny with comment": ask them for the comment.
    AskComment { token: String, title: String },
}

/// Answers one click; each platform builds its own (answerCallbackQuery, an
/// interaction response, a Socket Mode acknowledgement…). Called exactly once.
pub type Responder = Box<dyn FnOnce(ClickAnswer) -> BoxFuture<'static, ()> + Send>;

/// What a channel passes to the hub.
pub enum Incoming {
    Message(Inbound),
    /// A button on a card was pressed.
    Click {
        /// The callback data as received (decoded and checked by the hub).
        data: String,
        user: PlatformUser,
        respond: Responder,
    },
    /// The comment for "deny with comment", matched by the platform module to the
    /// card and the same user.
    Comment {
        token: String,
        user: PlatformUser,
        text: String,
        respond: Responder,
    },
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Incoming::Message(m) => f.debug_tuple("Message").field(m).finish(),
            Incoming::Click { data, user, .. } => f
                .debug_struct("Click")
                .field("data", data)
                .field("user", user)
                .finish(),
            Incoming::Comment { token, user, .. } => f
                .debug_struct("Comment")
                .field("token", token)
                .field("user", user)
                .finish(),
        }
    }
}

/// Where a card was posted, for edits (stored as JSON with the card).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CardRef {
    pub chat: String,
    pub message: String,
}

pub trait Channel: Send + Sync + 'static {
    fn name(&self) -> &str;
    fn platform(&self) -> Platform;

    /// Receives until shutdown, passing what arrives to `inbox`. Returns an error when
    /// the connection fails; the hub starts it again after a back-off.
    fn run(
        &self,
        inbox: mpsc::Sender<Incoming>,
        shutdown: watch::Receiver<bool>,
    ) -> BoxFuture<'_, Result<(), ChannelError>>;

    fn send_message<'a>(
        &'a self,
        chat: &'a str,
        thread: Option<&'a str>,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), ChannelError>>;

    /// Posts `card` privately to `user_id` (a direct message from the bot).
    fn post_card<'a>(
        &'a self,
        user_id: &'a str,
        card: &'a Card,
    ) -> BoxFuture<'a, Result<CardRef, ChannelError>>;

    /// Edits a posted card in place (its buttons go once it is closed).
    fn update_card<'a>(
        &'a self,
        at: &'a CardRef,
        card: &'a Card,
    ) -> BoxFuture<'a, Result<(), ChannelError>>;

    /// Checks the credentials with the platform; who the bot is.
    fn check(&self) -> BoxFuture<'_, Result<String, ChannelError>>;

    /// Answers a request the platform made to `palisade up`'s HTTP endpoint for this
    /// channel (Slack's Events API and interactivity, Discord's interactions), after
    /// checking its signature. Channels without one answer 404.
    fn webhook<'a>(
        &'a self,
        headers: &'a http::HeaderMap,
        body: &'a [u8],
    ) -> BoxFuture<'a, WebhookReply> {
        let _ = (headers, body);
        Box::pin(async { WebhookReply::text(404, "this channel has no HTTP endpoint") })
    }

    /// Sends `text` privately to `user_id` (notices to an agent's owners). Where a
    /// user's id also names the direct chat with them (Telegram, Slack), this is
    /// [`Channel::send_message`].
    fn notify_user<'a>(
        &'a self,
        user_id: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), ChannelError>> {
        self.send_message(user_id, None, text)
    }
}

/// What an HTTP endpoint answers a platform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookReply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl WebhookReply {
    pub fn text(status: u16, text: &str) -> WebhookReply {
        WebhookReply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: text.as_bytes().to_vec(),
        }
    }

    pub fn json(status: u16, value: &serde_json::Value) -> WebhookReply {
        WebhookReply {
            status,
            content_type: "application/json",
            body: value.to_string().into_bytes(),
        }
    }

    /// An empty 200: the platform's acknowledgement.
    pub fn ok() -> WebhookReply {
        WebhookReply {
            status: 200,
            content_type: "text/plain; charset=utf-8",
            body: Vec::new(),
        }
    }
}

impl ClickAnswer {
    /// What the clicker is told, in one line.
    pub fn text(&self) -> &str {
        match self {
            ClickAnswer::Done(text)
            | ClickAnswer::Refused(text)
            | ClickAnswer::Decided { text, .. } => text,
            ClickAnswer::AskComment { .. } => "",
        }
    }
}

/// Waits for a shutdown signal.
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Hands `incoming` to the host within `wait`, or drops it, logged at most once a
/// second: a reader of a platform's socket (Slack's Socket Mode, Discord's gateway)
/// must go on reading, to answer its acks, pings and heartbeats, even when the host is
/// too busy to take events. `false` once the host has stopped taking any.
pub(crate) async fn hand_over(
    inbox: &mpsc::Sender<Incoming>,
    incoming: Incoming,
    wait: std::time::Duration,
    channel: &str,
) -> bool {
    match inbox.send_timeout(incoming, wait).await {
        Ok(()) => true,
        Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
            palisade_policy::budgeted!(
                warn,
                channel,
                "the host is too busy to take an event from the platform's socket; dropped"
            );
            true
        }
        Err(mpsc::error::SendTimeoutError::Closed(_)) => false,
    }
}
