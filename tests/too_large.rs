//! A message larger than the target's `max_message_size` stays in its source
//! level queue, is reported by level, and the run moves every other message:
//! learned from the target's refusal (a node of its own with a 1 MiB limit),
//! and from `--max-message-size`. Every message id is counted.

mod moving;
mod support;

use delaytopo::cascade::Desired;
use moving::stage::*;
use moving::*;
use serde_json::Value;
use support::*;

const MIB: usize = 1024 * 1024;

/// A node whose `max_message_size` is 1 MiB (slots: see tests/support/node.rs).
fn small_node() -> Node {
    let version = Version::from_env();
    let slot = match version {
        Version::V3_10 => 24,
        Version::V4_0 => 25,
    };
    let name = format!("small-messages-{}", version.label().replace('.', "-"));
    BrokerSpec::new(&name, version, slot)
        .conf(&format!("max_message_size = {MIB}"))
        .start()
}

/// Three messages in three levels, and the levels' queue names in `cascade`.
fn big_ones(now: i64, address: &str, cascade: &Desired) -> (Vec<Delayed>, Vec<String>) {
    let big: Vec<Delayed> = [12u32, 20, 20, 25]
        .iter()
        .enumerate()
        .map(|(i, &level)| Delayed {
            id: format!("big-{i}"),
            address: address.to_string(),
            delay_seconds: (1u64 << level) + 77,
            sent_micros: now,
            broken_headers: None,
        })
        .collect();
    let queues = big
        .iter()
        .map(|m| {
            let level = delaytopo::cascade::starting_level(m.delay_seconds);
            cascade.level_name(level).to_string()
        })
        .collect();
    (big, queues)
}

/// The report names each level with too-large messages, in JSON and text.
fn assert_reported(report: &Value, queues: &[String], source: &Desired) {
    assert_eq!(report["too_large"], queues.len(), "{report:#}");
    assert_eq!(report["ok"], false, "{report:#}");
    for level in report["levels"].as_array().unwrap() {
        let queue = level["queue"].as_str().unwrap();
        assert!(source.owns_queue(queue), "{queue}");
        let expected = queues.iter().filter(|q| *q == queue).count();
        assert_eq!(level["too_large"], expected, "{queue}: {report:#}");
        assert_eq!(level["left"], 0, "{queue}: {report:#}");
    }
}

/// Each of `big` is (only) in its level queue of the source.
fn assert_kept_where_they_were(client: &Client, big: &[Delayed], queues: &[String]) {
    let mut distinct = queues.to_vec();
    distinct.sort();
    distinct.dedup();
    let left: Vec<Taken> = distinct.iter().flat_map(|q| client.take_all(q)).collect();
    assert_eq!(left.len(), big.len(), "{left:?}");
    for (message, queue) in big.iter().zip(queues) {
        assert!(
            left.iter().any(|t| t.id == message.id && &t.queue == queue),
            "{} not in {queue}: {left:?}",
            message.id
        );
    }
}

#[test]
fn a_message_over_the_targets_limit_stays_in_its_source_queue_and_the_rest_moves() {
    let node = small_node();
    let target_vhost = format!("delaytopo-test-too-large-{}", std::process::id());
    node.api(
        reqwest::Method::PUT,
        &format!("vhosts/{}", encode(&target_vhost)),
        None,
    );
    node.api(
        reqwest::Method::PUT,
        &format!("permissions/{}/guest", encode(&target_vhost)),
        Some(serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"})),
    );
    let target_url = format!(
        "amqp://guest:guest@{}/{}",
        node.amqp_host_port(),
        encode(&target_vhost)
    );
    let target_client = Client::connect(&target_url);
    target_client.declare_queue(SHIPPING);

    // The source: the same (quorum) cascade on the shared broker.
    let source = TestVhost::new("too-large-from");
    source.set_topology(TARGET_TOPOLOGY);
    // The endpoint first: 4.x imports no binding to a missing queue.
    source.declare_queue(SHIPPING, serde_json::json!({}));
    install_from_render(&source, TARGET_TOPOLOGY);
    let source_cascade = cascade(TARGET_TOPOLOGY, &source);
    let target_cascade = Desired::new(
        &delaytopo::topology::Topology::parse(std::path::Path::new("t.yaml"), TARGET_TOPOLOGY)
            .unwrap(),
        &target_vhost,
    );
    let now = now_micros();
    let small = population(600, now, &[SHIPPING]);
    let (big, big_queues) = big_ones(now, SHIPPING, &source_cascade);
    let source_client = Client::new(&source);
    source_client.publish_delayed(&source_cascade, &small);
    source_client.publish_delayed_sized(&source_cascade, &big, 2 * MIB);

    let journal = tempfile::tempdir().unwrap();
    let run = |format: &str, prefetch: &str| {
        let mut command = source.delaytopo();
        command
            .args(["-o", format, "transfer", "--prefetch", prefetch])
            .args(["--to-url", &target_url])
            .args(["--to-management-url", &node.management_url()])
            .arg("--journal")
            .arg(journal.path())
            .output()
            .unwrap()
    };
    let output = run("json", "1000");
    let report = stdout_json(&output);
    // Not complete: messages are still in the source.
    assert_eq!(output.status.code(), Some(1), "{report:#}");
    assert_reported(&report, &big_queues, &source_cascade);
    assert_eq!(report["moved"], small.len(), "{report:#}");
    assert_eq!(report["in_doubt"], 0, "{report:#}");
    assert_eq!(
        report["max_message_size"],
        serde_json::json!({"bytes": MIB, "from": "refusal"}),
        "{report:#}"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("the target refused a message of"),
        "{stderr}"
    );

    // Run again, in text and one message at a time (each kept message fills
    // the quorum consumer's window): the same messages stay, by level, and
    // nothing else moves.
    let output = run("text", "1");
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{text}");
    for queue in [
        "nsb.v2.delay-level-20",
        "nsb.v2.delay-level-25",
        "nsb.v2.delay-level-12",
    ] {
        let count = big_queues.iter().filter(|q| *q == queue).count();
        let line = format!(
            "{count} message{} too large for the target (max {MIB} bytes, learned from the target's refusal) {} in the source: {queue}",
            if count == 1 { "" } else { "s" },
            if count == 1 { "stays" } else { "stay" },
        );
        assert!(text.contains(&line), "{line}\n{text}");
    }

    // Every id: the big ones in their source level queues, the rest landed once.
    assert_kept_where_they_were(&source_client, &big, &big_queues);
    assert_eq!(source_client.ready_in_cascade(&source_cascade), 0);
    let inventory = Inventory::take(&target_client, &target_cascade, &[SHIPPING]);
    assert_eq!(inventory.assert_none_lost(&small), 0);
    drop(target_client);
    node.api(
        reqwest::Method::DELETE,
        &format!("vhosts/{}", encode(&target_vhost)),
        None,
    );
}

#[test]
fn max_message_size_keeps_larger_messages_even_one_at_a_time() {
    let now = now_micros();
    let small = population(200, now, &DELIVERABLE);
    let stage = Stage::new("too-large-option", &small);
    let (big, big_queues) = big_ones(now, SHIPPING, &stage.source);
    stage
        .client
        .publish_delayed_sized(&stage.source, &big, 200_000);
    // With --prefetch 1 every kept message fills the consumer's window: the
    // drain must still go on past it (the v1 source is classic queues,
    // which give a message back at the head).
    let output = stage
        .migrate()
        .args(["--prefetch", "1", "--max-message-size", "100000"])
        .output()
        .unwrap();
    let report = stdout_json(&output);
    assert_eq!(output.status.code(), Some(1), "{report:#}");
    assert_reported(&report, &big_queues, &stage.source);
    assert_eq!(
        report["max_message_size"],
        serde_json::json!({"bytes": 100_000, "from": "option"}),
        "{report:#}"
    );
    assert_eq!(report["possible_duplicates"], 0, "{report:#}");
    assert_kept_where_they_were(&stage.client, &big, &big_queues);
    assert_eq!(stage.inventory().assert_none_lost(&small), 0);
}
