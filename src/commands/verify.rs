//! `verify`: is the cascade on the broker the one the topology describes, and
//! is it healthy? Read-only by construction: the only broker access is GETs
//! through `Management` — a handful per vhost, issued at once, plus one
//! re-read of the queues when a level shows a dead-letter backlog — never an
//! AMQP declare or a management write, whatever it finds. Only `--probe`
//! writes, and only because it was asked to.

use std::time::Duration;

use anyhow::Result;
use serde_json::{json, Value};

use crate::cascade::Desired;
use crate::cli::{Output, VerifyArgs};
use crate::commands::fanout::{each_target, VhostOutcome};
use crate::commands::probe;
use crate::context::Context;
use crate::diff::{self, Conflict, Finding};
use crate::exit;
use crate::findings_view::{self, colour_wanted, Counts, VhostHealth};
use crate::health::{self, LevelState, Queues};
use crate::mgmt::Management;
use crate::observe::{self, observe, Depth, ObservedQueue};
use crate::report::Outcome;
use crate::target::Target;

/// How long to wait before looking again at a level with a dead-letter
/// backlog: one that is still there is a jam, one that is gone was moving on.
const SECOND_LOOK: Duration = Duration::from_secs(2);

pub async fn run(context: &Context, args: &VerifyArgs) -> Result<Outcome> {
    if args.probe {
        for (_, desired) in &context.targets {
            probe::check_args(desired, &args.probe_args)?;
        }
    }
    let colour = context.output == Output::Text && colour_wanted();
    let outcome = each_target(context, |target, desired| async move {
        verify_vhost(&target, &desired, args, colour).await
    })
    .await;
    if context.output == Output::Prometheus {
        Ok(exposition(context, outcome))
    } else {
        outcome
    }
}

async fn verify_vhost(
    target: &Target,
    desired: &Desired,
    args: &VerifyArgs,
    colour: bool,
) -> Result<VhostOutcome> {
    let management = Management::new(target)?;
    let observed = observe(&management, Depth::Full).await?;
    let structure = diff::structure(desired, &observed);
    let mut findings = structure.findings();
    findings.extend(health::findings(desired, &observed, &structure));

    let mut queues = observed.queues.clone();
    if !health::backlogged_levels(desired, &queues).is_empty() {
        tokio::time::sleep(SECOND_LOOK).await;
        // With each queue's recent lengths: a standing backlog on a level that
        // was empty minutes ago may only be waiting for the broker's retry.
        let again: Vec<ObservedQueue> =
            observe::queues(&management, &health::history_query()).await?;
        let again: Queues = again.into_iter().map(|q| (q.name.clone(), q)).collect();
        let jams = health::jam_findings(desired, &queues, &again, &findings);
        findings.extend(jams);
        queues = again;
    }
    let levels = health::levels(desired, &queues);
    let http_requests = management.request_count();

    let probe = if args.probe {
        let report = probe::probe(target, desired, &args.probe_args, Some(&management)).await?;
        findings.push(report.finding());
        Some(report)
    } else {
        None
    };

    let version = observed.broker.as_ref().map(|b| b.rabbitmq_version.clone());
    // An empty vhost gets one line that says what to do before the details.
    let nothing_installed = desired
        .exchanges
        .iter()
        .all(|e| !observed.exchanges.contains_key(&e.name))
        && desired
            .queues
            .iter()
            .all(|q| !observed.queues.contains_key(&q.name));
    let report = Report {
        vhost: &target.vhost,
        version: version.as_deref(),
        http_requests,
        findings: &findings,
        levels: &levels,
        conflicts: &structure.conflicts,
        nothing_installed,
        strict: args.strict,
    };
    let (ok, counts) = (report.ok(), report.counts());
    let text = report.text(args.quiet, colour);
    Ok(VhostOutcome {
        ok,
        text,
        json: json!({
            "findings": findings,
            "conflicts": structure.conflicts,
            "levels": levels,
            "summary": counts,
            "http_requests": http_requests,
            "rabbitmq_version": version,
            "probe": probe,
        }),
    })
}

/// What verify found in one vhost, ready to print.
pub(crate) struct Report<'a> {
    pub vhost: &'a str,
    pub version: Option<&'a str>,
    pub http_requests: usize,
    pub findings: &'a [Finding],
    pub levels: &'a [LevelState],
    pub conflicts: &'a [Conflict],
    pub nothing_installed: bool,
    pub strict: bool,
}

impl Report<'_> {
    fn counts(&self) -> Counts {
        Counts::of(self.findings)
    }

    pub fn ok(&self) -> bool {
        let counts = self.counts();
        counts.errors == 0 && !(self.strict && counts.warnings > 0)
    }

    /// The table of levels with their findings and the verdict, or with
    /// `quiet` the verdict alone; on a vhost without a cascade, what to do
    /// first and last.
    pub fn text(&self, quiet: bool, colour: bool) -> String {
        let counts = self.counts();
        let verdict = match (self.ok(), counts.errors) {
            (true, _) => "healthy",
            (false, 0) => "warnings fail under --strict",
            (false, _) => "drift or defects found",
        };
        let vhost = self.vhost;
        let hint = if self.nothing_installed {
            format!("no cascade in vhost {vhost}: run `delaytopo install` to create it\n")
        } else {
            String::new()
        };
        if quiet {
            return format!("vhost {vhost}: {verdict} ({})\n{hint}", counts.describe());
        }
        format!(
            "vhost {vhost} on RabbitMQ {} ({} HTTP requests)\n{hint}{}\nverify: {}: \
             {verdict}\n{hint}{}",
            self.version.unwrap_or("?"),
            self.http_requests,
            findings_view::text(self.findings, self.levels, colour),
            counts.describe(),
            diff::conflict::next_steps(self.conflicts),
        )
    }
}

/// The Prometheus exposition of what verify found in each vhost. A vhost
/// that could not be read is `delaytopo_up 0`, and its error goes to stderr.
fn exposition(context: &Context, outcome: Result<Outcome>) -> Outcome {
    let health_of = |vhost: &str, entry: &Value| VhostHealth {
        vhost: vhost.to_string(),
        up: entry.get("error").is_none(),
        counts: serde_json::from_value(entry["summary"].clone()).unwrap_or_default(),
        levels: serde_json::from_value(entry["levels"].clone()).unwrap_or_default(),
    };
    match outcome {
        Ok(mut outcome) => {
            let vhosts: Vec<VhostHealth> = match outcome.json.get("vhosts") {
                Some(Value::Array(entries)) => entries
                    .iter()
                    .map(|entry| {
                        let vhost = entry["vhost"].as_str().unwrap_or_default();
                        if let Some(error) = entry.get("error").and_then(Value::as_str) {
                            eprintln!("error: vhost {vhost}: {error}");
                        }
                        health_of(vhost, entry)
                    })
                    .collect(),
                _ => vec![health_of(&context.single().0.vhost, &outcome.json)],
            };
            outcome.text = findings_view::prometheus(&vhosts);
            outcome
        }
        Err(error) => {
            let code = exit::code_for(&error);
            eprintln!("error: {error:#}");
            let down: Vec<VhostHealth> = context
                .targets
                .iter()
                .map(|(target, _)| VhostHealth {
                    vhost: target.vhost.clone(),
                    ..VhostHealth::default()
                })
                .collect();
            let mut outcome = Outcome::new(
                false,
                findings_view::prometheus(&down),
                json!({ "error": format!("{error:#}") }),
            );
            outcome.code = Some(code);
            outcome
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::Observed;
    use crate::test_fixtures::{
        assert_fits_80_columns, desired, installed, installed_with_hand_made_level_5,
    };

    fn report_text(d: &Desired, observed: &Observed, quiet: bool) -> (bool, String) {
        let structure = diff::structure(d, observed);
        let mut findings = structure.findings();
        findings.extend(health::findings(d, observed, &structure));
        let levels = health::levels(d, &observed.queues);
        let report = Report {
            vhost: "/",
            version: Some("3.10.8"),
            http_requests: 10,
            findings: &findings,
            levels: &levels,
            conflicts: &structure.conflicts,
            nothing_installed: false,
            strict: false,
        };
        (report.ok(), report.text(quiet, false))
    }

    #[test]
    fn a_healthy_cascade_and_a_conflict_fit_80_columns() {
        let d = desired("");
        let (ok, healthy) = report_text(&d, &installed(&d), false);
        assert!(ok, "{healthy}");
        assert_fits_80_columns("verify, healthy", &healthy);
        let (_, quiet) = report_text(&d, &installed(&d), true);
        assert_eq!(quiet.lines().count(), 1, "{quiet}");
        assert!(quiet.starts_with("vhost /: healthy (0 errors, "), "{quiet}");

        let (ok, conflict) = report_text(&d, &installed_with_hand_made_level_5(&d), false);
        assert!(!ok);
        assert_fits_80_columns("verify, a conflict", &conflict);
        assert!(conflict.contains("verify: 1 error, "), "{conflict}");
        assert!(conflict.contains("differs in 4 properties:"), "{conflict}");
        assert!(conflict.contains("next: "), "{conflict}");
    }
}
