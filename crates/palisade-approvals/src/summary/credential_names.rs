//! Which header, query parameter, form field and JSON member names carry a credential,
//! so that their values show as `[redacted]` on a card and in its detail.
//!
//! Hiding a value cuts both ways. A credential on a card would reach every chat the
//! card is posted to; but every value hidden is one the approver cannot read, and an
//! agent that wants to send something unseen only has to find a name that is hidden.
//! Matching parts of names (`auth`, `key`, `sig` anywhere) hid `author`, `assignee`,
//! `design`, `monkey` and `signal`. So a name is split into its words (at `_`, `-`, `.`,
//! spaces, camelCase and digits) and hidden only when the words clearly name a
//! credential. When in doubt the value is shown: the credentials that matter are the
//! ones the vault injects after approval, and those are not in what the agent sent.

/// Words that name a credential wherever they stand in a name: `access_token`,
/// `X-Hub-Signature-256`, `client_secret`, `Proxy-Authorization`.
const CREDENTIAL_WORDS: &[&str] = &[
    "auth",
    "authorization",
    "authentication",
    "bearer",
    "cookie",
    "credential",
    "credentials",
    "creds",
    "csrf",
    "xsrf",
    "hmac",
    "jwt",
    "otp",
    "totp",
    "passcode",
    "passphrase",
    "password",
    "passwd",
    "pwd",
    "secret",
    "sig",
    "signature",
    "token",
    "cvc",
    "cvv",
    "sessionid",
    "jsessionid",
    "phpsessid",
];

/// Endings of words written together that still name a credential: `accesstoken`,
/// `clientsecret`, `userpassword`. No other English word ends so.
const CREDENTIAL_ENDINGS: &[&str] = &["token", "secret", "password", "passwd"];

/// Words that make the next word `key` a credential (`api_key`, `x-goog-api-key`,
/// `Ocp-Apim-Subscription-Key`, also written together: `apikey`). A key with another
/// word in front (`public_key`, `idempotency_key`, `sort_key`) is shown.
const KEY_QUALIFIERS: &[&str] = &[
    "api",
    "access",
    "secret",
    "private",
    "signing",
    "auth",
    "session",
    "client",
    "master",
    "encryption",
    "subscription",
    "app",
    "application",
    "license",
];

/// Words after `session` that make it a credential (`session_id`, `session-key`);
/// `session_name` or `session_count` are shown.
const SESSION_PARTS: &[&str] = &["id", "key", "cookie", "secret"];

/// Whether a value under this name is hidden. `key` and `session` alone count (the
/// `?key=` of Google APIs, a `session=` cookie); a leading `x` (`X-Key`) is ignored.
pub fn is_secret_name(name: &str) -> bool {
    let decoded = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
    let all_words = words(&decoded);
    let words = match all_words.split_first() {
        Some((first, rest)) if first == "x" && !rest.is_empty() => rest,
        _ => &all_words[..],
    };
    if let [only] = words {
        if only == "key" || only == "session" {
            return true;
        }
    }
    let single = words.iter().any(|word| {
        CREDENTIAL_WORDS.contains(&word.as_str())
            || CREDENTIAL_ENDINGS
                .iter()
                .any(|ending| word.ends_with(ending))
            || KEY_QUALIFIERS
                .iter()
                .any(|qualifier| word.strip_suffix("key") == Some(qualifier))
    });
    single
        || words.windows(2).any(|pair| {
            (pair[1] == "key" && KEY_QUALIFIERS.contains(&pair[0].as_str()))
                || (pair[0] == "session" && SESSION_PARTS.contains(&pair[1].as_str()))
        })
}

/// The lower-cased words of a name: split at every character that is not a letter or
/// digit, between a lower-case letter and an upper-case one (`apiKey`), before the last
/// capital of a run followed by a lower-case letter (`APIKey` → `api`, `key`), and
/// between letters and digits (`secret2`).
fn words(name: &str) -> Vec<String> {
    let chars: Vec<char> = name.chars().collect();
    let mut words = Vec::new();
    let mut current = String::new();
    for (index, &c) in chars.iter().enumerate() {
        if !c.is_alphanumeric() {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            continue;
        }
        if let Some(&previous) = index.checked_sub(1).and_then(|i| chars.get(i)) {
            let next = chars.get(index + 1).copied();
            let boundary = (previous.is_lowercase() && c.is_uppercase())
                || (previous.is_uppercase()
                    && c.is_uppercase()
                    && next.is_some_and(char::is_lowercase))
                || (previous.is_alphabetic() && c.is_numeric())
                || (previous.is_numeric() && c.is_alphabetic());
            if boundary && !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
        }
        current.extend(c.to_lowercase());
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_split_into_lower_case_words() {
        assert_eq!(words("x-goog-api-key"), ["x", "goog", "api", "key"]);
        assert_eq!(words("apiKey"), ["api", "key"]);
        assert_eq!(words("APIKey"), ["api", "key"]);
        assert_eq!(
            words("X-Hub-Signature-256"),
            ["x", "hub", "signature", "256"]
        );
        assert_eq!(words("client.secret2"), ["client", "secret", "2"]);
        assert_eq!(words("  "), Vec::<String>::new());
    }

    #[test]
    fn credential_names_are_hidden() {
        for name in [
            "authorization",
            "Proxy-Authorization",
            "x-api-key",
            "X-Goog-Api-Key",
            "Ocp-Apim-Subscription-Key",
            "DD-APPLICATION-KEY",
            "api_key",
            "apiKey",
            "APIKey",
            "apikey",
            "key",
            "X-Key",
            "access_token",
            "accessToken",
            "refreshtoken",
            "id_token",
            "x-custom-token",
            "X-Amz-Security-Token",
            "X-Amz-Signature",
            "X-Amz-Credential",
            "sig",
            "X-Hub-Signature-256",
            "Stripe-Signature",
            "hmac",
            "client_secret",
            "clientSecret",
            "secret",
            "password",
            "new_password",
            "userPassword",
            "passwd",
            "pwd",
            "passphrase",
            "cookie",
            "set-cookie",
            "session",
            "session_id",
            "sessionId",
            "sessionid",
            "JSESSIONID",
            "session_key",
            "private_key",
            "privateKey",
            "secret_key",
            "aws_secret_access_key",
            "bearer",
            "otp",
            "csrf",
            "x-csrf-token",
            "X-XSRF-TOKEN",
            "csrfmiddlewaretoken",
            "credentials",
            "auth",
            "auth_token",
            "x-auth",
            "api%5Fkey",
            "cvc",
        ] {
            assert!(is_secret_name(name), "{name} should be hidden");
        }
    }

    #[test]
    fn names_that_only_contain_a_credential_word_are_shown() {
        for name in [
            "author",
            "author_email",
            "assignee",
            "assignees",
            "design",
            "monkey",
            "keywords",
            "keyboard",
            "signal",
            "signed_off_by",
            "session_name",
            "session_count",
            "private",
            "is_private",
            "public_key",
            "idempotency_key",
            "Idempotency-Key",
            "sort_key",
            "issue_key",
            "max_tokens",
            "authority",
            "authorName",
            "passenger",
            "turkey",
            "hockey",
            "design_doc",
            "text",
            "to",
            "x",
            "",
        ] {
            assert!(!is_secret_name(name), "{name} should be shown");
        }
    }
}
