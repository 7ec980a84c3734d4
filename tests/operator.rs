//! What an operator meets first: running without a topology file, JSON
//! with `ok` on top, verify's short form and its hint on an empty vhost,
//! the confirmation `--force` asks for on a terminal, and `--deadline`.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

#[test]
fn without_a_topology_file_the_nservicebus_defaults_are_used_and_said_once() {
    let empty_dir = tempfile::tempdir().unwrap();
    let output = assert_cmd::Command::cargo_bin("delaytopo")
        .unwrap()
        .env_remove("DELAYTOPO_TOPOLOGY")
        .current_dir(empty_dir.path())
        .arg("render")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let said = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        said.matches("using the NServiceBus v2 defaults").count(),
        1,
        "{said}"
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("nsb.v2.delay-level-27"));
    // A file named with -f must exist.
    let output = assert_cmd::Command::cargo_bin("delaytopo")
        .unwrap()
        .current_dir(empty_dir.path())
        .args(["-f", "topology.yaml", "render"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
}

#[test]
fn json_has_ok_on_top_and_verify_q_is_one_line_with_a_hint_on_an_empty_vhost() {
    let vhost = TestVhost::new("operator-empty");
    let output = vhost
        .delaytopo()
        .args(["-o", "json", "plan"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.starts_with("{\n  \"ok\": false,"), "{stdout}");

    let output = vhost.delaytopo().args(["verify", "-q"]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[0].starts_with(&format!("vhost {}: drift or defects found (", vhost.name)));
    assert!(lines[1].contains("run `delaytopo install`"), "{stdout}");

    vhost.import_cascade("");
    let output = vhost.delaytopo().args(["verify", "-q"]).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout).lines().count(), 1);
}

#[test]
fn teardown_force_asks_on_a_terminal_and_not_when_input_is_not_one() {
    let vhost = TestVhost::new("operator-force");
    vhost.import_cascade("");
    let command = format!(
        "{} -f {} --url '{}' --management-url {} --no-progress teardown --force",
        assert_cmd::cargo::cargo_bin("delaytopo").display(),
        vhost.topology_path().display(),
        vhost.url(),
        management()
    );
    // `script` gives the command a terminal; "no" is typed at the question.
    let output = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .write_stdin_bytes(b"no\n");
    assert!(output.contains("Type yes to go on"), "{output}");
    assert!(
        output.contains("teardown cancelled: nothing was changed"),
        "{output}"
    );
    assert!(!vhost.list("queues").is_empty());

    // Not a terminal (a pipeline): no question, it goes ahead.
    let output = vhost
        .delaytopo()
        .args(["teardown", "--force"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(!String::from_utf8_lossy(&output.stderr).contains("Type yes"));
    assert!(vhost.list("queues").is_empty());
}

#[test]
fn a_deadline_bounds_the_whole_probe() {
    let vhost = TestVhost::new("operator-deadline");
    vhost.import_cascade("");
    let started = Instant::now();
    let output = vhost
        .delaytopo()
        .args(["--deadline", "1", "probe", "--delay", "6"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("gave up at the --deadline of 1.0 s"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// Runs a command with `input` on its stdin; its stdout and stderr together.
trait WithInput {
    fn write_stdin_bytes(&mut self, input: &[u8]) -> String;
}

impl WithInput for Command {
    fn write_stdin_bytes(&mut self, input: &[u8]) -> String {
        use std::io::Write;
        let mut child = self
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        let output = child.wait_with_output().unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    }
}
