//! A memory alarm blocks every publish, dead-lettering included: verify calls
//! it an error, probe does not publish into it, teardown refuses before any
//! change, and all is well again once it clears. On a node of its own, since
//! an alarm stops every test on the node that raises it.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::*;

fn alarm_node() -> Node {
    let version = Version::from_env();
    let slot = match version {
        Version::V3_10 => 22,
        Version::V4_0 => 23,
    };
    let name = format!("alarm-{}", version.label().replace('.', "-"));
    BrokerSpec::new(&name, version, slot).start()
}

fn memory_alarm(node: &Node, on: bool) {
    let watermark = if on { "0.000001" } else { "0.4" };
    let output = node.rabbitmqctl(&["set_vm_memory_high_watermark", watermark]);
    assert!(output.status.success(), "{output:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while node.api(reqwest::Method::GET, "nodes", None)[0]["mem_alarm"] != on {
        assert!(
            std::time::Instant::now() < deadline,
            "the alarm did not turn {on}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn under_a_memory_alarm_verify_fails_probe_does_not_publish_and_teardown_changes_nothing() {
    let node = alarm_node();
    let vhost = format!("delaytopo-test-alarm-{}", std::process::id());
    let encoded = encode(&vhost);
    node.api(reqwest::Method::PUT, &format!("vhosts/{encoded}"), None);
    let topology = tempfile::NamedTempFile::new().unwrap();
    let run = |args: &[&str]| {
        assert_cmd::Command::cargo_bin("delaytopo")
            .unwrap()
            .env_remove("DELAYTOPO_URL")
            .env_remove("DELAYTOPO_MANAGEMENT_URL")
            .arg("-f")
            .arg(topology.path())
            .args(["--no-progress", "--timeout", "5"])
            .args([
                "--url",
                &format!("amqp://guest:guest@{}/{encoded}", node.amqp_host_port()),
            ])
            .args(["--management-url", &node.management_url()])
            .args(args)
            .timeout(Duration::from_secs(120))
            .output()
            .unwrap()
    };
    assert_eq!(run(&["install"]).status.code(), Some(0));
    let definitions = || {
        node.api(
            reqwest::Method::GET,
            &format!("definitions/{encoded}"),
            None,
        )
    };
    let before = definitions();

    memory_alarm(&node, true);
    let outcome = std::panic::catch_unwind(|| {
        let verify = run(&["-o", "json", "verify"]);
        assert_eq!(verify.status.code(), Some(1), "{verify:?}");
        let report: Value = serde_json::from_slice(&verify.stdout).unwrap();
        assert!(report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["kind"] == "resource_alarm"));

        let probe = run(&["-o", "json", "probe"]);
        assert_eq!(probe.status.code(), Some(1), "{probe:?}");
        let report: Value = serde_json::from_slice(&probe.stdout).unwrap();
        let failure = report["probe"]["failure"].as_str().unwrap();
        assert!(
            failure.starts_with("not sent: a resource alarm"),
            "{failure}"
        );

        let teardown = run(&["teardown"]);
        assert_eq!(teardown.status.code(), Some(1), "{teardown:?}");
        assert!(String::from_utf8_lossy(&teardown.stdout).contains("resource alarm"));
        assert_eq!(definitions(), before);
    });
    memory_alarm(&node, false);
    if let Err(failure) = outcome {
        std::panic::resume_unwind(failure);
    }
    assert_eq!(run(&["verify"]).status.code(), Some(0));
    node.api(reqwest::Method::DELETE, &format!("vhosts/{encoded}"), None);
}
