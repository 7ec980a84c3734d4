//! `migrate` moves every delayed message of a v1 cascade into the v2 cascade
//! with the delay it has left, poisons what it cannot move, and says nothing
//! alarming after a dry run (faults: `migrate_faults.rs`).

mod moving;
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use delaytopo::cascade::starting_level;
use delaytopo::moving::headers::{
    format_time_sent, DELAY_IN_SECONDS, MESSAGE_ID, POISON_SOURCE_ROUTING_KEY, TIME_SENT,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use moving::stage::*;
use moving::*;
use serde_json::Value;
use support::*;

/// Messages whose headers cannot say when they are due, with the reason kind.
fn broken(count: usize, now: i64) -> Vec<(Delayed, &'static str)> {
    let text = |s: &str| AMQPValue::LongString(LongString::from(s));
    (0..count)
        .map(|k| {
            let mut headers = FieldTable::default();
            let reason = match k % 3 {
                0 => {
                    headers.insert(DELAY_IN_SECONDS.into(), AMQPValue::LongInt(5000));
                    "missing header NServiceBus.TimeSent"
                }
                1 => {
                    headers.insert(TIME_SENT.into(), text("2024-13-01 00:00:00:000000 Z"));
                    headers.insert(DELAY_IN_SECONDS.into(), AMQPValue::LongInt(5000));
                    "unparsable header NServiceBus.TimeSent"
                }
                _ => {
                    headers.insert(TIME_SENT.into(), text("2024-05-06 12:00:00:000000 Z"));
                    headers.insert(DELAY_IN_SECONDS.into(), text("5000"));
                    "wrong type of header NServiceBus.Transport.RabbitMQ.DelayInSeconds"
                }
            };
            let message = Delayed {
                id: format!("broken-{k:03}"),
                address: SHIPPING.to_string(),
                delay_seconds: 5000,
                sent_micros: now,
                broken_headers: Some(headers),
            };
            (message, reason)
        })
        .collect()
}

#[test]
fn migrate_moves_every_message_with_its_remaining_delay() {
    let now = now_micros();
    let good = population(1200, now, &ADDRESSES);
    let bad = broken(30, now);
    let mut messages = good.clone();
    messages.extend(bad.iter().map(|(m, _)| m.clone()));
    let stage = Stage::new("migrate-all", &messages);

    let started = now_micros();
    let output = stage.migrate().output().unwrap();
    let finished = now_micros();
    let report = stdout_json(&output);
    // Poisoned messages make the run "not ok" (exit 1): someone must look at them.
    assert_eq!(output.status.code(), Some(1), "{report:#}");

    let overdue = |m: &Delayed| m.due_micros() < started;
    let ghost = good.iter().filter(|m| m.address == GHOST).count();
    let moved: Vec<&Delayed> = good.iter().filter(|m| m.address != GHOST).collect();
    let delivered_now = moved.iter().filter(|m| overdue(m)).count();
    assert_eq!(report["found"], 1230);
    assert_eq!(report["moved"], moved.len());
    assert_eq!(report["delivered_now"], delivered_now);
    assert_eq!(report["poisoned"], ghost + bad.len());
    assert_eq!(report["left"], 0);
    assert_eq!(report["skipped"], 0);
    assert_eq!(report["possible_duplicates"], 0);
    assert_eq!(report["without_id"], 0);
    // Every message found was settled: the journal is no longer needed.
    assert_eq!(report["journal"]["removed"], true, "{report:#}");
    assert!(
        !stage.journal.path().exists(),
        "the emptied directory goes too"
    );
    let reasons = &report["poison_reasons"];
    assert_eq!(reasons["no destination for address Ghost.Town"], ghost);
    assert_eq!(reasons["missing header NServiceBus.TimeSent"], 10);
    assert_eq!(reasons["unparsable header NServiceBus.TimeSent"], 10);
    let mut found_per_level: BTreeMap<u64, u64> = BTreeMap::new();
    for m in &messages {
        *found_per_level
            .entry(u64::from(starting_level(m.delay_seconds)))
            .or_default() += 1;
    }
    let reported: BTreeMap<u64, u64> = report["levels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["found"].as_u64().unwrap() > 0)
        .map(|l| (l["level"].as_u64().unwrap(), l["found"].as_u64().unwrap()))
        .collect();
    assert_eq!(reported, found_per_level);
    assert_eq!(found_per_level.len(), 18, "spread over levels 10..=27");
    let routes: BTreeMap<&str, &Value> = report["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["address"].as_str().unwrap(), r))
        .collect();
    assert_eq!(routes[SALES]["destination"], "queue");
    assert_eq!(routes[SHIPPING]["listed"], true);
    assert_eq!(routes[BILLING]["destination"], "exchange");
    assert_eq!(routes[GHOST]["outcome"], "nowhere");

    // The source is empty and every message is somewhere, exactly once.
    let inventory = stage.inventory();
    assert_eq!(inventory.assert_none_lost(&messages), 0);

    let by_id: BTreeMap<&str, &Delayed> = good.iter().map(|m| (m.id.as_str(), m)).collect();
    for taken in &inventory.cascade {
        let m = by_id[taken.id.as_str()];
        assert_remaining_delay(taken, m, &stage.target, started, finished);
    }
    assert_eq!(inventory.cascade.len(), moved.len() - delivered_now);
    for taken in &inventory.delivered {
        let m = by_id[taken.id.as_str()];
        assert!(overdue(m), "{} delivered before it was due", m.id);
        assert_eq!(taken.cascade_key(28), (0, m.address.clone()));
        let expected_queue = if m.address == BILLING {
            BILLING_INBOX
        } else {
            &m.address
        };
        assert_eq!(taken.queue, expected_queue);
    }
    assert_eq!(inventory.delivered.len(), delivered_now);

    let reasons: BTreeMap<&str, &str> = bad.iter().map(|(m, r)| (m.id.as_str(), *r)).collect();
    for taken in &inventory.poisoned {
        let reason = taken.poison_reason().expect("a poison reason header");
        match reasons.get(taken.id.as_str()) {
            Some(kind) => {
                let header = kind.rsplit(' ').next().unwrap();
                assert!(reason.contains(header), "{reason} vs {kind}");
            }
            None => {
                assert_eq!(by_id[taken.id.as_str()].address, GHOST);
                assert!(reason.contains("Ghost.Town"), "{reason}");
            }
        }
        let key = taken.header_text(POISON_SOURCE_ROUTING_KEY).unwrap();
        assert!(
            key.ends_with(".Ghost.Town") || key.ends_with(".Shipping"),
            "{key}"
        );
    }
}

/// Only NServiceBus's own headers: whatever dead-letter headers the message
/// gets, the broker writes.
fn plain_headers(id: &str, sent_micros: i64, delay_seconds: u64) -> FieldTable {
    let text = |s: String| AMQPValue::LongString(LongString::from(s));
    let mut headers = FieldTable::default();
    headers.insert(TIME_SENT.into(), text(format_time_sent(sent_micros)));
    headers.insert(
        DELAY_IN_SECONDS.into(),
        AMQPValue::LongInt(delay_seconds as i32),
    );
    headers.insert(MESSAGE_ID.into(), text(id.to_string()));
    headers
}

#[test]
fn a_message_the_broker_dead_lettered_arrives_without_its_death_headers_and_is_delivered() {
    let stage = Stage::new("migrate-x-death", &[]);
    // Bits 10 and 9: published to level 10 with a 1 ms TTL, the broker
    // dead-letters it into level 9 (where it would wait 512 s).
    let delay = (1u64 << 10) + (1 << 9);
    let now = now_micros();
    let due_in = |seconds: i64| now + seconds * 1_000_000 - delay as i64 * 1_000_000;
    let messages: Vec<Delayed> = [("x-death-overdue", -3600), ("x-death-soon", 4)]
        .into_iter()
        .map(|(id, due)| Delayed {
            id: id.to_string(),
            address: SHIPPING.to_string(),
            delay_seconds: delay,
            sent_micros: due_in(due),
            broken_headers: Some(plain_headers(id, due_in(due), delay)),
        })
        .collect();
    stage.client.publish_expiring(&stage.source, &messages, 1);
    let level_9 = stage.source.level_name(9).to_string();
    assert!(
        wait_until(Duration::from_secs(30), || stage.client.ready(&level_9)
            == 2),
        "the broker did not dead-letter the messages into {level_9}"
    );
    // They carry the broker's own bookkeeping now.
    let peeked = api(
        reqwest::Method::POST,
        &format!(
            "queues/{}/{}/get",
            encode(&stage.vhost.name),
            encode(&level_9)
        ),
        Some(serde_json::json!({"count": 2, "ackmode": "ack_requeue_true", "encoding": "auto"})),
    );
    for message in peeked.as_array().unwrap() {
        let headers = &message["properties"]["headers"];
        assert_eq!(headers["x-death"][0]["reason"], "expired", "{headers}");
        assert_eq!(
            headers["x-first-death-queue"],
            stage.source.level_name(10),
            "{headers}"
        );
    }

    let output = stage.migrate().output().unwrap();
    let report = stdout_json(&output);
    assert!(output.status.success(), "{report:#}");
    assert_eq!(report["moved"], 2, "{report:#}");
    assert_eq!(report["delivered_now"], 1, "{report:#}");

    // The queues a message's deaths name: each must be the target's (its
    // staging queue, which released it with reason `rejected`, or a level
    // queue it expired from), never the source's.
    let deaths = |taken: &Taken| -> Vec<(String, String)> {
        let Some(AMQPValue::FieldArray(deaths)) = taken.headers.get("x-death") else {
            return Vec::new();
        };
        let text = |death: &FieldTable, key: &str| match death.inner().get(key) {
            Some(AMQPValue::LongString(value)) => {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            }
            other => panic!("{key}: {other:?}"),
        };
        deaths
            .as_slice()
            .iter()
            .map(|death| {
                let AMQPValue::FieldTable(death) = death else {
                    panic!("{death:?}")
                };
                (text(death, "queue"), text(death, "reason"))
            })
            .collect()
    };
    let staging = stage.target.staging_names();
    let in_target = |(queue, reason): &(String, String)| {
        (staging.contains(queue) && reason == "rejected")
            || (stage.target.owns_queue(queue) && reason == "expired")
    };
    // The overdue one was delivered at once, with no death of the source's.
    let delivered = stage.client.take_all(SHIPPING);
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert_eq!(delivered[0].id, "x-death-overdue");
    assert!(deaths(&delivered[0]).iter().all(in_target), "{delivered:?}");
    let first = delivered[0].header_text("x-first-death-queue");
    assert!(
        first.is_none_or(|q| staging.contains(&q)),
        "{:?}",
        delivered[0]
    );
    // The other one goes through the target cascade (4 s) and is delivered:
    // the target broker took it and dead-letters it like any other, and the
    // only deaths it records are in the target.
    let mut later = Vec::new();
    assert!(
        wait_until(Duration::from_secs(60), || {
            later.extend(stage.client.take_all(SHIPPING));
            !later.is_empty()
        }),
        "x-death-soon was not delivered"
    );
    assert_eq!(later[0].id, "x-death-soon");
    let recorded = deaths(&later[0]);
    assert!(
        recorded.iter().any(|(q, _)| stage.target.owns_queue(q)),
        "no death of the target cascade: {later:?}"
    );
    assert!(recorded.iter().all(in_target), "{recorded:?}");
    let first = later[0].header_text("x-first-death-queue").unwrap();
    assert!(
        stage.target.owns_queue(&first) || staging.contains(&first),
        "{first}"
    );
    assert_eq!(stage.client.ready_in_cascade(&stage.source), 0);
}

#[test]
fn a_dry_run_then_a_real_run_raises_no_alarm() {
    let messages = population(300, now_micros(), &DELIVERABLE);
    let stage = Stage::new("migrate-dry-then-real", &messages);
    let text = |dry: bool| {
        let mut command = stage.vhost.delaytopo();
        command
            .args(["migrate", "--journal"])
            .arg(stage.journal.path())
            .arg("--from")
            .arg(stage.from_file.path());
        if dry {
            command.arg("--dry-run");
        }
        let output = command.output().unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    text(true);
    assert!(wait_until(Duration::from_secs(10), || {
        stage.client.ready_in_cascade(&stage.source) == 300
    }));
    let real = text(false);
    assert!(
        !real.contains("warning") && !real.contains("twice"),
        "{real}"
    );
    assert!(
        real.contains("300 messages had been delivered before (a dry run"),
        "{real}"
    );
    assert_eq!(stage.inventory().assert_none_lost(&messages), 0);
}

#[test]
fn dry_run_classifies_without_moving_anything() {
    let messages = population(200, now_micros(), &ADDRESSES);
    let stage = Stage::new("migrate-dry", &messages);
    let queues_before = stage.vhost.list("queues").len();
    let bindings_before = stage.vhost.list("bindings").len();

    let output = stage.migrate().arg("--dry-run").output().unwrap();
    let report = stdout_json(&output);
    assert_eq!(output.status.code(), Some(1), "{report:#}");
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["found"], 200);
    assert_eq!(report["moved"], 150);
    assert_eq!(report["poisoned"], 50);
    assert_eq!(
        report["target_cascade"]["missing"]
            .as_array()
            .unwrap()
            .len(),
        57
    );

    // Every message is back where it was; nothing was created or bound.
    assert!(wait_until(Duration::from_secs(10), || {
        stage.client.ready_in_cascade(&stage.source) == 200
    }));
    assert_eq!(stage.vhost.list("queues").len(), queues_before);
    assert_eq!(stage.vhost.list("bindings").len(), bindings_before);
}

/// `migrate --from <a file holding from_yaml> <extra>` in a fresh vhost.
fn migrate_from(test: &str, from_yaml: &str, extra: &[&str]) -> assert_cmd::assert::Assert {
    let vhost = TestVhost::new(test);
    let from = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(from.path(), from_yaml).unwrap();
    vhost
        .delaytopo()
        .arg("migrate")
        .args(extra)
        .arg("--from")
        .arg(from.path())
        .assert()
}

#[test]
fn migrate_refuses_a_source_that_is_the_target() {
    migrate_from("migrate-same", "", &[])
        .code(2)
        .stderr(predicates::str::contains("nsb.v2.delay-level-27"));
}

#[test]
fn a_bad_source_topology_or_poison_queue_is_bad_input() {
    migrate_from("migrate-bad-from", "cascade:\n  levels: 0\n", &[])
        .code(2)
        .stderr(predicates::str::contains(":2:"));
    migrate_from("migrate-bad-poison", V1, &["--poison-queue", "amq.poison"])
        .code(2)
        .stderr(predicates::str::contains("--poison-queue"));
}

#[test]
fn a_journal_directory_that_cannot_be_written_stops_the_run_before_any_message() {
    let messages = population(20, now_micros(), &DELIVERABLE);
    let stage = Stage::new("migrate-bad-journal", &messages);
    // A file where the directory should be: it cannot be created.
    let not_a_directory = tempfile::NamedTempFile::new().unwrap();
    stage
        .vhost
        .delaytopo()
        .args(["migrate", "--journal"])
        .arg(not_a_directory.path().join("journal"))
        .arg("--from")
        .arg(stage.from_file.path())
        .assert()
        .code(2)
        .stderr(predicates::str::contains("--journal: cannot write"));
    assert_eq!(stage.client.ready_in_cascade(&stage.source), 20);
}

#[test]
fn migrate_declares_the_endpoints_the_target_topology_declares() {
    let vhost = TestVhost::new("migrate-declared-endpoint");
    // Conventional routing: a fanout exchange and a queue named after the address.
    let target_topology =
        "endpoints:\n  - address: Orders.Eu\n    bind_to: exchange\n    declare: true\n";
    vhost.set_topology(target_topology);
    install_from_render(&vhost, V1);
    let client = Client::new(&vhost);
    let source = cascade(V1, &vhost);
    let target = cascade(target_topology, &vhost);
    let messages = population(30, now_micros(), &["Orders.Eu"]);
    client.publish_delayed(&source, &messages);
    let from = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(from.path(), V1).unwrap();
    let output = vhost
        .delaytopo()
        .args(["-o", "json", "migrate", "--no-journal", "--from"])
        .arg(from.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let exchange = vhost
        .list("exchanges")
        .into_iter()
        .find(|e| e["name"] == "Orders.Eu")
        .expect("exchange Orders.Eu declared");
    assert_eq!(exchange["type"], "fanout");
    assert_eq!(
        vhost.queue_info("Orders.Eu")["arguments"]["x-queue-type"],
        "quorum"
    );
    // Overdue ones were delivered at once; the rest wait in the target cascade.
    let delivered = vhost.queue_info("Orders.Eu")["messages"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        wait_until(Duration::from_secs(30), || {
            u64::from(client.ready_in_cascade(&target))
                + vhost.queue_info("Orders.Eu")["messages"]
                    .as_u64()
                    .unwrap_or(0)
                == messages.len() as u64
        }),
        "{delivered} delivered, {} waiting",
        client.ready_in_cascade(&target)
    );
    assert_eq!(client.ready_in_cascade(&source), 0);
}
