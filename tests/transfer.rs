//! `transfer` moves every delayed message of a cascade into the same cascade
//! on another broker (here: another vhost), creating it there first, and
//! loses nothing when killed mid-run.

mod moving;
mod support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use delaytopo::cascade::Desired;
use moving::*;
use predicates::prelude::*;
use support::*;

const SALES: &str = "Sales.Eu"; // a queue on the target broker, not in the topology
const SHIPPING: &str = "Shipping"; // listed in the topology
const ADDRESSES: [&str; 2] = [SALES, SHIPPING];
const TOPOLOGY: &str = "endpoints:\n  - address: Shipping\n";

/// A source vhost with the cascade holding `messages`, and a target vhost
/// with only the endpoint queues.
struct Stage {
    source: TestVhost,
    target: TestVhost,
    source_client: Client,
    target_client: Client,
    source_cascade: Desired,
    target_cascade: Desired,
    journal: tempfile::TempDir,
}

impl Stage {
    fn new(test: &str, messages: &[Delayed]) -> Stage {
        let source = TestVhost::new(&format!("{test}-from"));
        let target = TestVhost::new(&format!("{test}-to"));
        source.set_topology(TOPOLOGY);
        for vhost in [&source, &target] {
            for queue in ADDRESSES {
                vhost.declare_queue(queue, serde_json::json!({}));
            }
        }
        install_from_render(&source, TOPOLOGY);
        let source_client = Client::new(&source);
        let target_client = Client::new(&target);
        let source_cascade = cascade(TOPOLOGY, &source);
        let target_cascade = cascade(TOPOLOGY, &target);
        source_client.publish_delayed(&source_cascade, messages);
        Stage {
            source,
            target,
            source_client,
            target_client,
            source_cascade,
            target_cascade,
            journal: tempfile::tempdir().unwrap(),
        }
    }

    /// `transfer` with JSON output and the stage's journal directory.
    fn transfer(&self) -> assert_cmd::Command {
        let mut command = self.source.delaytopo();
        command
            .args(["-o", "json", "transfer", "--to-url", &self.target.url()])
            .arg("--journal")
            .arg(self.journal.path());
        command
    }

    fn inventory(&self) -> Inventory {
        assert_eq!(self.source_client.ready_in_cascade(&self.source_cascade), 0);
        Inventory::take(&self.target_client, &self.target_cascade, &ADDRESSES)
    }
}

#[test]
fn transfer_creates_the_target_cascade_and_moves_every_message() {
    let messages = population(1200, now_micros(), &ADDRESSES);
    let stage = Stage::new("transfer-all", &messages);

    let started = now_micros();
    let output = stage.transfer().output().unwrap();
    let finished = now_micros();
    let report = stdout_json(&output);
    assert!(output.status.success(), "{report:#}");
    let overdue: Vec<&Delayed> = messages
        .iter()
        .filter(|m| m.due_micros() < started)
        .collect();
    assert_eq!(report["found"], 1200);
    assert_eq!(report["moved"], 1200);
    assert_eq!(report["delivered_now"], overdue.len());
    assert_eq!(report["poisoned"], 0);
    assert_eq!(
        report["target_cascade"]["missing"]
            .as_array()
            .unwrap()
            .len(),
        57
    );
    assert_eq!(report["to"]["vhost"], stage.target.name.as_str());

    // The target now has the cascade, and routes to both addresses.
    let queues: Vec<String> = stage
        .target
        .list("queues")
        .iter()
        .map(|q| q["name"].as_str().unwrap().to_string())
        .collect();
    for queue in &stage.target_cascade.queues {
        assert!(queues.contains(&queue.name), "{} missing", queue.name);
    }
    let endpoint_bindings: Vec<(String, String)> = stage
        .target
        .list("bindings")
        .iter()
        .filter(|b| b["source"] == "nsb.v2.delay-delivery")
        .map(|b| {
            (
                b["destination"].as_str().unwrap().to_string(),
                b["routing_key"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(endpoint_bindings.len(), 2);
    assert!(endpoint_bindings.contains(&(SALES.into(), "#.Sales.Eu".into())));

    let inventory = stage.inventory();
    assert_eq!(inventory.assert_none_lost(&messages), 0);
    let by_id: BTreeMap<&str, &Delayed> = messages.iter().map(|m| (m.id.as_str(), m)).collect();
    for taken in &inventory.cascade {
        let m = by_id[taken.id.as_str()];
        assert_remaining_delay(taken, m, &stage.target_cascade, started, finished);
    }
    assert_eq!(inventory.delivered.len(), overdue.len());
    assert!(inventory.poisoned.is_empty());

    // Nothing left: a second run finds nothing and changes nothing.
    let again = stdout_json(&stage.transfer().output().unwrap());
    assert_eq!(again["ok"], true);
    assert_eq!(again["found"], 0);
    assert_eq!(
        again["target_cascade"]["missing"].as_array().unwrap().len(),
        0
    );
}

#[test]
fn a_killed_staged_transfer_loses_nothing_and_a_rerun_lands_nothing_twice() {
    let messages = population(3000, now_micros(), &ADDRESSES);
    let stage = Stage::new("transfer-kill", &messages);
    let child = Command::new(assert_cmd::cargo::cargo_bin("delaytopo"))
        .arg("-f")
        .arg(stage.source.topology_path())
        .args(["--url", &stage.source.url(), "--no-progress", "-o", "json"])
        .args([
            "transfer",
            "--staging",
            "--prefetch",
            "20",
            "--to-url",
            &stage.target.url(),
            "--journal",
        ])
        .arg(stage.journal.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    kill_mid_run(
        child,
        || stage.target_client.ready_in_cascade(&stage.target_cascade),
        || stage.source_client.ready_in_cascade(&stage.source_cascade),
    );
    let reports = run_until_ok(
        || {
            let mut command = stage.transfer();
            command.arg("--staging");
            command
        },
        3,
    );
    let duplicates = stage.inventory().assert_none_lost(&messages);
    assert_duplicates_reported(&reports, duplicates);
    let in_doubt = sum(&reports, "in_doubt");
    eprintln!(
        "transfer killed: {duplicates} duplicates, {in_doubt} in doubt, {} skipped from the \
         journal, {} found in the staging queues",
        sum(&reports, "skipped_from_journal"),
        sum(&reports, "found_in_staging")
    );
    // What was published without a confirm yet is found in the target's
    // staging queues, or published again with one copy let into the cascade.
    assert_eq!(duplicates, 0, "{reports:#?}");
    assert!(
        in_doubt <= 2 * 20,
        "about --prefetch 20 in flight: {reports:#?}"
    );
    assert_eq!(reports.last().unwrap()["journal"]["existed"], true);
}

#[test]
fn transfer_into_its_own_vhost_is_refused_however_it_is_addressed() {
    let messages = population(10, now_micros(), &ADDRESSES);
    let stage = Stage::new("transfer-self", &messages);
    // `localhost` instead of 127.0.0.1: only the broker can tell it is the same vhost.
    let alias = stage.source.url().replace("127.0.0.1", "localhost");
    stage
        .source
        .delaytopo()
        .args(["transfer", "--to-url", &alias])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("same broker and vhost"));
    assert_eq!(
        stage.source_client.ready_in_cascade(&stage.source_cascade),
        10
    );
}

#[test]
fn a_bad_target_url_is_bad_input() {
    let vhost = TestVhost::new("transfer-bad-url");
    vhost
        .delaytopo()
        .args(["transfer", "--to-url", "http://u:secret@elsewhere/"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--to-url").and(predicate::str::contains("secret").not()));
}

#[test]
fn a_message_stuck_in_the_sources_dead_letter_backlog_is_reported() {
    let mut messages = population(50, now_micros(), &ADDRESSES);
    // Due in 1 s to an address the source does not route: it jams level 0.
    messages.push(Delayed {
        id: "stuck".into(),
        address: "Nowhere".into(),
        delay_seconds: 1,
        sent_micros: now_micros(),
        broken_headers: None,
    });
    let stage = Stage::new("transfer-stuck", &messages);
    let level_0 = stage.source_cascade.level_name(0).to_string();
    let jammed = stage.source.wait_for(Duration::from_secs(30), || {
        (stage.source.queue_info(&level_0)["messages_dlx"].as_u64() == Some(1)).then_some(())
    });
    assert!(jammed.is_some(), "the message did not jam level 0");

    let output = stage.transfer().output().unwrap();
    let report = stdout_json(&output);
    assert_eq!(output.status.code(), Some(1), "{report:#}");
    assert_eq!(report["moved"], 50);
    assert_eq!(report["left"], 0);
    assert_eq!(report["dead_letter_backlog"], 1);
    let warnings = report["warnings"].to_string();
    assert!(warnings.contains("nsb.v2.delay-level-00"), "{warnings}");
}

#[test]
fn a_conflicting_target_cascade_stops_the_move_before_any_message() {
    let messages = population(20, now_micros(), &ADDRESSES);
    let stage = Stage::new("transfer-conflict", &messages);
    stage
        .target
        .declare_queue("nsb.v2.delay-level-05", serde_json::json!({}));

    let output = stage.transfer().output().unwrap();
    let report = stdout_json(&output);
    assert_eq!(output.status.code(), Some(1), "{report:#}");
    let conflicts = report["target_cascade"]["conflicts"].to_string();
    assert!(
        conflicts.contains("declaring queue `nsb.v2.delay-level-05`"),
        "{conflicts}"
    );
    assert_eq!(report["moved"], 0);
    assert_eq!(
        stage.source_client.ready_in_cascade(&stage.source_cascade),
        20
    );
}
