//! The web admin's sessions: one per login, each with its own random token (the cookie's
//! value), so a stolen cookie is worth only as long as that one session lives.
//!
//! Every use of a one-time login link starts a session ([`AdminSessions::start`]). A
//! session ends when it is logged out ([`AdminSessions::end`]), after [`IDLE_EXPIRY`]
//! without a request, [`ABSOLUTE_EXPIRY`] after it started whatever its use, when
//! [`MAX_SESSIONS`] newer ones have started (the oldest goes first), or when the host
//! stops (sessions live in memory only). Each session also remembers the local user
//! whose browser logged in, so the web UI can refuse it on anyone else's connections.
//!
//! Time comes from a [`SessionClock`]: the monotonic clock, plus an offset only a test
//! moves, so expiry is tested without sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A session with no request for this long is over.
pub const IDLE_EXPIRY: Duration = Duration::from_secs(12 * 3600);
/// A session is over this long after its login, however busy.
pub const ABSOLUTE_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);
/// At most this many sessions live at once; a login past it ends the oldest.
pub const MAX_SESSIONS: usize = 16;

/// The time sessions go by: monotonic, moved forward only by tests.
#[derive(Clone, Debug, Default)]
pub struct SessionClock {
    offset_seconds: Arc<AtomicU64>,
}

impl SessionClock {
    pub fn now(&self) -> Instant {
        Instant::now() + Duration::from_secs(self.offset_seconds.load(Ordering::SeqCst))
    }

    /// Moves this clock (and every session that reads it) `by` into the future.
    pub fn advance(&self, by: Duration) {
        self.offset_seconds
            .fetch_add(by.as_secs(), Ordering::SeqCst);
    }
}

struct Session {
    token: String,
    /// The local user whose browser logged in, when the login came from this machine.
    uid: Option<u32>,
    started: Instant,
    last_used: Instant,
}

impl Session {
    fn live(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last_used) < IDLE_EXPIRY
            && now.saturating_duration_since(self.started) < ABSOLUTE_EXPIRY
    }
}

/// The live sessions, oldest first.
#[derive(Default)]
pub struct AdminSessions {
    sessions: Mutex<Vec<Session>>,
    clock: SessionClock,
}

impl std::fmt::Debug for AdminSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSessions")
            .field("live", &self.lock().len())
            .finish()
    }
}

impl AdminSessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Session>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn clock(&self) -> &SessionClock {
        &self.clock
    }

    /// A new session for a login by local user `uid` (`None`: from another machine);
    /// its token, to be the cookie's value.
    pub fn start(&self, uid: Option<u32>) -> String {
        let now = self.clock.now();
        let token = crate::api::random_token();
        let mut sessions = self.lock();
        sessions.retain(|session| session.live(now));
        if sessions.len() >= MAX_SESSIONS {
            let excess = sessions.len() + 1 - MAX_SESSIONS;
            sessions.drain(..excess);
        }
        sessions.push(Session {
            token: token.clone(),
            uid,
            started: now,
            last_used: now,
        });
        token
    }

    /// Whether `token` names a live session that `allowed` accepts (it is given the
    /// user the session is bound to); if so, the session counts as used now.
    pub fn check(&self, token: &str, allowed: impl FnOnce(Option<u32>) -> bool) -> bool {
        let now = self.clock.now();
        let mut sessions = self.lock();
        sessions.retain(|session| session.live(now));
        // Compare against every session so the time taken does not say which matched.
        let found =
            sessions.iter().enumerate().fold(
                None,
                |found, (index, session)| match crate::api::same(&session.token, token) {
                    true => Some(index),
                    false => found,
                },
            );
        let Some(index) = found else {
            return false;
        };
        if !allowed(sessions[index].uid) {
            return false;
        }
        sessions[index].last_used = now;
        true
    }

    /// Ends the session `token` names; whether there was one.
    pub fn end(&self, token: &str) -> bool {
        let mut sessions = self.lock();
        let before = sessions.len();
        sessions.retain(|session| !crate::api::same(&session.token, token));
        sessions.len() < before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(sessions: &AdminSessions, token: &str) -> bool {
        sessions.check(token, |_| true)
    }

    #[test]
    fn each_login_has_its_own_session_and_logout_ends_only_it() {
        let sessions = AdminSessions::default();
        let first = sessions.start(Some(1000));
        let second = sessions.start(Some(1000));
        assert_ne!(first, second);
        assert!(live(&sessions, &first) && live(&sessions, &second));
        assert!(sessions.end(&first));
        assert!(!live(&sessions, &first));
        assert!(live(&sessions, &second));
        assert!(!sessions.end(&first), "already ended");
        assert!(!live(&sessions, ""));
        assert!(!live(&sessions, &second[..second.len() - 1]));
    }

    /// Each session keeps the user of its own login: another user's later login does
    /// not move an earlier session to them.
    #[test]
    fn a_session_is_bound_to_the_user_who_logged_in() {
        let sessions = AdminSessions::default();
        let token = sessions.start(Some(1000));
        let other = sessions.start(Some(1001));
        assert!(!sessions.check(&token, |uid| uid == Some(1001)));
        assert!(sessions.check(&token, |uid| uid == Some(1000)));
        assert!(sessions.check(&other, |uid| uid == Some(1001)));
        assert!(!sessions.check(&other, |uid| uid == Some(1000)));
    }

    #[test]
    fn an_idle_session_expires_and_a_used_one_lives_until_its_absolute_expiry() {
        let sessions = AdminSessions::default();
        let idle = sessions.start(None);
        let busy = sessions.start(None);
        sessions
            .clock()
            .advance(IDLE_EXPIRY - Duration::from_secs(60));
        assert!(live(&sessions, &busy));
        sessions.clock().advance(Duration::from_secs(120));
        assert!(
            !live(&sessions, &idle),
            "idle for longer than the idle expiry"
        );
        // Used every few hours, the other lives on, but not past its absolute expiry.
        let mut used_for = IDLE_EXPIRY + Duration::from_secs(60);
        while used_for + Duration::from_secs(6 * 3600) < ABSOLUTE_EXPIRY {
            assert!(live(&sessions, &busy), "after {used_for:?}");
            sessions.clock().advance(Duration::from_secs(6 * 3600));
            used_for += Duration::from_secs(6 * 3600);
        }
        sessions.clock().advance(ABSOLUTE_EXPIRY - used_for);
        assert!(!live(&sessions, &busy), "past the absolute expiry");
    }

    #[test]
    fn the_number_of_sessions_is_bounded_and_the_oldest_goes_first() {
        let sessions = AdminSessions::default();
        let tokens: Vec<String> = (0..MAX_SESSIONS + 3)
            .map(|_| sessions.start(None))
            .collect();
        assert_eq!(sessions.lock().len(), MAX_SESSIONS);
        for token in &tokens[..3] {
            assert!(!live(&sessions, token));
        }
        for token in &tokens[3..] {
            assert!(live(&sessions, token));
        }
    }
}
