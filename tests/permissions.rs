//! `delaytopo permissions` offline: the README's permission list is exactly
//! what the command prints for the repository's topology, and the JSON has
//! one object per command with the regular expressions and tags.

use serde_json::Value;

fn delaytopo() -> assert_cmd::Command {
    let mut command = assert_cmd::Command::cargo_bin("delaytopo").unwrap();
    command
        .env_clear()
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["-f", "topology.yaml"]);
    command
}

#[test]
fn the_readme_lists_exactly_what_the_command_prints() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let block = readme
        .split("<!-- permissions:begin -->\n```\n")
        .nth(1)
        .and_then(|rest| rest.split("```\n<!-- permissions:end -->").next())
        .expect("README has the permissions block");
    let output = delaytopo().arg("permissions").output().unwrap();
    assert!(output.status.success());
    assert_eq!(
        block,
        String::from_utf8(output.stdout).unwrap(),
        "README.md is out of date: paste `delaytopo -f topology.yaml permissions` into it"
    );
}

#[test]
fn json_has_one_object_per_command_and_one_for_all() {
    let output = delaytopo()
        .args(["-o", "json", "permissions", "install", "verify"])
        .output()
        .unwrap();
    let document: Value = serde_json::from_slice(&output.stdout).unwrap();
    let commands = document["commands"].as_array().unwrap();
    let names: Vec<&str> = commands
        .iter()
        .map(|c| c["command"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["install", "verify", "all"]);
    for command in commands {
        for key in ["configure", "write", "read"] {
            let pattern = command[key].as_str().unwrap();
            assert!(
                pattern.starts_with('^') && pattern.ends_with('$'),
                "{pattern}"
            );
        }
        assert!(command["tags"].is_array());
    }
    assert_eq!(commands[1]["configure"], "^$");
}

#[test]
fn an_unknown_command_is_bad_input() {
    delaytopo()
        .args(["permissions", "render"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains(
            "`render` is not a command that talks to a broker",
        ));
}
