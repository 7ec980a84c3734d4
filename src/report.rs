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
