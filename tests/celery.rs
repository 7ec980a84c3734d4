//! Celery's cascade against the real thing: kombu's own functions build it in
//! one vhost and delaytopo in another, and the definitions must be equal; a
//! real Celery worker that may not declare the cascade runs countdown tasks
//! through the one delaytopo provisioned. Skipped (with a message) where
//! python3 is absent.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use support::celery::{CountdownApp, PythonEnv, Worker};
use support::*;

const EXAMPLE: &str = include_str!("../examples/celery.yaml");

/// The application queues both sides get: Celery's default queue, a queue
/// whose routing key differs from its exchange, and one on a direct exchange
/// (which kombu skips with a warning, and the topology does not list).
const APP_QUEUES: [&str; 3] = [
    "celery:celery:topic:celery",
    "video:media:topic:media.video",
    "legacy:legacy:direct:legacy",
];

/// The example topology, with kombu's prefix and queue type applied the way
/// the example's comments describe, and the `video` queue listed too.
fn topology(queue_type: &str, prefix: Option<&str>) -> String {
    let mut text = EXAMPLE.to_string();
    if let Some(prefix) = prefix {
        text = text.replace(
            "\"celery_delayed_{level}\"",
            &format!("\"{prefix}_celery_delayed_{{level}}\""),
        );
        text = text.replace(
            "delivery_exchange: celery_delayed_delivery",
            &format!("delivery_exchange: {prefix}_celery_delayed_delivery"),
        );
    }
    if queue_type == "classic" {
        text = text.replace(
            "  queue_type: quorum\n",
            "  queue_type: classic\n  queue_arguments:\n    x-queue-type: classic\n    x-overflow: reject-publish\n",
        );
    }
    text + "  - queue: video\n    exchange: media\n    routing_key: media.video\n"
}

/// Exchanges, queues and bindings of a vhost as comparable sets.
fn definitions(vhost: &TestVhost) -> [BTreeSet<String>; 3] {
    let document = vhost.definitions();
    ["exchanges", "queues", "bindings"].map(|kind| {
        document[kind]
            .as_array()
            .unwrap()
            .iter()
            .map(|entity| {
                let mut entity = entity.clone();
                entity.as_object_mut().unwrap().remove("vhost");
                entity.to_string()
            })
            .collect()
    })
}

fn kombu_and_delaytopo_agree(queue_type: &str, prefix: Option<&str>) {
    let Some(env) = PythonEnv::get() else { return };
    let prefix_arg = prefix.unwrap_or("-");
    let kombu = TestVhost::new("kombu-cascade");
    let mut args = vec![
        kombu.url(),
        queue_type.into(),
        prefix_arg.into(),
        "kombu".into(),
    ];
    args.extend(APP_QUEUES.map(String::from));
    env.run(
        "kombu_cascade.py",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );

    let ours = TestVhost::new("delaytopo-cascade");
    args[0] = ours.url();
    args[3] = "app".into();
    env.run(
        "kombu_cascade.py",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    ours.set_topology(&topology(queue_type, prefix));
    ours.delaytopo().arg("install").assert().code(0);

    let [kombu_exchanges, kombu_queues, kombu_bindings] = definitions(&kombu);
    let [exchanges, queues, bindings] = definitions(&ours);
    assert_eq!(exchanges, kombu_exchanges, "exchanges differ");
    assert_eq!(queues, kombu_queues, "queues differ");
    assert_eq!(bindings, kombu_bindings, "bindings differ");
    assert_eq!(kombu_queues.len(), 28 + 3);
    // 56 cascade bindings; per topic queue its plain binding, kombu's two and
    // the default exchange's implicit one (not listed in definitions).
    assert_eq!(kombu_bindings.len(), 56 + 2 * 3 + 1);

    // What kombu built passes verify with the same topology, and without the
    // endpoints too: a worker's own bindings are recognised as endpoints.
    kombu.set_topology(&topology(queue_type, prefix));
    kombu.assert_verifies_strictly();
    kombu.delaytopo().arg("plan").assert().code(0);
    kombu
        .delaytopo()
        .arg("install")
        .assert()
        .code(0)
        .stdout(predicates::str::contains("nothing to do"));
    assert_eq!(
        definitions(&kombu),
        [kombu_exchanges, kombu_queues, kombu_bindings]
    );
    let without_endpoints = topology(queue_type, prefix);
    let without_endpoints = without_endpoints.split("endpoints:").next().unwrap();
    kombu.set_topology(without_endpoints);
    kombu.delaytopo().arg("verify").assert().code(0);
}

#[test]
fn kombu_and_delaytopo_build_the_same_quorum_cascade() {
    kombu_and_delaytopo_agree("quorum", None);
}

#[test]
fn kombu_and_delaytopo_build_the_same_prefixed_quorum_cascade() {
    kombu_and_delaytopo_agree("quorum", Some("billing"));
}

#[test]
fn kombu_and_delaytopo_build_the_same_classic_cascade() {
    kombu_and_delaytopo_agree("classic", None);
}

#[test]
fn kombu_and_delaytopo_build_the_same_prefixed_classic_cascade() {
    kombu_and_delaytopo_agree("classic", Some("billing"));
}

/// The example's cascade section, without its endpoints.
fn example_cascade() -> &'static str {
    EXAMPLE.split("endpoints:").next().unwrap()
}

/// Checks each run came within a second or so of its countdown, never early.
fn assert_on_time(runs: &[(u64, f64)], worker: &Worker) {
    for (countdown, late) in runs {
        eprintln!("countdown {countdown} s: ran {late:+.3} s after its time");
        assert!(
            (-0.05..1.5).contains(late),
            "countdown {countdown} ran {late:.3} s after its time:\n{}",
            worker.log()
        );
    }
}

#[test]
fn a_celery_worker_runs_countdown_tasks_through_the_cascade_delaytopo_made() {
    let Some(env) = PythonEnv::get() else { return };
    let app = CountdownApp::new("celery-worker", example_cascade());
    let worker = app.start_worker(&env);
    let countdowns = [1, 2, 3, 4, 5];
    app.send(&env, &countdowns);
    let runs = app.runs(countdowns.len(), Duration::from_secs(30));
    assert_eq!(runs.len(), countdowns.len(), "{}", worker.log());
    assert_on_time(&runs, &worker);
    // The worker tried to declare the cascade itself, was refused, and ran
    // anyway. 3.x says "access to exchange", 4.x "configure access to exchange".
    let log = worker.log();
    assert!(
        log.lines().any(|line| line.contains("ACCESS_REFUSED")
            && line.contains("access to exchange 'celery_delayed_27'")),
        "the worker was not refused the cascade it tries to declare:\n{log}"
    );
    app.vhost.assert_verifies_strictly();

    // An hour's countdown waits in level 11 (2048 s <= 3600 s < 4096 s).
    app.send(&env, &[3600]);
    app.wait_parked(11, 1);
    app.vhost
        .delaytopo()
        .arg("teardown")
        .assert()
        .code(1)
        .stdout(predicates::str::contains("celery_delayed_11"));
}

#[test]
fn transfer_moves_celery_tasks_by_their_eta_and_a_worker_runs_them_on_time() {
    let Some(env) = PythonEnv::get() else { return };
    let from = CountdownApp::new("celery-transfer-from", example_cascade());
    let to = CountdownApp::new("celery-transfer-to", example_cascade());
    // 30 s waits in level 4 first (16 s <= 30 s < 32 s); 3600 s in level 11.
    from.send(&env, &[30, 3600]);
    from.wait_parked(4, 1);
    from.wait_parked(11, 1);
    from.vhost
        .delaytopo()
        .args(["transfer", "--to-url", &to.vhost.url()])
        .args(["--to-management-url", management()])
        .assert()
        .code(0);
    to.wait_parked(11, 1);
    let worker = to.start_worker(&env);
    let runs = to.runs(1, Duration::from_secs(40));
    assert_eq!(runs.len(), 1, "{}", worker.log());
    assert_eq!(runs[0].0, 30);
    assert_on_time(&runs, &worker);
}

/// A vhost with the example topology, Celery's default queue on an exchange
/// of `exchange_type`, and the cascade installed.
fn installed_example(test: &str, exchange_type: &str) -> TestVhost {
    let vhost = TestVhost::new(test);
    vhost.set_topology(EXAMPLE);
    vhost.declare_exchange("celery", exchange_type);
    vhost.declare_queue("celery", serde_json::json!({"x-queue-type": "quorum"}));
    vhost.delaytopo().arg("install").assert().code(0);
    vhost
}

#[test]
fn verify_reports_a_direct_exchange_in_the_delivery_path() {
    let vhost = installed_example("celery-direct", "direct");
    vhost
        .delaytopo()
        .arg("verify")
        .assert()
        .code(1)
        .stdout(predicates::str::contains(
            "endpoint exchange celery is a direct exchange",
        ));
}

#[test]
fn install_plan_verify_probe_render_and_teardown_work_on_the_celery_cascade() {
    let vhost = installed_example("celery-commands", "topic");
    vhost.delaytopo().arg("plan").assert().code(0);
    vhost.assert_verifies_strictly();
    vhost
        .delaytopo()
        .args(["probe", "--delay", "1"])
        .assert()
        .code(0);
    let bindings = vhost.list("bindings");
    let has = |source: &str, destination: &str| {
        bindings.iter().any(|b| {
            b["source"] == source
                && b["destination"] == destination
                && b["routing_key"] == "#.celery"
        })
    };
    assert!(has("celery_delayed_delivery", "celery") && has("celery", "celery"));
    vhost
        .delaytopo()
        .arg("render")
        .assert()
        .code(0)
        .stdout(predicates::str::contains("celery_delayed_27"));
    vhost.delaytopo().arg("teardown").assert().code(0);
    let left: Vec<String> = vhost
        .list("exchanges")
        .iter()
        .filter_map(|e| e["name"].as_str().map(String::from))
        .filter(|name| name.starts_with("celery_delayed"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    vhost.delaytopo().arg("verify").assert().code(1);
}
