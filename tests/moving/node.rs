//! A RabbitMQ node of the test's own, for faults that cannot be staged on a
//! shared broker: restarting it. It lives under cargo's target directory,
//! on ports of its own, and is stopped when the fixture drops.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// Node name and ports (AMQP, management, Erlang distribution).
const NODE: &str = "moving-delaytopo-test@localhost";
const AMQP_PORT: u16 = 5752;
const MANAGEMENT_PORT: u16 = 15752;
const DIST_PORT: u16 = 25752;

pub struct PrivateNode {
    base: tempfile::TempDir,
}

impl PrivateNode {
    /// Starts a fresh node (about 10 s) with every feature flag on.
    pub fn start() -> PrivateNode {
        let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let dir = base.path().to_path_buf();
        std::fs::create_dir_all(dir.join("mnesia")).unwrap();
        std::fs::create_dir_all(dir.join("log")).unwrap();
        std::fs::write(
            dir.join("rabbitmq.conf"),
            format!(
                "listeners.tcp.default = 127.0.0.1:{AMQP_PORT}\n\
                 management.tcp.port = {MANAGEMENT_PORT}\nmanagement.tcp.ip = 127.0.0.1\n"
            ),
        )
        .unwrap();
        std::fs::write(dir.join("enabled_plugins"), "[rabbitmq_management].\n").unwrap();
        let node = PrivateNode { base };
        // As root, the packaged rabbitmq-server runs the node as the rabbitmq user.
        let _ = Command::new("sh")
            .arg("-c")
            .arg("[ \"$(id -u)\" != 0 ] || ! id rabbitmq >/dev/null 2>&1 || chown -R rabbitmq: \"$0\"")
            .arg(&dir)
            .status();
        let started = node.command("rabbitmq-server").arg("-detached").status();
        assert!(
            started.is_ok_and(|s| s.success()),
            "rabbitmq-server could not start node {NODE}"
        );
        node.ctl(&[
            "wait",
            "--timeout",
            "120",
            &node.pid_file().to_string_lossy(),
        ]);
        node.ctl(&["await_startup"]);
        node.ctl(&["enable_feature_flag", "all"]);
        node
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{AMQP_PORT}/%2f")
    }

    pub fn management(&self) -> String {
        format!("http://127.0.0.1:{MANAGEMENT_PORT}")
    }

    /// Stops the broker (every connection drops, the port refuses), waits
    /// `downtime`, starts it again: what a restart looks like to a client.
    pub fn restart(&self, downtime: Duration) {
        self.ctl(&["stop_app"]);
        std::thread::sleep(downtime);
        self.ctl(&["start_app"]);
    }

    fn pid_file(&self) -> PathBuf {
        self.base.path().join("pid")
    }

    fn command(&self, program: &str) -> Command {
        let dir = self.base.path();
        let mut command = Command::new(program);
        command
            .env("RABBITMQ_NODENAME", NODE)
            .env("RABBITMQ_DIST_PORT", DIST_PORT.to_string())
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_PID_FILE", self.pid_file());
        command
    }

    fn ctl(&self, arguments: &[&str]) {
        let status = self
            .command("rabbitmqctl")
            .args(["-n", NODE])
            .args(arguments)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "rabbitmqctl {arguments:?} failed");
    }
}

impl Drop for PrivateNode {
    fn drop(&mut self) {
        let _ = self
            .command("rabbitmqctl")
            .args(["-n", NODE, "stop"])
            .stdout(std::process::Stdio::null())
            .status();
    }
}
