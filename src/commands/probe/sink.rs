//! The probe's permanent sink (see the module above): declared and bound
//! before any probe message is published, so that a late one always has
//! somewhere to go; and the clean-up of the probe's own queue.

use lapin::options::{QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection};

use anyhow::Result;

use super::{refusable, refusal, ProbeReport};
use crate::amqp::{bounded, describe};
use crate::cascade::{probe_sink_binding_key, Desired, PROBE_SINK_QUEUE};
use crate::exit::broker;
use crate::target::Target;

/// How many late probe messages the sink keeps before dropping the oldest.
const PROBE_SINK_LENGTH: i64 = 100;

/// Declares the permanent sink and binds it (both idempotent). `Ok(false)`
/// with the report's failure set when the delivery exchange is missing.
pub(super) async fn sink_in_place(
    target: &Target,
    desired: &Desired,
    channel: &Channel,
    report: &mut ProbeReport,
) -> Result<bool> {
    // Keeps the last few late probe messages (evidence of failed probes),
    // never more: the oldest is dropped for each new one past the bound.
    let mut bounded_sink = FieldTable::default();
    bounded_sink.insert(
        "x-max-length".into(),
        AMQPValue::LongLongInt(PROBE_SINK_LENGTH),
    );
    bounded_sink.insert(
        "x-overflow".into(),
        AMQPValue::LongString("drop-head".into()),
    );
    // Like the cascade's queues: a quorum sink stays available when a node fails.
    let queue_type = desired.queue_type.as_str();
    bounded_sink.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(queue_type.into()),
    );
    bounded(
        target,
        &format!("declaring the probe sink {PROBE_SINK_QUEUE}"),
        channel.queue_declare(
            PROBE_SINK_QUEUE.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            bounded_sink,
        ),
    )
    .await?;
    bind_to_delivery(
        target,
        desired,
        channel,
        PROBE_SINK_QUEUE,
        &probe_sink_binding_key(),
        report,
    )
    .await
}

/// Binds `queue` to the delivery exchange with `key`. `Ok(false)`, with the
/// report's failure set, when the delivery exchange is missing.
pub(super) async fn bind_to_delivery(
    target: &Target,
    desired: &Desired,
    channel: &Channel,
    queue: &str,
    key: &str,
    report: &mut ProbeReport,
) -> Result<bool> {
    let delivery = desired.delivery_exchange.as_str();
    let bound = refusable(
        target,
        &format!("binding {queue} to {delivery}"),
        channel.queue_bind(
            queue.into(),
            delivery.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    match bound {
        Ok(()) => Ok(true),
        Err(error) => match refusal(target, &error) {
            Some((404, _)) => {
                report.failure = Some(format!(
                    "delivery exchange {delivery} does not exist: no delayed message can be \
                     delivered"
                ));
                Ok(false)
            }
            _ => Err(broker(format!(
                "binding {queue} to {delivery}: {}",
                describe(target, &error)
            ))),
        },
    }
}

/// Deletes the probe's own queue (with its binding). A message still in
/// the cascade is dropped by the sink when it arrives.
pub(super) async fn clean_up(
    target: &Target,
    connection: &Connection,
    report: &mut ProbeReport,
    in_flight: bool,
) -> Result<()> {
    let address = report.address.clone();
    // A fresh channel: the probe's may have been closed by a refusal.
    let channel = bounded(target, "opening a channel", connection.create_channel()).await?;
    bounded(
        target,
        &format!("deleting probe queue {address}"),
        channel.queue_delete(address.as_str().into(), QueueDeleteOptions::default()),
    )
    .await?;
    if in_flight {
        report.sink = Some(PROBE_SINK_QUEUE.to_string());
        if let Some(failure) = &mut report.failure {
            failure.push_str(&format!(
                "; should it arrive later, queue {PROBE_SINK_QUEUE} takes it (it cannot jam \
                 level 0)"
            ));
        }
    }
    Ok(())
}
