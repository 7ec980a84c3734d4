//! The baseline bench/run compares `install` with: the same cascade
//! (`delaytopo::cascade::Desired`) declared the way NServiceBus declares it,
//! one operation at a time on one channel, each waiting for the broker's
//! answer before the next is sent. Exchanges first, then queues, then
//! bindings, so that every binding finds its ends. Takes delaytopo's global
//! options (`-f`, `--url`, `--vhost`...); vhosts are done one after another.
//!
//! ```text
//! cargo run --release --example sequential_declare -- --url amqp://guest:guest@127.0.0.1:5672/v
//! ```

use std::time::Instant;

use anyhow::Result;
use clap::Parser;
use lapin::options::{
    ExchangeBindOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::ExchangeKind;

use delaytopo::amqp::{bounded, connect};
use delaytopo::apply::field_table;
use delaytopo::cascade::{Desired, DestinationKind};
use delaytopo::cli::Global;
use delaytopo::context::Context;
use delaytopo::target::Target;

#[derive(Parser)]
#[command(about = "Declare the cascade one operation at a time (benchmark baseline)")]
struct Args {
    #[command(flatten)]
    global: Global,
}

#[tokio::main]
async fn main() -> Result<()> {
    let context = Context::load(&Args::parse().global)?;
    for (target, desired) in &context.targets {
        let started = Instant::now();
        let phases = declare_one_at_a_time(target, desired).await?;
        eprintln!(
            "{}: {} in {:.3} s",
            target.vhost,
            phases.join(", "),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// Declares everything, one operation at a time; returns where the time went
/// ("28 queues 251 ms"), to tell the broker's work from the waiting.
async fn declare_one_at_a_time(target: &Target, desired: &Desired) -> Result<Vec<String>> {
    let mut phases = Vec::new();
    let mut phase_started = Instant::now();
    let mut phase_done = |what: String| {
        phases.push(format!("{what} {} ms", phase_started.elapsed().as_millis()));
        phase_started = Instant::now();
    };
    let connection = connect(target).await?;
    let channel = bounded(target, "opening a channel", connection.create_channel()).await?;
    phase_done("connection and channel".into());
    for exchange in &desired.exchanges {
        let options = ExchangeDeclareOptions {
            durable: exchange.durable,
            auto_delete: exchange.auto_delete,
            internal: exchange.internal,
            ..Default::default()
        };
        let declare = channel.exchange_declare(
            exchange.name.as_str().into(),
            ExchangeKind::Custom(exchange.kind.clone()),
            options,
            field_table(&exchange.arguments),
        );
        bounded(
            target,
            &format!("declaring exchange {}", exchange.name),
            declare,
        )
        .await?;
    }
    phase_done(format!("{} exchanges", desired.exchanges.len()));
    for queue in &desired.queues {
        let options = QueueDeclareOptions {
            durable: queue.durable,
            exclusive: queue.exclusive,
            auto_delete: queue.auto_delete,
            ..Default::default()
        };
        let declare = channel.queue_declare(
            queue.name.as_str().into(),
            options,
            field_table(&queue.arguments),
        );
        bounded(target, &format!("declaring queue {}", queue.name), declare).await?;
    }
    phase_done(format!("{} queues", desired.queues.len()));
    for binding in &desired.bindings {
        let what = format!(
            "binding {} -> {} ({})",
            binding.source, binding.destination, binding.routing_key
        );
        let (source, destination, key) = (
            binding.source.as_str().into(),
            binding.destination.as_str().into(),
            binding.routing_key.as_str().into(),
        );
        match binding.destination_type {
            DestinationKind::Queue => {
                let bind = channel.queue_bind(
                    destination,
                    source,
                    key,
                    QueueBindOptions::default(),
                    FieldTable::default(),
                );
                bounded(target, &what, bind).await?;
            }
            DestinationKind::Exchange => {
                let bind = channel.exchange_bind(
                    destination,
                    source,
                    key,
                    ExchangeBindOptions::default(),
                    FieldTable::default(),
                );
                bounded(target, &what, bind).await?;
            }
        }
    }
    phase_done(format!("{} bindings", desired.bindings.len()));
    bounded(
        target,
        "closing the connection",
        connection.close(200, "done".into()),
    )
    .await?;
    phase_done("closing".into());
    Ok(phases)
}
