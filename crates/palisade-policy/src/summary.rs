//! Human summaries of held requests, so a person can decide without opening the detail.
//!
//! Recognised shapes: Gmail send (`POST gmail.googleapis.com/gmail/v1/users/*/messages/send`,
//! JSON `raw` base64url RFC 822 → To, Subject, body excerpt), Slack `chat.postMessage`
//! (channel + text, JSON or form), GitHub issue/PR creation (repo + title), Stripe charges,
//! payment intents, transfers and payouts (amount + currency + payee/destination). Anything
//! else: method, URL without query values for secret-looking keys, redacted headers
//! (authorization, cookie, x-api-key and anything named like a key/token/secret show as
//! `[redacted]`) and a body excerpt (at most 500 chars, non-printable replaced).
//!
//! Every byte here comes from the agent, which may be confused or hostile: nothing in
//! this module fails on malformed input (a shape that cannot be read falls back to the
//! generic summary), every length is capped, and all shown text goes through
//! the `clean` helpers so invisible or reordering characters cannot change what a person reads.

use serde::Serialize;

mod clean;
mod mail;
mod params;

use clean::{body_text, one_line, text_lines, truncate_chars};
use params::Params;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// One line, e.g. "Send e-mail to bob@example.com: \"Quarterly numbers\"".
    pub title: String,
    /// Further lines a card shows under the title.
    pub lines: Vec<String>,
    /// Full detail (method, URL, redacted headers, body excerpt) for "show more".
    pub detail: String,
}

/// Title length a card can show on one line.
const TITLE_CHARS: usize = 200;
/// Longest single line under the title.
const LINE_CHARS: usize = 300;
/// Lines under the title, including the body excerpt.
const MAX_LINES: usize = 20;
/// Characters of message text, post text or request body shown.
const EXCERPT_CHARS: usize = 500;
/// Characters of the body the detail view shows (its beginning and its end).
const DETAIL_BODY_CHARS: usize = 4096;
/// The e-mail inside a Gmail send is base64 in JSON; decode at most this much of it.
const RAW_MAIL_BYTES: usize = 1 << 20;
/// The "show more" text.
const DETAIL_CHARS: usize = 8000;
const HEADER_VALUE_CHARS: usize = 200;
const MAX_DETAIL_HEADERS: usize = 50;

/// Builds a summary. `host` is the authority the request goes to (`name` or
/// `name:port`; a non-default port is shown, so the person approves the address that is
/// really contacted); `path_and_query` as sent; `body` is the whole body the vault read
/// (decoded when it was sent compressed).
pub fn summarize(
    method: &http::Method,
    host: &str,
    path_and_query: &str,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Summary {
    let (scheme, path, query) = split_target(path_and_query);
    let authority = host.to_ascii_lowercase();
    let default_port = if scheme == "http" { ":80" } else { ":443" };
    let authority = one_line(
        authority.strip_suffix(default_port).unwrap_or(&authority),
        262,
    );
    let host = one_line(&crate::pattern::bare_host(host).to_ascii_lowercase(), 255);
    let request = Request {
        method,
        authority: &authority,
        host: &host,
        path,
        query,
        headers,
        body,
    };
    let detail = request.detail(scheme);
    let recognised = if method == http::Method::POST || method == http::Method::GET {
        recognise(&request)
    } else {
        None
    };
    match recognised {
        Some((title, lines)) => {
            let title = one_line(&title, TITLE_CHARS);
            let lines = cap_lines(lines);
            let mut full = String::with_capacity(DETAIL_CHARS);
            full.push_str(&title);
            for line in &lines {
                full.push('\n');
                full.push_str(line);
            }
            full.push_str("\n\n");
            full.push_str(&detail);
            truncate_chars(&mut full, DETAIL_CHARS);
            Summary {
                title,
                lines,
                detail: full,
            }
        }
        None => request.generic(scheme, detail),
    }
}

struct Request<'a> {
    method: &'a http::Method,
    /// As shown in URLs: the host with its port if one was given.
    authority: &'a str,
    /// Without port or brackets: what the recognisers match.
    host: &'a str,
    path: &'a str,
    query: &'a str,
    headers: &'a http::HeaderMap,
    body: &'a [u8],
}

impl Request<'_> {
    fn content_type(&self) -> String {
        self.headers
            .get(http::header::CONTENT_TYPE)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
            .unwrap_or_default()
    }

    fn params(&self) -> Params {
        Params::from_body(&self.content_type(), self.body)
    }

    /// Path segments after the leading `/`, empty ones dropped.
    fn segments(&self) -> Vec<&str> {
        self.path.split('/').filter(|s| !s.is_empty()).collect()
    }

    fn url(&self, scheme: &str) -> String {
        let mut url = format!("{scheme}://{}{}", self.authority, self.path);
        if !self.query.is_empty() {
            url.push('?');
            url.push_str(&redacted_query(self.query));
        }
        url
    }

    /// Method, URL, headers with credentials hidden, and a body excerpt.
    fn detail(&self, scheme: &str) -> String {
        let mut detail = format!("{} {}", self.method, one_line(&self.url(scheme), 2000));
        for (name, value) in self.headers.iter().take(MAX_DETAIL_HEADERS) {
            let shown = if is_secret_name(name.as_str()) {
                String::from("[redacted]")
            } else {
                one_line(
                    &String::from_utf8_lossy(value.as_bytes()),
                    HEADER_VALUE_CHARS,
                )
            };
            detail.push('\n');
            detail.push_str(name.as_str());
            detail.push_str(": ");
            detail.push_str(&shown);
        }
        if self.headers.len() > MAX_DETAIL_HEADERS {
            detail.push_str("\n…");
        }
        if !self.body.is_empty() {
            detail.push_str("\n\n");
            let lines = text_lines(
                &body_text(self.body, DETAIL_BODY_CHARS),
                40,
                LINE_CHARS,
                EXCERPT_CHARS,
            );
            detail.push_str(&lines.join("\n"));
        }
        truncate_chars(&mut detail, DETAIL_CHARS);
        detail
    }

    fn generic(&self, scheme: &str, detail: String) -> Summary {
        let title = one_line(
            &format!("{} {}", self.method, self.url(scheme)),
            TITLE_CHARS,
        );
        let mut lines = Vec::new();
        if self.body.is_empty() {
            lines.push(String::from("No request body."));
        } else {
            let content_type = self.content_type();
            let kind = if content_type.is_empty() {
                String::new()
            } else {
                format!(", {}", one_line(&content_type, 100))
            };
            lines.push(format!("Body ({} bytes{kind}):", self.body.len()));
            lines.extend(text_lines(
                &body_text(self.body, EXCERPT_CHARS - 60),
                MAX_LINES - 1,
                LINE_CHARS,
                EXCERPT_CHARS,
            ));
        }
        Summary {
            title,
            lines: cap_lines(lines),
            detail,
        }
    }
}

fn cap_lines(lines: Vec<String>) -> Vec<String> {
    lines
        .into_iter()
        .take(MAX_LINES)
        .map(|line| one_line(&line, LINE_CHARS))
        .collect()
}

/// Scheme (when the client sent an absolute URL), path and query, each as sent.
fn split_target(target: &str) -> (&str, &str, &str) {
    let (scheme, rest) = match target.split_once("://") {
        Some((scheme, rest)) if !target.starts_with('/') && scheme.len() <= 10 => {
            let path_start = rest.find('/').unwrap_or(rest.len());
            let scheme = if scheme.eq_ignore_ascii_case("http") {
                "http"
            } else {
                "https"
            };
            (scheme, &rest[path_start..])
        }
        _ => ("https", target),
    };
    let without_fragment = rest.split('#').next().unwrap_or(rest);
    let (path, query) = without_fragment
        .split_once('?')
        .unwrap_or((without_fragment, ""));
    (scheme, if path.is_empty() { "/" } else { path }, query)
}

/// Names under which APIs carry credentials; matched as substrings so `x-goog-api-key`,
/// `access_token` and `client_secret` are all caught. Over-redacting costs nothing.
pub fn is_secret_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    [
        "auth",
        "key",
        "token",
        "secret",
        "passw",
        "pwd",
        "cookie",
        "session",
        "sig",
        "credential",
        "private",
    ]
    .iter()
    .any(|marker| lower.contains(marker))
}

/// `query` with the values of credential-like parameters replaced by `[redacted]`.
pub fn redacted_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if is_secret_name(name) => format!("{name}=[redacted]"),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

type Recognised = (String, Vec<String>);

fn recognise(request: &Request<'_>) -> Option<Recognised> {
    let segments = request.segments();
    let post = *request.method == http::Method::POST;
    match (request.host, segments.as_slice()) {
        (
            "gmail.googleapis.com" | "www.googleapis.com",
            ["gmail", "v1", "users", _, "messages", "send"],
        ) if post => gmail_send(request, false),
        (
            "gmail.googleapis.com" | "www.googleapis.com",
            ["upload", "gmail", "v1", "users", _, "messages", "send"],
        ) if post => gmail_send(request, true),
        (host, ["api", method]) if host == "slack.com" || host.ends_with(".slack.com") => {
            slack_post(request, method)
        }
        ("api.github.com", ["repos", owner, repo, "issues"]) if post => {
            github_create(request, owner, repo, "issue")
        }
        ("api.github.com", ["repos", owner, repo, "pulls"]) if post => {
            github_create(request, owner, repo, "pull request")
        }
        ("api.github.com", ["repos", owner, repo, "issues" | "pulls", number, "comments"])
            if post =>
        {
            github_comment(request, owner, repo, number)
        }
        ("api.stripe.com", ["v1", object]) if post => stripe_money(request, object),
        _ => None,
    }
}

fn gmail_send(request: &Request<'_>, upload: bool) -> Option<Recognised> {
    let content_type = request.content_type().to_ascii_lowercase();
    let message_bytes = if upload && content_type.starts_with("message/rfc822") {
        request.body.to_vec()
    } else {
        let raw = request.params().get("raw")?;
        let raw = raw.as_bytes();
        mail::decode_base64_lenient(&raw[..raw.len().min(RAW_MAIL_BYTES)])?
    };
    let message = mail::Part::parse(&message_bytes);
    let to = message.header("to");
    let subject = message.header("subject");
    let to_text = to
        .as_deref()
        .map(|to| one_line(to, 120))
        .unwrap_or_else(|| String::from("(no recipient in To)"));
    let subject_text = subject
        .as_deref()
        .map(|s| one_line(s, 100))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| String::from("(no subject)"));
    let title = format!("Send e-mail to {to_text}: \"{subject_text}\"");
    let mut lines = Vec::new();
    for (name, label) in [
        ("from", "From"),
        ("cc", "Cc"),
        ("bcc", "Bcc"),
        ("reply-to", "Reply-To"),
    ] {
        if let Some(value) = message.header(name) {
            lines.push(format!("{label}: {}", one_line(&value, LINE_CHARS)));
        }
    }
    let content = mail::content(&message);
    if !content.attachments.is_empty() {
        let names: Vec<String> = content
            .attachments
            .iter()
            .take(10)
            .map(|name| one_line(name, 80))
            .collect();
        lines.push(format!("Attachments: {}", names.join(", ")));
    }
    match content.text {
        Some(text) => {
            lines.push(String::new());
            lines.extend(text_lines(
                &text,
                MAX_LINES.saturating_sub(lines.len()),
                LINE_CHARS,
                EXCERPT_CHARS,
            ));
        }
        None => lines.push(String::from("(no readable text body)")),
    }
    Some((title, lines))
}

fn slack_post(request: &Request<'_>, api_method: &str) -> Option<Recognised> {
    let verb = match api_method {
        "chat.postMessage" => "Post to Slack",
        "chat.postEphemeral" => "Post a private Slack message",
        "chat.scheduleMessage" => "Schedule a Slack message",
        "chat.update" => "Edit a Slack message",
        _ => return None,
    };
    let params = request.params().with_query(request.query);
    let channel = params
        .get("channel")
        .map(|c| one_line(&c, 80))
        .unwrap_or_else(|| String::from("(no channel)"));
    let text = params
        .get("text")
        .filter(|t| !t.trim().is_empty())
        .or_else(|| params.get_json("blocks").map(|blocks| block_text(&blocks)));
    let preview = text.as_deref().map(|t| one_line(t, 80)).unwrap_or_default();
    let title = if preview.is_empty() {
        format!("{verb} in {channel}")
    } else {
        format!("{verb} in {channel}: \"{preview}\"")
    };
    let mut lines = Vec::new();
    if let Some(user) = params.get("user") {
        lines.push(format!("Visible only to: {}", one_line(&user, 80)));
    }
    if let Some(thread) = params.get("thread_ts") {
        lines.push(format!("In thread: {}", one_line(&thread, 40)));
    }
    if let Some(post_at) = params.get("post_at") {
        lines.push(format!("At (Unix time): {}", one_line(&post_at, 40)));
    }
    if let Some(name) = params.get("username") {
        lines.push(format!("Posting as: {}", one_line(&name, 80)));
    }
    if let Some(text) = text {
        lines.push(String::new());
        lines.extend(text_lines(
            &text,
            MAX_LINES.saturating_sub(lines.len()),
            LINE_CHARS,
            EXCERPT_CHARS,
        ));
    }
    Some((title, lines))
}

/// The visible text of Slack Block Kit blocks: every string under a `text` key.
fn block_text(blocks: &serde_json::Value) -> String {
    fn collect(value: &serde_json::Value, out: &mut Vec<String>, budget: &mut usize) {
        if *budget == 0 {
            return;
        }
        *budget -= 1;
        match value {
            serde_json::Value::Array(items) => {
                items.iter().for_each(|item| collect(item, out, budget))
            }
            serde_json::Value::Object(fields) => {
                for (key, field) in fields {
                    match field {
                        serde_json::Value::String(text) if key == "text" => out.push(text.clone()),
                        other => collect(other, out, budget),
                    }
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    let mut budget = 500;
    collect(blocks, &mut out, &mut budget);
    out.join("\n")
}

fn github_create(request: &Request<'_>, owner: &str, repo: &str, kind: &str) -> Option<Recognised> {
    let params = request.params();
    let repo_name = one_line(&format!("{owner}/{repo}"), 100);
    let title_text = params
        .get("title")
        .map(|t| one_line(&t, 120))
        .unwrap_or_else(|| String::from("(no title)"));
    let title = format!("Open GitHub {kind} in {repo_name}: \"{title_text}\"");
    let mut lines = Vec::new();
    if let (Some(head), Some(base)) = (params.get("head"), params.get("base")) {
        lines.push(format!(
            "Merge {} into {}",
            one_line(&head, 100),
            one_line(&base, 100)
        ));
    }
    if params.get("draft").as_deref() == Some("true") {
        lines.push(String::from("As a draft"));
    }
    for (key, label) in [
        ("labels", "Labels"),
        ("assignees", "Assignees"),
        ("reviewers", "Reviewers"),
    ] {
        let items = params.get_list(key);
        if !items.is_empty() {
            let items: Vec<String> = items.iter().take(20).map(|i| one_line(i, 60)).collect();
            lines.push(format!("{label}: {}", items.join(", ")));
        }
    }
    if let Some(body) = params.get("body").filter(|b| !b.trim().is_empty()) {
        lines.push(String::new());
        lines.extend(text_lines(
            &body,
            MAX_LINES.saturating_sub(lines.len()),
            LINE_CHARS,
            EXCERPT_CHARS,
        ));
    }
    Some((title, lines))
}

fn github_comment(
    request: &Request<'_>,
    owner: &str,
    repo: &str,
    number: &str,
) -> Option<Recognised> {
    let params = request.params();
    let target = one_line(&format!("{owner}/{repo}#{number}"), 120);
    let mut lines = Vec::new();
    if let Some(body) = params.get("body") {
        lines.extend(text_lines(&body, MAX_LINES, LINE_CHARS, EXCERPT_CHARS));
    }
    Some((format!("Comment on GitHub {target}"), lines))
}

fn stripe_money(request: &Request<'_>, object: &str) -> Option<Recognised> {
    let label = match object {
        "charges" => "Stripe charge",
        "payment_intents" => "Stripe payment intent",
        "transfers" => "Stripe transfer",
        "payouts" => "Stripe payout",
        _ => return None,
    };
    let params = request.params().with_query(request.query);
    let amount = stripe_amount(
        params.get("amount").as_deref(),
        params.get("currency").as_deref(),
    );
    let shown = |key: &str| {
        params
            .get(key)
            .map(|v| one_line(&v, 100))
            .filter(|v| !v.is_empty())
    };
    let destination = shown("destination").or_else(|| shown("transfer_data[destination]"));
    let customer = shown("customer");
    let title = match (object, &destination) {
        ("payouts", Some(destination)) => format!("Pay out {amount} to {destination} ({label})"),
        ("payouts", None) => format!("Pay out {amount} to the default external account ({label})"),
        (_, Some(destination)) => format!("Pay {amount} to {destination} ({label})"),
        ("transfers", None) => format!("Pay {amount} to an unnamed destination ({label})"),
        (_, None) => match &customer {
            Some(customer) => format!("Charge {amount} to customer {customer} ({label})"),
            None => format!("Charge {amount} ({label})"),
        },
    };
    let mut lines = Vec::new();
    for (key, label) in [
        ("description", "Description"),
        ("customer", "Customer"),
        ("payment_method", "Payment method"),
        ("source", "Source"),
        ("on_behalf_of", "On behalf of"),
        ("receipt_email", "Receipt to"),
        ("statement_descriptor", "Statement descriptor"),
        ("confirm", "Confirm now"),
        ("method", "Payout method"),
    ] {
        if let Some(value) = shown(key) {
            lines.push(format!("{label}: {value}"));
        }
    }
    Some((title, lines))
}

/// Stripe amounts are integers in the currency's smallest unit; most currencies have
/// two decimals, a few none or three.
fn stripe_amount(amount: Option<&str>, currency: Option<&str>) -> String {
    let currency = currency
        .map(|c| one_line(c, 10).to_ascii_uppercase())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| String::from("(currency not given)"));
    let Some(minor) = amount.and_then(|a| a.trim().parse::<u64>().ok()) else {
        return format!("an unstated amount of {currency}");
    };
    let decimals = match currency.to_ascii_lowercase().as_str() {
        "bif" | "clp" | "djf" | "gnf" | "jpy" | "kmf" | "krw" | "mga" | "pyg" | "rwf" | "ugx"
        | "vnd" | "vuv" | "xaf" | "xof" | "xpf" => 0,
        "bhd" | "jod" | "kwd" | "omr" | "tnd" => 3,
        _ => 2,
    };
    let scale = 10u64.pow(decimals);
    let whole = group_thousands(minor / scale);
    if decimals == 0 {
        format!("{whole} {currency}")
    } else {
        let fraction = minor % scale;
        format!(
            "{whole}.{fraction:0width$} {currency}",
            width = decimals as usize
        )
    }
}

/// `1234567` → `1,234,567`, so an extra zero is hard to miss.
fn group_thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    let first_group = match digits.len() % 3 {
        0 => 3,
        partial => partial,
    };
    for (index, digit) in digits.chars().enumerate() {
        if index >= first_group && (index - first_group) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
    use base64::Engine;

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn json_headers() -> http::HeaderMap {
        headers(&[
            ("content-type", "application/json"),
            ("authorization", "Bearer ya29.placeholder"),
        ])
    }

    fn form_headers() -> http::HeaderMap {
        headers(&[("content-type", "application/x-www-form-urlencoded")])
    }

    fn post(host: &str, target: &str, headers: &http::HeaderMap, body: &[u8]) -> Summary {
        summarize(&http::Method::POST, host, target, headers, body)
    }

    const EMAIL: &str = concat!(
        "From: Assistant <assistant@example.org>\r\n",
        "To: Bob Example <bob@example.com>\r\n",
        "Cc: carol@example.com\r\n",
        "Subject: Quarterly numbers\r\n",
        "MIME-Version: 1.0\r\n",
        "Content-Type: text/plain; charset=\"UTF-8\"\r\n",
        "\r\n",
        "Hi Bob,\r\n",
        "\r\n",
        "Revenue is up 12% this quarter.\r\n",
        "Details attached soon.\r\n",
    );

    fn gmail_body(raw: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "raw": raw, "threadId": "18c" })).unwrap()
    }

    #[test]
    fn gmail_send_shows_recipient_subject_and_text() {
        for raw in [URL_SAFE_NO_PAD.encode(EMAIL), URL_SAFE.encode(EMAIL)] {
            let summary = post(
                "gmail.googleapis.com",
                "/gmail/v1/users/me/messages/send?alt=json",
                &json_headers(),
                &gmail_body(&raw),
            );
            assert_eq!(
                summary.title,
                "Send e-mail to Bob Example <bob@example.com>: \"Quarterly numbers\""
            );
            assert!(
                summary.lines.contains(&"Cc: carol@example.com".to_string()),
                "{:?}",
                summary.lines
            );
            assert!(summary
                .lines
                .contains(&"Revenue is up 12% this quarter.".to_string()));
            assert!(summary
                .lines
                .contains(&"From: Assistant <assistant@example.org>".to_string()));
            assert!(summary.detail.starts_with(&summary.title));
            assert!(summary.detail.contains(
                "POST https://gmail.googleapis.com/gmail/v1/users/me/messages/send?alt=json"
            ));
            assert!(summary.detail.contains("authorization: [redacted]"));
            assert!(!summary.detail.contains("ya29"));
        }
    }

    #[test]
    fn gmail_multipart_with_encoded_subject_and_attachment() {
        let email = concat!(
            "To: =?UTF-8?B?SsO8cmdlbg==?= <juergen@example.de>\r\n",
            "Subject: =?UTF-8?Q?Rechnung_f=C3=BCr_M=C3=A4rz?=\r\n",
            "Content-Type: multipart/mixed; boundary=\"b1\"\r\n",
            "\r\n",
            "--b1\r\n",
            "Content-Type: text/plain; charset=utf-8\r\n",
            "Content-Transfer-Encoding: base64\r\n",
            "\r\n",
            "SGFsbG8gSsO8cmdlbiwKCmFuYmVpIGRpZSBSZWNobnVuZy4=\r\n",
            "--b1\r\n",
            "Content-Type: application/pdf\r\n",
            "Content-Disposition: attachment; filename=\"rechnung-03.pdf\"\r\n",
            "\r\n",
            "JVBERi0xLjQK\r\n",
            "--b1--\r\n",
        );
        let summary = post(
            "gmail.googleapis.com",
            "/gmail/v1/users/me/messages/send",
            &json_headers(),
            &gmail_body(&URL_SAFE_NO_PAD.encode(email)),
        );
        assert_eq!(
            summary.title,
            "Send e-mail to Jürgen <juergen@example.de>: \"Rechnung für März\""
        );
        assert!(summary
            .lines
            .contains(&"Attachments: rechnung-03.pdf".to_string()));
        assert!(
            summary.lines.contains(&"Hallo Jürgen,".to_string()),
            "{:?}",
            summary.lines
        );
        assert!(summary.lines.contains(&"anbei die Rechnung.".to_string()));
    }

    #[test]
    fn gmail_truncated_body_still_summarises() {
        let full = gmail_body(&URL_SAFE_NO_PAD.encode(EMAIL));
        let cut = &full[..full.len() - 40];
        let summary = post(
            "gmail.googleapis.com",
            "/gmail/v1/users/me/messages/send",
            &json_headers(),
            cut,
        );
        assert!(
            summary.title.starts_with("Send e-mail to Bob Example"),
            "{}",
            summary.title
        );
    }

    #[test]
    fn gmail_hides_bidi_tricks_in_subject() {
        let email = "To: bob@example.com\r\nSubject: Invoice \u{202E}fdp.exe\u{202C} \u{200B}ok\r\n\r\nbody";
        let summary = post(
            "gmail.googleapis.com",
            "/gmail/v1/users/me/messages/send",
            &json_headers(),
            &gmail_body(&URL_SAFE_NO_PAD.encode(email)),
        );
        assert_eq!(
            summary.title,
            "Send e-mail to bob@example.com: \"Invoice fdp.exe ok\""
        );
    }

    #[test]
    fn gmail_media_upload() {
        let summary = post(
            "www.googleapis.com",
            "/upload/gmail/v1/users/me/messages/send?uploadType=media",
            &headers(&[("content-type", "message/rfc822")]),
            EMAIL.as_bytes(),
        );
        assert!(
            summary.title.contains("\"Quarterly numbers\""),
            "{}",
            summary.title
        );
    }

    #[test]
    fn gmail_without_raw_falls_back_to_generic() {
        let summary = post(
            "gmail.googleapis.com",
            "/gmail/v1/users/me/messages/send",
            &json_headers(),
            b"{\"id\":\"x\"}",
        );
        assert_eq!(
            summary.title,
            "POST https://gmail.googleapis.com/gmail/v1/users/me/messages/send"
        );
    }

    #[test]
    fn slack_json_post() {
        let body = serde_json::json!({
            "channel": "C024BE91L",
            "text": "Deploy finished :tada:\nAll green.",
            "thread_ts": "1503435956.000247"
        });
        let summary = post(
            "slack.com",
            "/api/chat.postMessage",
            &headers(&[
                ("content-type", "application/json; charset=utf-8"),
                ("authorization", "Bearer xoxb-1"),
            ]),
            &serde_json::to_vec(&body).unwrap(),
        );
        assert_eq!(
            summary.title,
            "Post to Slack in C024BE91L: \"Deploy finished :tada: All green.\""
        );
        assert!(summary
            .lines
            .contains(&"In thread: 1503435956.000247".to_string()));
        assert!(summary.lines.contains(&"All green.".to_string()));
        assert!(!summary.detail.contains("xoxb"));
    }

    #[test]
    fn slack_form_post_and_blocks() {
        let summary = post(
            "slack.com",
            "/api/chat.postMessage",
            &form_headers(),
            b"channel=%23general&text=Lunch+at+12%3A30%3F",
        );
        assert_eq!(
            summary.title,
            "Post to Slack in #general: \"Lunch at 12:30?\""
        );

        let blocks = serde_json::json!({
            "channel": "C1",
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "*Alert*: disk full"}}]
        });
        let summary = post(
            "slack.com",
            "/api/chat.postMessage",
            &json_headers(),
            &serde_json::to_vec(&blocks).unwrap(),
        );
        assert_eq!(summary.title, "Post to Slack in C1: \"*Alert*: disk full\"");
    }

    #[test]
    fn a_non_default_port_is_shown_and_recognisers_still_match() {
        let generic = summarize(
            &http::Method::GET,
            "LocalHost:8443",
            "/approve-me/report?key=abc",
            &http::HeaderMap::new(),
            b"",
        );
        assert_eq!(
            generic.title,
            "GET https://localhost:8443/approve-me/report?key=[redacted]"
        );
        assert!(generic
            .detail
            .starts_with("GET https://localhost:8443/approve-me/report"));
        let v6 = summarize(
            &http::Method::GET,
            "[::1]:9000",
            "/x",
            &http::HeaderMap::new(),
            b"",
        );
        assert_eq!(v6.title, "GET https://[::1]:9000/x");
        let slack = summarize(
            &http::Method::GET,
            "slack.com:8443",
            "/api/chat.postMessage?channel=C9&text=hi",
            &http::HeaderMap::new(),
            b"",
        );
        assert_eq!(slack.title, "Post to Slack in C9: \"hi\"");
    }

    #[test]
    fn slack_arguments_in_query() {
        let summary = summarize(
            &http::Method::GET,
            "slack.com",
            "/api/chat.postMessage?channel=C9&text=hi%20there&token=xoxb-secret",
            &http::HeaderMap::new(),
            b"",
        );
        assert_eq!(summary.title, "Post to Slack in C9: \"hi there\"");
        assert!(summary.detail.contains("token=[redacted]"));
        assert!(!summary.detail.contains("xoxb-secret"));
    }

    #[test]
    fn github_issue_and_pull_request() {
        let issue = serde_json::json!({
            "title": "Crash when the config is empty",
            "body": "Steps:\n1. run with empty config\n2. boom",
            "labels": ["bug", "p1"]
        });
        let summary = post(
            "api.github.com",
            "/repos/octo-org/widgets/issues",
            &json_headers(),
            &serde_json::to_vec(&issue).unwrap(),
        );
        assert_eq!(
            summary.title,
            "Open GitHub issue in octo-org/widgets: \"Crash when the config is empty\""
        );
        assert!(summary.lines.contains(&"Labels: bug, p1".to_string()));
        assert!(summary.lines.contains(&"2. boom".to_string()));

        let pull = serde_json::json!({"title": "Add retries", "head": "feature/retries", "base": "main", "draft": true});
        let summary = post(
            "api.github.com",
            "/repos/octo-org/widgets/pulls",
            &json_headers(),
            &serde_json::to_vec(&pull).unwrap(),
        );
        assert_eq!(
            summary.title,
            "Open GitHub pull request in octo-org/widgets: \"Add retries\""
        );
        assert!(summary
            .lines
            .contains(&"Merge feature/retries into main".to_string()));
        assert!(summary.lines.contains(&"As a draft".to_string()));

        let comment = post(
            "api.github.com",
            "/repos/octo-org/widgets/issues/42/comments",
            &json_headers(),
            br#"{"body":"LGTM"}"#,
        );
        assert_eq!(comment.title, "Comment on GitHub octo-org/widgets#42");
        assert_eq!(comment.lines, ["LGTM"]);

        let listing = summarize(
            &http::Method::GET,
            "api.github.com",
            "/repos/o/r/issues",
            &json_headers(),
            b"",
        );
        assert_eq!(listing.title, "GET https://api.github.com/repos/o/r/issues");
    }

    #[test]
    fn stripe_payments() {
        let transfer = post(
            "api.stripe.com",
            "/v1/transfers",
            &form_headers(),
            b"amount=1250&currency=usd&destination=acct_1032D82eZvKYlo2C&description=March+invoice",
        );
        assert_eq!(
            transfer.title,
            "Pay 12.50 USD to acct_1032D82eZvKYlo2C (Stripe transfer)"
        );
        assert!(transfer
            .lines
            .contains(&"Description: March invoice".to_string()));

        let charge = post(
            "api.stripe.com",
            "/v1/charges",
            &form_headers(),
            b"amount=123456789&currency=eur&customer=cus_9s6XKzkNRiz8i3",
        );
        assert_eq!(
            charge.title,
            "Charge 1,234,567.89 EUR to customer cus_9s6XKzkNRiz8i3 (Stripe charge)"
        );

        let intent = post(
            "api.stripe.com",
            "/v1/payment_intents",
            &form_headers(),
            b"amount=5000&currency=jpy&transfer_data%5Bdestination%5D=acct_9&confirm=true",
        );
        assert_eq!(
            intent.title,
            "Pay 5,000 JPY to acct_9 (Stripe payment intent)"
        );
        assert!(intent.lines.contains(&"Confirm now: true".to_string()));

        let payout = post(
            "api.stripe.com",
            "/v1/payouts",
            &form_headers(),
            b"amount=1005&currency=kwd",
        );
        assert_eq!(
            payout.title,
            "Pay out 1.005 KWD to the default external account (Stripe payout)"
        );

        let odd = post(
            "api.stripe.com",
            "/v1/transfers",
            &form_headers(),
            b"amount=-5&destination=acct_1",
        );
        assert_eq!(
            odd.title,
            "Pay an unstated amount of (currency not given) to acct_1 (Stripe transfer)"
        );

        let refund = post(
            "api.stripe.com",
            "/v1/refunds",
            &form_headers(),
            b"charge=ch_1",
        );
        assert_eq!(refund.title, "POST https://api.stripe.com/v1/refunds");
    }

    #[test]
    fn thousands_grouping() {
        assert_eq!(group_thousands(0), "0");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(1000), "1,000");
        assert_eq!(group_thousands(123456), "123,456");
        assert_eq!(group_thousands(1234567), "1,234,567");
    }

    #[test]
    fn generic_redacts_and_excerpts() {
        let summary = summarize(
            &http::Method::PUT,
            "API.Example.com:443",
            "/v2/items/7?api_key=sk-live-1&page=2&access_token=t0k",
            &headers(&[
                ("content-type", "application/json"),
                ("x-api-key", "sk-live-1"),
                ("cookie", "session=abc"),
                ("x-custom-token", "tok"),
                ("accept", "application/json"),
            ]),
            format!("{{\"name\":\"{}\"}}", "x".repeat(2000)).as_bytes(),
        );
        assert_eq!(
            summary.title,
            "PUT https://api.example.com/v2/items/7?api_key=[redacted]&page=2&access_token=[redacted]"
        );
        for secret in ["sk-live-1", "session=abc", "t0k", ": tok"] {
            assert!(
                !summary.detail.contains(secret),
                "{secret} leaked: {}",
                summary.detail
            );
        }
        assert!(summary.detail.contains("accept: application/json"));
        assert!(summary.lines[0].starts_with("Body ("));
        let excerpt: usize = summary.lines[1..].iter().map(|l| l.chars().count()).sum();
        assert!(excerpt <= EXCERPT_CHARS + 1, "{excerpt}");
    }

    #[test]
    fn generic_without_body_and_binary_body() {
        let summary = summarize(
            &http::Method::DELETE,
            "h.example",
            "/x",
            &http::HeaderMap::new(),
            b"",
        );
        assert_eq!(summary.title, "DELETE https://h.example/x");
        assert_eq!(summary.lines, ["No request body."]);

        let binary: Vec<u8> = (0..200u8).collect();
        let summary = summarize(
            &http::Method::POST,
            "h.example",
            "/upload",
            &http::HeaderMap::new(),
            &binary,
        );
        assert!(
            summary
                .lines
                .contains(&"[200 bytes of binary data]".to_string()),
            "{:?}",
            summary.lines
        );
    }

    #[test]
    fn absolute_form_target() {
        let summary = summarize(
            &http::Method::GET,
            "h.example",
            "http://h.example/a?b=1",
            &http::HeaderMap::new(),
            b"",
        );
        assert_eq!(summary.title, "GET http://h.example/a?b=1");
    }

    #[test]
    fn hostile_path_cannot_break_the_title() {
        let summary = summarize(
            &http::Method::GET,
            "h.example",
            "/a\u{202E}b\n\nApprove this",
            &http::HeaderMap::new(),
            b"",
        );
        assert!(!summary.title.contains('\n'));
        assert!(!summary.title.contains('\u{202E}'));
    }

    /// A tiny deterministic generator so the fuzz loop needs no extra crate and fails
    /// the same way every run.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn bytes(&mut self, max: usize, alphabet: &[u8]) -> Vec<u8> {
            let len = self.below(max + 1);
            (0..len)
                .map(|_| {
                    if alphabet.is_empty() {
                        self.next() as u8
                    } else {
                        alphabet[self.below(alphabet.len())]
                    }
                })
                .collect()
        }
    }

    #[test]
    fn random_input_never_panics() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let targets = [
            ("gmail.googleapis.com", "/gmail/v1/users/me/messages/send"),
            (
                "www.googleapis.com",
                "/upload/gmail/v1/users/me/messages/send",
            ),
            ("slack.com", "/api/chat.postMessage"),
            ("api.github.com", "/repos/o/r/issues"),
            ("api.github.com", "/repos/o/r/pulls"),
            ("api.stripe.com", "/v1/transfers"),
            ("api.stripe.com", "/v1/payment_intents"),
            ("h.example", "/x?key=1"),
        ];
        let seeds: Vec<Vec<u8>> = vec![
            gmail_body(&URL_SAFE_NO_PAD.encode(EMAIL)),
            URL_SAFE_NO_PAD.encode(EMAIL).into_bytes(),
            EMAIL.as_bytes().to_vec(),
            br#"{"channel":"C1","text":"hi","blocks":[{"text":{"text":"x"}}]}"#.to_vec(),
            b"amount=1250&currency=usd&destination=acct_1".to_vec(),
            b"--b\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n".to_vec(),
        ];
        let alphabet: &[u8] = b"=?\"{}[]:,\\u\r\n-_+/%&abcQB0123456789 <>;\xc3\xa9\xe2\x80\xae";
        let content_types = [
            "application/json",
            "application/x-www-form-urlencoded",
            "message/rfc822",
            "multipart/mixed; boundary=b",
            "",
        ];
        for round in 0..3000 {
            let (host, path) = targets[round % targets.len()];
            let body = match round % 3 {
                0 => rng.bytes(600, &[]),
                1 => rng.bytes(600, alphabet),
                _ => {
                    // Mutate a realistic body: flip bytes, cut it short.
                    let mut body = seeds[rng.below(seeds.len())].clone();
                    for _ in 0..rng.below(8) {
                        if !body.is_empty() {
                            let at = rng.below(body.len());
                            body[at] = rng.next() as u8;
                        }
                    }
                    let keep = rng.below(body.len() + 1);
                    body.truncate(keep);
                    body
                }
            };
            let mut map = http::HeaderMap::new();
            map.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(content_types[rng.below(content_types.len())]),
            );
            let junk_path = String::from_utf8_lossy(&rng.bytes(40, alphabet)).into_owned();
            for target in [
                path.to_string(),
                format!("{path}?{junk_path}"),
                junk_path.clone(),
            ] {
                let summary = summarize(&http::Method::POST, host, &target, &map, &body);
                assert!(summary.title.chars().count() <= TITLE_CHARS + 1);
                assert!(summary.lines.len() <= MAX_LINES);
                assert!(summary.detail.chars().count() <= DETAIL_CHARS + 1);
                assert!(!summary.title.contains(['\n', '\r', '\u{202E}']));
            }
            let text = String::from_utf8_lossy(&body);
            let _ = mail::decode_encoded_words(&text);
            if let Ok(pattern) = crate::pattern::HostPattern::parse(&junk_path) {
                let _ = pattern.matches(&text);
            }
            if let (Ok(pattern), Ok(path)) = (
                crate::pattern::PathPattern::parse(&junk_path),
                crate::canonical::CanonicalPath::parse(&text),
            ) {
                let _ = pattern.matches(&path);
            }
            let _ = junk_path.parse::<crate::injection::Injection>();
            let _ = junk_path.parse::<crate::rule::RateWindow>();
        }
    }
}
