//! What a person can decide, and the buttons a card shows for it.
//!
//! [`Choice`] is the decision; a comment travels beside it (a denial's comment reaches
//! the agent in its error). [`Button`] is what a card offers: "deny with comment" is a
//! button that asks for the comment first and then decides [`Choice::Deny`]. Each has a
//! one-letter code for platforms whose buttons carry little data (Telegram: 64 bytes).

use serde::Serialize;

/// Longest comment kept with a decision.
pub const MAX_COMMENT_CHARS: usize = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Choice {
    /// This one request (or action) goes ahead.
    Once,
    /// This request, and the same host + method + path for this agent, for one hour.
    ForHour,
    /// From now on the same host + method + path for this agent is allowed (a visible,
    /// revocable rule).
    Always,
    Deny,
}

impl Choice {
    /// The stored spelling, also what `/approve ID once|1h|always` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Choice::Once => "once",
            Choice::ForHour => "1h",
            Choice::Always => "always",
            Choice::Deny => "deny",
        }
    }

    pub fn approves(self) -> bool {
        self != Choice::Deny
    }

    /// How a decided card says it ("approved once", "approved for 1 h").
    pub fn past_tense(self) -> &'static str {
        match self {
            Choice::Once => "Approved",
            Choice::ForHour => "Approved for 1 h",
            Choice::Always => "Always allowed",
            Choice::Deny => "Denied",
        }
    }
}

impl std::str::FromStr for Choice {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            // No empty spelling: a form or call that names no choice approves nothing.
            "once" | "approve" => Ok(Choice::Once),
            "1h" | "hour" | "for-1h" | "for_1h" => Ok(Choice::ForHour),
            "always" => Ok(Choice::Always),
            "deny" => Ok(Choice::Deny),
            _ => Err(format!(
                "{:?} is not a choice: use once, 1h, always or deny",
                text.chars().take(40).collect::<String>()
            )),
        }
    }
}

/// A button on an approval card.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Button {
    Once,
    ForHour,
    Always,
    Deny,
    /// Asks for a comment, then denies with it.
    DenyWithComment,
}

impl Button {
    pub const ALL: [Button; 5] = [
        Button::Once,
        Button::ForHour,
        Button::Always,
        Button::Deny,
        Button::DenyWithComment,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Button::Once => "Approve once",
            Button::ForHour => "Approve for 1 h",
            Button::Always => "Always allow",
            Button::Deny => "Deny",
            Button::DenyWithComment => "Deny with comment",
        }
    }

    /// One letter for callback data.
    pub fn code(self) -> char {
        match self {
            Button::Once => 'o',
            Button::ForHour => 'h',
            Button::Always => 'a',
            Button::Deny => 'd',
            Button::DenyWithComment => 'c',
        }
    }

    pub fn from_code(code: char) -> Option<Button> {
        Button::ALL.into_iter().find(|b| b.code() == code)
    }

    /// The decision the button makes (a comment button denies once it has the comment).
    pub fn choice(self) -> Choice {
        match self {
            Button::Once => Choice::Once,
            Button::ForHour => Choice::ForHour,
            Button::Always => Choice::Always,
            Button::Deny | Button::DenyWithComment => Choice::Deny,
        }
    }

    /// The buttons a card for `kind` shows.
    pub fn for_kind(kind: crate::ApprovalKind) -> Vec<Button> {
        Button::ALL
            .into_iter()
            .filter(|b| kind.offers(b.choice()))
            .collect()
    }

    /// Whether the button approves (cards style it as primary, the others as danger).
    pub fn approves(self) -> bool {
        self.choice().approves()
    }
}

/// A comment as kept: trimmed, control characters (line breaks aside) removed, at most
/// [`MAX_COMMENT_CHARS`]. `None` when nothing is left.
pub fn clean_comment(text: &str) -> Option<String> {
    let cleaned: String = text
        .trim()
        .chars()
        .filter(|c| *c == '\n' || !c.is_control())
        .filter(|c| !crate::summary::is_invisible(*c))
        .take(MAX_COMMENT_CHARS)
        .collect();
    let cleaned = cleaned.trim().to_string();
    (!cleaned.is_empty()).then_some(cleaned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_spellings_round_trip() {
        for button in Button::ALL {
            assert_eq!(Button::from_code(button.code()), Some(button));
        }
        for choice in [Choice::Once, Choice::ForHour, Choice::Always, Choice::Deny] {
            assert_eq!(choice.as_str().parse::<Choice>(), Ok(choice));
        }
        assert!("sometimes".parse::<Choice>().is_err());
        assert!("".parse::<Choice>().is_err());
        assert!(" ".parse::<Choice>().is_err());
        assert_eq!(
            Button::for_kind(crate::ApprovalKind::ToolAction),
            vec![Button::Once, Button::Deny, Button::DenyWithComment]
        );
    }

    #[test]
    fn comments_are_cleaned_and_bounded() {
        assert_eq!(
            clean_comment("  use the\u{202e} team list\u{7}  ").as_deref(),
            Some("use the team list")
        );
        assert_eq!(clean_comment(" \n "), None);
        assert_eq!(
            clean_comment(&"x".repeat(5000)).map(|c| c.len()),
            Some(MAX_COMMENT_CHARS)
        );
    }
}
