//! An approval card as every platform shows it: what is asked, by which agent, the
//! summary lines, the buttons while it is pending, and once it is closed the one line
//! that says how it ended ("Approved by Ana (Slack, team) at 14:05", "Expired, denied").
//! Platform modules only render this; they never decide what a card says.
//!
//! The summary marks hidden characters where they are (`al⟨U+202E⟩ice@example.com`) and
//! says so in its first line; a card lifts that line out of the summary's lines into
//! [`Card::warning`], which is always shown, so no platform's length limit drops it.
//!
//! Buttons carry [`CallbackData`]: a version, the card's opaque token and the button's
//! one-letter code (`v1:TOKEN:o`, 20 bytes, under Telegram's 64-byte limit). The token
//! names one card this host posted; the approval id alone would let a click made on
//! one platform be replayed on another.

pub use palisade_approvals::{clock_time, expiry_time, outcome_line};
use palisade_approvals::{Approval, ApprovalKind, ApprovalStatus, Button};
use rand::Rng;

/// Characters of the detail a card carries (platform limits are around 3-4 k).
const CARD_DETAIL_CHARS: usize = 1500;
/// Characters of the title a card shows (the summary's title is already bounded; this
/// leaves room for the rest on every platform).
const CARD_TITLE_CHARS: usize = 500;
/// Most characters of a request's path in what a lasting choice lets through.
const SCOPE_PATH_CHARS: usize = 200;

/// What sets each of a summary's lines apart on a card.
pub const GUTTER: &str = "│ ";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Card {
    pub approval_id: String,
    pub token: String,
    pub heading: String,
    pub title: String,
    /// That the request carries hidden characters (marked where they are), when it does:
    /// shown under the title on every platform, whatever else is left out.
    pub warning: Option<String>,
    /// The summary's lines: built from what the agent sent, so as long as it likes;
    /// each behind [`GUTTER`].
    pub lines: Vec<String>,
    /// What "Always allow" and "Approve for 1 h" would let through, when offered. Not
    /// one of `lines`: a card cut to a platform's limit keeps it whatever the agent's
    /// lines take.
    pub scope: Option<String>,
    /// The request in full (bounded), for "show more" where a platform has it.
    pub detail: String,
    /// Empty once the approval is closed.
    pub buttons: Vec<Button>,
    /// Set once the approval is closed.
    pub outcome: Option<String>,
    pub expires_at_ms: i64,
}

impl Card {
    pub fn new(approval: &Approval, token: &str) -> Card {
        let kind = approval.kind.parse::<ApprovalKind>().ok();
        let heading = format!(
            "{} · agent {}",
            kind.map(ApprovalKind::label).unwrap_or("Approval"),
            approval.agent
        );
        let pending = approval.status == ApprovalStatus::Pending;
        let mut buttons = match (pending, kind) {
            (true, Some(kind)) => Button::for_kind(kind),
            (true, None) => vec![Button::Once, Button::Deny, Button::DenyWithComment],
            (false, _) => Vec::new(),
        };
        // A request that cannot be written as exact patterns (a path with
        // `;parameters`) is offered "once" only: the engine refuses the lasting
        // choices, and a card must not offer what it cannot do (review).
        if buttons.contains(&Button::Always)
            && palisade_approvals::engine::exact_patterns(approval).is_err()
        {
            buttons.retain(|button| !matches!(button, Button::Always | Button::ForHour));
        }
        // What a lasting choice would let through, before anyone presses it.
        let mut scope = None;
        if buttons.contains(&Button::Always) {
            let field = |name: &str| approval.context.get(name).and_then(|v| v.as_str());
            let host = field("host").and_then(|host| {
                palisade_approvals::engine::host_with_port(host, &approval.context)
            });
            if let (Some(method), Some(host), Some(path)) = (field("method"), host, field("path")) {
                // The path is the agent's: a long one would crowd out the card.
                let path = cut(path, SCOPE_PATH_CHARS);
                scope = Some(format!(
                    "\"Always allow\" and \"Approve for 1 h\" let {method} {host}{path} through for agent {} without asking (any query string and any body, that port only); `palisade rules list` shows the rule.",
                    approval.agent
                ));
            }
        }
        // The summary's notices lead its lines (at most two: hidden characters, then
        // look-alike names); they become the warning, which no length limit drops.
        let leading = palisade_approvals::summary::leading_notices(&approval.lines);
        let (notices, lines) = approval.lines.split_at(leading);
        // The summary's lines are built from what the agent or a stranger sent: each
        // screen line of them behind a gutter, so none passes for the card's own (a
        // forged "✅ Approved by Ana" or "ID apr_…" line above the real ones).
        let lines = lines
            .iter()
            .flat_map(|line| line.split('\n'))
            .map(|line| format!("{GUTTER}{}", line.trim_end_matches('\r')))
            .collect();
        Card {
            approval_id: approval.id.clone(),
            token: token.to_string(),
            heading,
            // One line: the next lines of a card are its own.
            title: cut(&approval.title.replace(['\n', '\r'], " "), CARD_TITLE_CHARS),
            warning: (!notices.is_empty()).then(|| notices.join("\n")),
            lines,
            scope,
            detail: approval.detail.chars().take(CARD_DETAIL_CHARS).collect(),
            buttons,
            outcome: (!pending).then(|| outcome_line(approval)),
            expires_at_ms: approval.expires_at_ms,
        }
    }

    /// `Expires 19:01 UTC, then denied. ID apr_…`, with the date when the expiry is not
    /// within the next 20 hours.
    pub fn expiry_line(&self) -> String {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        format!(
            "Expires {} UTC, then denied. ID {}",
            expiry_time(self.expires_at_ms, now_ms),
            self.approval_id
        )
    }

    /// The typed commands that decide this card, its choices only:
    /// `Or reply /approve ID once|1h|always, /deny ID [comment]`.
    pub fn commands_line(&self) -> String {
        let id = &self.approval_id;
        let approvals: Vec<&str> = self
            .buttons
            .iter()
            .filter(|button| button.approves())
            .map(|button| button.choice().as_str())
            .collect();
        let deny = match self.buttons.contains(&Button::DenyWithComment) {
            true => format!("/deny {id} [comment]"),
            false => format!("/deny {id}"),
        };
        match approvals.is_empty() {
            true => format!("Or reply {deny}"),
            false => format!("Or reply /approve {id} {}, {deny}", approvals.join("|")),
        }
    }

    /// The card as plain text (fallbacks, notifications), whole.
    pub fn text(&self) -> String {
        self.text_within(usize::MAX, &|text| text.chars().count())
    }

    /// The card as plain text in at most `max` characters as `measure` counts them
    /// (a platform's escaping can lengthen text). The heading, the title, the warning
    /// about hidden characters, what a lasting choice lets through and the expiry or
    /// outcome are always there; the
    /// summary's lines, which the agent's request decides, fill what is left, and those
    /// left out are counted on the card (see [`fit_lines`]), so no line the agent
    /// made long can push the rest off a card unseen.
    pub fn text_within(&self, max: usize, measure: &dyn Fn(&str) -> usize) -> String {
        let footer = match &self.outcome {
            Some(outcome) => outcome.clone(),
            None => format!("{}\n{}", self.expiry_line(), self.commands_line()),
        };
        let mut head = format!("{}\n{}", self.heading, self.title);
        if let Some(warning) = &self.warning {
            head.push('\n');
            head.push_str(warning);
        }
        if let Some(scope) = &self.scope {
            head.push('\n');
            head.push_str(scope);
        }
        // The footer (expiry, id, commands, or the outcome) is never cut; a head that
        // leaves it no room (a platform's escaping doubles what the agent wrote) is.
        let notice_room = match self.lines.is_empty() {
            true => 0,
            false => measure(&lines_notice(self.lines.len())) + 1,
        };
        let head_room = max.saturating_sub(measure(&footer) + 2 + notice_room);
        if measure(&head) > head_room {
            head = fit_chars(&head, head_room, measure);
        }
        let fixed = measure(&head) + measure(&footer) + 2;
        let lines = fit_lines(&self.lines, max.saturating_sub(fixed), measure);
        let mut text = head;
        for line in &lines {
            text.push('\n');
            text.push_str(line);
        }
        text.push_str("\n\n");
        text.push_str(&footer);
        text
    }
}

/// `lines` in order while they fit in `budget` characters (`measure` of each, plus one
/// for its line break); when some do not, the last kept is followed by a line saying
/// how many were left out and where to read them all.
pub fn fit_lines(lines: &[String], budget: usize, measure: &dyn Fn(&str) -> usize) -> Vec<String> {
    let total: usize = lines.iter().map(|line| measure(line) + 1).sum();
    if total <= budget {
        return lines.to_vec();
    }
    let notice = lines_notice;
    let room = budget.saturating_sub(measure(&notice(lines.len())) + 1);
    let mut kept = Vec::new();
    let mut used = 0;
    for line in lines {
        let cost = measure(line) + 1;
        if used + cost > room {
            break;
        }
        used += cost;
        kept.push(line.clone());
    }
    let left = lines.len() - kept.len();
    kept.push(notice(left));
    kept
}

/// The line that says how many of a card's lines it leaves out, and where they are.
fn lines_notice(left: usize) -> String {
    format!("… {left} more line(s) not shown here: the web UI's Approvals page shows them all")
}

/// The longest cut of `text` (see [`cut`]) that `measure` finds within `max`.
fn fit_chars(text: &str, max: usize, measure: &dyn Fn(&str) -> usize) -> String {
    let (mut fits, mut over) = (0, text.chars().count());
    while over - fits > 1 {
        let middle = (fits + over) / 2;
        match measure(&cut(text, middle)) <= max {
            true => fits = middle,
            false => over = middle,
        }
    }
    cut(text, fits)
}

/// `text` cut to `chars` characters, with `…` when cut.
pub fn cut(text: &str, chars: usize) -> String {
    if text.chars().count() <= chars {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(chars.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// A new card token: 16 characters of lowercase base32 (80 random bits).
pub fn new_token() -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut rng = rand::rngs::OsRng;
    (0..16)
        .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
        .collect()
}

/// What a button carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallbackData {
    pub token: String,
    pub button: Button,
}

impl CallbackData {
    pub fn encode(token: &str, button: Button) -> String {
        format!("v1:{token}:{}", button.code())
    }

    /// `None` for anything this host did not make (wrong version, shape or length).
    pub fn decode(data: &str) -> Option<CallbackData> {
        if data.len() > 64 {
            return None;
        }
        let mut parts = data.split(':');
        let (Some("v1"), Some(token), Some(code), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let valid_token = token.len() == 16
            && token
                .bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b));
        let mut chars = code.chars();
        let (Some(code), None) = (chars.next(), chars.next()) else {
            return None;
        };
        if !valid_token {
            return None;
        }
        Some(CallbackData {
            token: token.to_string(),
            button: Button::from_code(code)?,
        })
    }
}

/// Approvals for the renderers' tests: a pending one with `summary` as its text.
#[cfg(test)]
pub(crate) fn pending_approval(summary: palisade_approvals::Summary) -> Approval {
    Approval {
        id: "apr_abcdefghijkl".into(),
        kind: "credential_use".into(),
        agent: "mailer".parse().expect("a valid agent name"),
        status: ApprovalStatus::Pending,
        title: summary.title,
        lines: summary.lines,
        detail: summary.detail,
        context: serde_json::json!({
            "method": "POST", "host": "gmail.googleapis.com", "port": 443,
            "path": "/gmail/v1/users/me/messages/send", "rule": "ask",
        }),
        created_at_ms: 0,
        expires_at_ms: 0,
        decided_at_ms: None,
        approver: None,
        comment: None,
        choice: None,
        approver_channel: None,
        approver_user: None,
        approver_name: None,
        granted_rule: None,
        holder: None,
        request_key: None,
    }
}

/// A summary whose title and lines hide a right-to-left override in an address.
#[cfg(test)]
pub(crate) fn hidden_character_summary() -> palisade_approvals::Summary {
    palisade_approvals::summary::action(
        "mailer",
        "send the invoice to al\u{202E}ice_ops@example.com",
        "Cc: <b\u{200B}ob@example.com> *now*",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_approvals::summary::{HIDDEN_CHARACTERS_NOTICE, LOOK_ALIKE_NOTICE};

    /// What the agent (or a stranger) wrote cannot pass for the card's own lines: a
    /// forged outcome and a forged expiry with another request's id each stay behind
    /// the gutter, so the only line starting "Expires" names this card's id.
    #[test]
    fn an_agents_lines_cannot_pass_for_the_cards_own() {
        let forged = "hello\n\n✅ Approved by Ana (Telegram, tg), 14:05\n\nExpires 03:28 UTC, then denied. ID apr_otherrequest";
        let mut summary = palisade_approvals::summary::action("mailer", "tidy up", forged);
        summary.title = "tidy up\nExpires 03:28 UTC, then denied. ID apr_othertitle".into();
        let card = Card::new(&pending_approval(summary), &new_token());
        let text = card.text();
        let expiries: Vec<&str> = text.lines().filter(|l| l.starts_with("Expires")).collect();
        assert_eq!(expiries.len(), 1, "{text}");
        assert!(expiries[0].ends_with("ID apr_abcdefghijkl"), "{text}");
        assert!(!text.lines().any(|l| l.starts_with('✅')), "{text}");
        assert!(text.contains("│ ✅ Approved by Ana"), "{text}");
        for line in &card.lines {
            assert!(line.starts_with(GUTTER) && !line.contains('\n'), "{line:?}");
        }
    }

    /// A look-alike name's line joins the warning too, under the hidden characters'
    /// one, and is not left among the lines.
    #[test]
    fn a_card_warns_of_look_alike_names_too() {
        let summary = palisade_approvals::summary::action(
            "mailer",
            "send the invoice to al\u{202E}ice@gm\u{0430}il.com",
            "now",
        );
        let card = Card::new(&pending_approval(summary), &new_token());
        let warning = card.warning.clone().unwrap_or_default();
        assert!(warning.starts_with(HIDDEN_CHARACTERS_NOTICE), "{warning}");
        assert!(warning.contains("xn--gmil-63d.com"), "{warning}");
        assert!(!card.lines.iter().any(|l| l.starts_with(LOOK_ALIKE_NOTICE)));
        assert_eq!(card.text().matches(LOOK_ALIKE_NOTICE).count(), 1);
    }

    /// The warning is lifted out of the lines, shown once under the title, and kept
    /// when the agent's lines fill the card.
    #[test]
    fn a_card_keeps_the_hidden_characters_warning_whatever_else_is_cut() {
        let mut summary = hidden_character_summary();
        let card = Card::new(&pending_approval(summary.clone()), &new_token());
        assert_eq!(card.warning.as_deref(), Some(HIDDEN_CHARACTERS_NOTICE));
        assert!(!card.lines.iter().any(|l| l == HIDDEN_CHARACTERS_NOTICE));
        let text = card.text();
        assert_eq!(text.matches(HIDDEN_CHARACTERS_NOTICE).count(), 1, "{text}");
        assert!(text.contains("al⟨U+202E⟩ice_ops@example.com"), "{text}");

        summary
            .lines
            .extend((0..40).map(|n| format!("{n}: {}", "x".repeat(280))));
        let card = Card::new(&pending_approval(summary), &new_token());
        let text = card.text_within(1000, &|t| t.chars().count());
        assert!(text.chars().count() <= 1000);
        assert!(text.contains(HIDDEN_CHARACTERS_NOTICE), "{text}");
        assert!(text.contains("not shown here"), "{text}");

        // No warning on a card with nothing hidden.
        let plain = palisade_approvals::summary::action("mailer", "send it", "to alice");
        let card = Card::new(&pending_approval(plain), &new_token());
        assert_eq!(card.warning, None);
    }

    #[test]
    fn callback_data_round_trips_and_refuses_anything_else() {
        let token = new_token();
        let data = CallbackData::encode(&token, Button::ForHour);
        assert!(data.len() <= 64);
        assert_eq!(
            CallbackData::decode(&data),
            Some(CallbackData {
                token: token.clone(),
                button: Button::ForHour
            })
        );
        for bad in [
            "".to_string(),
            "v2:aaaaaaaaaaaaaaaa:o".into(),
            "v1:aaaaaaaaaaaaaaaa:z".into(),
            "v1:aaaaaaaaaaaaaaa:o".into(),
            "v1:AAAAAAAAAAAAAAAA:o".into(),
            "v1:aaaaaaaaaaaaaaaa:oo".into(),
            "v1:aaaaaaaaaaaaaaaa:o:x".into(),
            "v1:apr_aaaaaaaaaaaa:o".into(),
            "x".repeat(100),
        ] {
            assert_eq!(CallbackData::decode(&bad), None, "{bad}");
        }
    }

    #[test]
    fn a_card_offering_a_lasting_choice_says_what_it_would_let_through() {
        let approval = pending_approval(palisade_approvals::Summary {
            title: "Send e-mail".into(),
            lines: vec!["To: bob@example.com".into()],
            detail: String::new(),
        });
        let card = Card::new(&approval, &new_token());
        assert!(card.buttons.contains(&Button::Always));
        let said = card.text();
        assert!(
            said.contains("POST gmail.googleapis.com:443/gmail/v1/users/me/messages/send through for agent mailer")
                && said.contains("any query string and any body, that port only"),
            "{said}"
        );
        // An action an agent asks about has no lasting choice, and says none.
        let mut action = approval.clone();
        action.kind = "tool_action".into();
        let card = Card::new(&action, &new_token());
        assert!(!card.text().contains("Always allow"));

        // However long the agent made the summary, a card cut to a platform's limit
        // keeps what a lasting choice lets through, the expiry and the id, and says how
        // many lines it left out.
        let mut long = approval.clone();
        long.lines = (0..20)
            .map(|n| format!("To: person_{n} <{}@corp.example>", "x".repeat(250)))
            .collect();
        long.lines.push("Bcc: exfil@evil.example".into());
        let card = Card::new(&long, &new_token());
        let text = card.text_within(2000, &|t| t.chars().count());
        assert!(text.chars().count() <= 2000, "{}", text.chars().count());
        assert!(text.contains("through for agent mailer"), "{text}");
        assert!(text.contains("ID apr_abcdefghijkl"), "{text}");
        assert!(text.contains("more line(s) not shown here"), "{text}");
        assert!(!text.contains("exfil@evil.example"));
        // Nothing is left out when it fits.
        assert!(card.text().contains("Bcc: exfil@evil.example"));
        assert!(!card.text().contains("not shown here"));
    }

    /// However long the agent made the path and however a platform's escaping
    /// lengthens it, the card keeps its expiry, id and commands: the path is cut in
    /// what a lasting choice lets through, and a head still too long is cut, never
    /// the footer. (A 1,200-underscore path, doubled by Discord's escaping, cut the
    /// whole card down to underscores.)
    #[test]
    fn a_long_path_never_pushes_the_footer_off_a_card() {
        let mut approval = pending_approval(palisade_approvals::Summary {
            title: "Send".into(),
            lines: vec!["To: mallory@evil.example".into()],
            detail: String::new(),
        });
        approval.context["path"] = format!("/{}", "_".repeat(1200)).into();
        let card = Card::new(&approval, &new_token());
        let scope = card.scope.clone().unwrap_or_default();
        assert!(scope.chars().count() < 500, "{scope}");
        let doubled = |text: &str| text.chars().count() + text.matches('_').count();
        approval.title = "_".repeat(500);
        let card = Card::new(&approval, &new_token());
        let text = card.text_within(1000, &doubled);
        assert!(doubled(&text) <= 1000, "{}", doubled(&text));
        assert!(text.contains("ID apr_abcdefghijkl"), "{text}");
        assert!(text.contains("Or reply /approve"), "{text}");
    }

    /// A card names only the typed commands its own choices allow, and an expiry a day
    /// away with its date (an access request's 24 h read as already past).
    #[test]
    fn a_card_offers_its_own_choices_and_dates_a_far_expiry() {
        let summary = || palisade_approvals::Summary {
            title: "Access".into(),
            lines: Vec::new(),
            detail: String::new(),
        };
        let card = Card::new(&pending_approval(summary()), &new_token());
        assert!(
            card.text()
                .contains("Or reply /approve apr_abcdefghijkl once|1h|always, /deny apr_abcdefghijkl [comment]"),
            "{}",
            card.text()
        );
        // A path no exact pattern can name (`;parameters`) is approved once only: the
        // card offers no lasting choice the engine would refuse (review).
        let mut with_parameters = pending_approval(summary());
        with_parameters.context["path"] = "/b;p=1".into();
        let card = Card::new(&with_parameters, &new_token());
        assert!(
            !card.buttons.contains(&Button::Always) && !card.buttons.contains(&Button::ForHour),
            "{:?}",
            card.buttons
        );
        assert!(card.buttons.contains(&Button::Once), "{:?}", card.buttons);
        let text = card.text();
        assert!(
            text.contains("/approve apr_abcdefghijkl once, /deny"),
            "{text}"
        );
        assert!(!text.contains("Always allow"), "{text}");
        let mut access = pending_approval(summary());
        access.kind = "access_request".into();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        access.expires_at_ms = now + 24 * 3_600_000;
        let card = Card::new(&access, &new_token());
        let text = card.text();
        assert!(
            text.contains("/approve apr_abcdefghijkl once, /deny"),
            "{text}"
        );
        assert!(!text.contains("1h") && !text.contains("always"), "{text}");
        assert!(
            text.contains(&format!(
                "Expires {} UTC",
                expiry_time(access.expires_at_ms, now)
            )) && expiry_time(access.expires_at_ms, now).len() == "2026-12-04 19:01".len(),
            "{text}"
        );
    }
}
