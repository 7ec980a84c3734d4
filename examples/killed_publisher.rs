//! Publishes a burst through a fanout exchange bound to a classic and a
//! quorum queue, without waiting for the confirms, says `sent` and waits to
//! be killed. `tests/publisher_death.rs` kills it and counts what each
//! queue kept, at the kill and once the counts settle.
//!
//! ```text
//! cargo run --example killed_publisher -- --url amqp://guest:guest@127.0.0.1/v \
//!     --prefix burst --count 5000
//! ```

use clap::Parser;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};

#[derive(Parser)]
#[command(about = "Publish a burst to a classic and a quorum queue, then wait to be killed")]
struct Args {
    /// AMQP URI of the vhost.
    #[arg(long)]
    url: String,
    /// `<prefix>.fanout`, `<prefix>.classic` and `<prefix>.quorum`.
    #[arg(long)]
    prefix: String,
    #[arg(long, default_value_t = 5000)]
    count: usize,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let connection = Connection::connect(&args.url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    let exchange = format!("{}.fanout", args.prefix);
    channel
        .exchange_declare(
            exchange.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await?;
    for kind in ["classic", "quorum"] {
        let queue = format!("{}.{kind}", args.prefix);
        let mut arguments = FieldTable::default();
        arguments.insert("x-queue-type".into(), AMQPValue::LongString(kind.into()));
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .queue_declare(queue.as_str().into(), durable, arguments)
            .await?;
        channel
            .queue_bind(
                queue.as_str().into(),
                exchange.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let body = vec![b'x'; 256];
    for n in 0..args.count {
        let properties = BasicProperties::default()
            .with_message_id(format!("{n}").into())
            .with_delivery_mode(2);
        // The confirm is not awaited: most are still to come at the kill.
        channel
            .basic_publish(
                exchange.as_str().into(),
                "".into(),
                BasicPublishOptions::default(),
                &body,
                properties,
            )
            .await?;
    }
    println!("sent");
    // Killed here.
    std::future::pending::<()>().await;
    Ok(())
}
