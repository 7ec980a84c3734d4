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
