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
    let by = approval.approver.as_deref().unwrap_or("someone");
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
            Some(comment) => format!("❌ Denied by {by}{at}: \"{comment}\""),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_time_is_utc_hours_and_minutes() {
        assert_eq!(clock_time(0), "00:00");
        assert_eq!(clock_time((14 * 3600 + 5 * 60) * 1000 + 999), "14:05");
    }
}
