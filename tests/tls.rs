//! Against a broker that demands client certificates (tests/tls_broker):
//! every command works over AMQPS and HTTPS with a client certificate,
//! EXTERNAL logs in with the certificate's identity, TLS failures exit 3 and
//! say which TLS check failed, and an `amqps://` URL never leads to a
//! request in plain HTTP.

mod support;
mod tls_broker;

use predicates::prelude::*;
use tls_broker::TlsVhost;

#[test]
fn every_command_works_with_a_client_certificate() {
    let vhost = TlsVhost::new("tls-commands");
    let identity = vhost.client_identity();
    vhost.delaytopo(&identity).arg("plan").assert().code(1);
    vhost
        .delaytopo(&identity)
        .arg("install")
        .assert()
        .success()
        .stdout(predicate::str::contains("113 missing and now declared"));
    vhost.delaytopo(&identity).arg("verify").assert().success();
    vhost.delaytopo(&identity).arg("plan").assert().success();
    vhost
        .delaytopo(&identity)
        .args(["probe", "--delay", "1"])
        .assert()
        .success();
    vhost
        .delaytopo(&identity)
        .arg("teardown")
        .assert()
        .success();
    let left = vhost.broker.api(
        "GET",
        &format!("queues/{}", support::encode(&vhost.name)),
        None,
    );
    // The probe's permanent sink stays; the cascade's queues are gone.
    let cascade_left = left
        .as_array()
        .unwrap()
        .iter()
        .any(|q| q["name"].as_str().unwrap().starts_with("nsb."));
    assert!(!cascade_left, "teardown left queues: {left}");
}

#[test]
fn external_login_uses_the_certificates_identity() {
    let vhost = TlsVhost::new("tls-external");
    // A password that would be refused: only EXTERNAL can log this in.
    let url = vhost.amqps_url("nobody:wrong", "localhost", "?auth_mechanism=external");
    let management = format!(
        "https://guest:guest@localhost:{}",
        vhost.broker.https_port()
    );
    vhost
        .delaytopo_at(&url, Some(&management), &vhost.client_identity())
        .arg("install")
        .assert()
        .success();
    // `nobody:wrong` would be refused with PLAIN: the certificate logged in.
    let queue = vhost.broker.api(
        "GET",
        &format!(
            "queues/{}/nsb.v2.delay-level-00",
            support::encode(&vhost.name)
        ),
        None,
    );
    assert_eq!(queue["durable"], true);
    let untrusted = vhost.identity("ca.pem", "untrusted-client");
    vhost
        .delaytopo_at(&url, Some(&management), &untrusted)
        .arg("install")
        .assert()
        .code(3)
        // The alert, or (TLS 1.3 race) a reset with the same diagnosis.
        .stderr(
            predicate::str::contains(
                "TLS handshake failed: the broker refused our client certificate",
            )
            .or(predicate::str::contains(
                "it may have refused our client certificate",
            )),
        );
}

#[test]
fn tls_failures_exit_3_and_say_which_check_failed() {
    let vhost = TlsVhost::new("tls-failures");
    let certs = &vhost.broker.certs;
    let untrusted_ca = vec![
        ("--tls-ca-cert-file", certs.untrusted_ca()),
        ("--tls-cert-file", certs.path("client.pem")),
        ("--tls-key-file", certs.path("client.key")),
    ];
    let no_client_certificate = vec![("--tls-ca-cert-file", certs.ca())];
    // install speaks AMQP first, verify the management API: both sides are checked.
    for command in ["install", "verify"] {
        vhost
            .delaytopo(&untrusted_ca)
            .arg(command)
            .assert()
            .code(3)
            .stderr(predicate::str::contains(
                "TLS handshake failed: unknown CA: the broker's certificate is not signed by \
                 the CA of --tls-ca-cert-file",
            ));
        vhost
            .delaytopo(&no_client_certificate)
            .arg(command)
            .assert()
            .code(3)
            .stderr(predicate::str::contains("certificate required"));
        // The server certificate names localhost only.
        let by_address = vhost.amqps_url("guest:guest", "127.0.0.1", "");
        vhost
            .delaytopo_at(
                &by_address,
                Some(&vhost.https_url("127.0.0.1")),
                &vhost.client_identity(),
            )
            .arg(command)
            .assert()
            .code(3)
            .stderr(predicate::str::contains(
                "TLS handshake failed: host name mismatch",
            ))
            .stderr(predicate::str::contains("management plugin").not());
    }
}

#[test]
fn an_amqps_url_alone_never_sends_credentials_in_plain_http() {
    let vhost = TlsVhost::new("tls-no-plain-http");
    let url = vhost.amqps_url("guest:guest", "localhost", "");
    // Nothing listens on https://localhost:15671 here; what matters is the scheme.
    vhost
        .delaytopo_at(&url, None, &vhost.client_identity())
        .arg("verify")
        .assert()
        .code(3)
        .stderr(predicate::str::contains("https://localhost:15671/"))
        .stderr(predicate::str::contains("http://localhost:15672").not());
}

#[test]
fn the_password_comes_from_a_file_or_a_variable_and_never_shows() {
    let vhost = TlsVhost::new("tls-password-file");
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "guest\n").unwrap();
    let url = vhost.amqps_url("guest", "localhost", "");
    let https = vhost.https_url("localhost");
    let mut with_file = vhost.client_identity();
    with_file.push(("--password-file", secret.path().to_path_buf()));
    vhost
        .delaytopo_at(&url, Some(&https), &with_file)
        .arg("install")
        .assert()
        .success();
    vhost
        .delaytopo_at(&url, Some(&https), &vhost.client_identity())
        .env("DELAYTOPO_PASSWORD", "guest")
        .arg("verify")
        .assert()
        .success();
    // A wrong password from the file is refused, and not printed.
    std::fs::write(secret.path(), "s3cr3t-value").unwrap();
    vhost
        .delaytopo_at(&url, None, &with_file)
        .arg("install")
        .assert()
        .code(3)
        .stderr(predicate::str::contains("s3cr3t-value").not())
        .stderr(predicate::str::contains("ACCESS_REFUSED").or(predicate::str::contains("403")));
}

#[test]
fn transfer_reaches_its_target_with_the_to_options() {
    let from = TlsVhost::new("tls-transfer-from");
    let to = TlsVhost::new("tls-transfer-to");
    let identity = from.client_identity();
    from.delaytopo(&identity).arg("install").assert().success();
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "guest").unwrap();
    let certs = &to.broker.certs;
    let to_url = to.amqps_url("guest", "localhost", "");
    let mut command = from.delaytopo(&identity);
    command
        .args(["transfer", "--to-url", &to_url])
        .args(["--to-management-url", &to.https_url("localhost")])
        .arg("--to-password-file")
        .arg(secret.path())
        .arg("--to-tls-ca-cert-file")
        .arg(certs.ca())
        .arg("--to-tls-cert-file")
        .arg(certs.path("client.pem"))
        .arg("--to-tls-key-file")
        .arg(certs.path("client.key"));
    command.assert().success();
    // The target cascade was created there, over TLS with the --to- identity.
    to.delaytopo(&identity).arg("verify").assert().success();
}

#[test]
fn the_topology_files_broker_keys_give_the_password_file_and_identity() {
    let vhost = TlsVhost::new("tls-broker-keys");
    let certs = &vhost.broker.certs;
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "guest\n").unwrap();
    vhost.set_topology(&format!(
        "broker:\n  url: {}\n  management_url: {}\n  password_file: {}\n  \
         tls_ca_cert_file: {}\n  tls_cert_file: {}\n  tls_key_file: {}\n",
        vhost.amqps_url("guest", "localhost", ""),
        vhost.https_url("localhost"),
        secret.path().display(),
        certs.ca().display(),
        certs.path("client.pem").display(),
        certs.path("client.key").display(),
    ));
    vhost
        .delaytopo_without_url()
        .arg("install")
        .assert()
        .success();
    // A key the file names that does not exist is bad input, named by its key.
    vhost.set_topology("broker:\n  tls_ca_cert_file: /nonexistent/ca.pem\n");
    vhost
        .delaytopo_without_url()
        .arg("verify")
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "broker.tls_ca_cert_file: cannot read",
        ));
}
