//! `migrate` moves every delayed message of a v1 cascade into the v2 cascade
//! with the delay it has left, poisons what it cannot move, and says nothing
//! alarming after a dry run (faults: `migrate_faults.rs`).

mod moving;
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use delaytopo::cascade::starting_level;
use delaytopo::moving::headers::{DELAY_IN_SECONDS, POISON_SOURCE_ROUTING_KEY, TIME_SENT};
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
