//! The least permissions each command needs for a topology (pure): the
//! configure, write and read regular expressions RabbitMQ takes, and the
//! user tags for the management API.
//!
//! Derived from what the commands do, in RabbitMQ's terms: declaring or
//! deleting an exchange or queue needs `configure` on it; a binding (made or
//! removed) needs `write` on its destination and `read` on its source;
//! publishing needs `write` on the exchange (`amq.default` for the default
//! exchange); consuming needs `read` on the queue. Passive declares need
//! nothing on RabbitMQ 3.x (4.3 asks `configure`, which install and teardown
//! have anyway). Reading a vhost through the management API needs the
//! `management` tag and a permission entry on the vhost, whatever it allows.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::cascade::{Desired, PROBE_SINK_QUEUE};
use crate::topology::ArgValue;

/// The commands `permissions` knows, in the order it prints them.
pub const COMMANDS: [&str; 7] = [
    "install", "verify", "plan", "teardown", "probe", "migrate", "transfer",
];

/// Names (exact) and name patterns (regular expressions) of one permission kind.
#[derive(Debug, Default, Clone)]
struct Names {
    exact: BTreeSet<String>,
    patterns: BTreeSet<String>,
}

impl Names {
    fn add(&mut self, names: impl IntoIterator<Item = impl Into<String>>) {
        self.exact.extend(names.into_iter().map(Into::into));
    }

    fn add_pattern(&mut self, pattern: &str) {
        self.patterns.insert(pattern.to_string());
    }

    fn merge(&mut self, other: &Names) {
        self.exact.extend(other.exact.iter().cloned());
        self.patterns.extend(other.patterns.iter().cloned());
    }

    /// One anchored regular expression; `^$` (nothing) when empty. Names
    /// that differ only in a trailing number (the levels) share one
    /// alternation, so the 28 levels read as one name.
    fn regex(&self) -> String {
        let mut by_stem: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
        for name in &self.exact {
            let stem = name.trim_end_matches(|c: char| c.is_ascii_digit());
            by_stem.entry(stem).or_default().push(&name[stem.len()..]);
        }
        let mut parts: Vec<String> = Vec::new();
        for (stem, numbers) in by_stem {
            match numbers.as_slice() {
                [number] => parts.push(escape(&format!("{stem}{number}"))),
                _ if numbers.contains(&"") => {
                    parts.extend(numbers.iter().map(|n| escape(&format!("{stem}{n}"))))
                }
                _ => parts.push(format!("{}({})", escape(stem), numbers_regex(&numbers))),
            }
        }
        parts.extend(self.patterns.iter().cloned());
        match parts.len() {
            0 => "^$".to_string(),
            1 => format!("^{}$", parts[0]),
            _ => format!("^({})$", parts.join("|")),
        }
    }
}

/// A regular expression for exactly these numbers: a digit range when they
/// are consecutive and of one width (`00`..`27` is `[01][0-9]|2[0-7]`), else
/// the numbers themselves.
fn numbers_regex(numbers: &[&str]) -> String {
    let width = numbers[0].len();
    let values: Vec<u64> = numbers.iter().filter_map(|n| n.parse().ok()).collect();
    let consecutive = values.len() == numbers.len()
        && numbers.iter().all(|n| n.len() == width)
        && values.windows(2).all(|pair| pair[1] == pair[0] + 1);
    if !consecutive {
        return numbers.join("|");
    }
    digit_range(numbers[0], numbers[numbers.len() - 1]).join("|")
}

/// Alternatives matching every digit string from `low` to `high` (same width).
fn digit_range(low: &str, high: &str) -> Vec<String> {
    let (Some(l), Some(h)) = (low.chars().next(), high.chars().next()) else {
        return vec![String::new()];
    };
    let (low_rest, high_rest) = (&low[1..], &high[1..]);
    if l == h {
        return digit_range(low_rest, high_rest)
            .into_iter()
            .map(|rest| format!("{l}{rest}"))
            .collect();
    }
    let any = "[0-9]".repeat(low_rest.len());
    let class = |from: char, to: char| match (from, to) {
        _ if from == to => from.to_string(),
        _ => format!("[{from}-{to}]"),
    };
    let low_is_full = low_rest.chars().all(|c| c == '0');
    let high_is_full = high_rest.chars().all(|c| c == '9');
    let mut alternatives = Vec::new();
    let first = if low_is_full {
        l
    } else {
        let nines = "9".repeat(low_rest.len());
        alternatives.extend(
            digit_range(low_rest, &nines)
                .into_iter()
                .map(|r| format!("{l}{r}")),
        );
        char::from(l as u8 + 1)
    };
    let last = if high_is_full {
        h
    } else {
        char::from(h as u8 - 1)
    };
    if first <= last {
        alternatives.push(format!("{}{any}", class(first, last)));
    }
    if !high_is_full {
        let zeros = "0".repeat(high_rest.len());
        alternatives.extend(
            digit_range(&zeros, high_rest)
                .into_iter()
                .map(|r| format!("{h}{r}")),
        );
    }
    alternatives
}

/// Escapes the characters that mean something in a regular expression
/// (not `-`, which means nothing outside a class: the result stays readable).
fn escape(name: &str) -> String {
    let mut escaped = String::with_capacity(name.len());
    for c in name.chars() {
        if "\\.+*?()|[]{}^$#&~".contains(c) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// What one command (or all of them together) needs.
#[derive(Debug, Default, Clone)]
pub struct Needs {
    configure: Names,
    write: Names,
    read: Names,
    tags: BTreeSet<&'static str>,
    notes: BTreeSet<String>,
}

/// `Needs` as printed: one JSON object per command.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Grant {
    pub command: String,
    pub configure: String,
    pub write: String,
    pub read: String,
    pub tags: Vec<String>,
    pub notes: Vec<String>,
}

/// What besides the topology decides the names: migrate's source cascade
/// and the poison queue of migrate and transfer.
pub struct Extra<'a> {
    pub migrate_source: Option<&'a Desired>,
    pub poison_queue: &'a str,
}

/// Names a probe queue (and a failed probe's sink) can have.
const PROBE_QUEUES: &str = r"delaytopo\.probe\.[0-9a-f]{16}";
/// Server-named queues: transfer's same-broker check declares one.
const SERVER_NAMED_QUEUES: &str = r"amq\.gen-.*";
const NO_FEATURE_FLAGS: &str = "without the `administrator` tag the feature flags \
    (stream_queue, needed for at-least-once dead-lettering) are not checked";

impl Needs {
    /// Declares (or deletes) every exchange and queue of `desired`. A queue
    /// with a dead-letter exchange also needs `write` on that exchange:
    /// RabbitMQ checks it when the queue is declared.
    fn declare(&mut self, desired: &Desired) {
        self.configure
            .add(desired.exchanges.iter().map(|e| e.name.clone()));
        for queue in &desired.queues {
            self.configure.add([queue.name.clone()]);
            if let Some(ArgValue::Str(exchange)) = queue.arguments.get("x-dead-letter-exchange") {
                self.write.add([exchange.clone()]);
            }
        }
    }

    /// Declares the endpoint exchanges and queues the topology declares
    /// (install only: teardown never deletes them).
    fn declare_endpoints(&mut self, desired: &Desired) {
        for exchange in &desired.endpoint_exchanges {
            self.configure.add([exchange.name.clone()]);
        }
        for queue in &desired.endpoint_queues {
            self.configure.add([queue.name.clone()]);
            if let Some(ArgValue::Str(exchange)) = queue.arguments.get("x-dead-letter-exchange") {
                self.write.add([exchange.clone()]);
            }
        }
    }

    /// Makes (or removes) every binding of `desired`, endpoint bindings included.
    fn bind(&mut self, desired: &Desired) {
        for binding in &desired.bindings {
            self.write.add([binding.destination.clone()]);
            self.read.add([binding.source.clone()]);
        }
    }

    /// Reads the vhost through the management API.
    fn observe(&mut self) {
        self.tags.insert("management");
        self.notes.insert(NO_FEATURE_FLAGS.to_string());
    }

    /// Publishes into `desired`'s cascade (level and delivery exchanges).
    fn publish(&mut self, desired: &Desired) {
        self.write
            .add(desired.exchanges.iter().map(|e| e.name.clone()));
    }

    /// Publishes through the target cascade's staging queues and releases
    /// from them (`moving::staging`): declares them, binds each to its
    /// exchange, publishes and consumes, and holds the lock queue.
    fn stage(&mut self, desired: &Desired) {
        let names = desired.staging_names();
        self.configure.add(names.iter().cloned());
        self.configure.add([desired.staging_lock()]);
        self.write.add(names.iter().cloned());
        self.read.add(names);
    }

    fn poison(&mut self, queue: &str) {
        self.configure.add([queue]);
        self.write.add(["amq.default"]);
    }

    pub fn grant(&self, command: &str) -> Grant {
        Grant {
            command: command.to_string(),
            configure: self.configure.regex(),
            write: self.write.regex(),
            read: self.read.regex(),
            tags: self.tags.iter().map(|t| t.to_string()).collect(),
            notes: self.notes.iter().cloned().collect(),
        }
    }

    /// The exact names a user's permissions (`configure`, `write`, `read`
    /// regular expressions, as RabbitMQ holds them) do not cover, as
    /// "`write` on Sales"; `None` when a regular expression cannot be read
    /// here (Erlang's and Rust's dialects differ at the edges).
    pub fn not_covered(&self, configure: &str, write: &str, read: &str) -> Option<Vec<String>> {
        let mut missing = Vec::new();
        for (kind, names, granted) in [
            ("configure", &self.configure, configure),
            ("write", &self.write, write),
            ("read", &self.read, read),
        ] {
            let granted = regex::Regex::new(granted).ok()?;
            missing.extend(
                names
                    .exact
                    .iter()
                    .filter(|name| !granted.is_match(name))
                    .map(|name| format!("`{kind}` on {name}")),
            );
        }
        Some(missing)
    }

    fn merge(&mut self, other: &Needs) {
        self.configure.merge(&other.configure);
        self.write.merge(&other.write);
        self.read.merge(&other.read);
        self.tags.extend(other.tags.iter().copied());
        self.notes.extend(other.notes.iter().cloned());
    }
}

/// What `command` needs for `desired`; `None` for a command that is not known.
pub fn needs(command: &str, desired: &Desired, extra: &Extra<'_>) -> Option<Needs> {
    let mut needs = Needs::default();
    match command {
        // install compares with the management API where it answers.
        "install" | "teardown" => {
            needs.declare(desired);
            if command == "install" {
                needs.declare_endpoints(desired);
            } else {
                // The staging queues and exchanges moves leave, and their lock.
                needs.configure.add(desired.staging_names());
                needs.configure.add([desired.staging_lock()]);
            }
            needs.bind(desired);
            needs.observe();
        }
        "verify" | "plan" => needs.observe(),
        "probe" => {
            needs.configure.add_pattern(PROBE_QUEUES);
            needs.write.add_pattern(PROBE_QUEUES);
            // The permanent sink for late probe messages, bound to the delivery exchange.
            needs.configure.add([PROBE_SINK_QUEUE]);
            needs.write.add([PROBE_SINK_QUEUE]);
            needs.read.add_pattern(PROBE_QUEUES);
            needs.read.add([desired.delivery_exchange.clone()]);
            needs.publish(desired);
            needs.observe();
        }
        "migrate" => {
            // The target cascade is installed if missing; the source drained.
            needs.declare(desired);
            needs.bind(desired);
            needs.publish(desired);
            needs.stage(desired);
            needs.poison(extra.poison_queue);
            if let Some(source) = extra.migrate_source {
                needs.read.add(source.queues.iter().map(|q| q.name.clone()));
            }
            needs.observe();
        }
        "transfer" => {
            // Both brokers get the same grant: the source is drained, the
            // target installed and published to, and each may be asked
            // whether it is the other (a server-named exclusive queue).
            needs.declare(desired);
            needs.bind(desired);
            needs.publish(desired);
            needs.stage(desired);
            needs.poison(extra.poison_queue);
            needs
                .read
                .add(desired.queues.iter().map(|q| q.name.clone()));
            needs.configure.add_pattern(SERVER_NAMED_QUEUES);
            needs.observe();
        }
        _ => return None,
    }
    Some(needs)
}

/// One grant per command named (all when none), then `all` for a user that
/// runs every one of them.
pub fn grants(
    commands: &[String],
    desired: &Desired,
    extra: &Extra<'_>,
) -> Result<Vec<Grant>, String> {
    let named: Vec<&str> = if commands.is_empty() {
        COMMANDS.to_vec()
    } else {
        commands.iter().map(String::as_str).collect()
    };
    let mut all = Needs::default();
    let mut grants = Vec::new();
    for command in named {
        let Some(needs) = needs(command, desired, extra) else {
            return Err(format!(
                "`{command}` is not a command that talks to a broker; one of: {}",
                COMMANDS.join(", ")
            ));
        };
        all.merge(&needs);
        grants.push(needs.grant(command));
    }
    if grants.len() > 1 {
        grants.push(all.grant("all"));
    }
    Ok(grants)
}

#[cfg(test)]
mod tests;
