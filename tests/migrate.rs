//! `migrate` moves every delayed message of a v1 cascade into the v2 cascade
//! with the delay it has left, poisons what it cannot move, and loses nothing
//! when its connection is closed, its process killed or interrupted mid-run;
//! what had landed before a fault is not landed a second time.

mod moving;
mod support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use delaytopo::cascade::{starting_level, Desired};
use delaytopo::moving::headers::{DELAY_IN_SECONDS, POISON_SOURCE_ROUTING_KEY, TIME_SENT};
use lapin::types::{AMQPValue, FieldTable, LongString};
use moving::*;
use serde_json::Value;
use support::*;

/// Addresses with dots; one with nothing to deliver to in the target.
const SALES: &str = "Sales.Eu"; // a queue, not in the target topology
const SHIPPING: &str = "Shipping"; // a queue listed in the target topology
const BILLING: &str = "Billing.Us"; // only an exchange of that name exists
const GHOST: &str = "Ghost.Town"; // nothing exists: poisoned
const ADDRESSES: [&str; 4] = [SALES, SHIPPING, BILLING, GHOST];
const BILLING_INBOX: &str = "billing-us-inbox";
const ENDPOINT_QUEUES: [&str; 3] = [SALES, SHIPPING, BILLING_INBOX];

const TARGET_TOPOLOGY: &str = "endpoints:\n  - address: Shipping\n";

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

/// A vhost with the v1 cascade holding `messages`, the endpoints of
/// `ADDRESSES` (but GHOST), and the v2 topology as `-f`.
struct Stage {
    vhost: TestVhost,
    client: Client,
    source: Desired,
    target: Desired,
    from_file: tempfile::NamedTempFile,
    journal: tempfile::TempDir,
}

impl Stage {
    fn new(test: &str, messages: &[Delayed]) -> Stage {
        let vhost = TestVhost::new(test);
        vhost.set_topology(TARGET_TOPOLOGY);
        install_from_render(&vhost, V1);
        vhost.declare_queue(SALES, serde_json::json!({}));
        vhost.declare_queue(SHIPPING, serde_json::json!({}));
        vhost.declare_exchange(BILLING, "fanout");
        vhost.declare_queue(BILLING_INBOX, serde_json::json!({}));
        api(
            reqwest::Method::POST,
            &format!(
                "bindings/{}/e/{}/q/{}",
                encode(&vhost.name),
                encode(BILLING),
                encode(BILLING_INBOX)
            ),
            Some(serde_json::json!({"routing_key": ""})),
        );
        let client = Client::new(&vhost);
        let source = cascade(V1, &vhost);
        let target = cascade(TARGET_TOPOLOGY, &vhost);
        client.publish_delayed(&source, messages);
        let from_file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(from_file.path(), V1).unwrap();
        Stage {
            vhost,
            client,
            source,
            target,
            from_file,
            journal: tempfile::tempdir().unwrap(),
        }
    }

    /// `migrate` with JSON output and the stage's journal directory.
    fn migrate(&self) -> assert_cmd::Command {
        let mut command = self.vhost.delaytopo();
        command
            .args(["-o", "json", "migrate", "--journal"])
            .arg(self.journal.path())
            .arg("--from")
            .arg(self.from_file.path());
        command
    }

    /// The same command, as a child process that can be killed.
    fn spawn_migrate(&self, extra: &[&str]) -> std::process::Child {
        self.spawn_with(&["--no-progress", "-o", "json"], extra)
    }

    /// `migrate` with `global` options, as a child process.
    fn spawn_with(&self, global: &[&str], extra: &[&str]) -> std::process::Child {
        Command::new(assert_cmd::cargo::cargo_bin("delaytopo"))
            .arg("-f")
            .arg(self.vhost.topology_path())
            .args(["--url", &self.vhost.url(), "--management-url", MANAGEMENT])
            .args(global)
            .args(["migrate", "--journal"])
            .arg(self.journal.path())
            .arg("--from")
            .arg(self.from_file.path())
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn inventory(&self) -> Inventory {
        assert_eq!(self.client.ready_in_cascade(&self.source), 0);
        Inventory::take(&self.client, &self.target, &ENDPOINT_QUEUES)
    }
}

/// Addresses that all have a destination, so that every message is movable.
const DELIVERABLE: [&str; 3] = [SALES, SHIPPING, BILLING];

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

#[test]
fn a_connection_closed_mid_run_lands_nothing_twice_that_was_confirmed() {
    let messages = population(4000, now_micros(), &DELIVERABLE);
    let stage = Stage::new("migrate-conn", &messages);
    // One message at a time: slow enough for the management API to list the
    // tool's connections (it does so a second or so after they open).
    let child = stage.spawn_migrate(&["--prefetch", "1"]);
    let closed = wait_until(Duration::from_secs(60), || {
        stage.client.ready_in_cascade(&stage.target) > 100
            && close_tool_connections(&stage.vhost) > 0
    });
    assert!(closed, "the run could not be interrupted");
    let output = child.wait_with_output().unwrap();
    let first = stdout_json(&output);
    let mut reports = vec![first.clone()];
    if output.status.success() {
        // It reconnected by itself and finished.
        assert!(first["reconnects"].as_u64().unwrap() >= 1, "{first:#}");
    } else {
        reports.extend(run_until_ok(|| stage.migrate(), 3));
    }
    let duplicates = stage.inventory().assert_none_lost(&messages);
    // Only a publish whose confirm was lost with the connection can land
    // twice (the tool cannot know whether it landed), and the tool says so.
    let in_doubt = sum(&reports, "in_doubt");
    eprintln!(
        "connection closed: {duplicates} duplicates, {in_doubt} in doubt, {} skipped as landed",
        sum(&reports, "skipped_landed_this_run")
    );
    assert!(
        duplicates as u64 <= in_doubt,
        "{duplicates} > {in_doubt} in doubt"
    );
    assert!(in_doubt <= 1, "at most --prefetch in doubt: {reports:#?}");
}

/// Kills a migrate with `--prefetch 200` once part of it has landed, runs
/// it again; returns the duplicates that landed and the reports.
fn killed_then_rerun(test: &str, extra: &[&str]) -> (usize, Vec<Value>) {
    let messages = population(8000, now_micros(), &DELIVERABLE);
    let stage = Stage::new(test, &messages);
    let mut arguments = vec!["--prefetch", "200"];
    arguments.extend(extra);
    let child = stage.spawn_migrate(&arguments);
    kill_mid_run(
        child,
        || stage.client.ready_in_cascade(&stage.target),
        || stage.client.ready_in_cascade(&stage.source),
    );
    let reports = run_until_ok(
        || {
            let mut command = stage.migrate();
            command.args(extra);
            command
        },
        3,
    );
    let duplicates = stage.inventory().assert_none_lost(&messages);
    assert_duplicates_reported(&reports, duplicates);
    (duplicates, reports)
}

#[test]
fn a_killed_run_then_a_rerun_skips_what_the_journal_recorded() {
    let (duplicates, reports) = killed_then_rerun("migrate-kill", &[]);
    let (skipped, in_doubt) = (
        sum(&reports, "skipped_from_journal"),
        sum(&reports, "in_doubt"),
    );
    eprintln!(
        "SIGKILL with the journal: {duplicates} duplicates, {in_doubt} reported in doubt; \
         the re-run skipped {skipped} from the journal"
    );
    // What the target confirmed is never landed twice. What remains is what
    // was published but not yet confirmed when the process died (at most the
    // messages in flight, --prefetch): the re-run names exactly those.
    assert!(duplicates as u64 <= in_doubt, "{reports:#?}");
    assert!(in_doubt <= 200, "{reports:#?}");
    assert!(reports.last().unwrap()["journal"]["existed"] == true);
}

#[test]
fn a_killed_run_without_a_journal_can_land_messages_twice_and_says_so() {
    let (duplicates, reports) = killed_then_rerun("migrate-kill-nj", &["--no-journal"]);
    eprintln!(
        "SIGKILL without a journal: {duplicates} duplicates, {} possible reported",
        sum(&reports, "possible_duplicates")
    );
    assert!(reports.iter().all(|r| r["journal"].is_null()));
}

#[test]
fn sigint_settles_what_is_in_flight_reports_and_a_rerun_finishes() {
    let messages = population(6000, now_micros(), &DELIVERABLE);
    let stage = Stage::new("migrate-sigint", &messages);
    let child = stage.spawn_migrate(&["--prefetch", "200"]);
    let started = wait_until(Duration::from_secs(60), || {
        stage.client.ready_in_cascade(&stage.target) > 100
    });
    assert!(started, "nothing moved");
    send_signal(&child, "INT");
    let output = child.wait_with_output().unwrap();
    let report = stdout_json(&output);
    assert_eq!(output.status.code(), Some(1), "{report:#}");
    assert_eq!(report["interrupted"], "SIGINT");
    assert_eq!(report["left_counted"], true);
    let (moved, left) = (
        report["moved"].as_u64().unwrap(),
        report["left"].as_u64().unwrap(),
    );
    assert!(moved > 0 && left > 0, "{report:#}");
    // Nothing is held: what did not move is back in the source, counted.
    assert_eq!(moved + left, 6000, "{report:#}");
    assert_eq!(stage.client.ready_in_cascade(&stage.source) as u64, left);

    let reports = run_until_ok(|| stage.migrate(), 2);
    assert_eq!(reports.len(), 1, "{reports:#?}");
    assert_eq!(reports[0]["moved"].as_u64().unwrap(), left);
    // The stopped run saw every confirm of what it published.
    assert_eq!(reports[0]["in_doubt"], 0, "{reports:#?}");
    assert_eq!(stage.inventory().assert_none_lost(&messages), 0);
}

#[test]
fn sigint_in_text_mode_ends_with_a_one_line_summary() {
    let messages = population(4000, now_micros(), &DELIVERABLE);
    let stage = Stage::new("migrate-sigint-text", &messages);
    // Text output, and progress as it is when stderr is not a terminal.
    let child = stage.spawn_with(&[], &["--prefetch", "50"]);
    assert!(wait_until(Duration::from_secs(60), || {
        stage.client.ready_in_cascade(&stage.target) > 100
    }));
    send_signal(&child, "TERM");
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    let last = stdout.lines().last().unwrap();
    assert!(
        last.starts_with("stopped by SIGTERM: moved ") && last.ends_with("; run again to finish"),
        "{stdout}"
    );
    assert!(last.contains(" still in the source"), "{last}");
    // stderr is not a terminal here: plain progress lines, no bar.
    assert!(stderr.contains("messages to move"), "{stderr}");
}

#[test]
fn a_second_sigint_exits_at_once() {
    let messages = population(4000, now_micros(), &DELIVERABLE);
    let stage = Stage::new("migrate-sigint-twice", &messages);
    let child = stage.spawn_migrate(&["--prefetch", "1"]);
    assert!(wait_until(Duration::from_secs(60), || {
        stage.client.ready_in_cascade(&stage.target) > 10
    }));
    send_signal(&child, "INT");
    send_signal(&child, "INT");
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("SIGINT again: exiting at once"), "{stderr}");
    // Whatever it held went back: a re-run finishes without loss.
    run_until_ok(|| stage.migrate(), 2);
    stage.inventory().assert_none_lost(&messages);
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
fn a_broker_restart_mid_run_does_not_end_it() {
    let node = moving::node::PrivateNode::start();
    let parse = |yaml: &str| {
        let topology = delaytopo::topology::Topology::parse(std::path::Path::new("t.yaml"), yaml);
        Desired::new(&topology.unwrap(), "/")
    };
    let (source, target) = (parse(V1), parse(TARGET_TOPOLOGY));
    let from_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(from_file.path(), V1).unwrap();
    let to_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(to_file.path(), TARGET_TOPOLOGY).unwrap();
    let delaytopo = || {
        let mut command = Command::new(assert_cmd::cargo::cargo_bin("delaytopo"));
        command
            .args(["--url", &node.url(), "--management-url", &node.management()])
            .args(["--no-progress", "-o", "json"]);
        command
    };
    let installed = delaytopo()
        .arg("-f")
        .arg(from_file.path())
        .arg("install")
        .output()
        .unwrap();
    assert!(installed.status.success(), "{installed:?}");
    let client = Client::connect(&node.url());
    for queue in [SALES, SHIPPING] {
        client.declare_queue(queue);
    }
    let messages = population(3000, now_micros(), &[SALES, SHIPPING]);
    client.publish_delayed(&source, &messages);
    drop(client);

    let journal = tempfile::tempdir().unwrap();
    let child = delaytopo()
        .arg("-f")
        .arg(to_file.path())
        .args(["migrate", "--prefetch", "1", "--journal"])
        .arg(journal.path())
        .arg("--from")
        .arg(from_file.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let watcher = Client::connect(&node.url());
    assert!(wait_until(Duration::from_secs(60), || {
        watcher.ready_in_cascade(&target) > 100
    }));
    drop(watcher);
    // A restart as a package upgrade does it: the broker is away for 12 s.
    node.restart(Duration::from_secs(12));
    let output = child.wait_with_output().unwrap();
    let report = stdout_json(&output);
    assert!(output.status.success(), "{report:#}");
    assert!(report["reconnects"].as_u64().unwrap() >= 1, "{report:#}");

    let client = Client::connect(&node.url());
    assert_eq!(client.ready_in_cascade(&source), 0);
    let inventory = Inventory::take(&client, &target, &[SALES, SHIPPING]);
    let duplicates = inventory.assert_none_lost(&messages);
    let in_doubt = report["in_doubt"].as_u64().unwrap();
    eprintln!("broker restart: {duplicates} duplicates, {in_doubt} in doubt");
    assert!(duplicates as u64 <= in_doubt, "{report:#}");
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
