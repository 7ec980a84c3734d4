//! What differs between the RabbitMQ versions in the test matrix, as the
//! tool must see it: known defects by version, the 4.x feature flags, the
//! paginated queue list of large vhosts.

mod support;

use delaytopo::diff::Severity;
use serde_json::{json, Value};
use support::*;

const SALES: &str = "endpoints:\n  - address: zz-Sales\n";

fn verify_json(vhost: &TestVhost) -> (i32, Value) {
    let output = vhost
        .delaytopo()
        .args(["-o", "json", "verify"])
        .output()
        .unwrap();
    (output.status.code().unwrap(), stdout_json(&output))
}

fn kinds(document: &Value) -> Vec<(String, String)> {
    document["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["kind"].as_str().unwrap().to_string(),
                f["severity"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn verify_names_the_brokers_known_defects_and_never_unknown_4x_flags() {
    let vhost = TestVhost::new("versions-defects");
    vhost.declare_queue("zz-Sales", json!({}));
    let desired = vhost.import_cascade(SALES);
    let (code, document) = verify_json(&vhost);
    assert_eq!(code, 0, "warnings alone do not fail verify: {document:#}");
    let expected: Vec<(String, String)> = delaytopo::versions::findings(&desired, broker_version())
        .iter()
        .map(|f| {
            let severity = match f.severity {
                Severity::Warning => "warning",
                Severity::Info => "info",
                Severity::Error => "error",
            };
            (f.kind.clone(), severity.to_string())
        })
        .collect();
    let found = kinds(&document);
    for finding in &expected {
        assert!(found.contains(finding), "{finding:?} missing in {found:?}");
    }
    // 3.10.8 and 4.0.5 predate every fix in the table and are past support.
    if broker_version().starts_with("3.10") || broker_version().starts_with("4.0") {
        assert_eq!(
            found.iter().filter(|(k, _)| k == "broker_defect").count(),
            3
        );
    }
    assert!(
        !found
            .iter()
            .any(|(k, _)| k == "feature_flag" || k == "unchecked"),
        "{found:?}"
    );
}

#[test]
fn verify_reads_a_vhost_of_more_than_500_queues_whole() {
    let vhost = TestVhost::new("versions-500");
    // The endpoint sorts after 520 other queues and the 28 levels: it is on
    // the second page of 500. One definitions import declares them all.
    let fillers: Vec<Value> = (0..520)
        .map(|i| {
            json!({"name": format!("endpoint-{i:03}"), "vhost": vhost.name, "durable": true,
                   "auto_delete": false, "arguments": {}})
        })
        .collect();
    api(
        reqwest::Method::POST,
        &format!("definitions/{}", encode(&vhost.name)),
        Some(json!({"queues": fillers})),
    );
    vhost.declare_queue("zz-Sales", json!({}));
    vhost.import_cascade(SALES);
    let (code, document) = verify_json(&vhost);
    assert_eq!(code, 0, "{document:#}");
    assert!(
        !kinds(&document)
            .iter()
            .any(|(kind, _)| kind.starts_with("endpoint")),
        "{document:#}"
    );
    // Nine requests, one of them the first page of queues, plus the second page.
    assert_eq!(document["http_requests"], 10);
}

#[test]
fn verify_names_a_transient_endpoint_queue_that_4_3_denies() {
    let vhost = TestVhost::new("versions-transient");
    api(
        reqwest::Method::PUT,
        &format!("queues/{}/zz-Sales", encode(&vhost.name)),
        Some(json!({"durable": false, "auto_delete": false, "arguments": {}})),
    );
    vhost.import_cascade(SALES);
    let (code, document) = verify_json(&vhost);
    assert_eq!(code, 0, "a warning: {document:#}");
    let found = &document["findings"];
    let deprecated = found
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "deprecated_feature")
        .unwrap_or_else(|| panic!("{found:#}"));
    assert_eq!(
        deprecated["entity"],
        "deprecated feature transient_nonexcl_queues"
    );
    assert!(
        deprecated["message"]
            .as_str()
            .unwrap()
            .starts_with("zz-Sales uses transient"),
        "{deprecated}"
    );
    // 3.13 and later also say so themselves (3.10 has no such endpoint).
    let reported =
        kinds(&document).contains(&("deprecated_features_used".to_string(), "info".to_string()));
    let has_endpoint = delaytopo::versions::Version::parse(broker_version())
        .is_some_and(|v| v.series() >= (3, 13));
    assert_eq!(reported, has_endpoint, "{found:#}");
}

#[test]
fn a_queue_declared_without_a_type_is_recorded_as_classic_on_4x() {
    let test = "a_queue_declared_without_a_type_is_recorded_as_classic_on_4x";
    if !runs_on("4.", test) {
        return;
    }
    let vhost = TestVhost::new("versions-untyped");
    vhost.declare_queue("Sales", json!({}));
    assert_eq!(
        vhost.queue_info("Sales")["arguments"],
        json!({"x-queue-type": "classic"})
    );
}

#[test]
fn the_deprecated_features_endpoint_is_absent_on_3_10() {
    let test = "the_deprecated_features_endpoint_is_absent_on_3_10";
    if !runs_on("3.10", test) {
        return;
    }
    let status = http()
        .get(format!("{}/api/deprecated-features/used", management()))
        .basic_auth("guest", Some("guest"))
        .send()
        .unwrap()
        .status();
    // verify takes the 404 as "nothing reported", not as a failure.
    assert_eq!(status, reqwest::StatusCode::NOT_FOUND);
}
