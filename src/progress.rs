//! Progress bars on an interactive terminal only (SPEC §3): never in JSON
//! mode, never with --no-progress, never when stderr is redirected.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, Clone, Copy)]
pub struct Progress {
    enabled: bool,
}

impl Progress {
    pub fn new(no_progress: bool, json: bool) -> Progress {
        Progress {
            enabled: !no_progress && !json && std::io::stderr().is_terminal(),
        }
    }

    pub fn off() -> Progress {
        Progress { enabled: false }
    }

    /// A bar of `total` steps, or a hidden one when progress is off.
    pub fn bar(&self, total: u64, what: &str) -> ProgressBar {
        if !self.enabled {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}")
                .expect("static template")
                .progress_chars("=> "),
        );
        bar.set_prefix(what.to_string());
        bar
    }
}
