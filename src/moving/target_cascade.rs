//! The target cascade must exist before messages are published into it:
//! `ensure_target_cascade` declares its exchanges, queues and cascade bindings
//! (idempotent; endpoint bindings are made per address by `routes`). Every
//! declaration runs on its own channel, all at once, so that a refusal names
//! exactly the entity it concerns and costs no extra round trips.

use anyhow::Result;
use futures::future::join_all;
use lapin::options::{ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Connection, ExchangeKind};

use crate::cascade::{Arguments, Desired, Value};
use crate::moving::broker::{self, refusable, Refusal};
use crate::target::Target;

/// What the target cascade looked like, and what could not be made to match.
#[derive(Debug, Default)]
pub struct CascadeCheck {
    /// Exchanges and queues that did not exist (created, unless a dry run).
    pub missing: Vec<String>,
    /// Entities the broker refused to declare as the topology says.
    pub conflicts: Vec<String>,
}

/// Creates what is missing of `desired` on the target; with `dry_run`, only
/// finds out what is missing.
pub async fn ensure_target_cascade(
    broker: &Target,
    connection: &Connection,
    desired: &Desired,
    dry_run: bool,
) -> Result<CascadeCheck> {
    let mut check = CascadeCheck {
        missing: missing_entities(broker, connection, desired).await?,
        conflicts: Vec::new(),
    };
    if dry_run {
        return Ok(check);
    }
    let exchanges = join_all(
        desired
            .exchanges
            .iter()
            .map(|e| declare_exchange(broker, connection, &e.name)),
    );
    let queues = join_all(
        desired
            .queues
            .iter()
            .map(|q| declare_queue(broker, connection, &q.name, &q.arguments)),
    );
    let (exchanges, queues) = futures::join!(exchanges, queues);
    collect_refusals(exchanges.into_iter().chain(queues), &mut check.conflicts)?;
    if !check.conflicts.is_empty() {
        return Ok(check);
    }
    let bound = join_all(desired.cascade_bindings().map(|b| async move {
        let what = format!(
            "binding {} -> {} ({})",
            b.source, b.destination, b.routing_key
        );
        let bound = broker::bind(
            broker,
            connection,
            &b.source,
            &b.destination,
            b.destination_type,
            &b.routing_key,
        )
        .await?;
        Ok(bound.map_err(|refusal| (what, refusal)))
    }))
    .await;
    collect_refusals(bound, &mut check.conflicts)?;
    Ok(check)
}

fn collect_refusals(
    results: impl IntoIterator<Item = Declared>,
    conflicts: &mut Vec<String>,
) -> Result<()> {
    for result in results {
        if let Err((what, refusal)) = result? {
            conflicts.push(format!("{what}: {}", refusal.text));
        }
    }
    Ok(())
}

async fn missing_entities(
    broker: &Target,
    connection: &Connection,
    desired: &Desired,
) -> Result<Vec<String>> {
    let exchanges = join_all(
        desired
            .exchanges
            .iter()
            .map(|e| broker::exchange_exists(broker, connection, &e.name)),
    );
    let queues = join_all(
        desired
            .queues
            .iter()
            .map(|q| broker::queue_exists(broker, connection, &q.name)),
    );
    let (exchanges, queues) = futures::join!(exchanges, queues);
    let mut missing = Vec::new();
    for (exists, exchange) in exchanges.into_iter().zip(&desired.exchanges) {
        if !exists? {
            missing.push(format!("exchange {}", exchange.name));
        }
    }
    for (exists, queue) in queues.into_iter().zip(&desired.queues) {
        if !exists? {
            missing.push(format!("queue {}", queue.name));
        }
    }
    Ok(missing)
}

type Declared = Result<Result<(), (String, Refusal)>>;

async fn declare_exchange(broker: &Target, connection: &Connection, name: &str) -> Declared {
    let what = format!("exchange {name}");
    let channel = broker::open_channel(broker, connection).await?;
    let declared = refusable(
        broker,
        &format!("declaring {what}"),
        channel.exchange_declare(
            name.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await?;
    broker::close_quietly(channel).await;
    Ok(declared.map_err(|refusal| (what, refusal)))
}

async fn declare_queue(
    broker: &Target,
    connection: &Connection,
    name: &str,
    arguments: &Arguments,
) -> Declared {
    let what = format!("queue {name}");
    let channel = broker::open_channel(broker, connection).await?;
    let declared = refusable(
        broker,
        &format!("declaring {what}"),
        channel.queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            field_table(arguments),
        ),
    )
    .await?;
    broker::close_quietly(channel).await;
    Ok(declared.map(|_| ()).map_err(|refusal| (what, refusal)))
}

/// Topology arguments as AMQP field values: integers as 64-bit, strings as long strings.
pub fn field_table(arguments: &Arguments) -> FieldTable {
    let mut table = FieldTable::default();
    for (name, value) in arguments {
        let value = match value {
            Value::Bool(b) => AMQPValue::Boolean(*b),
            Value::Int(i) => AMQPValue::LongLongInt(*i),
            Value::Str(s) => AMQPValue::LongString(LongString::from(s.as_str())),
        };
        table.insert(name.as_str().into(), value);
    }
    table
}
