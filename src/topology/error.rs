//! How a topology file's problems are told: one line, `file:line:column:
//! what is wrong`, in plain words, however long or strange the file's values.

use std::path::PathBuf;

/// A topology file that could not be used; displayed as `file:line:column: problem`.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.located())]
pub struct TopologyError {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl TopologyError {
    /// `file:line:column: message`, or `file: message` when no position applies.
    fn located(&self) -> String {
        if self.line == 0 {
            format!("{}: {}", self.path.display(), self.message)
        } else {
            format!(
                "{}:{}:{}: {}",
                self.path.display(),
                self.line,
                self.column,
                self.message
            )
        }
    }
}

/// serde_yaml appends " at line L column C"; we print the position up front instead.
pub(super) fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_string(),
        None => message.to_string(),
    }
}

/// A message in plain words: Rust type names replaced, and a quoted value
/// the file got wrong cut to its start, so that a long one cannot grow the
/// line to kilobytes.
pub(super) fn readable(message: &str) -> String {
    static STRUCT: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    static QUOTED: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let structs =
        STRUCT.get_or_init(|| regex::Regex::new(r"struct [A-Za-z]+").expect("valid regex"));
    let quoted = QUOTED
        .get_or_init(|| regex::Regex::new(r#"(["`])([^"`]{61,})(["`])"#).expect("valid regex"));
    // One line, whatever the file's values hold: control characters escaped.
    let message: String = message
        .chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect();
    let message = structs.replace_all(&message, "a mapping of keys");
    let message = quoted
        .replace_all(&message, |caps: &regex::Captures<'_>| {
            let value = &caps[2];
            let start: String = value.chars().take(40).collect();
            format!("{}{start}…{} ({} bytes)", &caps[1], &caps[3], value.len())
        })
        .into_owned();
    // Whatever else a value held (quotes of its own, say): never kilobytes.
    const LONGEST: usize = 400;
    match message.char_indices().nth(LONGEST) {
        Some((cut, _)) => format!("{}… ({} bytes more)", &message[..cut], message.len() - cut),
        None => message,
    }
}

/// Finds `key:` (optionally with `value`) in block-style YAML: the last
/// occurrence when a value is given, since duplicates are reported on the
/// second one. Falls back to 1:1 for flow-style files.
pub(super) fn locate_key(text: &str, key: &str, value: Option<String>) -> (usize, usize) {
    let mut found = None;
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim_start().trim_start_matches("- ");
        let Some(rest) = trimmed.strip_prefix(key).and_then(|r| r.strip_prefix(':')) else {
            continue;
        };
        let column = line.len() - trimmed.len() + 1;
        let matches_value = value.as_deref().is_none_or(|wanted| {
            let rest = rest.split(" #").next().unwrap_or("").trim();
            rest.trim_matches(|c| c == '"' || c == '\'') == wanted
        });
        if matches_value {
            found = Some((index + 1, column));
            if value.is_none() {
                break;
            }
        }
    }
    found.unwrap_or((1, 1))
}
