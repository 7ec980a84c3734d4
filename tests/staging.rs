//! The staging queues of a move into a quorum cascade (`--staging`): one move at a time
//! holds them, what an interrupted move left there is released by the next
//! run (one copy per message), verify reports it meanwhile, and teardown
//! refuses to strand it and removes the staging queues once they are empty.

mod moving;
mod support;

use std::time::Duration;

use moving::stage::*;
use moving::*;
use serde_json::Value;
use support::*;

/// Runs `delaytopo -o json ARGS` on the stage's vhost: exit code and report.
fn json(stage: &Stage, args: &[&str]) -> (Option<i32>, Value) {
    let output = stage
        .vhost
        .delaytopo()
        .args(["-o", "json"])
        .args(args)
        .output()
        .unwrap();
    (output.status.code(), stdout_json(&output))
}

fn kinds(report: &Value) -> Vec<String> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn one_move_at_a_time_holds_the_staging_queues() {
    let messages = population(20, now_micros(), &DELIVERABLE);
    let stage = Stage::new("staging-lock", &messages[..10]);
    let first = stage.migrate().arg("--staging").output().unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    stage.client.publish_delayed(&stage.source, &messages[10..]);

    let holder = Client::new(&stage.vhost);
    holder.declare_exclusive(&stage.target.staging_lock());
    let refused = stage.migrate().arg("--staging").output().unwrap();
    assert_eq!(refused.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("another migrate or transfer into this cascade is running")
            && stderr.contains(&stage.target.staging_lock()),
        "{stderr}"
    );
    // Nothing was taken from the source.
    assert_eq!(stage.client.ready_in_cascade(&stage.source), 10);
    let (code, report) = json(&stage, &["teardown"]);
    assert_eq!(code, Some(1));
    assert!(
        report["refused"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("another migrate or transfer into this cascade is running"),
        "{report:#}"
    );

    drop(holder);
    let again = stage.migrate().arg("--staging").output().unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(stage.inventory().assert_none_lost(&messages), 0);
}

#[test]
fn what_an_interrupted_move_left_staged_is_reported_and_released_once_by_the_next_run() {
    let moved = population(10, now_micros(), &DELIVERABLE);
    let stage = Stage::new("staging-left", &moved);
    let first = stage.migrate().arg("--staging").output().unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    // An interrupted move's leftovers: landed in a staging queue, acknowledged
    // at the source, never released; one of them twice (a killed publisher's
    // copy that landed late).
    let left = population(4, now_micros(), &DELIVERABLE)
        .into_iter()
        .map(|mut m| {
            m.id = format!("left-{}", m.id);
            m
        })
        .collect::<Vec<_>>();
    let staging = stage.target.staging_names();
    stage
        .client
        .publish_through(&staging[1], &stage.target, &left);
    stage
        .client
        .publish_through(&staging[5], &stage.target, &left[..1]);

    // verify sees them once the management API's statistics do (seconds).
    let staged = |report: &Value| {
        kinds(report)
            .iter()
            .filter(|k| *k == "staged_not_released")
            .count()
    };
    let report = stage
        .vhost
        .wait_for(Duration::from_secs(30), || {
            let (code, report) = json(&stage, &["verify"]);
            (staged(&report) == 2).then(|| {
                assert_eq!(code, Some(1), "{report:#}");
                report
            })
        })
        .expect("verify never reported the staged messages");
    assert!(
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["entity"] == format!("queue {}", staging[1])
                && f["message"]
                    .as_str()
                    .unwrap()
                    .starts_with("4 messages staged")),
        "{report:#}"
    );
    let in_cascade = stage.client.ready_in_cascade(&stage.target);
    let (code, report) = json(&stage, &["teardown"]);
    assert_eq!(code, Some(1));
    let refusal = report["refused"]["reason"].as_str().unwrap().to_string();
    assert!(
        refusal.starts_with(&format!(
            "4 messages in staging queue {} (and 1 message in 1 more)",
            staging[1]
        )),
        "{refusal}"
    );
    assert_eq!(
        stage.client.ready_in_cascade(&stage.target),
        in_cascade,
        "teardown changed nothing"
    );

    // The next run (the source is empty) releases them, one copy each.
    let rerun = stage.migrate().arg("--staging").output().unwrap();
    let report = stdout_json(&rerun);
    assert!(rerun.status.success(), "{report:#}");
    assert_eq!(report["found_in_staging"], 4, "{report:#}");
    assert_eq!(report["dropped_in_staging"], 1, "{report:#}");
    let all: Vec<Delayed> = moved.iter().chain(&left).cloned().collect();
    assert_eq!(stage.inventory().assert_none_lost(&all), 0);

    // Empty staging queues: teardown removes them with the cascade, once
    // the statistics no longer count what was there a moment ago (in the
    // staging queues, and in the level queues the inventory emptied).
    let report = stage
        .vhost
        .wait_for(Duration::from_secs(30), || {
            let (code, report) = json(&stage, &["teardown"]);
            (code == Some(0)).then_some(report)
        })
        .expect("teardown kept refusing");
    let removed: Vec<&str> = report["removed"]["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q.as_str().unwrap())
        .collect();
    let queues = api(
        reqwest::Method::GET,
        &format!("queues/{}", encode(&stage.vhost.name)),
        None,
    );
    let left: Vec<&str> = queues
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    for name in &staging {
        assert!(
            removed.contains(&name.as_str()),
            "{name} not in {removed:?}"
        );
        assert!(!left.contains(&name.as_str()), "{name} is still there");
    }
}

#[test]
fn without_staging_a_move_publishes_straight_into_the_cascade() {
    let messages = population(10, now_micros(), &DELIVERABLE);
    let stage = Stage::new("staging-none", &messages);
    let output = stage.migrate().output().unwrap();
    let report = stdout_json(&output);
    assert!(output.status.success(), "{report:#}");
    assert_eq!(report["staged"], false, "{report:#}");
    let queues = api(
        reqwest::Method::GET,
        &format!("queues/{}", encode(&stage.vhost.name)),
        None,
    );
    assert!(
        !queues.as_array().unwrap().iter().any(|q| q["name"]
            .as_str()
            .unwrap()
            .starts_with("delaytopo.staging.")),
        "{queues:#}"
    );
    assert_eq!(stage.inventory().assert_none_lost(&messages), 0);
}
