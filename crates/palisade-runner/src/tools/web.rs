//! `web_fetch`: GET a URL through the runner's HTTP client (so, inside a sandbox,
//! through the vault) and return readable text.
//!
//! HTML is turned into plain text with `html2text`; the download and the text are
//! both capped. Redirects are reported, not followed, so the model decides (and the
//! vault judges) every host it reaches. A refusal from the vault (`{"error":
//! "blocked_by_policy", "message": ...}`) comes back as a readable error.

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE, LOCATION, USER_AGENT};
use http::{Request, Uri};
use http_body_util::Full;
use serde::Deserialize;

use super::ToolLimits;
use crate::http::HttpClient;
use crate::provider::{error_fields, truncate};

/// Columns html2text wraps at.
const TEXT_WIDTH: usize = 100;
/// Largest error body read.
const MAX_ERROR_BODY: usize = 64 * 1024;

#[derive(Deserialize)]
pub(crate) struct FetchArgs {
    pub(crate) url: String,
}

pub(crate) async fn fetch(
    http: &HttpClient,
    args: FetchArgs,
    limits: &ToolLimits,
) -> Result<String, String> {
    let uri: Uri = args
        .url
        .trim()
        .parse()
        .map_err(|error| format!("bad URL {:?}: {error}", args.url))?;
    if !matches!(uri.scheme_str(), Some("http") | Some("https")) || uri.host().is_none() {
        return Err(format!(
            "bad URL {:?}: only http:// and https:// URLs with a host can be fetched",
            args.url
        ));
    }
    let request = Request::get(uri.clone())
        .header(USER_AGENT, "palisade-runner")
        .header(
            ACCEPT,
            "text/html, text/plain;q=0.9, application/json;q=0.9, */*;q=0.5",
        )
        .body(Full::new(Bytes::new()))
        .map_err(|error| format!("cannot build the request: {error}"))?;
    let response = http
        .send(request)
        .await
        .map_err(|error| format!("GET {uri} failed: {error}"))?;
    let status = response.status;
    if status.is_redirection() {
        let location = response
            .header(LOCATION.as_str())
            .unwrap_or("(no location)");
        return Err(format!(
            "GET {uri} answered {status} redirecting to {location}; fetch that URL if it is the one you want"
        ));
    }
    let content_type = response
        .header(CONTENT_TYPE.as_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if !status.is_success() {
        let (body, _) = response
            .read_limited(MAX_ERROR_BODY)
            .await
            .map_err(|error| {
                format!("GET {uri} answered {status}; reading its body failed: {error}")
            })?;
        return Err(match error_fields(&body) {
            Some((kind, message)) => format!("GET {uri} was refused ({status} {kind}): {message}"),
            None => format!(
                "GET {uri} answered {status}:\n{}",
                truncate(&to_text(&body, &content_type), 2000)
            ),
        });
    }
    let (body, cut) = response
        .read_limited(limits.web_max_bytes)
        .await
        .map_err(|error| format!("GET {uri}: {error}"))?;
    let is_text = content_type.is_empty()
        || content_type.starts_with("text/")
        || content_type.contains("json")
        || content_type.contains("xml")
        || content_type.contains("javascript");
    if !is_text {
        return Ok(format!(
            "GET {uri}: {} bytes of {content_type}, not shown as text",
            body.len()
        ));
    }
    let mut text = to_text(&body, &content_type);
    if text.len() > limits.output_cap_bytes {
        text = truncate(&text, limits.output_cap_bytes);
        text.push_str("\n[text truncated]");
    } else if cut {
        text.push_str("\n[page truncated: larger than the download limit]");
    }
    Ok(text)
}

fn to_text(body: &[u8], content_type: &str) -> String {
    if content_type.contains("html") {
        if let Ok(text) = html2text::from_read(body, TEXT_WIDTH) {
            return text;
        }
    }
    String::from_utf8_lossy(body).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_becomes_readable_text() {
        let html = b"<html><head><style>p{}</style><title>T</title></head><body>\
            <h1>Weather</h1><p>Sunny <b>today</b>.</p><ul><li>one</li><li>two</li></ul>\
            <script>var hidden = 1;</script></body></html>";
        let text = to_text(html, "text/html; charset=utf-8");
        assert!(text.contains("Weather"), "{text}");
        assert!(text.contains("Sunny"), "{text}");
        assert!(text.contains("one") && text.contains("two"), "{text}");
        assert!(!text.contains("<p>"), "{text}");
        assert!(!text.contains("hidden"), "{text}");
        assert_eq!(to_text(b"{\"a\":1}", "application/json"), "{\"a\":1}");
    }
}
