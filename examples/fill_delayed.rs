//! Fills a cascade's level queues with NServiceBus-style delayed messages, as
//! senders would have: each published to the level exchange of its delay with
//! the cascade routing key and the `TimeSent` / `DelayInSeconds` headers. Used
//! by bench/move to give `migrate` and `transfer` something to move.
//!
//! ```text
//! cargo run --release --example fill_delayed -- --url amqp://guest:guest@127.0.0.1/v \
//!     -f examples/nservicebus-v1.yaml --count 20000 --address Sales
//! ```
//!
//! Delays run over levels 10..=27 (long enough that nothing moves on its own
//! while the benchmark runs); publishes are pipelined and all confirmed.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Parser;
use delaytopo::cascade::Desired;
use delaytopo::moving::headers::{format_time_sent, DELAY_IN_SECONDS, MESSAGE_ID, TIME_SENT};
use delaytopo::topology::Topology;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties};

#[derive(Parser)]
#[command(about = "Fill a delay cascade with delayed messages")]
struct Args {
    /// AMQP URI of the vhost holding the cascade.
    #[arg(long)]
    url: String,
    /// Topology of the cascade to fill.
    #[arg(short = 'f', long = "topology")]
    topology: PathBuf,
    #[arg(long, default_value_t = 10_000)]
    count: usize,
    /// Destination address of every message.
    #[arg(long, default_value = "Sales")]
    address: String,
    /// Body size in bytes.
    #[arg(long, default_value_t = 256)]
    size: usize,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let topology = Topology::load(&args.topology)?;
    let cascade = Desired::new(&topology, "");
    let connection = Connection::connect(&args.url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_micros() as i64;
    let body = vec![b'x'; args.size];
    let mut confirms = Vec::with_capacity(args.count);
    for i in 0..args.count {
        let level = 10 + (i % 18) as u32;
        let delay = (1u64 << level) + (i as u64 * 7919) % (1u64 << level);
        let route = cascade
            .route(delay, &args.address)
            .ok_or("delay too long")?;
        let id = format!("{}-{now}-{i:08}", args.address);
        let mut headers = FieldTable::default();
        headers.insert(
            TIME_SENT.into(),
            AMQPValue::LongString(LongString::from(format_time_sent(now))),
        );
        headers.insert(DELAY_IN_SECONDS.into(), AMQPValue::LongInt(delay as i32));
        headers.insert(
            MESSAGE_ID.into(),
            AMQPValue::LongString(LongString::from(id.as_str())),
        );
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(id.as_str().into())
            .with_headers(headers);
        confirms.push(
            channel
                .basic_publish(
                    route.exchange.as_str().into(),
                    route.routing_key.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &body,
                    properties,
                )
                .await?,
        );
    }
    for confirm in confirms {
        if confirm.await? != Confirmation::Ack(None) {
            return Err("a message was not routed into the cascade".into());
        }
    }
    println!("published {} delayed messages", args.count);
    connection.close(200, "OK".into()).await?;
    Ok(())
}
