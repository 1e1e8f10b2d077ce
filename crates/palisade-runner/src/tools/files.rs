//! `read`, `write` and `edit`: files inside the workspace.
//!
//! Each refuses what would flood the model's context or the disk: files larger than
//! [`ToolLimits::file_max_bytes`](super::ToolLimits), binary files, and reads that
//! would return more than the output cap (the model is told how to read further).
//! `edit` is an exact string replacement, as the model saw the text in `read`: it
//! fails when the text is missing or ambiguous, so a stale view never edits the
//! wrong place.

use std::path::Path;

use serde::Deserialize;

use super::{ToolLimits, Workspace};

/// Longest line returned by `read`.
const MAX_LINE_CHARS: usize = 2000;
/// Lines returned by `read` when no limit is given.
const DEFAULT_READ_LINES: usize = 2000;

#[derive(Deserialize)]
pub(crate) struct ReadArgs {
    path: String,
    /// First line to return, 1-based.
    offset: Option<usize>,
    /// Number of lines to return.
    limit: Option<usize>,
}

#[derive(Deserialize)]
pub(crate) struct WriteArgs {
    path: String,
    content: String,
}

#[derive(Deserialize)]
pub(crate) struct EditArgs {
    path: String,
    old_string: String,
    new_string: String,
    #[serde(default)]
    replace_all: bool,
}

fn read_text(workspace: &Workspace, path: &Path, limits: &ToolLimits) -> Result<String, String> {
    let shown = workspace.display(path);
    let metadata = std::fs::metadata(path).map_err(|error| format!("{shown}: {error}"))?;
    if metadata.is_dir() {
        return Err(format!(
            "{shown} is a directory; use glob to list files in it"
        ));
    }
    if metadata.len() > limits.file_max_bytes {
        return Err(format!(
            "{shown} is {} bytes, over the {} byte limit; look at parts of it with bash (head, sed -n, grep)",
            metadata.len(),
            limits.file_max_bytes
        ));
    }
    let bytes = std::fs::read(path).map_err(|error| format!("{shown}: {error}"))?;
    if bytes.iter().take(8192).any(|&byte| byte == 0) {
        return Err(format!(
            "{shown} looks binary; inspect it with bash (file, xxd | head)"
        ));
    }
    String::from_utf8(bytes).map_err(|_| format!("{shown} is not UTF-8 text"))
}

pub(crate) fn read(
    workspace: &Workspace,
    args: ReadArgs,
    limits: &ToolLimits,
) -> Result<String, String> {
    let path = workspace.resolve(&args.path)?;
    let text = read_text(workspace, &path, limits)?;
    let first = args.offset.unwrap_or(1).max(1);
    let count = args.limit.unwrap_or(DEFAULT_READ_LINES).max(1);
    let total_lines = text.lines().count();
    if total_lines == 0 {
        return Ok(format!("({} is empty)", workspace.display(&path)));
    }
    if first > total_lines {
        return Err(format!(
            "{} has {total_lines} lines; offset {first} is past the end",
            workspace.display(&path)
        ));
    }
    let mut output = String::new();
    let mut last = first - 1;
    for (number, line) in text.lines().enumerate().skip(first - 1).take(count) {
        let line = if line.chars().count() > MAX_LINE_CHARS {
            let cut: String = line.chars().take(MAX_LINE_CHARS).collect();
            format!("{cut}… [line cut]")
        } else {
            line.to_string()
        };
        let numbered = format!("{:>6}\t{line}\n", number + 1);
        if output.len() + numbered.len() > limits.output_cap_bytes {
            break;
        }
        output.push_str(&numbered);
        last = number + 1;
    }
    if last < total_lines {
        output.push_str(&format!(
            "[lines {first}-{last} of {total_lines}; read more with offset {}]\n",
            last + 1
        ));
    }
    Ok(output)
}

pub(crate) fn write(
    workspace: &Workspace,
    args: WriteArgs,
    limits: &ToolLimits,
) -> Result<String, String> {
    let path = workspace.resolve(&args.path)?;
    let shown = workspace.display(&path);
    if args.content.len() as u64 > limits.file_max_bytes {
        return Err(format!(
            "the content is {} bytes, over the {} byte limit",
            args.content.len(),
            limits.file_max_bytes
        ));
    }
    if path.is_dir() {
        return Err(format!("{shown} is a directory"));
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|error| format!("{shown}: {error}"))?;
    }
    std::fs::write(&path, &args.content).map_err(|error| format!("{shown}: {error}"))?;
    Ok(format!("wrote {} bytes to {shown}", args.content.len()))
}

pub(crate) fn edit(
    workspace: &Workspace,
    args: EditArgs,
    limits: &ToolLimits,
) -> Result<String, String> {
    let path = workspace.resolve(&args.path)?;
    let shown = workspace.display(&path);
    if args.old_string.is_empty() {
        return Err("old_string is empty; to create a file use write".to_string());
    }
    if args.old_string == args.new_string {
        return Err("old_string and new_string are the same; nothing to change".to_string());
    }
    let text = read_text(workspace, &path, limits)?;
    let found = text.matches(args.old_string.as_str()).count();
    if found == 0 {
        return Err(format!(
            "old_string was not found in {shown}; read the file and copy the exact text, whitespace included"
        ));
    }
    if found > 1 && !args.replace_all {
        return Err(format!(
            "old_string occurs {found} times in {shown}; include more surrounding text to make it unique, or set replace_all"
        ));
    }
    let changed = if args.replace_all {
        text.replace(&args.old_string, &args.new_string)
    } else {
        text.replacen(&args.old_string, &args.new_string, 1)
    };
    std::fs::write(&path, changed).map_err(|error| format!("{shown}: {error}"))?;
    Ok(format!(
        "replaced {found} occurrence{} in {shown}",
        if found == 1 { "" } else { "s" }
    ))
}
