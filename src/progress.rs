//! Progress bars on an interactive terminal only (SPEC §3): never in JSON
//! mode, never with --no-progress, never when stderr is redirected. A
//! long-running command may print plain progress lines instead when stderr
//! is not a terminal (a CI log, a Kubernetes Job), unless --no-progress.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, Clone, Copy)]
pub struct Progress {
    enabled: bool,
    /// Plain lines instead of a bar: stderr is not a terminal.
    lines: bool,
}

impl Progress {
    pub fn new(no_progress: bool, json: bool) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        Progress {
            enabled: !no_progress && !json && terminal,
            lines: !no_progress && !terminal,
        }
    }

    pub fn off() -> Progress {
        Progress {
            enabled: false,
            lines: false,
        }
    }

    /// The same, without bars (several at once would interleave).
    pub fn without_bars(self) -> Progress {
        Progress {
            enabled: false,
            ..self
        }
    }

    pub fn bars(&self) -> bool {
        self.enabled
    }

    /// Whether plain progress lines are wanted (stderr is not a terminal).
    pub fn lines(&self) -> bool {
        self.lines
    }

    /// A bar of `total` steps labelled `what` (say, the command and its
    /// vhost), or a hidden one when progress is off. The bars of one process
    /// are drawn together, one line each, so that several vhosts' bars never
    /// draw over each other; each clears its line when finished, and also
    /// when dropped unfinished (a vhost that failed halfway leaves no stale
    /// bar on the screen).
    pub fn bar(&self, total: u64, what: &str) -> ProgressBar {
        if !self.enabled {
            return ProgressBar::hidden();
        }
        static BARS: std::sync::OnceLock<indicatif::MultiProgress> = std::sync::OnceLock::new();
        let bar = BARS
            .get_or_init(indicatif::MultiProgress::new)
            .add(ProgressBar::new(total).with_finish(indicatif::ProgressFinish::AndClear));
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}")
                .expect("static template")
                .progress_chars("=> "),
        );
        bar.set_prefix(what.to_string());
        bar
    }
}
