//! A vhost's limits that would stop install halfway are found before
//! anything is created: plan says install would be refused, install refuses.

mod support;

use serde_json::json;
use support::*;

fn limit(vhost: &TestVhost, name: &str, value: i64) {
    api(
        reqwest::Method::PUT,
        &format!("vhost-limits/{}/{name}", encode(&vhost.name)),
        Some(json!({ "value": value })),
    );
}

#[test]
fn a_cascade_beyond_max_queues_is_refused_before_anything_is_created() {
    let vhost = TestVhost::new("limits-queues");
    limit(&vhost, "max-queues", 20);
    let plan = vhost
        .delaytopo()
        .args(["-o", "json", "plan"])
        .output()
        .unwrap();
    assert_eq!(plan.status.code(), Some(1));
    let document = stdout_json(&plan);
    let refused = document["refused"].as_array().unwrap();
    assert_eq!(refused.len(), 1, "{document:#}");
    assert!(
        refused[0]["message"]
            .as_str()
            .unwrap()
            .contains("allows 20 queues (max-queues) and holds 0: the cascade needs 28 more"),
        "{document:#}"
    );

    let install = vhost.delaytopo().arg("install").output().unwrap();
    assert_eq!(install.status.code(), Some(1), "{install:?}");
    let stdout = String::from_utf8_lossy(&install.stdout);
    assert!(stdout.contains("nothing created"), "{stdout}");
    assert!(vhost.list("queues").is_empty());
    assert!(vhost.list("exchanges").iter().all(|e| e["name"]
        .as_str()
        .unwrap()
        .starts_with("amq.")
        || e["name"] == ""));

    limit(&vhost, "max-queues", 28);
    vhost.delaytopo().arg("install").assert().code(0);
    assert_eq!(vhost.list("queues").len(), 28);
}

#[test]
fn no_connection_left_under_max_connections_stops_install_at_its_first_connection() {
    // The connection that proves which broker the management API is comes
    // first: the broker's refusal is exit 3, before anything is created.
    let vhost = TestVhost::new("limits-connections");
    limit(&vhost, "max-connections", 0);
    let install = vhost.delaytopo().arg("install").output().unwrap();
    assert_eq!(install.status.code(), Some(3), "{install:?}");
    let stderr = String::from_utf8_lossy(&install.stderr);
    assert!(
        stderr.contains("connection limit (0) is reached"),
        "{stderr}"
    );
    assert!(vhost.list("queues").is_empty());
}
