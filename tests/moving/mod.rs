//! Fixtures for the migrate and transfer tests: installing a cascade from its
//! rendered definitions, filling its level queues with NServiceBus-style
//! delayed messages, and emptying queues to account for every message.
//! Messages go through AMQP (lapin) here: thousands of them, with headers.
#![allow(dead_code)]

pub mod inventory;
pub mod stage;

pub use inventory::*;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use delaytopo::cascade::{parse_routing_key, Desired};
use delaytopo::moving::headers::{
    format_time_sent, DELAY_IN_SECONDS, MESSAGE_ID, POISON_REASON, TIME_SENT,
};
use delaytopo::topology::Topology;
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::Value;

use crate::support::{api, encode, management, TestVhost};

pub const V1: &str = include_str!("../../examples/nservicebus-v1.yaml");

pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

pub fn cascade(yaml: &str, vhost: &TestVhost) -> Desired {
    Desired::new(
        &Topology::parse(Path::new("t.yaml"), yaml).unwrap(),
        &vhost.name,
    )
}

/// Creates the cascade of `yaml` in `vhost` from `delaytopo render`'s definitions.
pub fn install_from_render(vhost: &TestVhost, yaml: &str) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), yaml).unwrap();
    let output = assert_cmd::Command::cargo_bin("delaytopo")
        .unwrap()
        .arg("-f")
        .arg(file.path())
        .args(["--url", &vhost.url(), "render"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let definitions: Value = serde_json::from_slice(&output.stdout).unwrap();
    api(
        reqwest::Method::POST,
        &format!("definitions/{}", encode(&vhost.name)),
        Some(definitions),
    );
}

/// What a test publishes: an NServiceBus delayed message.
#[derive(Debug, Clone)]
pub struct Delayed {
    pub id: String,
    pub address: String,
    /// The delay the sender asked for: decides the routing key and level.
    pub delay_seconds: u64,
    /// `NServiceBus.TimeSent`, in µs since the epoch.
    pub sent_micros: i64,
    /// Headers as sent; `None` means the proper NServiceBus pair.
    pub broken_headers: Option<FieldTable>,
}

impl Delayed {
    /// When the message is due, in µs since the epoch.
    pub fn due_micros(&self) -> i64 {
        self.sent_micros + self.delay_seconds as i64 * 1_000_000
    }

    fn headers(&self) -> FieldTable {
        if let Some(broken) = &self.broken_headers {
            return broken.clone();
        }
        let mut headers = FieldTable::default();
        headers.insert(
            TIME_SENT.into(),
            AMQPValue::LongString(LongString::from(format_time_sent(self.sent_micros))),
        );
        headers.insert(
            DELAY_IN_SECONDS.into(),
            AMQPValue::LongInt(self.delay_seconds as i32),
        );
        headers.insert(
            MESSAGE_ID.into(),
            AMQPValue::LongString(LongString::from(self.id.as_str())),
        );
        // Broker bookkeeping a moved message must lose, and a header it must keep.
        headers.insert(
            "x-first-death-queue".into(),
            AMQPValue::LongString(LongString::from("nsb.delay-level-12")),
        );
        headers.insert(
            "x-custom".into(),
            AMQPValue::LongString(LongString::from("kept")),
        );
        headers
    }
}

/// A message taken out of a queue.
#[derive(Debug, Clone)]
pub struct Taken {
    pub queue: String,
    pub id: String,
    pub routing_key: String,
    pub headers: BTreeMap<String, AMQPValue>,
}

impl Taken {
    pub fn header_text(&self, name: &str) -> Option<String> {
        match self.headers.get(name)? {
            AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            other => Some(format!("{other:?}")),
        }
    }

    pub fn poison_reason(&self) -> Option<String> {
        self.header_text(POISON_REASON)
    }

    /// The delay and address of a message in a cascade of `levels` levels.
    pub fn cascade_key(&self, levels: u8) -> (u64, String) {
        let (delay, address) = parse_routing_key(levels, &self.routing_key)
            .unwrap_or_else(|| panic!("not a cascade key: {}", self.routing_key));
        (delay, address.to_string())
    }
}

/// An AMQP client for one test vhost.
pub struct Client {
    url: String,
    runtime: tokio::runtime::Runtime,
    connection: Connection,
    channel: Channel,
}

impl Client {
    pub fn new(vhost: &TestVhost) -> Client {
        Client::connect(&vhost.url())
    }

    pub fn connect(url: &str) -> Client {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (connection, channel) = runtime.block_on(async {
            let connection = Connection::connect(url, ConnectionProperties::default())
                .await
                .unwrap();
            let channel = connection.create_channel().await.unwrap();
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .unwrap();
            (connection, channel)
        });
        Client {
            url: url.to_string(),
            runtime,
            connection,
            channel,
        }
    }

    /// The vhost this client is on, when it is on the default test broker
    /// (the one `support::api` asks).
    pub fn vhost(&self) -> Option<String> {
        let (_, rest) = self
            .url
            .split_once(&format!("@{}/", crate::support::amqp_host_port()))?;
        let path = rest.split('?').next().unwrap_or_default();
        Some(
            percent_encoding::percent_decode_str(path)
                .decode_utf8_lossy()
                .into_owned(),
        )
    }

    /// Publishes each message where its sender would have: the level exchange
    /// of its delay, with the cascade routing key, all confirmed.
    pub fn publish_delayed(&self, cascade: &Desired, messages: &[Delayed]) {
        self.publish_delayed_with(cascade, messages, 0, None, None)
    }

    /// The same through `exchange` (a staging exchange), with the same keys.
    pub fn publish_through(&self, exchange: &str, cascade: &Desired, messages: &[Delayed]) {
        self.publish_delayed_with(cascade, messages, 0, None, Some(exchange))
    }

    /// The same with bodies of at least `body_size` bytes: the id, then spaces.
    pub fn publish_delayed_sized(&self, cascade: &Desired, messages: &[Delayed], body_size: usize) {
        self.publish_delayed_with(cascade, messages, body_size, None, None)
    }

    /// The same with a per-message TTL: the broker itself dead-letters the
    /// messages on at once, with its own `x-death` and `x-first-death-*` headers.
    pub fn publish_expiring(&self, cascade: &Desired, messages: &[Delayed], expiration_ms: u32) {
        self.publish_delayed_with(cascade, messages, 0, Some(expiration_ms), None)
    }

    fn publish_delayed_with(
        &self,
        cascade: &Desired,
        messages: &[Delayed],
        body_size: usize,
        expiration_ms: Option<u32>,
        exchange: Option<&str>,
    ) {
        self.runtime.block_on(async {
            let mut confirms = Vec::new();
            for m in messages {
                let mut body = m.id.as_bytes().to_vec();
                body.resize(body_size.max(body.len()), b' ');
                let route = cascade.route(m.delay_seconds, &m.address).unwrap();
                let mut properties = BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_message_id(m.id.as_str().into())
                    .with_headers(m.headers());
                if let Some(expiration) = expiration_ms {
                    properties = properties.with_expiration(expiration.to_string().into());
                }
                let confirm = self
                    .channel
                    .basic_publish(
                        exchange.unwrap_or(&route.exchange).into(),
                        route.routing_key.as_str().into(),
                        BasicPublishOptions {
                            mandatory: true,
                            ..Default::default()
                        },
                        &body,
                        properties,
                    )
                    .await
                    .unwrap();
                confirms.push(confirm);
            }
            for confirm in confirms {
                let confirmation = confirm.await.unwrap();
                assert_eq!(confirmation, lapin::Confirmation::Ack(None));
            }
        });
    }

    /// Declares an exclusive queue, held as long as this client lives.
    pub fn declare_exclusive(&self, queue: &str) {
        self.runtime.block_on(async {
            self.channel
                .queue_declare(
                    queue.into(),
                    QueueDeclareOptions {
                        exclusive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .unwrap();
        });
    }

    /// Declares a durable classic queue.
    pub fn declare_queue(&self, queue: &str) {
        self.runtime.block_on(async {
            self.channel
                .queue_declare(
                    queue.into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .unwrap();
        });
    }

    /// Ready messages in `queue` now (0 when it does not exist).
    pub fn ready(&self, queue: &str) -> u32 {
        self.runtime.block_on(async {
            // A passive declare of a missing queue closes its channel, and
            // lapin sometimes fails the connection with it: then a new one.
            let channel = match self.connection.create_channel().await {
                Ok(channel) => channel,
                Err(_) => Connection::connect(&self.url, ConnectionProperties::default())
                    .await
                    .unwrap()
                    .create_channel()
                    .await
                    .unwrap(),
            };
            let declared = channel
                .queue_declare(
                    queue.into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await;
            match declared {
                Ok(q) => {
                    let _ = channel.close(200, "OK".into()).await;
                    q.message_count()
                }
                Err(_) => 0,
            }
        })
    }

    /// Takes every message out of `queue` (acknowledged).
    pub fn take_all(&self, queue: &str) -> Vec<Taken> {
        self.runtime.block_on(async {
            let mut taken = Vec::new();
            while let Some(message) = self
                .channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap()
            {
                let delivery = message.delivery;
                // A large body is its id padded with spaces.
                let body = String::from_utf8(delivery.data.clone()).unwrap();
                taken.push(Taken {
                    queue: queue.to_string(),
                    id: body.trim_end_matches(' ').to_string(),
                    routing_key: delivery.routing_key.as_str().to_string(),
                    headers: delivery
                        .properties
                        .headers()
                        .as_ref()
                        .map(|h| {
                            h.inner()
                                .iter()
                                .map(|(k, v)| (k.as_str().to_string(), v.clone()))
                                .collect()
                        })
                        .unwrap_or_default(),
                });
            }
            taken
        })
    }

    /// Takes every message out of every level queue of `cascade`.
    pub fn take_cascade(&self, cascade: &Desired) -> Vec<Taken> {
        cascade
            .queues
            .iter()
            .flat_map(|q| self.take_all(&q.name))
            .collect()
    }

    pub fn ready_in_cascade(&self, cascade: &Desired) -> u32 {
        cascade.queues.iter().map(|q| self.ready(&q.name)).sum()
    }
}

/// Closes every connection the tool holds to `vhost`, as an operator would
/// from the management UI.
pub fn close_tool_connections(vhost: &TestVhost) -> usize {
    let connections = api(
        reqwest::Method::GET,
        &format!("vhosts/{}/connections", encode(&vhost.name)),
        None,
    );
    let mut closed = 0;
    for connection in connections.as_array().unwrap() {
        let client_name = connection["client_properties"]["connection_name"]
            .as_str()
            .unwrap_or("");
        if client_name.starts_with("delaytopo") {
            let name = connection["name"].as_str().unwrap();
            let _ = crate::support::http()
                .delete(format!("{}/api/connections/{}", management(), encode(name)))
                .basic_auth("guest", Some("guest"))
                .send();
            closed += 1;
        }
    }
    closed
}

/// Polls `check` every 20 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// `count` messages over levels 10..=27, to `addresses` in turn; every fifth
/// is already overdue, the others have waited up to 500 s of a delay of at
/// least 1024 s (so nothing moves on its own while a test runs).
pub fn population(count: usize, now: i64, addresses: &[&str]) -> Vec<Delayed> {
    (0..count)
        .map(|i| {
            let level = 10 + (i % 18) as u32;
            let delay = (1u64 << level) + (i as u64 * 7919) % (1u64 << level);
            let waited = if i % 5 == 0 {
                delay + 100
            } else {
                (i as u64 * 13) % 500
            };
            let fraction = (i as i64 * 337_337) % 1_000_000;
            Delayed {
                id: format!("m-{i:05}"),
                address: addresses[i % addresses.len()].to_string(),
                delay_seconds: delay,
                sent_micros: now - waited as i64 * 1_000_000 - fraction,
                broken_headers: None,
            }
        })
        .collect()
}

/// The duplicates a fault caused are no more than the runs said might land
/// twice (`possible_duplicates`: redelivered messages they could not recognise).
pub fn assert_duplicates_reported(reports: &[Value], duplicates: usize) {
    let possible: u64 = reports
        .iter()
        .map(|r| r["possible_duplicates"].as_u64().unwrap())
        .sum();
    assert!(
        duplicates as u64 <= possible,
        "{duplicates} duplicates landed, reported at most {possible}"
    );
}

/// The sum of a numeric field over several reports.
pub fn sum(reports: &[Value], field: &str) -> u64 {
    reports
        .iter()
        .map(|r| {
            r[field]
                .as_u64()
                .unwrap_or_else(|| panic!("{field}: {r:#}"))
        })
        .sum()
}

/// Sends `signal` (e.g. "INT", "TERM") to a running process.
pub fn send_signal(child: &std::process::Child, signal: &str) {
    let status = std::process::Command::new("kill")
        .args(["-s", signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -s {signal} failed");
}

/// Runs `command` until it exits 0, at most `runs` times; returns every JSON report.
pub fn run_until_ok(mut command: impl FnMut() -> assert_cmd::Command, runs: usize) -> Vec<Value> {
    let mut reports = Vec::new();
    for _ in 0..runs {
        let output = command().output().unwrap();
        reports.push(crate::support::stdout_json(&output));
        if output.status.success() {
            return reports;
        }
    }
    panic!("the command did not finish: {reports:#?}");
}

/// Kills (SIGKILL) a running move once the target holds some of its
/// messages, and checks that the source still held some too.
pub fn kill_mid_run(
    mut child: std::process::Child,
    mut in_target: impl FnMut() -> u32,
    mut in_source: impl FnMut() -> u32,
) {
    let interrupted = wait_until(Duration::from_secs(60), || in_target() > 100);
    child.kill().unwrap();
    let _ = child.wait();
    assert!(interrupted, "the run could not be interrupted");
    assert!(in_source() > 0, "the run was over before it was killed");
}
