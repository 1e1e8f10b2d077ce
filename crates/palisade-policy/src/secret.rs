//! Secrets as the policy sees them: a decrypted value that never prints itself.

use crate::injection::Injection;
use crate::names::AgentName;
use crate::pattern::{HostPattern, PathPattern};
use zeroize::Zeroizing;

/// A secret value in memory. `Debug` and `Display` print `[redacted]`; the bytes are
/// zeroized on drop. The only way to the bytes is [`SecretValue::expose`].
#[derive(Clone)]
pub struct SecretValue(Zeroizing<String>);

impl SecretValue {
    pub fn new(value: String) -> Self {
        SecretValue(Zeroizing::new(value))
    }
    /// The plain value; call only where it is written into an outgoing request or encrypted.
    pub fn expose(&self) -> &str {
        &self.0
    }
}
impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}
impl std::fmt::Display for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A secret with its scope, as loaded from the store for evaluation.
#[derive(Clone, Debug)]
pub struct SecretPolicy {
    pub id: i64,
    pub name: String,
    pub host: HostPattern,
    pub path: Option<PathPattern>,
    pub injection: Injection,
    pub value: SecretValue,
    /// Agents granted this secret. Empty: nobody gets it injected.
    pub agents: Vec<AgentName>,
    /// Higher wins among secrets whose paths are equally specific.
    pub priority: i64,
    /// Never injected for a research-profile agent, whatever its grants say.
    pub sensitive: bool,
}
