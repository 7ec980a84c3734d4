//! The README's examples are run, so they cannot drift from the tool.
//!
//! Every ```console block of README.md (see `readme/markdown.rs` for the
//! convention) runs in a fresh vhost of the test broker, in a directory of
//! its own holding the repository's `topology.yaml`, with `DELAYTOPO_URL`
//! and `DELAYTOPO_MANAGEMENT_URL` aimed at that vhost. Its commands run in
//! order; each one's stdout and stderr, merged as a terminal shows them, must
//! match the README's text (`[..]` and `...` wildcards, `readme/expected.rs`),
//! where the vhost, URLs and ports read as the README shows them
//! (`localhost:5672`, vhost `/`). A command that exits non-zero must be
//! followed by `$ echo $?` showing its exit code.
//!
//! `DELAYTOPO_README=overwrite cargo test --test readme` writes the real
//! output into the README instead, keeping the lines (and wildcards) that
//! still hold.

#[path = "readme/expected.rs"]
mod expected;
#[path = "readme/givens.rs"]
mod givens;
#[path = "readme/markdown.rs"]
mod markdown;
mod moving;
mod support;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use delaytopo::target::encode_vhost;
use markdown::{Block, Step};
use support::*;

const README: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
pub const SHIPPED_TOPOLOGY: &str = include_str!("../topology.yaml");

#[test]
fn readme_examples_match_the_tool() {
    let readme = std::fs::read_to_string(README).unwrap();
    let blocks = markdown::blocks(&readme).unwrap_or_else(|e| panic!("{e}"));
    let strays = markdown::stray_examples(&readme, &blocks);
    assert!(
        strays.is_empty(),
        "command examples outside a ```console block are never checked:\n{}",
        strays.join("\n")
    );
    let results: Vec<Option<Outcome>> = std::thread::scope(|scope| {
        let runs: Vec<_> = blocks
            .iter()
            .map(|block| scope.spawn(move || (!block.unchecked).then(|| run_block(block))))
            .collect();
        runs.into_iter().map(|run| run.join().unwrap()).collect()
    });
    let failures: Vec<String> = results
        .iter()
        .flatten()
        .flat_map(|o| o.failures.clone())
        .collect();
    if std::env::var("DELAYTOPO_README").as_deref() == Ok("overwrite") {
        let rewritten: Vec<Option<Vec<Step>>> = results
            .into_iter()
            .map(|o| o.filter(|o| !o.failures.is_empty()).map(|o| o.steps))
            .collect();
        std::fs::write(README, markdown::rewrite(&readme, &blocks, &rewritten)).unwrap();
        eprintln!(
            "README.md: rewrote {} difference(s) from the real output",
            failures.len()
        );
        return;
    }
    assert!(
        failures.is_empty(),
        "{} README example(s) differ from the tool (`-` README, `+` real output; \
         DELAYTOPO_README=overwrite cargo test --test readme rewrites them):\n\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// What one block's commands printed, against what the README says.
struct Outcome {
    /// One message per step that differs.
    failures: Vec<String>,
    /// The block's steps as the real output would have them.
    steps: Vec<Step>,
}

/// Where a block runs: its fresh vhost (and the second one of `to-vhost=`),
/// shown under the README's names, and its own working directory.
pub struct Scene {
    pub vhost: TestVhost,
    pub to_vhost: Option<TestVhost>,
    pub dir: tempfile::TempDir,
    /// (test vhost name, name the README shows), for each vhost.
    names: Vec<(String, String)>,
}

impl Scene {
    fn new(block: &Block) -> Scene {
        let vhost = TestVhost::new(&format!("readme-{}", block.line));
        let to_vhost = block
            .to_vhost
            .as_ref()
            .map(|_| TestVhost::new(&format!("readme-{}-to", block.line)));
        let mut names = vec![(vhost.name.clone(), block.vhost.clone())];
        if let (Some(to), Some(shown)) = (&to_vhost, &block.to_vhost) {
            names.push((to.name.clone(), shown.clone()));
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("topology.yaml"), SHIPPED_TOPOLOGY).unwrap();
        Scene {
            vhost,
            to_vhost,
            dir,
            names,
        }
    }

    /// A command word as the test runs it: the README's broker addresses
    /// replaced by the test broker's, and an `amqp://…/NAME` URL of the
    /// `to-vhost=` vhost aimed at that vhost.
    fn real_word(&self, word: &str) -> String {
        let mut word = word
            .replace(
                "localhost:15672",
                management().trim_start_matches("http://"),
            )
            .replace("localhost:5672", amqp_host_port());
        if word.starts_with("amqp://") {
            for (real, shown) in &self.names[1..] {
                if let Some(base) = word.strip_suffix(&format!("/{}", encode_vhost(shown))) {
                    word = format!("{base}/{}", encode(real));
                }
            }
        }
        word
    }

    /// `output` as the README shows it: the test broker's addresses and the
    /// test vhosts' names replaced by the README's.
    fn shown(&self, output: &str) -> String {
        let mut output = output
            .replace(
                management().trim_start_matches("http://"),
                "localhost:15672",
            )
            .replace(amqp_host_port(), "localhost:5672");
        // In a URL path the tool writes a vhost percent-encoded, so `/` as %2F.
        for (real, shown) in &self.names {
            let in_path = format!("/{}", encode_vhost(shown));
            output = output
                .replace(&format!("/{}", encode(real)), &in_path)
                .replace(&format!("/{}", encode_vhost(real)), &in_path)
                .replace(real.as_str(), shown);
        }
        output
    }
}

fn run_block(block: &Block) -> Outcome {
    let scene = Scene::new(block);
    for given in &block.given {
        givens::prepare(given, &scene);
    }
    let mut outcome = Outcome {
        failures: Vec::new(),
        steps: Vec::new(),
    };
    let mut last_exit = 0;
    for (index, step) in block.steps.iter().enumerate() {
        let at = format!("README.md:{} `$ {}`", step.line, step.command);
        let (output, exit) = match run_step(step, &scene, last_exit) {
            Ok(done) => done,
            Err(error) => {
                outcome.failures.push(format!("{at}: {error}\n"));
                outcome.steps.push(step.clone());
                continue;
            }
        };
        let actual: Vec<String> = scene.shown(&output).lines().map(str::to_string).collect();
        let aligned = expected::align(&step.expected, &actual);
        if !expected::is_match(&aligned) {
            outcome
                .failures
                .push(format!("{at}:\n{}", expected::diff(&aligned)));
        }
        outcome.steps.push(Step {
            line: step.line,
            command: step.command.clone(),
            expected: expected::rewritten(&aligned),
        });
        let shows_exit = block
            .steps
            .get(index + 1)
            .is_some_and(|next| next.command.trim() == "echo $?");
        if exit != 0 && !shows_exit && !step.command.starts_with("echo") {
            outcome.failures.push(format!(
                "{at}: exited {exit}; the README must show it with `$ echo $?`\n"
            ));
            outcome.steps.push(Step {
                line: 0,
                command: "echo $?".to_string(),
                expected: vec![exit.to_string()],
            });
        }
        last_exit = exit;
    }
    outcome
}

/// Runs one step: `delaytopo …`, `echo $?` or `cat FILE`; returns what it
/// printed and its exit code.
fn run_step(step: &Step, scene: &Scene, last_exit: i32) -> Result<(String, i32), String> {
    let words = markdown::words(&step.command)?;
    match words.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["delaytopo", ..] => {
            let args: Vec<String> = words[1..].iter().map(|w| scene.real_word(w)).collect();
            Ok(delaytopo(&args, scene))
        }
        ["echo", "$?"] => Ok((format!("{last_exit}\n"), 0)),
        ["cat", file] => std::fs::read_to_string(scene.dir.path().join(file))
            .map(|text| (text, 0))
            .map_err(|e| format!("cat {file}: {e}")),
        _ => Err("only `delaytopo …`, `echo $?` and `cat FILE` can be run".to_string()),
    }
}

/// The binary with `args` in the scene's directory, aimed at its vhost;
/// stdout and stderr go into one pipe, so their lines interleave as on a
/// terminal.
fn delaytopo(args: &[String], scene: &Scene) -> (String, i32) {
    let (mut reader, writer) = std::io::pipe().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_delaytopo"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("DELAYTOPO_") {
            command.env_remove(name);
        }
    }
    command
        .args(args)
        .current_dir(scene.dir.path())
        .env("DELAYTOPO_URL", scene.vhost.url())
        .env("DELAYTOPO_MANAGEMENT_URL", management())
        .stdin(Stdio::null())
        .stdout(writer.try_clone().unwrap())
        .stderr(writer);
    let mut child = command.spawn().unwrap();
    // The pipe ends when the child's copies of the writer close, not ours.
    drop(command);
    let reading = std::thread::spawn(move || {
        let mut output = String::new();
        reader.read_to_string(&mut output).unwrap();
        output
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("delaytopo {} ran for more than 120 s", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (reading.join().unwrap(), status.code().unwrap_or(-1))
}
