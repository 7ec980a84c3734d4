//! Level queue arguments on a real broker: `queue_arguments` and the quorum
//! placement keys add to the at-least-once/reject-publish defaults, and
//! verify calls a quorum cascade that lacks either an error whatever the
//! topology file says.

mod support;

use serde_json::Value;
use support::*;

fn level_0_arguments(vhost: &TestVhost) -> Value {
    vhost.queue_info("nsb.v2.delay-level-00")["arguments"].clone()
}

#[test]
fn placement_keys_and_queue_arguments_add_to_the_defaults() {
    let vhost = TestVhost::new("placement");
    vhost.set_topology(
        "cascade:\n  levels: 2\n  initial_group_size: 1\n  leader_locator: client-local\n  \
         queue_arguments:\n    x-delivery-limit: 50\n",
    );
    vhost.delaytopo().arg("install").assert().code(0);
    let arguments = level_0_arguments(&vhost);
    assert_eq!(arguments["x-dead-letter-strategy"], "at-least-once");
    assert_eq!(arguments["x-overflow"], "reject-publish");
    assert_eq!(arguments["x-quorum-initial-group-size"], 1);
    assert_eq!(arguments["x-queue-leader-locator"], "client-local");
    assert_eq!(arguments["x-delivery-limit"], 50);
    vhost.assert_verifies_strictly();
}

#[test]
fn verify_calls_a_cascade_without_at_least_once_an_error_whatever_the_file_says() {
    let vhost = TestVhost::new("at-most-once");
    vhost.set_topology(
        "cascade:\n  levels: 2\n  remove_default_arguments: [x-dead-letter-strategy]\n",
    );
    vhost.delaytopo().arg("install").assert().code(0);
    assert!(level_0_arguments(&vhost)
        .get("x-dead-letter-strategy")
        .is_none());
    vhost
        .delaytopo()
        .arg("verify")
        .assert()
        .code(1)
        .stdout(predicates::str::contains("lack x-dead-letter-strategy"));
}
