//! Fake chat platforms on 127.0.0.1, speaking the documented wire formats, so the real
//! `palisade up` can be driven end to end without leaving the machine: a test plays
//! the people (writes messages, presses buttons) and reads what the bot did.
//!
//! - [`FakeTelegram`]: the Bot API (`getMe`, long-polled `getUpdates`, `sendMessage`,
//!   `editMessageText`, `answerCallbackQuery`) under `/bot<TOKEN>/METHOD`.

mod server;
mod telegram;

pub use telegram::{CallbackAnswer, FakeTelegram, TelegramMessage};
