//! `render` works offline and its definitions import to the same cascade.

mod support;

use predicates::prelude::*;
use support::*;

#[test]
fn render_needs_no_broker() {
    let vhost_less = assert_cmd::Command::cargo_bin("delaytopo")
        .unwrap()
        .args([
            "-f",
            "topology.yaml",
            "--url",
            "amqp://u:secret@127.0.0.1:1/x",
            "render",
        ])
        .assert()
        .success();
    let output = vhost_less.get_output();
    let document: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(document["queues"].as_array().unwrap().len(), 28);
    assert_eq!(document["queues"][0]["vhost"], "x");
}

#[test]
fn bad_topology_exits_2_naming_file_line_and_column() {
    let vhost = TestVhost::new("render-bad");
    vhost.set_topology("cascade:\n  levels: 40\n");
    vhost.delaytopo().arg("render").assert().code(2).stderr(
        predicate::str::contains(":2:")
            .and(predicate::str::contains("levels must be between 1 and 28")),
    );
}

#[test]
fn rendered_definitions_import_into_a_vhost() {
    let vhost = TestVhost::new("render-import");
    vhost.set_topology("endpoints:\n  - address: Sales\n");
    vhost.declare_queue("Sales", serde_json::json!({}));
    let output = vhost.delaytopo().arg("render").output().unwrap();
    assert!(output.status.success());
    let definitions: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    api(
        reqwest::Method::POST,
        &format!("definitions/{}", encode(&vhost.name)),
        Some(definitions),
    );
    assert_eq!(vhost.list("queues").len(), 29);
    let bindings = vhost.list("bindings");
    // 56 cascade + 1 endpoint + the default-exchange bindings of 29 queues.
    assert_eq!(bindings.iter().filter(|b| b["source"] != "").count(), 57);
}

/// Exchanges, queues and bindings of a vhost without the vhost's name, sorted.
fn cascade_definitions(vhost: &TestVhost) -> serde_json::Value {
    let mut definitions = vhost.definitions();
    let mut sorted = serde_json::Map::new();
    for kind in ["exchanges", "queues", "bindings"] {
        let mut items: Vec<serde_json::Value> = definitions[kind]
            .as_array_mut()
            .unwrap()
            .drain(..)
            .map(|mut item| {
                item.as_object_mut().unwrap().remove("vhost");
                item
            })
            .collect();
        items.sort_by_key(|item| item.to_string());
        sorted.insert(kind.to_string(), serde_json::Value::Array(items));
    }
    serde_json::Value::Object(sorted)
}

#[test]
fn rendered_definitions_equal_what_install_creates() {
    let imported = TestVhost::new("render-vs-import");
    let installed = TestVhost::new("render-vs-install");
    for vhost in [&imported, &installed] {
        vhost.set_topology("endpoints:\n  - address: Sales\n");
        vhost.declare_queue("Sales", serde_json::json!({}));
    }
    let output = imported.delaytopo().arg("render").output().unwrap();
    let definitions: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    api(
        reqwest::Method::POST,
        &format!("definitions/{}", encode(&imported.name)),
        Some(definitions),
    );
    installed.delaytopo().arg("install").assert().success();
    assert_eq!(
        cascade_definitions(&imported),
        cascade_definitions(&installed)
    );
}
