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
}

impl ChannelError {
    /// Whether retrying later could help.
    pub fn is_transient(&self) -> bool {
        match self {
            ChannelError::Http(e) => e.is_transient(),
            ChannelError::Platform(_) => true,
            ChannelError::Config(_) | ChannelError::Stopped => false,
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
}

/// How a click is answered, privately to the person who clicked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClickAnswer {
    /// Taken: a short confirmation.
    Done(String),
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

/// Waits for a shutdown signal.
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
