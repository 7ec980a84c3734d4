//! What a publisher killed mid-burst leaves behind, pinned because moves
//! depend on it (SIGKILL, then a re-run). Its publishes can go on landing
//! after it is dead, and one publish routed to two queues is not one write:
//! under load a quorum queue lost publishes that a classic queue fed by the
//! same publishes kept (seen in CI on 3.10.8: 4,636 in the classic queue,
//! 4,515 in the quorum queue, still so 90 s later; unloaded, the counts
//! end equal). So a copy in a second queue cannot prove that a message
//! landed, and a re-run cannot tell "not there" from "not there yet": a
//! publish whose confirm never came stays in doubt.

mod moving;
mod support;

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use moving::Client;
use support::*;

const BURST: usize = 5000;

#[test]
fn a_killed_publishers_burst_can_be_lost_by_a_quorum_queue_and_kept_by_a_classic_one() {
    let vhost = TestVhost::new("killed-publisher");
    let executable = example("killed_publisher");
    let mut child = Command::new(&executable)
        .args(["--url", &vhost.url(), "--prefix", "burst"])
        .args(["--count", &BURST.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", executable.display()));
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "sent");
    child.kill().unwrap();
    child.wait().unwrap();

    let client = Client::new(&vhost);
    let at_kill = (client.ready("burst.classic"), client.ready("burst.quorum"));
    // Settled once neither count changed for three seconds.
    let started = Instant::now();
    let (mut last, mut same_since) = (at_kill, Instant::now());
    let settled = vhost.wait_for(Duration::from_secs(90), || {
        let now = (client.ready("burst.classic"), client.ready("burst.quorum"));
        if now != last {
            (last, same_since) = (now, Instant::now());
        }
        (same_since.elapsed() > Duration::from_secs(3)).then_some(now)
    });
    let last = settled.unwrap_or_else(|| panic!("the counts never settled: {last:?}"));
    eprintln!(
        "killed after {BURST} publishes: at the kill classic {} / quorum {}, \
         {:.1} s later classic {} / quorum {}",
        at_kill.0,
        at_kill.1,
        started.elapsed().as_secs_f64(),
        last.0,
        last.1
    );
    let (classic, quorum) = last;
    assert!(classic > 0, "nothing of the burst landed");
    // The quorum queue holds at most what the classic queue kept: what it
    // misses, it lost (likely: enqueues it applied after handling the
    // publisher's death, taken as out of sequence). Whether it misses any
    // depends on load.
    assert!(
        quorum <= classic,
        "the quorum queue holds {quorum}, more than the classic queue's {classic}"
    );
}
