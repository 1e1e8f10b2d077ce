//! Fake chat platforms on 127.0.0.1, speaking the documented wire formats, so the real
//! `palisade up` can be driven end to end without leaving the machine: a test plays
//! the people (writes messages, presses buttons) and reads what the bot did.
//!
//! - [`FakeTelegram`]: the Bot API (`getMe`, long-polled `getUpdates`, `sendMessage`,
//!   `editMessageText`, `answerCallbackQuery`) under `/bot<TOKEN>/METHOD`.
//! - [`FakeSlack`]: the Web API and Socket Mode (envelopes and acknowledgements), and
//!   the payloads and signatures of the Events API over HTTPS.
//! - [`FakeDiscord`]: REST and the gateway (hello, identify, heartbeats, resume,
//!   dispatches), interaction callbacks, and Ed25519-signed HTTP interactions.

mod discord;
mod server;
mod slack;
mod telegram;
mod ws;

pub use discord::{
    discord_dm, DiscordCallback, DiscordMessage, FakeDiscord, DISCORD_APPLICATION,
    DISCORD_BOT_USER, DISCORD_HEARTBEAT_MS,
};
pub use slack::{
    slack_dm, slack_signature, FakeSlack, SlackEphemeral, SlackMessage, SlackView, SLACK_BOT_USER,
};
pub use telegram::{CallbackAnswer, FakeTelegram, TelegramMessage};
