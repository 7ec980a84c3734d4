//! `probe` (and `verify --probe`): the end-to-end check. One message goes
//! through the cascade the way a sender would send it, to a temporary queue
//! bound on the delivery exchange for a unique address; the probe times its
//! arrival. Unlike verify it writes to the broker, and cleans up after itself.
//!
//! A probe message that is published but does not arrive is still somewhere
//! in the cascade, and so may be one whose publish timed out (a lost quorum,
//! a memory alarm) yet was committed later, or one whose probe was killed.
//! Reaching the delivery exchange with nothing bound for its address, it
//! would jam level 0 for good (SPEC §1). So before anything is published a
//! permanent sink is in place: queue `delaytopo.probe.sink`, bound with
//! `#.delaytopo.probe.#`, which keeps the last 100 probe messages that
//! reached it and drops older ones (`x-max-length`, `drop-head`).
//! A probe message always has somewhere to go, whatever becomes of the probe;
//! the one that arrives in time goes to the probe's queue as well.

use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use serde::Serialize;
use serde_json::json;

use crate::amqp::{self, bounded, describe, reply_code};
use crate::cascade::{
    endpoint_binding_key, max_delay_seconds, Desired, Route, PROBE_ADDRESS_PREFIX,
};
use crate::cli::ProbeArgs;
use crate::commands::fanout::{each_target, VhostOutcome};
use crate::context::Context;
use crate::diff::{Finding, Severity};
use crate::exit::{bad_input, broker};
use crate::health::Queues;
use crate::mgmt::Management;
use crate::observe::ObservedQueue;
use crate::report::first_few;
use crate::report::Outcome;
use crate::target::Target;

mod sink;
use sink::{bind_to_delivery, clean_up, sink_in_place};

/// Arriving this much before the delay counts as early (TTL expiry is not
/// instantaneous, but it never fires ahead of time on a healthy level).
const EARLY_TOLERANCE: Duration = Duration::from_millis(250);

/// What one probe saw.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    pub address: String,
    pub exchange: String,
    pub routing_key: String,
    pub delay_seconds: u64,
    pub margin_seconds: f64,
    pub arrived: bool,
    /// Seconds from publishing to arrival.
    pub observed_seconds: Option<f64>,
    /// Observed minus requested delay (negative: early).
    pub lateness_seconds: Option<f64>,
    /// Why the probe failed; `None` when it arrived on time.
    pub failure: Option<String>,
    /// The queue left bound to drop the probe message should it arrive late.
    pub sink: Option<String>,
}

impl ProbeReport {
    pub fn ok(&self) -> bool {
        self.failure.is_none()
    }

    pub fn summary(&self) -> String {
        let sent = format!(
            "probe {} sent with a {} s delay to {}",
            self.address, self.delay_seconds, self.exchange
        );
        let timing = match (self.observed_seconds, self.lateness_seconds) {
            (Some(observed), Some(late)) => {
                format!(": arrived after {observed:.2} s ({late:+.2} s)")
            }
            _ => String::new(),
        };
        match &self.failure {
            None => format!("{sent}{timing}"),
            Some(failure) => format!("{sent}{timing}: FAILED: {failure}"),
        }
    }

    /// The probe as a verify finding.
    pub fn finding(&self) -> Finding {
        let expected = format!(
            "arrival within {}..{} s",
            self.delay_seconds,
            self.delay_seconds as f64 + self.margin_seconds
        );
        let actual = self.observed_seconds.map_or_else(
            || "no arrival".to_string(),
            |s| format!("arrival after {s:.2} s"),
        );
        Finding {
            severity: if self.ok() {
                Severity::Info
            } else {
                Severity::Error
            },
            entity: format!("probe {}", self.address),
            kind: if self.ok() {
                "probe_arrived"
            } else {
                "probe_failed"
            }
            .into(),
            expected: Some(expected),
            actual: Some(actual),
            message: self.summary(),
            level: None,
        }
    }
}

/// Refuses a delay the cascade cannot hold or a margin that is not a time (exit 2).
pub fn check_args(desired: &Desired, args: &ProbeArgs) -> Result<()> {
    let max = max_delay_seconds(desired.levels);
    if args.delay > max {
        return Err(bad_input(format!(
            "--delay {}: the cascade's {} levels hold at most {max} s",
            args.delay, desired.levels
        )));
    }
    if !(args.margin.is_finite() && args.margin >= 0.0) {
        return Err(bad_input(format!(
            "--margin {}: must be a number of seconds, 0 or more",
            args.margin
        )));
    }
    Ok(())
}

pub async fn run(context: &Context, args: &ProbeArgs) -> Result<Outcome> {
    for (_, desired) in &context.targets {
        check_args(desired, args)?;
    }
    each_target(context, |target, desired| async move {
        let report = probe(&target, &desired, args, None).await?;
        Ok(VhostOutcome {
            ok: report.ok(),
            text: format!("{}\n", report.summary()),
            json: json!({ "probe": report }),
        })
    })
    .await
}

/// A fresh address nobody else binds: `delaytopo.probe.<16 hex digits>`.
fn probe_address() -> String {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    hasher.write_u128(now.as_nanos());
    hasher.write_u32(std::process::id());
    format!("{PROBE_ADDRESS_PREFIX}{:016x}", hasher.finish())
}

/// Sends one probe through `desired`'s cascade on `target` and times it.
/// `management`: a client already proven for `target` (verify's), to reuse.
pub async fn probe(
    target: &Target,
    desired: &Desired,
    args: &ProbeArgs,
    management: Option<&Management>,
) -> Result<ProbeReport> {
    let address = probe_address();
    let route = desired.route(args.delay, &address).ok_or_else(|| {
        bad_input(format!(
            "--delay {}: longer than the cascade holds",
            args.delay
        ))
    })?;
    let mut report = ProbeReport {
        address: address.clone(),
        exchange: route.exchange.clone(),
        routing_key: route.routing_key.clone(),
        delay_seconds: args.delay,
        margin_seconds: args.margin,
        arrived: false,
        observed_seconds: None,
        lateness_seconds: None,
        failure: None,
        sink: None,
    };
    let (refusal, connection) = futures::join!(
        unsafe_to_publish(target, desired, management),
        amqp::connect(target)
    );
    let connection = connection?;
    if let Some(reason) = refusal {
        report.failure = Some(format!("not sent: {reason}"));
        let _ =
            tokio::time::timeout(target.timeout, connection.close(200, "probe done".into())).await;
        return Ok(report);
    }
    let sent = send_and_wait(target, desired, &connection, &route, args, &mut report).await;
    // Clean up even after an error, but report the first error.
    let in_flight = matches!(sent, Ok(true));
    let cleaned = clean_up(target, &connection, &mut report, in_flight).await;
    let _ = tokio::time::timeout(target.timeout, connection.close(200, "probe done".into())).await;
    sent?;
    cleaned?;
    Ok(report)
}

/// Why a probe must not be published now, if the management API tells: a
/// resource alarm blocks every publish, and without a quorum a publish times
/// out and may be committed later. Without the management API, no answer
/// (the sink still keeps a late message from jamming the cascade).
async fn unsafe_to_publish(
    target: &Target,
    desired: &Desired,
    management: Option<&Management>,
) -> Option<String> {
    let own;
    let management = match management {
        Some(management) => management,
        None => {
            own = Management::new(target).ok()?;
            &own
        }
    };
    let (queues, alarms) = futures::join!(
        management.get::<Vec<ObservedQueue>>(management.vhost_path("queues")),
        crate::observe::alarms(management)
    );
    // Unreadable queues still leave the alarms to refuse on.
    let queues: Queues = queues
        .unwrap_or_default()
        .into_iter()
        .map(|q| (q.name.clone(), q))
        .collect();
    let hazard = crate::health::unsafe_to_write(
        desired,
        &queues,
        &alarms.ok().flatten().unwrap_or_default(),
    )?;
    Some(if !hazard.alarms.is_empty() {
        format!(
            "a resource alarm ({}) blocks every publish",
            hazard.alarms.join(", ")
        )
    } else {
        format!(
            "{} without a quorum online: a publish would time out and could still be \
             committed later",
            first_few(&hazard.without_quorum, 3, ", ")
        )
    })
}

/// Runs a broker operation with the target's timeout, keeping the broker's
/// refusal (a 404, say) as a value: for the probe a refusal is an answer.
async fn refusable<T>(
    target: &Target,
    what: &str,
    operation: impl std::future::Future<Output = lapin::Result<T>>,
) -> Result<lapin::Result<T>> {
    tokio::time::timeout(target.timeout, operation)
        .await
        .map_err(|_| {
            broker(format!(
                "{what}: no answer from {} within {}",
                target.amqp_display(),
                amqp::seconds(target.timeout)
            ))
        })
}

fn refusal(target: &Target, error: &lapin::Error) -> Option<(u16, String)> {
    reply_code(error).map(|code| (code, describe(target, error)))
}

/// Publishes the probe and waits for it. `Ok(true)` when the message was
/// accepted by the cascade but has not arrived (it is still in there).
async fn send_and_wait(
    target: &Target,
    desired: &Desired,
    connection: &Connection,
    route: &Route,
    args: &ProbeArgs,
    report: &mut ProbeReport,
) -> Result<bool> {
    let address = report.address.clone();
    let channel = bounded(target, "opening a channel", connection.create_channel()).await?;
    if !sink_in_place(target, desired, &channel, report).await? {
        return Ok(false);
    }
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..QueueDeclareOptions::default()
    };
    bounded(
        target,
        &format!("declaring probe queue {address}"),
        channel.queue_declare(address.as_str().into(), exclusive, FieldTable::default()),
    )
    .await?;
    if !bind_to_delivery(
        target,
        desired,
        &channel,
        &address,
        &endpoint_binding_key(&address),
        report,
    )
    .await?
    {
        return Ok(false);
    }
    let mut consumer = bounded(
        target,
        "consuming from the probe queue",
        channel.basic_consume(
            address.as_str().into(),
            "delaytopo-probe".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        ),
    )
    .await?;
    bounded(
        target,
        "enabling publisher confirms",
        channel.confirm_select(ConfirmSelectOptions::default()),
    )
    .await?;

    let started = Instant::now();
    let confirmation = refusable(target, "publishing the probe", async {
        publish(&channel, route, &address).await?.await
    })
    .await?;
    match confirmation {
        Ok(Confirmation::Ack(None)) => {}
        Ok(Confirmation::Ack(Some(returned))) => {
            report.failure = Some(format!(
                "no binding on {} matches {} ({} {}): the level's bindings are missing",
                route.exchange, route.routing_key, returned.reply_code, returned.reply_text
            ));
            return Ok(false);
        }
        Ok(Confirmation::Nack(_)) | Ok(Confirmation::NotRequested) => {
            report.failure = Some(format!(
                "the broker refused the probe at {} (nack): a level queue is full or refusing",
                route.exchange
            ));
            return Ok(false);
        }
        Err(error) => {
            return match refusal(target, &error) {
                Some((404, _)) => {
                    report.failure =
                        Some(format!("level exchange {} does not exist", route.exchange));
                    Ok(false)
                }
                _ => Err(broker(format!(
                    "publishing the probe to {}: {}",
                    route.exchange,
                    describe(target, &error)
                ))),
            };
        }
    }

    let deadline = started + Duration::from_secs(args.delay) + Duration::from_secs_f64(args.margin);
    match tokio::time::timeout_at(deadline.into(), consumer.next()).await {
        Ok(Some(Ok(_delivery))) => {
            let observed = started.elapsed();
            let delay = Duration::from_secs(args.delay);
            report.arrived = true;
            report.observed_seconds = Some(observed.as_secs_f64());
            report.lateness_seconds = Some(observed.as_secs_f64() - delay.as_secs_f64());
            if observed + EARLY_TOLERANCE < delay {
                report.failure = Some(format!(
                    "arrived {:.2} s early: something shortens the delay (a policy's \
                     message-ttl?)",
                    (delay - observed).as_secs_f64()
                ));
            }
            Ok(false)
        }
        Ok(Some(Err(error))) => Err(broker(format!(
            "waiting for the probe: {}",
            describe(target, &error)
        ))),
        Ok(None) => Err(broker(
            "waiting for the probe: the broker cancelled the probe's consumer",
        )),
        Err(_) => {
            report.failure = Some(format!(
                "did not arrive within {} s + {} s margin: it is stuck or lost on the way \
                 (run verify to see where)",
                args.delay, args.margin
            ));
            Ok(true)
        }
    }
}

async fn publish(
    channel: &Channel,
    route: &Route,
    address: &str,
) -> lapin::Result<lapin::PublisherConfirm> {
    let sent_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("text/plain".into())
        .with_message_id(address.into())
        .with_timestamp(sent_at);
    channel
        .basic_publish(
            route.exchange.as_str().into(),
            route.routing_key.as_str().into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            b"delaytopo probe",
            properties,
        )
        .await
}

#[cfg(test)]
mod tests;
