//! Renders verify's findings for people and for monitoring: a text table
//! grouped by level (colour only on a terminal) and the Prometheus
//! textfile-collector exposition. The JSON rendering is serde's.

use std::fmt::Write;
use std::io::IsTerminal;

use serde::{Deserialize, Serialize};

use crate::counted::counted;
use crate::diff::{Finding, Severity};
use crate::health::LevelState;
use crate::report::Layout;

/// How many findings of each severity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub errors: usize,
    pub warnings: usize,
    pub info: usize,
}

impl Counts {
    pub fn of(findings: &[Finding]) -> Counts {
        let count = |severity| findings.iter().filter(|f| f.severity == severity).count();
        Counts {
            errors: count(Severity::Error),
            warnings: count(Severity::Warning),
            info: count(Severity::Info),
        }
    }

    /// `2 errors, 1 warning, 0 notes`.
    pub fn describe(&self) -> String {
        format!(
            "{}, {}, {}",
            counted(self.errors as u64, "error"),
            counted(self.warnings as u64, "warning"),
            counted(self.info as u64, "note")
        )
    }
}

/// Colour when stdout is a terminal and `NO_COLOR` is not set.
pub fn colour_wanted() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

fn label(severity: Severity) -> &'static str {
    match severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Info => "info",
    }
}

/// The severity word padded to one width, coloured when asked.
fn severity_word(severity: Severity, colour: bool) -> String {
    let word = format!("{:<7}", label(severity));
    if !colour {
        return word;
    }
    let code = match severity {
        Severity::Error => "31",
        Severity::Warning => "33",
        Severity::Info => "36",
    };
    format!("\x1b[{code}m{word}\x1b[0m")
}

/// Where a finding's message starts, after the indent and severity word;
/// its wrapped lines continue there.
const MESSAGE_COLUMN: usize = 16;
/// Where the further lines of a message of several lines (a conflict's
/// differences) start: under the severity word.
const CONTINUATION_INDENT: usize = 7;

/// A finding's message as printed: binding keys short, within 80 columns.
fn layout(message: &str) -> String {
    let message = crate::report::short_binding_keys(message);
    Layout {
        start: MESSAGE_COLUMN,
        wrapped: MESSAGE_COLUMN,
        next_line: CONTINUATION_INDENT,
    }
    .apply(&message)
}

/// Findings worst first, then as found.
fn worst_first<'a>(findings: impl Iterator<Item = &'a Finding>) -> Vec<&'a Finding> {
    let mut sorted: Vec<&Finding> = findings.collect();
    sorted.sort_by_key(|f| std::cmp::Reverse(f.severity));
    sorted
}

/// One row per level, highest first, each followed by its findings; then the
/// findings that belong to no level.
pub fn text(findings: &[Finding], levels: &[LevelState], colour: bool) -> String {
    let width = levels
        .iter()
        .map(|l| l.queue.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let finding_line = |f: &Finding| {
        format!(
            "       {}  {}\n",
            severity_word(f.severity, colour),
            layout(&f.message)
        )
    };
    let mut out = String::new();
    let _ = writeln!(out, "LEVEL  {:<width$}  DELAYED  ONLINE", "QUEUE");
    for level in levels {
        let delayed = level
            .messages
            .map_or_else(|| "missing".to_string(), |m| m.to_string());
        let online = if level.members == 0 {
            "-".to_string()
        } else {
            format!("{}/{}", level.online, level.members)
        };
        let _ = writeln!(
            out,
            "{:>5}  {:<width$}  {delayed:>7}  {online}",
            format!("{:02}", level.level),
            level.queue
        );
        for f in worst_first(findings.iter().filter(|f| f.level == Some(level.level))) {
            out.push_str(&finding_line(f));
        }
    }
    let elsewhere = worst_first(findings.iter().filter(|f| {
        f.level
            .is_none_or(|l| !levels.iter().any(|level| level.level == l))
    }));
    if !elsewhere.is_empty() {
        out.push_str("\nDELIVERY, ENDPOINTS AND BROKER\n");
        for f in elsewhere {
            out.push_str(&finding_line(f));
        }
    }
    out
}

/// One vhost's numbers for the exposition; `up` is false when it could not be read.
#[derive(Debug, Clone, Default)]
pub struct VhostHealth {
    pub vhost: String,
    pub up: bool,
    pub counts: Counts,
    pub levels: Vec<LevelState>,
}

/// A label value with `\`, `"` and newlines escaped as the text format wants.
fn escape(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', r#"\""#)
        .replace('\n', r"\n")
}

/// The Prometheus text exposition (textfile-collector format) of several vhosts:
/// each metric family once, with HELP and TYPE, its samples together.
pub fn prometheus(vhosts: &[VhostHealth]) -> String {
    let mut out = String::new();
    let mut family = |name: &str, help: &str, samples: Vec<(String, String)>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    };
    let vhost_label = |v: &VhostHealth| format!("vhost=\"{}\"", escape(&v.vhost));
    family(
        "delaytopo_up",
        "1 when verify could read the vhost through the management API, 0 when not.",
        vhosts
            .iter()
            .map(|v| (vhost_label(v), u8::from(v.up).to_string()))
            .collect(),
    );
    let up: Vec<&VhostHealth> = vhosts.iter().filter(|v| v.up).collect();
    family(
        "delaytopo_findings",
        "Findings of verify by severity (errors fail the check).",
        up.iter()
            .flat_map(|v| {
                [
                    ("error", v.counts.errors),
                    ("warning", v.counts.warnings),
                    ("info", v.counts.info),
                ]
                .map(|(severity, n)| {
                    (
                        format!("{},severity=\"{severity}\"", vhost_label(v)),
                        n.to_string(),
                    )
                })
            })
            .collect(),
    );
    let per_level = |value: &dyn Fn(&LevelState) -> Option<usize>| -> Vec<(String, String)> {
        up.iter()
            .flat_map(|v| {
                v.levels.iter().filter_map(move |l| {
                    value(l).map(|n| {
                        (
                            format!("{},level=\"{}\"", vhost_label(v), l.level),
                            n.to_string(),
                        )
                    })
                })
            })
            .collect()
    };
    family(
        "delaytopo_level_messages",
        "Delayed messages a level queue holds: ready, unacknowledged and dead-letter backlog.",
        per_level(&|l| l.messages.map(|m| m as usize)),
    );
    family(
        "delaytopo_level_members",
        "Members of a quorum level queue (0 when the queue is missing).",
        per_level(&|l| Some(l.members)),
    );
    family(
        "delaytopo_level_online_members",
        "Members of a quorum level queue that are online (0 when the queue is missing).",
        per_level(&|l| Some(l.online)),
    );
    family(
        "delaytopo_level_leader",
        "1 for the node a quorum level queue's leader (and dead-letter worker) runs on.",
        up.iter()
            .flat_map(|v| {
                v.levels.iter().filter_map(move |l| {
                    l.leader.as_ref().map(|node| {
                        (
                            format!(
                                "{},level=\"{}\",node=\"{}\"",
                                vhost_label(v),
                                l.level,
                                escape(node)
                            ),
                            "1".to_string(),
                        )
                    })
                })
            })
            .collect(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(severity: Severity, level: Option<u8>, message: &str) -> Finding {
        Finding {
            severity,
            entity: "e".into(),
            kind: "k".into(),
            expected: None,
            actual: None,
            message: message.into(),
            level,
        }
    }

    fn level(level: u8, messages: Option<u64>) -> LevelState {
        LevelState {
            level,
            queue: format!("q-{level:02}"),
            messages,
            members: usize::from(messages.is_some()),
            online: usize::from(messages.is_some()),
            leader: messages.map(|_| "rabbit@a".to_string()),
        }
    }

    #[test]
    fn findings_sit_under_their_level_worst_first() {
        let findings = [
            finding(Severity::Info, Some(1), "note on 1"),
            finding(Severity::Error, Some(1), "broken 1"),
            finding(Severity::Warning, None, "suffix"),
        ];
        let out = text(&findings, &[level(1, Some(3)), level(0, None)], false);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "LEVEL  QUEUE  DELAYED  ONLINE");
        assert_eq!(lines[1], "   01  q-01         3  1/1");
        assert_eq!(lines[2], "       error    broken 1");
        assert_eq!(lines[3], "       info     note on 1");
        assert_eq!(lines[4], "   00  q-00   missing  -");
        assert_eq!(lines[6], "DELIVERY, ENDPOINTS AND BROKER");
        assert_eq!(lines[7], "       warning  suffix");
        assert!(!out.contains('\x1b'));
        assert!(text(&findings, &[], true).contains("\x1b[31merror"));
    }

    #[test]
    fn long_messages_wrap_within_80_columns_under_their_start() {
        let long = format!("word {}", "lengthy ".repeat(12).trim_end());
        let lines: Vec<String> = layout(&long).lines().map(String::from).collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines
            .iter()
            .all(|l| 16 + l.len() <= 80 || l.starts_with(' ')));
        assert!(lines[1].starts_with(&" ".repeat(16)) && !lines[1].starts_with(&" ".repeat(17)));
        let conflict =
            "queue q differs in 2 properties:\n  a is 1, expected 2\n  b is 3, expected 4";
        assert_eq!(
            layout(conflict),
            "queue q differs in 2 properties:\n         a is 1, expected 2\n         b is 3, expected 4"
        );
        let key = format!("binding a -> queue b ({}1.#) is missing", "*.".repeat(27));
        assert_eq!(layout(&key), "binding a -> queue b (*.{27}1.#) is missing");
    }

    #[test]
    fn counts_describe_themselves() {
        let findings = [
            finding(Severity::Error, None, ""),
            finding(Severity::Info, None, ""),
            finding(Severity::Info, None, ""),
        ];
        assert_eq!(
            Counts::of(&findings).describe(),
            "1 error, 0 warnings, 2 notes"
        );
    }

    #[test]
    fn the_exposition_has_each_family_once_and_escapes_labels() {
        let vhosts = [
            VhostHealth {
                vhost: "a\"b".into(),
                up: true,
                counts: Counts {
                    errors: 2,
                    warnings: 0,
                    info: 1,
                },
                levels: vec![level(1, Some(4)), level(0, None)],
            },
            VhostHealth {
                vhost: "down".into(),
                ..VhostHealth::default()
            },
        ];
        let out = prometheus(&vhosts);
        assert_eq!(out.matches("# TYPE delaytopo_up gauge").count(), 1);
        assert!(out.contains("delaytopo_up{vhost=\"a\\\"b\"} 1\n"));
        assert!(out.contains("delaytopo_up{vhost=\"down\"} 0\n"));
        assert!(out.contains("delaytopo_findings{vhost=\"a\\\"b\",severity=\"error\"} 2\n"));
        assert!(out.contains("delaytopo_level_messages{vhost=\"a\\\"b\",level=\"1\"} 4\n"));
        assert!(!out.contains("delaytopo_level_messages{vhost=\"a\\\"b\",level=\"0\"}"));
        assert!(out.contains("delaytopo_level_online_members{vhost=\"a\\\"b\",level=\"0\"} 0\n"));
        assert!(!out.contains("vhost=\"down\",severity"));
    }
}
