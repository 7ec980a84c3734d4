//! `delaytopo permissions` proven on a real broker: a user given exactly the
//! printed permissions and tags can run the command; with one kind taken
//! away the command exits 3 and the error names the refused permission, the
//! entity, the vhost and the user. Users are made per test (unique names)
//! and deleted afterwards, on the test run's own TLS node (its plain ports),
//! never on a shared broker.

mod support;
mod tls_broker;

use std::sync::atomic::{AtomicUsize, Ordering};

use predicates::prelude::*;
use serde_json::{json, Value};
use tls_broker::TlsVhost;

const TOPOLOGY: &str = "cascade: {levels: 3}\nendpoints: [{address: Sales}]\n";

/// A broker user that exists for one test.
struct User<'a> {
    name: String,
    vhost: &'a TlsVhost,
    password: String,
}

impl<'a> User<'a> {
    fn new(vhost: &'a TlsVhost) -> User<'a> {
        User::with_password(vhost, "pw")
    }

    fn with_password(vhost: &'a TlsVhost, password: &str) -> User<'a> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "delaytopo-lp-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        vhost.broker.api(
            "PUT",
            &format!("users/{name}"),
            Some(json!({"password": password, "tags": ""})),
        );
        User {
            name,
            vhost,
            password: password.to_string(),
        }
    }

    /// Gives this user `grant` (one object of `permissions -o json`) on the vhost.
    fn grant(&self, grant: &Value) {
        self.grant_on(&self.vhost.name, grant);
    }

    fn grant_on(&self, vhost: &str, grant: &Value) {
        let tags: Vec<&str> = grant["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        self.vhost.broker.api(
            "PUT",
            &format!("users/{}", self.name),
            Some(json!({"password": self.password, "tags": tags.join(",")})),
        );
        self.vhost.broker.api(
            "PUT",
            &format!("permissions/{}/{}", support::encode(vhost), self.name),
            Some(json!({
                "configure": grant["configure"],
                "write": grant["write"],
                "read": grant["read"],
            })),
        );
    }

    /// `delaytopo` as this user over the node's plain ports.
    fn delaytopo(&self) -> assert_cmd::Command {
        self.vhost.delaytopo_at(
            &self.url(&self.vhost.name),
            Some(&self.vhost.broker.node.management_url()),
            &[],
        )
    }

    fn url(&self, vhost: &str) -> String {
        format!(
            "amqp://{}:{}@{}/{}",
            self.name,
            self.password,
            self.vhost.broker.node.amqp_host_port(),
            support::encode(vhost)
        )
    }
}

impl Drop for User<'_> {
    fn drop(&mut self) {
        self.vhost
            .broker
            .api("DELETE", &format!("users/{}", self.name), None);
    }
}

/// The grant `permissions -o json COMMAND` prints for the fixture's topology.
fn printed_grant(vhost: &TlsVhost, command: &str) -> Value {
    printed_grant_with(vhost, &[command])
}

fn printed_grant_with(vhost: &TlsVhost, args: &[&str]) -> Value {
    let output = vhost
        .delaytopo_at("amqp://localhost/", None, &[])
        .args(["-o", "json", "permissions"])
        .args(args)
        .output()
        .unwrap();
    assert!(output.status.success());
    let document: Value = serde_json::from_slice(&output.stdout).unwrap();
    document["commands"][0].clone()
}

/// A vhost with the topology, the endpoint queue, and (when `installed`)
/// the cascade, made by guest.
fn vhost(test: &str, installed: bool) -> TlsVhost {
    let vhost = TlsVhost::new(test);
    vhost.set_topology(TOPOLOGY);
    vhost.broker.api(
        "PUT",
        &format!("queues/{}/Sales", support::encode(&vhost.name)),
        Some(json!({"durable": true})),
    );
    if installed {
        let guest = format!(
            "amqp://guest:guest@{}/{}",
            vhost.broker.node.amqp_host_port(),
            support::encode(&vhost.name)
        );
        vhost
            .delaytopo_at(&guest, Some(&vhost.broker.node.management_url()), &[])
            .arg("install")
            .assert()
            .success();
    }
    vhost
}

#[test]
fn install_works_with_the_printed_permissions_and_names_a_refused_write() {
    let vhost = vhost("lp-install", false);
    let user = User::new(&vhost);
    let grant = printed_grant(&vhost, "install");
    let mut without_write = grant.clone();
    without_write["write"] = json!("^$");
    user.grant(&without_write);
    user.delaytopo()
        .arg("install")
        .assert()
        .code(3)
        .stderr(predicate::str::contains(
            "`write` on its dead-letter exchange",
        ))
        .stderr(predicate::str::contains(format!("vhost '{}'", vhost.name)))
        .stderr(predicate::str::contains(format!("user '{}'", user.name)));
    user.grant(&grant);
    user.delaytopo().arg("install").assert().success();
    user.delaytopo().arg("install").assert().success();
}

#[test]
fn verify_and_plan_work_with_the_management_tag_alone() {
    let vhost = vhost("lp-verify", true);
    let user = User::new(&vhost);
    for command in ["verify", "plan"] {
        let grant = printed_grant(&vhost, command);
        assert_eq!(grant["configure"], "^$");
        user.grant(&grant);
        // Feature flags stay unchecked without `administrator`: a note, not an error.
        user.delaytopo().arg(command).assert().success();
    }
    let mut without_tag = printed_grant(&vhost, "verify");
    without_tag["tags"] = json!([]);
    user.grant(&without_tag);
    user.delaytopo()
        .arg("verify")
        .assert()
        .code(3)
        .stderr(predicate::str::contains("wrong credentials").not())
        .stderr(predicate::str::contains("Not management user"));
}

#[test]
fn teardown_works_with_the_printed_permissions_and_names_a_refused_configure() {
    let vhost = vhost("lp-teardown", true);
    let user = User::new(&vhost);
    let grant = printed_grant(&vhost, "teardown");
    let mut without_configure = grant.clone();
    without_configure["configure"] = json!("^$");
    user.grant(&without_configure);
    let refused = user.delaytopo().arg("teardown").output().unwrap();
    assert_eq!(refused.status.code(), Some(3));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("needs `configure` on exchange"), "{said}");
    assert!(said.contains("nothing was changed"), "{said}");
    assert!(
        said.lines().all(|line| line.len() < 1000),
        "a line runs to kilobytes: {said}"
    );
    user.grant(&grant);
    user.delaytopo().arg("teardown").assert().success();
}

#[test]
fn probe_works_with_the_printed_permissions() {
    let vhost = vhost("lp-probe", true);
    let user = User::new(&vhost);
    user.grant(&printed_grant(&vhost, "probe"));
    user.delaytopo()
        .args(["probe", "--delay", "1"])
        .assert()
        .success();
}

#[test]
fn an_administrator_missing_a_permission_is_stopped_before_anything_changes() {
    let vhost = vhost("lp-preflight", false);
    let user = User::new(&vhost);
    // An administrator may read its own permissions: install checks them first.
    let mut grant = printed_grant(&vhost, "install");
    grant["tags"] = json!(["administrator"]);
    grant["write"] = json!("^nsb\\..*");
    user.grant(&grant);
    user.delaytopo()
        .arg("install")
        .assert()
        .code(3)
        .stderr(predicate::str::contains(format!(
            "install would be refused: user `{}` lacks `write` on Sales in vhost `{}`; nothing \
             was changed",
            user.name, vhost.name
        )));
    let exchanges = vhost.broker.api(
        "GET",
        &format!("exchanges/{}", support::encode(&vhost.name)),
        None,
    );
    assert!(
        exchanges
            .as_array()
            .unwrap()
            .iter()
            .all(|e| !e["name"].as_str().unwrap().starts_with("nsb.")),
        "install changed the vhost: {exchanges}"
    );
}

/// The NServiceBus v1 cascade (3 levels) as migrate's source.
const V1_TOPOLOGY: &str = "cascade: {levels: 3, level_name: 'nsb.delay-level-{level:02}', \
    delivery_exchange: nsb.delay-delivery, queue_type: classic, \
    queue_arguments: {x-queue-mode: lazy}}\nendpoints: [{address: Sales}]\n";

#[test]
fn migrate_works_with_the_printed_permissions() {
    let vhost = vhost("lp-migrate", false);
    let source = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(source.path(), V1_TOPOLOGY).unwrap();
    let from = source.path().to_str().unwrap();
    let guest = format!(
        "amqp://guest:guest@{}/{}",
        vhost.broker.node.amqp_host_port(),
        support::encode(&vhost.name)
    );
    vhost.set_topology(V1_TOPOLOGY);
    vhost
        .delaytopo_at(&guest, Some(&vhost.broker.node.management_url()), &[])
        .arg("install")
        .assert()
        .success();
    vhost.set_topology(TOPOLOGY);
    // Without NServiceBus headers its due time is unknown: it goes to the poison queue.
    vhost.broker.api(
        "POST",
        &format!(
            "exchanges/{}/amq.default/publish",
            support::encode(&vhost.name)
        ),
        Some(
            json!({"properties": {}, "routing_key": "nsb.delay-level-02",
                    "payload": "x", "payload_encoding": "string"}),
        ),
    );
    let user = User::new(&vhost);
    user.grant(&printed_grant_with(&vhost, &["migrate", "--from", from]));
    let output = user
        .delaytopo()
        .args(["migrate", "--from", from])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(!said.contains("ACCESS_REFUSED"), "{said}");
    // Exit 1: the run worked, and one message could not be moved.
    assert_eq!(output.status.code(), Some(1), "{said}");
    let summary = String::from_utf8_lossy(&output.stdout);
    assert!(
        summary.contains("poisoned 1 to delaytopo.poison"),
        "{summary}"
    );
    let poison = vhost.broker.api(
        "GET",
        &format!("queues/{}/delaytopo.poison", support::encode(&vhost.name)),
        None,
    );
    assert_eq!(poison["name"], "delaytopo.poison", "{said}");
}

#[test]
fn transfer_works_with_the_printed_permissions_on_both_brokers() {
    let from = vhost("lp-transfer-from", true);
    let to = vhost("lp-transfer-to", false);
    let user = User::new(&from);
    let grant = printed_grant(&from, "transfer");
    user.grant(&grant);
    user.grant_on(&to.name, &grant);
    user.delaytopo()
        .args(["transfer", "--to-url", &user.url(&to.name)])
        .args(["--to-management-url", &to.broker.node.management_url()])
        .assert()
        .success();
}

#[test]
fn a_one_letter_password_is_masked_without_eating_that_letter_elsewhere() {
    let vhost = vhost("lp-mask", false);
    let user = User::with_password(&vhost, "x");
    user.grant(&printed_grant(&vhost, "verify"));
    // A vhost with an `x` in its name that does not exist: the management
    // API's 404 names it, and the password `x` must not eat its letter.
    let missing = format!("{}-ux-missing", vhost.name);
    let output = vhost
        .delaytopo_at(
            &user.url(&missing),
            Some(&vhost.broker.node.management_url()),
            &[],
        )
        .arg("verify")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("-ux-missing"), "{said}");
    assert!(!said.contains("u****"), "{said}");
    assert!(!said.contains(":x@"), "{said}");
}
