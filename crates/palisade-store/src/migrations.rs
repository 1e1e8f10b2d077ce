//! Versioned schema migrations (PRAGMA user_version).
