//! The README's checked examples: fenced blocks whose info string starts with
//! `console`. In a block, a line `$ COMMAND` runs a command and the lines up
//! to the next `$ ` line are its expected output (stdout and stderr as a
//! terminal shows them). Words after `console` in the info string:
//! - `unchecked`: shown only, never run (say why in the text around it);
//! - `given=NAME[,NAME…]`: broker state (and files) prepared before the block;
//! - `vhost=NAME`: the vhost the block's text shows (default `/`);
//! - `to-vhost=NAME`: a second fresh vhost, shown as NAME; an `amqp://` URL
//!   in a command that ends in `/NAME` is aimed at it (for `transfer`).

/// One ```console block of the README.
#[derive(Debug, Clone)]
pub struct Block {
    /// Line number (1-based) of the opening fence.
    pub line: usize,
    /// Index of the opening fence among the README's lines.
    pub fence: usize,
    /// Index of the closing fence.
    pub end: usize,
    pub unchecked: bool,
    pub given: Vec<String>,
    pub vhost: String,
    pub to_vhost: Option<String>,
    pub steps: Vec<Step>,
}

/// `$ command` and the output the README shows for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Line number (1-based) of its `$ ` line (0 for a step the test adds).
    pub line: usize,
    pub command: String,
    pub expected: Vec<String>,
}

const PROMPT: &str = "$ ";

/// Every ```console block of `readme`, in order.
pub fn blocks(readme: &str) -> Result<Vec<Block>, String> {
    let lines: Vec<&str> = readme.lines().collect();
    let mut blocks = Vec::new();
    let mut index = 0;
    while index < lines.len() {
        let Some(info) = lines[index].strip_prefix("```console") else {
            index += 1;
            continue;
        };
        let fence = index;
        let mut block = Block {
            line: fence + 1,
            fence,
            end: fence,
            unchecked: false,
            given: Vec::new(),
            vhost: "/".to_string(),
            to_vhost: None,
            steps: Vec::new(),
        };
        for word in info.split_whitespace() {
            match word.split_once('=') {
                None if word == "unchecked" => block.unchecked = true,
                Some(("given", names)) => {
                    block.given = names.split(',').map(str::to_string).collect()
                }
                Some(("vhost", name)) => block.vhost = name.to_string(),
                Some(("to-vhost", name)) => block.to_vhost = Some(name.to_string()),
                _ => {
                    return Err(format!(
                        "README.md:{}: unknown word `{word}` after ```console \
                         (known: unchecked, given=, vhost=, to-vhost=)",
                        fence + 1
                    ))
                }
            }
        }
        index += 1;
        loop {
            let Some(line) = lines.get(index) else {
                return Err(format!(
                    "README.md:{}: ```console block never closed",
                    fence + 1
                ));
            };
            if line.starts_with("```") {
                block.end = index;
                break;
            }
            if let Some(command) = line.strip_prefix(PROMPT) {
                block.steps.push(Step {
                    line: index + 1,
                    command: command.to_string(),
                    expected: Vec::new(),
                });
            } else if let Some(step) = block.steps.last_mut() {
                step.expected.push(line.to_string());
            } else {
                return Err(format!(
                    "README.md:{}: a ```console block starts with `$ COMMAND`",
                    index + 1
                ));
            }
            index += 1;
        }
        blocks.push(block);
        index += 1;
    }
    Ok(blocks)
}

/// Lines that look like a command example but are outside any ```console
/// block (so nothing would check them), as `line: text`.
pub fn stray_examples(readme: &str, blocks: &[Block]) -> Vec<String> {
    readme
        .lines()
        .enumerate()
        .filter(|(index, line)| {
            line.trim_start().starts_with("$ delaytopo")
                && !blocks.iter().any(|b| b.fence < *index && *index < b.end)
        })
        .map(|(index, line)| format!("README.md:{}: {}", index + 1, line.trim()))
        .collect()
}

/// `readme` with the steps of each block replaced by `rewritten` (same order
/// as `blocks`; `None` leaves a block as it is).
pub fn rewrite(readme: &str, blocks: &[Block], rewritten: &[Option<Vec<Step>>]) -> String {
    let lines: Vec<&str> = readme.lines().collect();
    let mut out = Vec::new();
    let mut next = 0;
    for (block, steps) in blocks.iter().zip(rewritten) {
        let Some(steps) = steps else { continue };
        out.extend(lines[next..=block.fence].iter().map(|l| l.to_string()));
        for step in steps {
            out.push(format!("{PROMPT}{}", step.command));
            out.extend(step.expected.iter().cloned());
        }
        next = block.end;
    }
    out.extend(lines[next..].iter().map(|l| l.to_string()));
    let mut text = out.join("\n");
    if readme.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// A command line split into words as a POSIX shell would for the simple
/// commands the README shows: quotes, backslashes and `#` comments. Anything
/// a shell would do more (pipes, redirections, variables) is refused.
pub fn words(command: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = command.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => words.extend(word.take()),
            '#' if word.is_none() => break,
            '\'' => {
                let quoted: String = chars.by_ref().take_while(|&c| c != '\'').collect();
                word.get_or_insert_with(String::new).push_str(&quoted);
            }
            '"' => {
                let quoted: String = chars.by_ref().take_while(|&c| c != '"').collect();
                word.get_or_insert_with(String::new).push_str(&quoted);
            }
            '\\' => word.get_or_insert_with(String::new).extend(chars.next()),
            '|' | '>' | '<' | ';' | '&' | '`' => {
                return Err(format!(
                    "`{command}`: `{c}` is not supported in README examples"
                ))
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    const README: &str = "text\n```console given=cascade vhost=shop\n$ delaytopo plan   # after install\nplan for vhost shop\n...\n$ echo $?\n1\n```\n    $ delaytopo verify\n```console unchecked to-vhost=blue\n$ delaytopo probe\n```\n";

    #[test]
    fn blocks_hold_their_steps_and_words() {
        let blocks = blocks(README).unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].given, ["cascade"]);
        assert!(!blocks[0].unchecked && blocks[1].unchecked);
        assert_eq!(blocks[1].to_vhost.as_deref(), Some("blue"));
        assert_eq!(blocks[0].vhost, "shop");
        assert_eq!(blocks[0].steps[0].expected, ["plan for vhost shop", "..."]);
        assert_eq!(blocks[0].steps[1].line, 6);
        assert_eq!(blocks[0].steps[1].command, "echo $?");
        assert_eq!(
            stray_examples(README, &blocks),
            ["README.md:9: $ delaytopo verify"]
        );
        assert_eq!(
            words(&blocks[0].steps[0].command).unwrap(),
            ["delaytopo", "plan"]
        );
        assert_eq!(words("a 'b c' d\\ e").unwrap(), ["a", "b c", "d e"]);
        assert!(words("delaytopo render > x.json").is_err());
        assert!(super::blocks("```console quiet\n$ x\n```\n").is_err());
    }

    #[test]
    fn a_rewrite_changes_only_the_steps() {
        let blocks = blocks(README).unwrap();
        let mut steps = blocks[0].steps.clone();
        steps[1].expected = vec!["0".to_string()];
        let text = rewrite(README, &blocks, &[Some(steps), None]);
        assert_eq!(text, README.replace("$?\n1\n", "$?\n0\n"));
        assert_eq!(rewrite(README, &blocks, &[None, None]), README);
    }
}
