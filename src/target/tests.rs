use super::*;
use std::path::Path;

fn topology() -> Topology {
    Topology::parse(Path::new("t.yaml"), "").unwrap()
}

fn resolve_with(
    url: Option<&str>,
    management: Option<&str>,
    vhosts: &[String],
) -> anyhow::Result<Vec<Target>> {
    let url: Vec<String> = url.into_iter().map(String::from).collect();
    let management: Vec<String> = management.into_iter().map(String::from).collect();
    resolve(
        &topology(),
        &Overrides {
            url: &url,
            management_url: &management,
            vhosts,
            timeout_seconds: 30.0,
            ..Overrides::default()
        },
    )
}

fn resolve_nodes(urls: &[&str], managements: &[&str]) -> anyhow::Result<Vec<Target>> {
    let urls: Vec<String> = urls.iter().map(|u| u.to_string()).collect();
    let managements: Vec<String> = managements.iter().map(|u| u.to_string()).collect();
    resolve(
        &topology(),
        &Overrides {
            url: &urls,
            management_url: &managements,
            timeout_seconds: 30.0,
            ..Overrides::default()
        },
    )
}

#[test]
fn several_urls_are_a_cluster_s_nodes_each_with_its_management_api() {
    let t = &resolve_nodes(&["amqp://u:p@n1:5672/v", "amqp://u:p@n2:5673/v"], &[]).unwrap()[0];
    assert_eq!(t.nodes.len(), 2);
    assert_eq!(t.nodes[1].management.as_str(), "http://n2:15672/");
    assert_eq!(t.amqp, t.nodes[0].amqp);
    let other = t.with_vhost("w").on_node(1);
    assert_eq!(other.amqp.as_str(), "amqp://u:p@n2:5673/w");
    // The broker's name (a journal's key) is the same on every node.
    assert_eq!(
        other.nodes_display(),
        "amqp://u:****@n1:5672/w,amqp://u:****@n2:5673/w"
    );
    assert_eq!(other.nodes_display(), t.with_vhost("w").nodes_display());
    // One management URL serves every node (a load balancer).
    let t = &resolve_nodes(&["amqp://n1/v", "amqp://n2/v"], &["http://lb:80"]).unwrap()[0];
    assert!(t
        .nodes
        .iter()
        .all(|n| n.management.as_str() == "http://lb/"));
}

#[test]
fn node_lists_that_do_not_pair_up_are_bad_input() {
    let mismatch = resolve_nodes(&["amqp://n1/v", "amqp://n2/w"], &[]).unwrap_err();
    assert!(
        mismatch.to_string().contains("name the same vhost"),
        "{mismatch}"
    );
    let pairs = resolve_nodes(
        &["amqp://n1/v", "amqp://n2/v", "amqp://n3/v"],
        &["http://n1:15672", "http://n2:15672"],
    )
    .unwrap_err();
    assert!(
        pairs.to_string().contains("2 URLs for 3 AMQP URLs"),
        "{pairs}"
    );
    for error in [mismatch, pairs] {
        assert_eq!(crate::exit::code_for(&error), crate::exit::BAD_INPUT);
    }
}

#[test]
fn defaults_point_at_the_local_broker() {
    let t = &resolve_with(None, None, &[]).unwrap()[0];
    assert_eq!(t.vhost, "/");
    assert_eq!(t.management.as_str(), "http://localhost:15672/");
    assert_eq!(
        (t.username.as_str(), t.password.as_str()),
        ("guest", "guest")
    );
}

#[test]
fn the_vhost_is_the_url_path() {
    let t = &resolve_with(Some("amqp://u:p%40ss@rabbit:5673/sales%2Feu"), None, &[]).unwrap()[0];
    assert_eq!(t.vhost, "sales/eu");
    assert_eq!(t.password, "p@ss");
    assert_eq!(t.management.as_str(), "http://rabbit:15672/");
    let t = &resolve_with(Some("amqp://rabbit"), None, &[]).unwrap()[0];
    assert_eq!(t.vhost, "/");
}

#[test]
fn repeated_vhosts_make_one_target_each() {
    let vhosts = vec!["a".to_string(), "/".to_string()];
    let ts = resolve_with(None, None, &vhosts).unwrap();
    assert_eq!(ts.len(), 2);
    assert_eq!(ts[1].amqp.path(), "/%2F");
    assert_eq!(ts[0].vhost, "a");
    assert_eq!(encode_vhost("sales-eu.v_2~"), "sales-eu%2Ev_2~");
}

#[test]
fn repeated_vhosts_run_once_in_the_order_first_given() {
    let vhosts: Vec<String> = ["b", "a", "b", "a"].map(String::from).to_vec();
    let ts = resolve_with(None, None, &vhosts).unwrap();
    assert_eq!(
        ts.iter().map(|t| t.vhost.as_str()).collect::<Vec<_>>(),
        ["b", "a"]
    );
}

#[test]
fn vhosts_rabbitmq_would_refuse_and_too_many_are_bad_input() {
    for vhosts in [
        vec!["a".repeat(256)],
        vec![String::new()],
        (0..=MAX_VHOSTS).map(|i| i.to_string()).collect(),
    ] {
        let error = resolve_with(None, None, &vhosts).unwrap_err();
        assert_eq!(crate::exit::code_for(&error), crate::exit::BAD_INPUT);
        assert!(error.to_string().starts_with("--vhost: "), "{error}");
    }
    let long = format!("amqp://h/{}", "v".repeat(256));
    let error = resolve_with(Some(&long), None, &[]).unwrap_err();
    assert!(error.to_string().contains("256 bytes"), "{error}");
}

#[test]
fn a_timeout_too_large_for_a_duration_is_bad_input_not_a_panic() {
    for seconds in [1e20, f64::INFINITY, f64::NAN, 0.0, -1.0, 86_400.5] {
        let error = timeout(seconds).unwrap_err();
        assert_eq!(crate::exit::code_for(&error), crate::exit::BAD_INPUT);
    }
    assert_eq!(timeout(86_400.0).unwrap(), Duration::from_secs(86_400));
}

#[test]
fn a_management_url_with_a_path_keeps_it_with_or_without_its_api_segment() {
    for given in [
        "http://h:15672/rabbitmq",
        "http://h:15672/rabbitmq/",
        "http://h:15672/rabbitmq/api",
        "http://h:15672/rabbitmq/api/",
    ] {
        let t = &resolve_with(None, Some(given), &[]).unwrap()[0];
        assert_eq!(t.management.as_str(), "http://h:15672/rabbitmq/", "{given}");
        assert_eq!(
            t.management.join("api/overview").unwrap().as_str(),
            "http://h:15672/rabbitmq/api/overview"
        );
    }
    let t = &resolve_with(None, Some("http://h:15672/api/"), &[]).unwrap()[0];
    assert_eq!(t.management.as_str(), "http://h:15672/");
}

#[test]
fn passwords_are_masked() {
    assert_eq!(mask("amqp://u:secret@h/v"), "amqp://u:****@h/v");
    let err = resolve_with(Some("http://u:secret@h/"), None, &[])
        .unwrap_err()
        .to_string();
    assert!(!err.contains("secret") && err.contains("--url"), "{err}");
    let t = &resolve_with(Some("amqp://u:secret@h/"), None, &[]).unwrap()[0];
    assert!(!t.amqp_display().contains("secret"));
}

#[test]
fn masking_hides_passwords_not_the_letters_they_are_made_of() {
    // A one-letter password must not eat the `x` of `ux-main`.
    assert_eq!(scrub("vhost ux-main refused", "x"), "vhost ux-main refused");
    assert_eq!(scrub("user 'guest' refused", "x"), "user 'guest' refused");
    assert_eq!(scrub("password was x here", "x"), "password was **** here");
    assert_eq!(
        scrub("bad uri amqp://u:x@h/ux-main", "x"),
        "bad uri amqp://u:****@h/ux-main"
    );
    assert_eq!(
        scrub("user x-ray, pass 'x'", "x"),
        "user x-ray, pass '****'"
    );
    assert_eq!(scrub("nothing", ""), "nothing");
    let t = &resolve_with(Some("amqp://u:x@h/ux-main"), None, &[]).unwrap()[0];
    assert_eq!(t.amqp_display(), "amqp://u:****@h/ux-main");
}

#[test]
fn amqps_derives_an_https_management_url() {
    let t = &resolve_with(Some("amqps://u:p@rabbit/v"), None, &[]).unwrap()[0];
    assert_eq!(t.management.as_str(), "https://rabbit:15671/");
    let t = &resolve_with(
        Some("amqps://u:p@rabbit/v"),
        Some("http://rabbit:15672"),
        &[],
    )
    .unwrap()[0];
    assert_eq!(t.management.scheme(), "http", "an explicit http:// is kept");
}

#[test]
fn a_password_file_beats_the_url_and_loses_its_line_break() {
    let file = tempfile_with("s3cret:/@\n");
    let targets = resolve(
        &topology(),
        &Overrides {
            url: &["amqp://app:old@h/v".to_string()],
            access: Access {
                password_file: Some(FileOption::new(file.path(), "--password-file")),
                ..Access::default()
            },
            timeout_seconds: 30.0,
            ..Overrides::default()
        },
    )
    .unwrap();
    assert_eq!(targets[0].password, "s3cret:/@");
    assert!(targets[0].amqp_uri().contains("s3cret%3A%2F%40@h"));
    assert!(!targets[0].amqp_display().contains("s3cret"));
    std::fs::write(file.path(), "").unwrap();
    let err = resolve(
        &topology(),
        &Overrides {
            access: Access {
                password_file: Some(FileOption::new(file.path(), "broker.password_file")),
                ..Access::default()
            },
            timeout_seconds: 30.0,
            ..Overrides::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("broker.password_file"), "{err}");
    assert_eq!(crate::exit::code_for(&err), crate::exit::BAD_INPUT);
}

fn tempfile_with(text: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    file
}

#[test]
fn management_credentials_win_and_are_not_kept_in_the_url() {
    let t = &resolve_with(None, Some("https://admin:pw@mgmt:443/"), &[]).unwrap()[0];
    assert_eq!((t.username.as_str(), t.password.as_str()), ("admin", "pw"));
    assert_eq!(t.management.as_str(), "https://mgmt/");
}
