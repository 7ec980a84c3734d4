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
use crate::diff;
use crate::exit;
use crate::findings_view::{self, colour_wanted, Counts, VhostHealth};
use crate::health::{self, Queues};
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
        let report = probe::probe(target, desired, &args.probe_args).await?;
        findings.push(report.finding());
        Some(report)
    } else {
        None
    };

    let counts = Counts::of(&findings);
    let ok = counts.errors == 0 && !(args.strict && counts.warnings > 0);
    let version = observed.broker.as_ref().map(|b| b.rabbitmq_version.clone());
    let verdict = match (ok, counts.errors) {
        (true, _) => "healthy",
        (false, 0) => "warnings fail under --strict",
        (false, _) => "drift or defects found",
    };
    // An empty vhost gets one line that says what to do before the details.
    let nothing_installed = desired
        .exchanges
        .iter()
        .all(|e| !observed.exchanges.contains_key(&e.name))
        && desired
            .queues
            .iter()
            .all(|q| !observed.queues.contains_key(&q.name));
    let hint = if nothing_installed {
        format!(
            "no cascade in vhost {}: run `delaytopo install` to create it\n",
            target.vhost
        )
    } else {
        String::new()
    };
    let text = if args.quiet {
        format!(
            "vhost {}: {verdict} ({})\n{hint}",
            target.vhost,
            counts.describe()
        )
    } else {
        format!(
            "vhost {} on RabbitMQ {} ({http_requests} HTTP requests)\n{hint}{}\nverify: {}: \
             {verdict}\n{hint}",
            target.vhost,
            version.as_deref().unwrap_or("?"),
            findings_view::text(&findings, &levels, colour),
            counts.describe(),
        )
    };
    Ok(VhostOutcome {
        ok,
        text,
        json: json!({
            "findings": findings,
            "levels": levels,
            "summary": counts,
            "http_requests": http_requests,
            "rabbitmq_version": version,
            "probe": probe,
        }),
    })
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
