//! A broker that cannot be used gives one line and exit 3 within the
//! timeout, never a hang and never a password; bad options give exit 2.

mod support;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use support::*;

const PASSWORD: &str = "not-the-password-4711";

/// `delaytopo` with an empty topology file, aimed at the given URLs.
fn delaytopo_at(url: &str, management_url: &str) -> (assert_cmd::Command, tempfile::NamedTempFile) {
    let topology = tempfile::NamedTempFile::new().unwrap();
    let mut command = assert_cmd::Command::cargo_bin("delaytopo").unwrap();
    command
        .env_remove("DELAYTOPO_URL")
        .env_remove("DELAYTOPO_MANAGEMENT_URL")
        .env_remove("DELAYTOPO_TIMEOUT")
        .arg("-f")
        .arg(topology.path())
        .args([
            "--url",
            url,
            "--management-url",
            management_url,
            "--no-progress",
        ])
        .timeout(Duration::from_secs(60));
    (command, topology)
}

/// A port on which nothing listens.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn stderr_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs `install` with `--timeout timeout`, checks that it ends with exit 3
/// within `limit` and one line on stderr, and returns that line.
fn install_fails_in_one_line(url: &str, management_url: &str, timeout: &str, limit: u64) -> String {
    let (mut command, _topology) = delaytopo_at(url, management_url);
    let started = Instant::now();
    let output = command
        .args(["--timeout", timeout, "install"])
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(limit), "took {elapsed:?}");
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    assert!(output.stdout.is_empty(), "{output:?}");
    let stderr = stderr_of(&output);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    stderr
}

#[test]
fn an_unreachable_broker_is_exit_3_in_one_line() {
    let port = closed_port();
    let stderr = install_fails_in_one_line(
        &format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
        &format!("http://127.0.0.1:{port}"),
        "5",
        5,
    );
    assert!(
        stderr.starts_with("error: cannot connect to amqp://guest:****@127.0.0.1:"),
        "{stderr}"
    );
}

#[test]
fn an_unknown_vhost_is_exit_3_within_the_timeout() {
    // Touches no vhost: the one it names does not exist. Bounded by the
    // timeout plus start-up, whether the broker refuses or stays silent.
    let missing = format!("delaytopo-test-missing-{}", std::process::id());
    let stderr = install_fails_in_one_line(
        &format!(
            "amqp://guest:guest@{}/{}",
            amqp_host_port(),
            encode(&missing)
        ),
        management(),
        "3",
        6,
    );
    assert!(stderr.contains(&missing), "{stderr}");
}

#[test]
fn a_silent_broker_is_exit_3_within_the_timeout() {
    // Accepts connections and never says a word, on both ports.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    let stderr = install_fails_in_one_line(
        &format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
        &format!("http://127.0.0.1:{port}"),
        "2",
        5,
    );
    assert!(stderr.contains("no answer within 2.0 s"), "{stderr}");
}

#[test]
fn a_wrong_password_is_exit_3_and_never_printed() {
    // Refused at login, before any vhost is opened.
    let url = format!("amqp://guest:{PASSWORD}@{}/%2f", amqp_host_port());
    for format in ["text", "json"] {
        let (mut command, _topology) = delaytopo_at(&url, management());
        let output = command
            .args(["--timeout", "10", "--output", format, "install"])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(3), "{output:?}");
        let everything = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            stderr_of(&output)
        );
        assert!(!everything.contains(PASSWORD), "{everything}");
        assert!(everything.contains("ACCESS_REFUSED"), "{everything}");
    }
}

#[test]
fn json_output_of_a_failure_is_one_document_with_ok_false() {
    let port = closed_port();
    let (mut command, _topology) = delaytopo_at(
        &format!("amqp://guest:{PASSWORD}@127.0.0.1:{port}/%2f"),
        &format!("http://127.0.0.1:{port}"),
    );
    let output = command.args(["-o", "json", "install"]).output().unwrap();
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    let document = stdout_json(&output);
    assert_eq!(document["ok"], false);
    assert_eq!(document["exit_code"], 3);
    assert!(document["error"]
        .as_str()
        .unwrap()
        .contains("cannot connect"));
    assert!(!String::from_utf8_lossy(&output.stdout).contains(PASSWORD));
}

#[test]
fn a_bad_timeout_is_bad_input() {
    for timeout in ["0", "-1", "soon"] {
        let (mut command, _topology) =
            delaytopo_at("amqp://guest:guest@127.0.0.1:1/%2f", "http://127.0.0.1:1");
        let output = command
            .args([&format!("--timeout={timeout}"), "install"])
            .output()
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(2),
            "--timeout {timeout}: {output:?}"
        );
        assert!(stderr_of(&output).contains("--timeout"), "{output:?}");
    }
}
