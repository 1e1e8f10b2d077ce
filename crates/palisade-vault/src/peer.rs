//! Who may connect to an agent's Unix socket.
//!
//! A per-agent socket *is* the agent's identity, so its folder is private (0700) and no
//! sandbox ever has it mounted: the palisade process that runs a sandbox connects to the
//! socket on the sandbox's behalf and hands the connection in (palisade-sandbox's
//! broker). This check is the second lock: the kernel tells who is connecting
//! (`SO_PEERCRED`, fixed when the peer called `connect`), and a peer the rule does not
//! name is dropped before a byte is read.
//!
//! - [`PeerRule::SameUser`] (default; `vault serve`, `up`): processes of the gateway's
//!   own user, or root.
//! - [`PeerRule::Process`]: exactly one process. `palisade sandbox run` serves its
//!   in-process vault with its own pid: its broker makes every connection, so no other
//!   process of the same user (another agent's sandbox included) can use the socket.

/// Which peers an agent socket admits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum PeerRule {
    /// Processes running as the gateway's effective user, or as root.
    #[default]
    SameUser,
    /// Only the process with this pid.
    Process(u32),
}

/// Why a peer was turned away (for the log; it names no secret).
#[derive(Debug, PartialEq, Eq)]
pub struct Refused(pub String);

impl PeerRule {
    /// Checks the peer of an accepted connection.
    pub(crate) fn admit(&self, stream: &tokio::net::UnixStream) -> Result<(), Refused> {
        let credentials =
            nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)
                .map_err(|e| Refused(format!("cannot read the peer's credentials: {e}")))?;
        self.admit_credentials(credentials.pid(), credentials.uid())
    }

    fn admit_credentials(&self, pid: i32, uid: u32) -> Result<(), Refused> {
        match self {
            PeerRule::SameUser => {
                let own = nix::unistd::geteuid().as_raw();
                if uid == own || uid == 0 {
                    Ok(())
                } else {
                    Err(Refused(format!(
                        "peer uid {uid} is not the gateway's ({own})"
                    )))
                }
            }
            PeerRule::Process(expected) => {
                if u32::try_from(pid).ok() == Some(*expected) {
                    Ok(())
                } else {
                    Err(Refused(format!(
                        "peer pid {pid} is not the sandbox's palisade process ({expected})"
                    )))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_admit_only_whom_they_name() {
        let me = nix::unistd::geteuid().as_raw();
        let pid = std::process::id();
        assert!(PeerRule::SameUser.admit_credentials(1, me).is_ok());
        assert!(PeerRule::SameUser.admit_credentials(1, 0).is_ok());
        if me != 0 {
            assert!(PeerRule::SameUser.admit_credentials(1, me + 1).is_err());
        } else {
            assert!(PeerRule::SameUser.admit_credentials(1, 4242).is_err());
        }
        assert!(PeerRule::Process(pid)
            .admit_credentials(pid as i32, me)
            .is_ok());
        assert!(PeerRule::Process(pid)
            .admit_credentials(pid as i32 + 1, me)
            .is_err());
    }

    #[tokio::test]
    async fn a_connection_from_this_process_is_admitted_by_its_pid() {
        let (ours, _theirs) = tokio::net::UnixStream::pair().unwrap();
        assert!(PeerRule::Process(std::process::id()).admit(&ours).is_ok());
        assert!(PeerRule::Process(1).admit(&ours).is_err());
        assert!(PeerRule::SameUser.admit(&ours).is_ok());
    }
}
