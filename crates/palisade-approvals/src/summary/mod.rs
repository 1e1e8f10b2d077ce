//! Human summaries of held requests, so a person can decide without opening the detail.
//! One file per service (`gmail.rs`, `slack.rs`, `github.rs`, `stripe.rs`), the generic
//! shape in `generic.rs`.
//!
//! Recognised shapes: Gmail send (`POST gmail.googleapis.com/gmail/v1/users/*/messages/send`,
//! JSON `raw` base64url RFC 822, or the message uploaded to `/upload/gmail/…/send` →
//! every recipient or at least every recipient domain, Subject, body excerpt), Slack
//! `chat.postMessage` (channel + what Slack shows: blocks and attachments with link
//! targets, or text; JSON or form), GitHub issue/PR creation (repo + title), Stripe
//! charges, payment intents, transfers and payouts (amount + currency +
//! payee/destination). Anything
//! else: method, URL, headers and a body excerpt (at most 500 chars, non-printable
//! replaced), in which the values of headers, query parameters, JSON members and form
//! fields whose names clearly name a credential (`authorization`, `api_key`, `token`,
//! `client_secret`, … judged by whole words, see `credential_names.rs`) show as
//! `[redacted]`.
//!
//! A field a summary shows that the request gives more than once with different values
//! (`channel=C1&channel=C2`, a repeated JSON member, a second `Subject:`) is not shown
//! as one value: the title starts with a warning naming every value (`repeated.rs`).
//! Likewise a body whose media type is neither JSON nor a form (or missing) and that a
//! form reader would read otherwise than the JSON shown (`ambiguous.rs`).
//!
//! Every byte here comes from the agent, which may be confused or hostile: nothing in
//! this module fails on malformed input (a shape that cannot be read falls back to the
//! generic summary), every length is capped, and all shown text goes through
//! the `clean` helpers so invisible or reordering characters cannot change what a person
//! reads: each is marked where it is (`⟨U+202E⟩`), and a summary that shows such a mark
//! starts its lines with [`HIDDEN_CHARACTERS_NOTICE`], which cards keep whatever else
//! they leave out.

use serde::Serialize;

mod action;
mod ambiguous;
mod clean;
mod credential_names;
mod generic;
mod github;
mod gmail;
mod mail;
mod multipart;
mod nested;
mod params;
mod recipients;
mod repeated;
mod slack;
mod stripe;
#[cfg(test)]
mod tests;

pub use action::{access_request, action, agent_answer, agent_message};
use clean::{body_text, shows_hidden, text_lines, truncate_chars};
pub use clean::{is_invisible, one_line};
pub use credential_names::is_secret_name;
/// A body with the values of credential-like fields shown as `[redacted]`, as cards show
/// it (for the context a web page shows beside the card).
pub use generic::masked as redacted_body;
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

/// How many of a summary's `lines` are the notices it leads with (hidden characters,
/// then look-alike names; at most two), which cards lift out as their warning.
pub fn leading_notices(lines: &[String]) -> usize {
    lines
        .iter()
        .take(2)
        .take_while(|line| {
            line.as_str() == HIDDEN_CHARACTERS_NOTICE || line.starts_with(LOOK_ALIKE_NOTICE)
        })
        .count()
}

impl Summary {
    /// Puts `lines` right after the notices, before the lines the request decided, so
    /// a card that leaves lines out for room keeps these.
    pub fn add_after_notices(&mut self, lines: impl IntoIterator<Item = String>) {
        let at = leading_notices(&self.lines);
        self.lines.splice(at..at, lines);
    }
}

/// The line a summary starts with when it marks hidden characters, so an approver who
/// skims past a `⟨U+…⟩` in the middle of an address is still told.
pub const HIDDEN_CHARACTERS_NOTICE: &str =
    "⚠ Hidden characters (invisible or reordering) are in this request; each is shown where it is as ⟨U+…⟩.";

/// How the line that names look-alike domains starts (see [`noticed`]).
pub const LOOK_ALIKE_NOTICE: &str = "⚠ Look-alike letters of another script are in";

/// Longest look-alike name the warning line shows (as written, and as the request has
/// it), so the line a card never cuts stays short.
const NAME_CHARS: usize = 80;

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
    let host = one_line(
        &palisade_policy::pattern::bare_host(host).to_ascii_lowercase(),
        255,
    );
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
    let recognised = if method == http::Method::POST
        || method == http::Method::GET
        || method == http::Method::PUT
    {
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
            noticed(with_nested_repeats(
                Summary {
                    title,
                    lines,
                    detail: full,
                },
                body,
            ))
        }
        None => noticed(with_nested_repeats(request.generic(scheme, detail), body)),
    }
}

/// Paths of nested repeated keys named on the warning line at most.
const NESTED_REPEATS_SHOWN: usize = 5;

/// `summary` with a warning first when the body's JSON repeats a key inside a nested
/// object (see `nested.rs`), still at most [`MAX_LINES`] lines.
fn with_nested_repeats(mut summary: Summary, body: &[u8]) -> Summary {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if !matches!(first, Some(b'{' | b'[')) {
        return summary;
    }
    let repeated = nested::repeated_keys(body, NESTED_REPEATS_SHOWN);
    if repeated.is_empty() {
        return summary;
    }
    summary.lines.insert(
        0,
        one_line(
            &format!(
                "⚠ Keys given twice inside the JSON (servers differ on which copy they use; an excerpt may show either): {}",
                repeated.join(", ")
            ),
            LINE_CHARS,
        ),
    );
    summary.lines.truncate(MAX_LINES);
    summary
}

/// `summary` with [`HIDDEN_CHARACTERS_NOTICE`] as its first line when it marks hidden
/// characters anywhere (title, lines or detail), and a line naming the host and mail
/// domains written with look-alike letters of another script (`gmаil.com` is not
/// `gmail.com`: the line shows the name the request really has, `xn--gmil-63d.com`),
/// still at most [`MAX_LINES`] lines.
pub(crate) fn noticed(mut summary: Summary) -> Summary {
    let marks = shows_hidden(&summary.title)
        || summary.lines.iter().any(|line| shows_hidden(line))
        || shows_hidden(&summary.detail);
    let noticed_before = |summary: &Summary, notice: &str| {
        summary
            .lines
            .iter()
            .take(2)
            .any(|line| line.starts_with(notice))
    };
    let mut notices = Vec::new();
    if marks && !noticed_before(&summary, HIDDEN_CHARACTERS_NOTICE) {
        notices.push(HIDDEN_CHARACTERS_NOTICE.to_string());
    }
    if !noticed_before(&summary, LOOK_ALIKE_NOTICE) {
        let everything = format!(
            "{}\n{}\n{}",
            summary.title,
            summary.lines.join("\n"),
            summary.detail
        );
        // The warning is kept whatever else is cut: each name, and the line, short.
        let mut named: Vec<String> = Vec::new();
        for (written, ascii) in clean::look_alike_domains(&everything, 3) {
            let name = format!(
                "{} (really {})",
                one_line(&written, NAME_CHARS),
                one_line(&ascii, NAME_CHARS)
            );
            if !named.contains(&name) {
                named.push(name);
            }
        }
        if !named.is_empty() {
            let line = format!("{LOOK_ALIKE_NOTICE}: {}", named.join(", "));
            notices.push(one_line(&line, LINE_CHARS));
        }
    }
    if notices.is_empty() {
        return summary;
    }
    summary.lines.splice(0..0, notices);
    if summary.lines.len() > MAX_LINES {
        summary.lines = cap_lines(summary.lines);
    }
    summary
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
        let content_types: Vec<String> = self
            .headers
            .get_all(http::header::CONTENT_TYPE)
            .iter()
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
            .collect();
        Params::from_request(&content_types, self.body)
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
                redacted(String::from_utf8_lossy(value.as_bytes()).chars().count())
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
                &body_text(&generic::masked(self.body), DETAIL_BODY_CHARS),
                40,
                LINE_CHARS,
                EXCERPT_CHARS,
            );
            detail.push_str(&lines.join("\n"));
        }
        truncate_chars(&mut detail, DETAIL_CHARS);
        detail
    }
}

/// At most [`MAX_LINES`] lines, each one line of at most [`LINE_CHARS`]; when there are
/// more, the last says how many were left out, so a card never looks complete when it
/// is not.
fn cap_lines(lines: Vec<String>) -> Vec<String> {
    let total = lines.len();
    let keep = if total > MAX_LINES {
        MAX_LINES - 1
    } else {
        total
    };
    let mut capped: Vec<String> = lines
        .into_iter()
        .take(keep)
        .map(|line| one_line(&line, LINE_CHARS))
        .collect();
    if total > keep {
        capped.push(format!(
            "… {} more line(s) left out of this summary; read the request itself before approving",
            total - keep
        ));
    }
    capped
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

/// Longest hidden value shown as just `[redacted]`: longer than a credential usually
/// is, so a length is told, since a field named like a credential can carry anything.
const PLAIN_REDACTION_CHARS: usize = 64;

/// What a person sees for a hidden value `chars` characters long: `[redacted]`, or for
/// a long one `[redacted: N characters]`, so an agent that names a field `token` to
/// send something else (a document, a database dump) under it cannot hide how much
/// goes out.
pub fn redacted(chars: usize) -> String {
    match chars <= PLAIN_REDACTION_CHARS {
        true => String::from("[redacted]"),
        false => format!("[redacted: {chars} characters]"),
    }
}

/// `query` with the values of credential-like parameters replaced by [`redacted`].
pub fn redacted_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, value)) if is_secret_name(name) => {
                format!("{name}={}", redacted(value.chars().count()))
            }
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A recognised request: its title and the lines under it.
type Recognised = (String, Vec<String>);

fn recognise(request: &Request<'_>) -> Option<Recognised> {
    let segments = request.segments();
    let post = *request.method == http::Method::POST;
    // The data of a resumable upload is PUT to the session's address.
    let put = *request.method == http::Method::PUT;
    match (request.host, segments.as_slice()) {
        (
            "gmail.googleapis.com" | "www.googleapis.com",
            ["gmail", "v1", "users", _, "messages", "send"],
        ) if post => gmail::send(request, false),
        (
            "gmail.googleapis.com" | "www.googleapis.com",
            ["upload", "gmail", "v1", "users", _, "messages", "send"],
        ) if post || put => gmail::send(request, true),
        (host, ["api", method])
            if !put && (host == "slack.com" || host.ends_with(".slack.com")) =>
        {
            slack::post(request, method)
        }
        ("api.github.com", ["repos", owner, repo, "issues"]) if post => {
            github::create(request, owner, repo, "issue")
        }
        ("api.github.com", ["repos", owner, repo, "pulls"]) if post => {
            github::create(request, owner, repo, "pull request")
        }
        ("api.github.com", ["repos", owner, repo, "issues" | "pulls", number, "comments"])
            if post =>
        {
            github::comment(request, owner, repo, number)
        }
        ("api.stripe.com", ["v1", object]) if post => stripe::money(request, object),
        _ => None,
    }
}
