//! What a command hands back to `main` for printing: the verdict and both
//! renderings. Text goes to stdout in text mode; in JSON mode stdout carries
//! exactly one JSON document with `ok` at the top.

use serde_json::{Map, Value};

use crate::cli::Output;

#[derive(Debug)]
pub struct Outcome {
    /// Exit 0 when true, 1 when false.
    pub ok: bool,
    /// Human-readable result (text mode), or the prometheus exposition text.
    pub text: String,
    /// Machine-readable result (JSON mode); `ok` is added by `print`.
    pub json: Value,
    /// Exit code when it is not simply 0/1 by `ok` (several vhosts, some failed).
    pub code: Option<u8>,
}

impl Outcome {
    pub fn new(ok: bool, text: String, json: Value) -> Outcome {
        Outcome {
            ok,
            text,
            json,
            code: None,
        }
    }

    /// Writes the outcome to stdout in the chosen format.
    pub fn print(self, output: Output) -> std::io::Result<()> {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        match output {
            Output::Json => {
                let document = with_ok(self.ok, self.json);
                serde_json::to_writer_pretty(&mut stdout, &document)?;
                writeln!(stdout)
            }
            Output::Text | Output::Prometheus => {
                stdout.write_all(self.text.as_bytes())?;
                if !self.text.is_empty() && !self.text.ends_with('\n') {
                    writeln!(stdout)?;
                }
                Ok(())
            }
        }
    }
}

/// `{"ok": ok, ...fields}` with `ok` first.
pub fn with_ok(ok: bool, fields: Value) -> Value {
    let mut document = Map::new();
    document.insert("ok".into(), Value::Bool(ok));
    match fields {
        Value::Object(map) => document.extend(map.into_iter().filter(|(k, _)| k != "ok")),
        Value::Null => {}
        other => {
            document.insert("result".into(), other);
        }
    }
    Value::Object(document)
}

/// The JSON document printed when a command fails outright.
pub fn error_document(message: &str, exit_code: u8) -> Value {
    serde_json::json!({ "ok": false, "error": message, "exit_code": exit_code })
}

/// The first `shown` items joined by `separator`, then how many more: a
/// list in an error message that cannot grow a line to kilobytes.
pub fn first_few(items: &[String], shown: usize, separator: &str) -> String {
    let listed = items[..items.len().min(shown)].join(separator);
    match items.len().saturating_sub(shown) {
        0 => listed,
        more => format!("{listed}{separator}and {more} more"),
    }
}

/// Human text with the long runs of `*.` in binding keys written short:
/// `*.{27}1.#` is `*.` 27 times, then `1.#`. A level's binding key is up to
/// 2 × levels characters; written out, every line that names one wraps at
/// 80 columns. Runs of fewer than three stay as they are. JSON keeps every
/// key whole.
pub fn short_binding_keys(text: &str) -> String {
    const STEP: &str = "*.";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(STEP) {
        out.push_str(&rest[..start]);
        let run = &rest[start..];
        let count = run
            .as_bytes()
            .chunks(2)
            .take_while(|pair| *pair == STEP.as_bytes())
            .count();
        if count >= 3 {
            out.push_str(&format!("{STEP}{{{count}}}"));
        } else {
            out.push_str(&run[..count * 2]);
        }
        rest = &run[count * 2..];
    }
    out.push_str(rest);
    out
}

/// How a text of several lines is laid out within 80 columns: where its
/// first line starts (after a label), where a line wrapped at a space
/// continues, and where each further line of the text starts. A word longer
/// than a line (a URL) stays whole.
pub struct Layout {
    pub start: usize,
    pub wrapped: usize,
    pub next_line: usize,
}

impl Layout {
    pub const WIDTH: usize = 80;

    pub fn apply(&self, text: &str) -> String {
        let mut out = String::new();
        for (index, line) in text.split('\n').enumerate() {
            let mut column = self.start;
            if index > 0 {
                out.push('\n');
                out.push_str(&" ".repeat(self.next_line));
                column = self.next_line;
            }
            let words = line.trim_start();
            let lead = &line[..line.len() - words.len()];
            out.push_str(lead);
            column += lead.len();
            for (position, word) in words.split(' ').enumerate() {
                let length = word.chars().count();
                if position > 0 && column + 1 + length > Self::WIDTH {
                    out.push('\n');
                    out.push_str(&" ".repeat(self.wrapped));
                    column = self.wrapped;
                } else if position > 0 {
                    out.push(' ');
                    column += 1;
                }
                out.push_str(word);
                column += length;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_runs_of_single_word_wildcards_are_counted() {
        let key = format!("{}1.#", "*.".repeat(27));
        assert_eq!(
            short_binding_keys(&format!("binding a -> queue b ({key})")),
            "binding a -> queue b (*.{27}1.#)"
        );
        assert_eq!(
            short_binding_keys("(*.*.0.#) (1.#) #.Sales"),
            "(*.*.0.#) (1.#) #.Sales"
        );
        assert_eq!(
            short_binding_keys("*.*.*.1.# and *.*.*.*."),
            "*.{3}1.# and *.{4}"
        );
        assert_eq!(short_binding_keys("a *.b ï*."), "a *.b ï*.");
    }
}
