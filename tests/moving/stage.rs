//! The stage of the migrate tests: a vhost with a v1 cascade full of
//! delayed messages, endpoints for most of their addresses, and the v2
//! topology as the target.

use std::process::{Command, Stdio};

use delaytopo::cascade::Desired;

use super::*;
use crate::support::*;

/// Addresses with dots; one with nothing to deliver to in the target.
pub const SALES: &str = "Sales.Eu"; // a queue, not in the target topology
pub const SHIPPING: &str = "Shipping"; // a queue listed in the target topology
pub const BILLING: &str = "Billing.Us"; // only an exchange of that name exists
pub const GHOST: &str = "Ghost.Town"; // nothing exists: poisoned
pub const ADDRESSES: [&str; 4] = [SALES, SHIPPING, BILLING, GHOST];
pub const BILLING_INBOX: &str = "billing-us-inbox";
pub const ENDPOINT_QUEUES: [&str; 3] = [SALES, SHIPPING, BILLING_INBOX];

pub const TARGET_TOPOLOGY: &str = "endpoints:\n  - address: Shipping\n";

/// A vhost with the v1 cascade holding `messages`, the endpoints of
/// `ADDRESSES` (but GHOST), and the v2 topology as `-f`.
pub struct Stage {
    pub vhost: TestVhost,
    pub client: Client,
    pub source: Desired,
    pub target: Desired,
    pub from_file: tempfile::NamedTempFile,
    pub journal: tempfile::TempDir,
}

impl Stage {
    pub fn new(test: &str, messages: &[Delayed]) -> Stage {
        let vhost = TestVhost::new(test);
        vhost.set_topology(TARGET_TOPOLOGY);
        install_from_render(&vhost, V1);
        vhost.declare_queue(SALES, serde_json::json!({}));
        vhost.declare_queue(SHIPPING, serde_json::json!({}));
        vhost.declare_exchange(BILLING, "fanout");
        vhost.declare_queue(BILLING_INBOX, serde_json::json!({}));
        api(
            reqwest::Method::POST,
            &format!(
                "bindings/{}/e/{}/q/{}",
                encode(&vhost.name),
                encode(BILLING),
                encode(BILLING_INBOX)
            ),
            Some(serde_json::json!({"routing_key": ""})),
        );
        let client = Client::new(&vhost);
        let source = cascade(V1, &vhost);
        let target = cascade(TARGET_TOPOLOGY, &vhost);
        client.publish_delayed(&source, messages);
        let from_file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(from_file.path(), V1).unwrap();
        Stage {
            vhost,
            client,
            source,
            target,
            from_file,
            journal: tempfile::tempdir().unwrap(),
        }
    }

    /// `migrate` with JSON output and the stage's journal directory.
    pub fn migrate(&self) -> assert_cmd::Command {
        let mut command = self.vhost.delaytopo();
        command
            .args(["-o", "json", "migrate", "--journal"])
            .arg(self.journal.path())
            .arg("--from")
            .arg(self.from_file.path());
        command
    }

    /// The same command, as a child process that can be killed.
    pub fn spawn_migrate(&self, extra: &[&str]) -> std::process::Child {
        self.spawn_with(&["--no-progress", "-o", "json"], extra)
    }

    /// `migrate` with `global` options, as a child process.
    pub fn spawn_with(&self, global: &[&str], extra: &[&str]) -> std::process::Child {
        self.spawn_through(&self.vhost.url(), management(), global, extra)
    }

    /// `migrate` with `global` options through the given broker URLs.
    pub fn spawn_through(
        &self,
        url: &str,
        management: &str,
        global: &[&str],
        extra: &[&str],
    ) -> std::process::Child {
        Command::new(assert_cmd::cargo::cargo_bin("delaytopo"))
            .arg("-f")
            .arg(self.vhost.topology_path())
            .args(["--url", url, "--management-url", management])
            .args(global)
            .args(["migrate", "--journal"])
            .arg(self.journal.path())
            .arg("--from")
            .arg(self.from_file.path())
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    pub fn inventory(&self) -> Inventory {
        assert_eq!(self.client.ready_in_cascade(&self.source), 0);
        Inventory::take(&self.client, &self.target, &ENDPOINT_QUEUES)
    }
}

/// Addresses that all have a destination, so that every message is movable.
pub const DELIVERABLE: [&str; 3] = [SALES, SHIPPING, BILLING];
