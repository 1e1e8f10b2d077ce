//! Which process holds a request waiting for approval, so one that died can be told
//! from one still waiting. A holder is `PID@START`, where START is the process's start
//! time in clock ticks since boot (`/proc/PID/stat`, field 22): a pid reused by another
//! process after a crash does not look alive.

use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Holder(String);

impl Holder {
    /// This process.
    pub fn this_process() -> Holder {
        let pid = std::process::id();
        Holder(format!("{pid}@{}", start_ticks(pid).unwrap_or(0)))
    }

    /// A holder as recorded (`PID@START`).
    pub fn recorded(text: &str) -> Holder {
        Holder(text.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the holder named by `text` is still running. Unreadable text counts as
    /// gone (it cannot be waiting for anything we could deliver).
    pub fn is_alive(text: &str) -> bool {
        let Some((pid, start)) = text.split_once('@') else {
            return false;
        };
        let (Ok(pid), Ok(start)) = (pid.parse::<u32>(), start.parse::<u64>()) else {
            return false;
        };
        start_ticks(pid) == Some(start)
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces; the fields
    // after the last ')' start with field 3.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_others_are_not() {
        let me = Holder::this_process();
        assert!(Holder::is_alive(me.as_str()));
        let (pid, start) = me.as_str().split_once('@').unwrap();
        let restarted = format!("{pid}@{}", start.parse::<u64>().unwrap() + 1);
        assert!(!Holder::is_alive(&restarted));
        assert!(!Holder::is_alive("garbage"));
        assert!(!Holder::is_alive("4194304999@1"));
    }
}
