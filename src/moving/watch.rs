//! What a person sees while a move runs: "scanning…" until the number of
//! messages is known, then a bar with the rate over the last few seconds
//! (not since the start, which lags far behind after a slow start), the time
//! left at that rate and the time spent. When stderr is not a terminal (CI,
//! a Kubernetes Job), a plain line every few seconds instead, so that a log
//! shows the run is alive.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::counted::counted;
use crate::moving::ledger::LevelCounts;
use crate::progress::Progress;

/// The rate is measured over this much recent time.
const WINDOW: Duration = Duration::from_secs(5);
/// A plain progress line at most this often.
const LINE_EVERY: Duration = Duration::from_secs(5);

/// Messages settled over a sliding window of time.
#[derive(Debug, Default)]
pub struct Meter {
    samples: VecDeque<(Instant, u64)>,
}

impl Meter {
    /// Notes that `done` messages were settled by `now`.
    pub fn add(&mut self, now: Instant, done: u64) {
        self.samples.push_back((now, done));
        // Keep one sample at or before the window's start, to measure from.
        while self.samples.len() > 2 && now.duration_since(self.samples[1].0) >= WINDOW {
            self.samples.pop_front();
        }
    }

    /// Messages per second over the window; `None` before there is a span to measure.
    pub fn rate(&self) -> Option<f64> {
        let (&(first, from), &(last, to)) = (self.samples.front()?, self.samples.back()?);
        let seconds = last.duration_since(first).as_secs_f64();
        (seconds >= 0.2).then(|| (to - from) as f64 / seconds)
    }

    /// The time left for `remaining` messages at the current rate.
    pub fn eta(&self, remaining: u64) -> Option<Duration> {
        let rate = self.rate()?;
        (rate > 0.0).then(|| Duration::from_secs_f64(remaining as f64 / rate))
    }
}

/// `1 h 02 min`, `3 min 05 s`, `12 s`.
pub fn short_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        0..=59 => format!("{seconds} s"),
        60..=3599 => format!("{} min {:02} s", seconds / 60, seconds % 60),
        _ => format!("{} h {:02} min", seconds / 3600, seconds % 3600 / 60),
    }
}

/// The state shown, shared by the bar and the plain lines.
struct Shown {
    meter: Meter,
    total: Option<u64>,
    last_line: Instant,
}

pub struct Watch {
    bar: ProgressBar,
    /// Plain lines on stderr (not a terminal) with this prefix.
    lines: Option<String>,
    started: Instant,
    shown: Mutex<Shown>,
}

impl Watch {
    /// Starts showing "scanning…" for `what` (e.g. "migrate vhost `shop`").
    pub fn new(progress: Progress, command: &str, what: String) -> Watch {
        let bar = if progress.bars() {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{prefix} {spinner} {msg}").expect("static template"),
            );
            bar.set_prefix(command.to_string());
            bar.set_message("scanning…");
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        } else {
            ProgressBar::hidden()
        };
        let now = Instant::now();
        Watch {
            bar,
            lines: progress.lines().then_some(what),
            started: now,
            shown: Mutex::new(Shown {
                meter: Meter::default(),
                total: None,
                last_line: now,
            }),
        }
    }

    /// The scan is done: `total` messages to settle.
    pub fn total(&self, total: u64) {
        let mut shown = self.shown.lock().expect("watch lock");
        if shown.total.is_some() {
            return;
        }
        shown.total = Some(total);
        shown.meter.add(Instant::now(), 0);
        if !self.bar.is_hidden() {
            self.bar.disable_steady_tick();
            self.bar.set_style(
                ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
                    .expect("static template")
                    .progress_chars("=> "),
            );
            self.bar.set_length(total);
            self.bar.set_position(0);
        }
        if let Some(prefix) = &self.lines {
            eprintln!("{prefix}: {} to move", counted(total, "message"));
        }
    }

    /// Shows the totals so far.
    pub fn advance(&self, totals: &LevelCounts) {
        let settled = totals.moved + totals.poisoned + totals.skipped;
        let now = Instant::now();
        let mut shown = self.shown.lock().expect("watch lock");
        shown.meter.add(now, settled);
        let remaining = shown.total.map(|t| t.saturating_sub(settled));
        let rate = shown.meter.rate();
        let eta = remaining.and_then(|r| shown.meter.eta(r));
        let mut text = format!("moved {}, poisoned {}", totals.moved, totals.poisoned);
        if totals.skipped > 0 {
            text.push_str(&format!(", skipped {} already landed", totals.skipped));
        }
        if let Some(rate) = rate {
            text.push_str(&format!(", {rate:.0} msg/s"));
        }
        if let Some(eta) = eta {
            text.push_str(&format!(", about {} left", short_duration(eta)));
        }
        if !self.bar.is_hidden() {
            self.bar.set_position(settled);
            self.bar.set_message(text.clone());
        }
        if let Some(prefix) = &self.lines {
            if now.duration_since(shown.last_line) >= LINE_EVERY {
                shown.last_line = now;
                let of = shown.total.map_or(String::new(), |t| format!(" of {t}"));
                eprintln!(
                    "{prefix}: {settled}{of} settled ({text}) after {}",
                    short_duration(now.duration_since(self.started))
                );
            }
        }
    }

    /// A line above the bar (or on its own when there is no bar).
    pub fn note(&self, line: &str) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Drop for Watch {
    /// A run that ends in an error leaves no bar behind its message.
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_that_of_the_last_seconds_not_since_the_start() {
        let start = Instant::now();
        let mut meter = Meter::default();
        assert_eq!(meter.rate(), None);
        // A slow start: 10 messages in 10 s, then 1000 per second.
        meter.add(start, 0);
        meter.add(start + Duration::from_secs(10), 10);
        for second in 11..=20 {
            meter.add(
                start + Duration::from_secs(second),
                10 + (second - 10) * 1000,
            );
        }
        let rate = meter.rate().unwrap();
        assert!((rate - 1000.0).abs() < 1.0, "{rate}");
        assert_eq!(meter.eta(5000), Some(Duration::from_secs(5)));
    }

    #[test]
    fn no_rate_or_eta_without_a_span_or_progress() {
        let start = Instant::now();
        let mut meter = Meter::default();
        meter.add(start, 0);
        assert_eq!(meter.rate(), None);
        meter.add(start + Duration::from_secs(3), 0);
        assert_eq!(meter.rate(), Some(0.0));
        assert_eq!(meter.eta(10), None);
    }

    #[test]
    fn durations_read_short() {
        assert_eq!(short_duration(Duration::from_secs(12)), "12 s");
        assert_eq!(short_duration(Duration::from_secs(185)), "3 min 05 s");
        assert_eq!(short_duration(Duration::from_secs(3720)), "1 h 02 min");
    }
}
