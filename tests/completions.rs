//! `delaytopo completions <shell>` prints a completion script and needs
//! neither a topology file nor a broker.

use predicates::prelude::*;

#[test]
fn completions_print_a_script_for_each_shell() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef delaytopo"),
        ("fish", "complete -c delaytopo"),
    ] {
        assert_cmd::Command::cargo_bin("delaytopo")
            .unwrap()
            .args(["-f", "/nonexistent/topology.yaml", "completions", shell])
            .assert()
            .success()
            .stdout(predicate::str::contains(marker).and(predicate::str::contains("install")));
    }
}

#[test]
fn an_unknown_shell_is_bad_input() {
    assert_cmd::Command::cargo_bin("delaytopo")
        .unwrap()
        .args(["completions", "cmd.exe"])
        .assert()
        .code(2);
}

/// One rule for `-o` on every command: a format the command does not write
/// is exit 2 with one line naming the option and the formats it has; none
/// is silently ignored. Checked before the topology file is read.
#[test]
fn an_output_format_a_command_does_not_write_is_bad_input_everywhere() {
    let refused: &[(&[&str], &str, &str)] = &[
        (
            &["completions", "bash"],
            "json",
            "`completions` writes text only",
        ),
        (
            &["completions", "bash"],
            "prometheus",
            "`completions` writes text only",
        ),
        (
            &["render"],
            "prometheus",
            "`render` writes text or json only",
        ),
        (
            &["permissions"],
            "prometheus",
            "`permissions` writes text or json only",
        ),
        (
            &["install"],
            "prometheus",
            "`install` writes text or json only",
        ),
        (&["plan"], "prometheus", "`plan` writes text or json only"),
        (
            &["teardown"],
            "prometheus",
            "`teardown` writes text or json only",
        ),
        (&["probe"], "prometheus", "`probe` writes text or json only"),
        (
            &["migrate", "--from", "v1.yaml"],
            "prometheus",
            "`migrate` writes text or json only",
        ),
        (
            &["transfer", "--to-url", "amqp://b"],
            "prometheus",
            "`transfer` writes text or json only",
        ),
    ];
    for (command, format, says) in refused {
        let output = assert_cmd::Command::cargo_bin("delaytopo")
            .unwrap()
            .args(["-f", "/nonexistent/topology.yaml", "-o", format])
            .args(*command)
            .output()
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(2),
            "{command:?} -o {format}: {output:?}"
        );
        // As every failure in JSON mode: one JSON document on stdout.
        let stdout = String::from_utf8_lossy(&output.stdout);
        match *format {
            "json" => assert!(stdout.contains("\"exit_code\":2"), "{stdout}"),
            _ => assert!(stdout.is_empty(), "{command:?} -o {format}: {stdout}"),
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with(&format!("error: --output {format}: {says}")),
            "{command:?} -o {format}: {stderr}"
        );
    }
    // The formats a command has are taken.
    assert_cmd::Command::cargo_bin("delaytopo")
        .unwrap()
        .args(["-o", "text", "completions", "bash"])
        .assert()
        .success()
        .stdout(predicate::str::contains("complete -F"));
    assert_cmd::Command::cargo_bin("delaytopo")
        .unwrap()
        .args(["-f", "/dev/null", "-o", "json", "render"])
        .assert()
        .success()
        .stdout(predicate::str::starts_with("{\n  \"ok\": true,"));
}
