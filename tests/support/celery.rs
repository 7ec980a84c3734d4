//! Celery and kombu from PyPI, for compatibility tests against the real
//! thing: one virtual environment per pinned version pair under `target/`,
//! built once (a file lock keeps parallel test binaries from building it
//! twice), Python scripts from `tests/celery/`, broker users with only the
//! permissions a locked-down worker gets, and a worker process that stops
//! when the test ends.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{amqp_host_port, api, encode, TestVhost};

pub const CELERY_VERSION: &str = "5.7.0";
pub const KOMBU_VERSION: &str = "5.7.0";

/// The Python scripts the tests run.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/celery")
        .join(name)
}

pub struct PythonEnv {
    root: PathBuf,
}

impl PythonEnv {
    /// The environment with the pinned celery and kombu, built on first use;
    /// `None`, after saying why on stderr, where python3 is absent.
    pub fn get() -> Option<PythonEnv> {
        let found = Command::new("python3")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !found.is_ok_and(|s| s.success()) {
            // Written to stderr directly: the test harness captures eprintln!,
            // and a skip must be seen even when the test passes.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: python3 is not installed, so the Celery/kombu compatibility tests \
                 cannot run (install python3 with its venv module)"
            );
            return None;
        }
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "celery-{CELERY_VERSION}-kombu-{KOMBU_VERSION}-venv"
        ));
        std::fs::create_dir_all(root.parent().unwrap()).unwrap();
        let lock = File::create(root.with_extension("lock")).unwrap();
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
        let ready = root.join("ready");
        if !ready.exists() {
            let _ = std::fs::remove_dir_all(&root);
            must(Command::new("python3").arg("-m").arg("venv").arg(&root));
            must(
                Command::new(root.join("bin/pip"))
                    .args(["install", "--quiet", "--disable-pip-version-check"])
                    .arg(format!("celery=={CELERY_VERSION}"))
                    .arg(format!("kombu=={KOMBU_VERSION}")),
            );
            File::create(&ready).unwrap();
        }
        Some(PythonEnv { root })
    }

    pub fn python(&self) -> Command {
        self.command("bin/python")
    }

    pub fn celery(&self) -> Command {
        self.command("bin/celery")
    }

    /// A program of the environment that leaves no bytecode in `tests/celery/`.
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.root.join(program));
        command.env("PYTHONDONTWRITEBYTECODE", "1");
        command
    }

    /// Runs `scripts/<name>` with these arguments; panics with its output on failure.
    pub fn run(&self, name: &str, args: &[&str]) -> Output {
        must(self.python().arg(script(name)).args(args))
    }
}

fn must(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

static USERS: AtomicUsize = AtomicUsize::new(0);

/// A broker user of one test with permissions on one vhost; deleted on drop
/// (the broker is shared, so the name is unique to this process and test).
pub struct BrokerUser {
    pub name: String,
    password: String,
    vhost: String,
}

impl BrokerUser {
    /// `configure`, `write` and `read` are the permission regexes.
    pub fn new(vhost: &TestVhost, test: &str, [configure, write, read]: [&str; 3]) -> BrokerUser {
        let name = format!(
            "delaytopo-test-{test}-{}-{}",
            std::process::id(),
            USERS.fetch_add(1, Ordering::SeqCst)
        );
        let password = format!("pw-{name}");
        api(
            reqwest::Method::PUT,
            &format!("users/{}", encode(&name)),
            Some(json!({"password": password, "tags": ""})),
        );
        api(
            reqwest::Method::PUT,
            &format!("permissions/{}/{}", encode(&vhost.name), encode(&name)),
            Some(json!({"configure": configure, "write": write, "read": read})),
        );
        BrokerUser {
            name,
            password,
            vhost: vhost.name.clone(),
        }
    }

    pub fn url(&self) -> String {
        format!(
            "amqp://{}:{}@{}/{}",
            encode(&self.name),
            encode(&self.password),
            amqp_host_port(),
            encode(&self.vhost)
        )
    }
}

impl Drop for BrokerUser {
    fn drop(&mut self) {
        api(
            reqwest::Method::DELETE,
            &format!("users/{}", encode(&self.name)),
            None,
        );
    }
}

/// A running `celery worker`, stopped (killed) on drop; its log is kept in a
/// file so that a failing test can show it.
pub struct Worker {
    child: Child,
    pub log: PathBuf,
}

impl Worker {
    /// Starts a solo-pool worker of `tests/celery/<app>` with these environment variables.
    pub fn start(env: &PythonEnv, app: &str, vars: &[(&str, String)], log: PathBuf) -> Worker {
        let out = File::create(&log).unwrap();
        let mut command = env.celery();
        command
            .current_dir(script(""))
            .args(["-A", app, "worker", "--pool", "solo", "--loglevel", "INFO"])
            .args([
                "--without-mingle",
                "--without-gossip",
                "--without-heartbeat",
            ])
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        for (key, value) in vars {
            command.env(key, value);
        }
        Worker {
            child: command.spawn().expect("starting the celery worker"),
            log,
        }
    }

    /// The worker's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A vhost set up for `tests/celery/countdown_app.py`: its task queue on a
/// topic exchange, the cascade installed from `topology` with that queue as
/// its endpoint, and a broker user for the worker and the sender that may
/// not configure anything of the cascade.
pub struct CountdownApp {
    pub vhost: TestVhost,
    user: BrokerUser,
    work: tempfile::TempDir,
}

impl CountdownApp {
    pub const QUEUE: &'static str = "dt_tasks";

    /// `topology` is a cascade section without endpoints.
    pub fn new(test: &str, topology: &str) -> CountdownApp {
        let queue = Self::QUEUE;
        let vhost = TestVhost::new(test);
        vhost.set_topology(&format!(
            "{topology}endpoints:\n  - queue: {queue}\n    exchange: {queue}\n    routing_key: {queue}\n"
        ));
        vhost.declare_exchange(queue, "topic");
        vhost.declare_queue(queue, json!({"x-queue-type": "quorum"}));
        vhost.delaytopo().arg("install").assert().code(0);
        let user = BrokerUser::new(
            &vhost,
            test,
            [
                &format!("^{queue}$"),
                &format!("^({queue}|celery_delayed_27)$"),
                &format!("^{queue}$"),
            ],
        );
        CountdownApp {
            vhost,
            user,
            work: tempfile::tempdir().unwrap(),
        }
    }

    fn record(&self) -> PathBuf {
        self.work.path().join("runs.jsonl")
    }

    fn vars(&self) -> [(&'static str, String); 3] {
        [
            ("DT_BROKER_URL", self.user.url()),
            ("DT_QUEUE", Self::QUEUE.to_string()),
            ("DT_RECORD", self.record().display().to_string()),
        ]
    }

    /// Starts a worker and waits until it consumes the task queue.
    pub fn start_worker(&self, env: &PythonEnv) -> Worker {
        let log = self.work.path().join("worker.log");
        let worker = Worker::start(env, "countdown_app", &self.vars(), log);
        let consuming = self.vhost.wait_for(Duration::from_secs(60), || {
            let consumers = self.vhost.queue_info(Self::QUEUE)["consumers"].as_u64();
            (consumers == Some(1)).then_some(())
        });
        assert!(
            consuming.is_some(),
            "the worker never consumed:\n{}",
            worker.log()
        );
        worker
    }

    /// Sends one task per countdown with `apply_async(countdown=N)`.
    pub fn send(&self, env: &PythonEnv, countdowns: &[u64]) {
        let mut send = env.python();
        send.arg(script("countdown_app.py"))
            .args(countdowns.iter().map(u64::to_string))
            .envs(self.vars());
        must(&mut send);
    }

    /// Waits up to `limit` for `count` task runs; returns them as
    /// (countdown, seconds late), whatever came.
    pub fn runs(&self, count: usize, limit: Duration) -> Vec<(u64, f64)> {
        let start = Instant::now();
        loop {
            let runs: Vec<(u64, f64)> = std::fs::read_to_string(self.record())
                .unwrap_or_default()
                .lines()
                .map(|line| {
                    let run: Value = serde_json::from_str(line).unwrap();
                    let countdown = run["countdown"].as_u64().unwrap();
                    let late = run["ran_at"].as_f64().unwrap()
                        - run["sent_at"].as_f64().unwrap()
                        - countdown as f64;
                    (countdown, late)
                })
                .collect();
            if runs.len() >= count || start.elapsed() > limit {
                return runs;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until level `level`'s queue reports `count` ready messages.
    pub fn wait_parked(&self, level: u8, count: u64) {
        let queue = format!("celery_delayed_{level}");
        let parked = self.vhost.wait_for(Duration::from_secs(15), || {
            let ready = self.vhost.queue_info(&queue)["messages_ready"].as_u64();
            (ready == Some(count)).then_some(())
        });
        assert!(parked.is_some(), "{queue} never held {count} message(s)");
    }
}
