//! `glob` and `grep`: finding files and text in the workspace.
//!
//! Both walk with the `ignore` crate (the walker behind ripgrep): `.gitignore`d files
//! and `.git` itself are skipped, symbolic links are not followed (so a link cannot
//! lead a search outside the workspace), and results are capped.

use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobMatcher};
use regex::RegexBuilder;
use serde::Deserialize;

use super::{ToolLimits, Workspace};

/// Longest matching line shown by `grep`.
const MAX_MATCH_CHARS: usize = 500;

#[derive(Deserialize)]
pub(crate) struct GlobArgs {
    pattern: String,
    path: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct GrepArgs {
    pattern: String,
    path: Option<String>,
    glob: Option<String>,
    #[serde(default)]
    case_insensitive: bool,
}

fn matcher(pattern: &str) -> Result<GlobMatcher, String> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(|glob| glob.compile_matcher())
        .map_err(|error| format!("bad glob pattern {pattern:?}: {error}"))
}

/// Regular files under `base` (or `base` itself), in path order.
fn files(base: &Path) -> Vec<PathBuf> {
    if base.is_file() {
        return vec![base.to_path_buf()];
    }
    let mut found: Vec<PathBuf> = ignore::WalkBuilder::new(base)
        .hidden(false)
        .follow_links(false)
        .filter_entry(|entry| entry.file_name() != ".git")
        .build()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_some_and(|kind| kind.is_file()))
        .map(|entry| entry.into_path())
        .collect();
    found.sort();
    found
}

pub(crate) fn glob(
    workspace: &Workspace,
    args: GlobArgs,
    limits: &ToolLimits,
) -> Result<String, String> {
    let base = workspace.resolve(args.path.as_deref().unwrap_or("."))?;
    if !base.exists() {
        return Err(format!("{} does not exist", workspace.display(&base)));
    }
    let glob = matcher(&args.pattern)?;
    let matches: Vec<String> = files(&base)
        .into_iter()
        .filter(|path| {
            path.strip_prefix(&base)
                .is_ok_and(|relative| glob.is_match(relative))
        })
        .map(|path| workspace.display(&path))
        .collect();
    if matches.is_empty() {
        return Ok(format!(
            "no files match {:?} under {}",
            args.pattern,
            workspace.display(&base)
        ));
    }
    let shown = matches.len().min(limits.search_max_results);
    let mut output = matches[..shown].join("\n");
    if matches.len() > shown {
        output.push_str(&format!(
            "\n[{} more not shown; narrow the pattern]",
            matches.len() - shown
        ));
    }
    Ok(output)
}

pub(crate) fn grep(
    workspace: &Workspace,
    args: GrepArgs,
    limits: &ToolLimits,
) -> Result<String, String> {
    let base = workspace.resolve(args.path.as_deref().unwrap_or("."))?;
    if !base.exists() {
        return Err(format!("{} does not exist", workspace.display(&base)));
    }
    let regex = RegexBuilder::new(&args.pattern)
        .case_insensitive(args.case_insensitive)
        .size_limit(1 << 20)
        .build()
        .map_err(|error| format!("bad regular expression: {error}"))?;
    let filter = args.glob.as_deref().map(matcher).transpose()?;
    let mut output = String::new();
    let mut shown = 0usize;
    let mut more = false;
    'files: for path in files(&base) {
        if let Some(filter) = &filter {
            let relative = path.strip_prefix(&base).unwrap_or(&path);
            let name_matches = path
                .file_name()
                .is_some_and(|name| filter.is_match(Path::new(name)));
            if !filter.is_match(relative) && !name_matches {
                continue;
            }
        }
        let too_big = std::fs::metadata(&path)
            .map(|metadata| metadata.len() > limits.file_max_bytes)
            .unwrap_or(true);
        if too_big {
            continue;
        }
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        if bytes.iter().take(8192).any(|&byte| byte == 0) {
            continue;
        }
        let text = String::from_utf8_lossy(&bytes);
        for (number, line) in text.lines().enumerate() {
            if !regex.is_match(line) {
                continue;
            }
            if shown == limits.search_max_results || output.len() >= limits.output_cap_bytes {
                more = true;
                break 'files;
            }
            let line: String = line.chars().take(MAX_MATCH_CHARS).collect();
            output.push_str(&format!(
                "{}:{}:{line}\n",
                workspace.display(&path),
                number + 1
            ));
            shown += 1;
        }
    }
    if shown == 0 {
        return Ok(format!("no matches for {:?}", args.pattern));
    }
    if more {
        output.push_str("[more matches not shown; narrow the pattern or the path]\n");
    }
    Ok(output)
}
