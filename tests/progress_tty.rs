//! Progress on a real terminal: several vhosts at once each get a bar of
//! their own, labelled with the vhost, and none is left on the screen when
//! the command ends. The command runs in a pseudo-terminal made by
//! `script` (util-linux), and its output is replayed on a small terminal
//! model (carriage returns, line feeds, cursor moves and erases) to find
//! what the screen finally shows.

mod support;

use std::process::{Command, Stdio};

use support::*;

/// Runs `delaytopo ARGS` on a pseudo-terminal of 200 columns and returns
/// everything it wrote there, stdout and stderr together, as received.
fn on_a_terminal(vhosts: &[TestVhost], command: &str) -> (i32, String) {
    let binary = assert_cmd::cargo::cargo_bin("delaytopo");
    let mut line = format!(
        "stty cols 200 rows 60; exec '{}' -f '{}' --url '{}' --management-url '{}'",
        binary.display(),
        vhosts[0].topology_path().display(),
        vhosts[0].url(),
        management()
    );
    for vhost in vhosts {
        line.push_str(&format!(" --vhost '{}'", vhost.name));
    }
    line.push(' ');
    line.push_str(command);
    let output = Command::new("script")
        .args(["--quiet", "--return", "--command", &line, "/dev/null"])
        .env_remove("DELAYTOPO_URL")
        .env_remove("DELAYTOPO_MANAGEMENT_URL")
        .env_remove("DELAYTOPO_TOPOLOGY")
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .output()
        .expect("the `script` command (util-linux) runs the command on a pseudo-terminal");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// The lines a terminal shows after receiving `output`: printable text is
/// written at the cursor; `\r`, `\n`, cursor up/down/column moves and the
/// line and screen erases (`ESC[K`, `ESC[J`) act as on a VT100. Other
/// escape sequences (colours, cursor visibility) change nothing here.
fn final_screen(output: &str) -> Vec<String> {
    let mut screen: Vec<Vec<char>> = vec![Vec::new()];
    let (mut row, mut column) = (0usize, 0usize);
    let mut chars = output.chars().peekable();
    while let Some(c) = chars.next() {
        while screen.len() <= row {
            screen.push(Vec::new());
        }
        match c {
            '\r' => column = 0,
            '\n' => row += 1,
            '\x1b' => {
                if chars.peek() != Some(&'[') {
                    chars.next();
                    continue;
                }
                chars.next();
                let mut parameters = String::new();
                let mut command = ' ';
                for next in chars.by_ref() {
                    if next.is_ascii_alphabetic() || next == '@' || next == '~' {
                        command = next;
                        break;
                    }
                    parameters.push(next);
                }
                let number = |default: usize| {
                    parameters
                        .trim_start_matches('?')
                        .split(';')
                        .next()
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(default)
                };
                let line = &mut screen[row];
                match command {
                    'A' => row = row.saturating_sub(number(1)),
                    'B' => row += number(1),
                    'C' => column += number(1),
                    'D' => column = column.saturating_sub(number(1)),
                    'G' => column = number(1).saturating_sub(1),
                    'K' => match number(0) {
                        0 => line.truncate(column),
                        1 => line.iter_mut().take(column + 1).for_each(|c| *c = ' '),
                        _ => line.clear(),
                    },
                    'J' if number(0) == 0 => {
                        line.truncate(column);
                        screen.truncate(row + 1);
                    }
                    'J' => screen.iter_mut().for_each(Vec::clear),
                    _ => {}
                }
            }
            c if c.is_control() => {}
            c => {
                let line = &mut screen[row];
                while line.len() < column {
                    line.push(' ');
                }
                if column < line.len() {
                    line[column] = c;
                } else {
                    line.push(c);
                }
                column += 1;
            }
        }
    }
    let mut lines: Vec<String> = screen
        .into_iter()
        .map(|l| l.into_iter().collect::<String>().trim_end().to_string())
        .collect();
    while lines.last().is_some_and(String::is_empty) {
        lines.pop();
    }
    lines
}

/// A progress bar's line: `install <vhost> [===>   ] 12/113`.
fn is_bar(line: &str) -> bool {
    let mut words = line.split_whitespace();
    matches!(words.next(), Some("install" | "teardown"))
        && words.next().is_some()
        && words.next().is_some_and(|w| w.starts_with('['))
}

#[test]
fn the_terminal_model_applies_returns_and_erases() {
    let replayed =
        final_screen("a\r\nbar 1/3\rbar 2/3\r\x1b[2K\x1b[1Adone\x1b[K\r\nlast\x1b[31m!\x1b[0m");
    assert_eq!(replayed, vec!["done".to_string(), "last!".into()]);
    assert!(is_bar("teardown v [=>  ] 0/28"));
    assert!(!is_bar(
        "install on vhost `v`: 113 missing and now declared, 0 present"
    ));
}

#[test]
fn several_vhosts_show_one_labelled_bar_each_and_leave_none_behind() {
    let vhosts = [
        TestVhost::new("tty-a"),
        TestVhost::new("tty-b"),
        TestVhost::new("tty-c"),
    ];
    for (command, summary) in [
        ("install", "3 vhosts: 3 ok, 0 not ok, 0 failed"),
        ("teardown", "3 vhosts: 3 ok, 0 not ok, 0 failed"),
    ] {
        let (code, raw) = on_a_terminal(&vhosts, command);
        assert_eq!(code, 0, "{command}: {raw}");
        for vhost in &vhosts {
            let label = format!("{command} {} [", vhost.name);
            assert!(
                raw.contains(&label),
                "{command}: no bar `{label}` in {raw:?}"
            );
        }
        let screen = final_screen(&raw);
        let stale: Vec<&String> = screen.iter().filter(|l| is_bar(l)).collect();
        assert!(
            stale.is_empty(),
            "{command}: bars left on the screen: {stale:?}\n{}",
            screen.join("\n")
        );
        assert_eq!(
            screen.last().map(String::as_str),
            Some(summary),
            "{command}: {}",
            screen.join("\n")
        );
        for vhost in &vhosts {
            let section = format!("== vhost {}", vhost.name);
            assert!(
                screen.contains(&section),
                "{command}: {}",
                screen.join("\n")
            );
        }
    }
    assert!(vhosts.iter().all(|v| v.list("queues").is_empty()));
}
