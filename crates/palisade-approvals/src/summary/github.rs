//! GitHub issue and pull-request creation and comments: repository, title, branches.

use super::clean::{one_line, text_lines};
use super::{Recognised, Request, EXCERPT_CHARS, LINE_CHARS, MAX_LINES};

pub(super) fn create(
    request: &Request<'_>,
    owner: &str,
    repo: &str,
    kind: &str,
) -> Option<Recognised> {
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
    Some(params.flag(title, lines))
}

pub(super) fn comment(
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
    Some(params.flag(format!("Comment on GitHub {target}"), lines))
}
