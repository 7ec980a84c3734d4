//! SIGINT and SIGTERM: every command finishes or undoes the step it is in,
//! says what state it left, and exits 128 + the signal's number.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::*;

/// `delaytopo` with `args`, spawned, aimed at `url`/`management`.
fn spawn(vhost: &TestVhost, url: &str, management: &str, args: &[&str]) -> Child {
    Command::new(assert_cmd::cargo::cargo_bin("delaytopo"))
        .env_remove("DELAYTOPO_URL")
        .env_remove("DELAYTOPO_MANAGEMENT_URL")
        .arg("-f")
        .arg(vhost.topology_path())
        .args([
            "--url",
            url,
            "--management-url",
            management,
            "--no-progress",
        ])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Exit code and stderr of a child that must end within a minute.
fn finish(child: Child) -> (Option<i32>, String) {
    let output = child.wait_with_output().unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn an_interrupted_teardown_leaves_the_cascade_as_it_was() {
    let vhost = TestVhost::new("sigint-teardown");
    vhost.import_cascade("");
    let before = vhost.definitions();
    // 300 ms round trips: the interrupt lands while teardown still checks.
    let slow = vhost.through_latency(150);
    let child = spawn(&vhost, &slow.url, &slow.management, &["teardown"]);
    std::thread::sleep(Duration::from_millis(1200));
    signal(&child, "INT");
    let (code, said) = finish(child);
    assert_eq!(code, Some(130), "{said}");
    assert!(
        said.contains("interrupted by SIGINT: nothing was changed")
            || said.contains("interrupted by SIGINT: the cascade was put back as it was"),
        "{said}"
    );
    assert_eq!(vhost.definitions(), before);
}

#[test]
fn an_interrupted_probe_leaves_its_message_to_the_sink_and_verify_healthy() {
    let vhost = TestVhost::new("sigterm-probe");
    vhost.import_cascade("");
    let child = spawn(
        &vhost,
        &vhost.url(),
        management(),
        &["probe", "--delay", "3"],
    );
    std::thread::sleep(Duration::from_millis(1500));
    signal(&child, "TERM");
    let (code, said) = finish(child);
    assert_eq!(code, Some(143), "{said}");
    assert!(said.contains("delaytopo.probe.sink"), "{said}");
    let took = vhost.wait_for(Duration::from_secs(40), || {
        let held = vhost.queue_info("delaytopo.probe.sink")["messages"].as_u64();
        (held.unwrap_or(0) >= 1).then_some(())
    });
    assert!(
        took.is_some(),
        "the sink never received the probe's message"
    );
    let verify = vhost.delaytopo().arg("verify").output().unwrap();
    assert_eq!(verify.status.code(), Some(0), "{verify:?}");
}

#[test]
fn an_interrupted_verify_says_nothing_was_changed() {
    let vhost = TestVhost::new("sigint-verify");
    vhost.import_cascade("");
    let slow = vhost.through_latency(300);
    let child = spawn(&vhost, &slow.url, &slow.management, &["verify"]);
    std::thread::sleep(Duration::from_millis(700));
    signal(&child, "INT");
    let (code, said) = finish(child);
    assert_eq!(code, Some(130), "{said}");
    assert!(
        said.contains("interrupted by SIGINT: nothing was changed"),
        "{said}"
    );
}
