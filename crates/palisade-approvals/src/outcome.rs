//! How a closed approval ended, in words every surface shows alike: a chat card's
//! last line, the status a person waiting on the agent's message reads.

use crate::kind::ApprovalKind;
use palisade_store::{Approval, ApprovalStatus};

/// How a closed approval ended, in one line.
pub fn outcome_line(approval: &Approval) -> String {
    let at = approval
        .decided_at_ms
        .map(|ms| format!(", {} UTC", clock_time(ms)))
        .unwrap_or_default();
    // One line whatever an approver wrote: a comment's line break must not start a
    // line that passes for the card's own ("✅ Approved by …").
    let by = crate::summary::one_line(approval.approver.as_deref().unwrap_or("someone"), 200);
    match approval.status {
        ApprovalStatus::Pending => String::from("Waiting for a decision"),
        ApprovalStatus::Approved => {
            let how = match approval.choice.as_deref() {
                Some("1h") => "Approved for 1 h",
                Some("always") => "Always allowed",
                _ => "Approved",
            };
            format!("✅ {how} by {by}{at}")
        }
        ApprovalStatus::Denied => match approval.comment.as_deref() {
            Some(comment) => format!(
                "❌ Denied by {by}{at}: \"{}\"",
                crate::summary::one_line(comment, 1000)
            ),
            None => format!("❌ Denied by {by}{at}"),
        },
        ApprovalStatus::TimedOut => format!("⌛ Expired, denied{at}"),
        ApprovalStatus::Cancelled => {
            if approval.kind == ApprovalKind::CredentialUse.as_str() {
                format!("⏹ Cancelled: the request is gone (the agent left or the gateway restarted){at}")
            } else {
                format!("⏹ Cancelled{at}")
            }
        }
    }
}

/// `HH:MM` of a Unix time in milliseconds, UTC.
pub fn clock_time(ms: i64) -> String {
    let seconds = ms.div_euclid(1000).rem_euclid(86_400);
    format!("{:02}:{:02}", seconds / 3600, (seconds % 3600) / 60)
}

/// When an approval ends, as a card says it: `HH:MM` when that is within the next 20
/// hours of `now_ms` (a person reads it as today's or tonight's), else with the date,
/// `2026-12-04 19:01` (an access request waits a day: 19:01 alone, read at 19:05,
/// looked already past). UTC.
pub fn expiry_time(ms: i64, now_ms: i64) -> String {
    if (0..20 * 3_600_000).contains(&(ms - now_ms)) {
        return clock_time(ms);
    }
    match time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)) {
        Ok(at) => format!(
            "{}-{:02}-{:02} {}",
            at.year(),
            u8::from(at.month()),
            at.day(),
            clock_time(ms)
        ),
        Err(_) => clock_time(ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outcome_is_one_line_whatever_the_comment() {
        let approval = Approval {
            id: "apr_abcdefghijkl".into(),
            kind: "tool_action".into(),
            agent: "mailer".parse().unwrap(),
            status: ApprovalStatus::Denied,
            title: String::new(),
            lines: Vec::new(),
            detail: String::new(),
            context: serde_json::Value::Null,
            created_at_ms: 0,
            expires_at_ms: 0,
            decided_at_ms: Some(0),
            approver: Some("Bo\nAdmin".into()),
            comment: Some("no\n✅ Approved by Ana\u{2028}x".into()),
            choice: None,
            approver_channel: None,
            approver_user: None,
            approver_name: None,
            granted_rule: None,
            holder: None,
            request_key: None,
        };
        let line = outcome_line(&approval);
        assert!(!line.contains(['\n', '\u{2028}']), "{line:?}");
        assert!(line.starts_with("❌ Denied by Bo Admin"), "{line:?}");
    }

    #[test]
    fn an_expiry_more_than_20_hours_away_has_its_date() {
        let now = 1_796_324_460_000; // 2026-12-03 19:01 UTC
        assert_eq!(expiry_time(now + 3_600_000, now), "20:01");
        assert_eq!(expiry_time(now + 24 * 3_600_000, now), "2026-12-04 19:01");
        assert_eq!(expiry_time(now - 60_000, now), "2026-12-03 19:00");
    }

    #[test]
    fn clock_time_is_utc_hours_and_minutes() {
        assert_eq!(clock_time(0), "00:00");
        assert_eq!(clock_time((14 * 3600 + 5 * 60) * 1000 + 999), "14:05");
    }
}
