//! Fake chat platforms on 127.0.0.1, speaking the documented wire formats, so the real
//! `palisade up` can be driven end to end without leaving the machine: a test plays
//! the people (writes messages, presses buttons) and reads what the bot did.
//!
//! - [`FakeTelegram`]: the Bot API (`getMe`, long-polled `getUpdates`, `sendMessage`,
//!   `editMessageText`, `answerCallbackQuery`) under `/bot<TOKEN>/METHOD`.
//! - [`FakeSlack`]: the Web API and Socket Mode (envelopes and acknowledgements), and
//!   the payloads and signatures of the Events API over HTTPS.

mod server;
mod slack;
mod telegram;
mod ws;

pub use slack::{
    slack_dm, slack_signature, FakeSlack, SlackEphemeral, SlackMessage, SlackView, SLACK_BOT_USER,
};
pub use telegram::{CallbackAnswer, FakeTelegram, TelegramMessage};
