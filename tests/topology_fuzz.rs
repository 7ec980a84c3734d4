//! A mutation fuzzer for the topology loader: topology files made from the
//! repository's own and hand-picked hostile fragments (aliases, huge and odd
//! numbers, wildcards, tabs, deep nesting, long names), cut, spliced and
//! repeated at random. Every file must parse or be refused with a located
//! message: never a panic, never more than a bounded time or memory.
//!
//! `cargo test --test topology_fuzz` runs a few thousand cases;
//! `DELAYTOPO_FUZZ_CASES=1000000 cargo test --release --test topology_fuzz -- --nocapture`
//! runs a long campaign and prints the case count, the largest accepted file
//! and the peak memory.

use std::path::Path;
use std::time::{Duration, Instant};

use delaytopo::topology::Topology;

/// A small deterministic generator (xorshift), so a failing case can be
/// replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const SEEDS: &[&str] = &[
    include_str!("../topology.yaml"),
    include_str!("../examples/nservicebus-v1.yaml"),
    include_str!("../examples/celery.yaml"),
    "",
    "endpoints:\n  - address: Sales\n  - queue: video\n    exchange: media\n    routing_key: media.#\n",
    "broker:\n  url: [amqp://a/v, amqp://b/v]\n  vhosts: [&v a, *v, b]\ncascade:\n  levels: 3\n",
];

const FRAGMENTS: &[&str] = &[
    "\n",
    " ",
    "  ",
    "\t",
    ":",
    ": ",
    "- ",
    "-",
    "#",
    "*",
    "&a ",
    "*a",
    "&b [",
    "*b",
    "[",
    "]",
    "{",
    "}",
    ",",
    "\"",
    "'",
    "!!str ",
    "!!binary ",
    "~",
    "null",
    "true",
    "yes",
    "0",
    "-1",
    "28",
    "29",
    "1e20",
    "9223372036854775808",
    "0x1F",
    "NaN",
    ".inf",
    "{level}",
    "{level:02}",
    "{level:99}",
    "amq.",
    "broker:",
    "cascade:",
    "endpoints:",
    "url:",
    "vhosts:",
    "management_url:",
    "levels:",
    "level_name:",
    "delivery_exchange:",
    "queue_type:",
    "queue_arguments:",
    "x-message-ttl: 5",
    "x-queue-type: stream",
    "address:",
    "bind_to:",
    "queue:",
    "exchange:",
    "routing_key:",
    "remove_default_arguments:",
    "initial_group_size:",
    "leader_locator:",
    "password_file:",
    "tls_cert_file:",
    "amqp://u:p@h:1/%2f",
    "http://h/api/",
    "Sales",
    "a.b.c",
    "..",
    "#.#",
    "é",
    "\u{0}",
    "\u{feff}",
    "%%",
    "---\n",
    "...\n",
    "? ",
    "<<: *a\n",
];

/// One mutated file: a seed, then a few random edits.
fn mutant(rng: &mut Rng) -> String {
    let mut text: Vec<char> = SEEDS[rng.below(SEEDS.len())].chars().collect();
    for _ in 0..1 + rng.below(8) {
        let at = rng.below(text.len() + 1);
        match rng.below(6) {
            0 | 1 => {
                let fragment = FRAGMENTS[rng.below(FRAGMENTS.len())];
                text.splice(at..at, fragment.chars());
            }
            2 => {
                let end = (at + rng.below(40)).min(text.len());
                text.drain(at..end);
            }
            3 => {
                // Repeat a span: deep nesting, long names, long lists.
                let end = (at + 1 + rng.below(30)).min(text.len());
                let span: Vec<char> = text[at.min(end)..end].to_vec();
                let times = 1 + rng.below(300);
                let repeated: Vec<char> = span
                    .iter()
                    .cycle()
                    .take(span.len() * times)
                    .copied()
                    .collect();
                text.splice(at..at, repeated);
            }
            4 => {
                let long = "x".repeat(rng.below(600));
                text.splice(at..at, long.chars());
            }
            _ => {
                // An alias fan-out: one anchor, many references.
                let fan = format!("[&z q{}]", ", *z".repeat(rng.below(3000)));
                text.splice(at..at, fan.chars());
            }
        }
        text.truncate(256 * 1024);
    }
    text.into_iter().collect()
}

/// Peak resident memory of this process so far, in KiB (Linux).
fn peak_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmHWM:"))
                .and_then(|line| line.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn no_topology_file_panics_or_runs_away() {
    let cases: u64 = std::env::var("DELAYTOPO_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3000);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut accepted, mut largest_accepted) = (0u64, 0usize);
    let mut slowest = Duration::ZERO;
    let started = Instant::now();
    for case in 0..cases {
        let text = mutant(&mut rng);
        let begun = Instant::now();
        let parsed = std::panic::catch_unwind(|| Topology::parse(Path::new("fuzz.yaml"), &text));
        let took = begun.elapsed();
        slowest = slowest.max(took);
        match parsed {
            Err(_) => panic!("case {case} panicked on:\n{text}"),
            Ok(Ok(_)) => {
                accepted += 1;
                largest_accepted = largest_accepted.max(text.len());
            }
            Ok(Err(error)) => {
                let message = error.to_string();
                assert!(message.starts_with("fuzz.yaml"), "case {case}: {message}");
                assert!(
                    message.lines().count() == 1 && message.len() < 4096,
                    "case {case}: {message}"
                );
            }
        }
        assert!(
            took < Duration::from_secs(2),
            "case {case} took {took:?}:\n{text}"
        );
    }
    println!(
        "{cases} cases in {:.1} s: {accepted} accepted (largest {largest_accepted} bytes), \
         slowest {slowest:?}, peak memory {} MiB",
        started.elapsed().as_secs_f64(),
        peak_kib() / 1024
    );
    assert!(peak_kib() < 512 * 1024, "peak memory {} KiB", peak_kib());
}
