//! How we reach a broker: the AMQP URI and management URL for each vhost,
//! the credentials and where the password comes from, and the TLS identity,
//! from the topology file overridden by the command line. Every command, and
//! both sides of `transfer`, resolve their brokers here. Passwords never
//! leave this module unmasked except to the clients that need them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use url::Url;

use crate::exit::bad_input;
use crate::tls::{FileOption, Tls, TlsOptions};
use crate::topology::{vhost_problem, Topology, MAX_URLS, MAX_VHOSTS};

mod urls;
use urls::{
    amqp_url, api_base, decode, derived_management_url, encode_userinfo, management_url, vhost_of,
};
pub use urls::{encode_vhost, mask, scrub};

/// One vhost on one broker.
#[derive(Debug, Clone)]
pub struct Target {
    /// AMQP URI whose path is this target's vhost: the node in use.
    pub amqp: Url,
    /// Management API base, without credentials: the node in use.
    pub management: Url,
    /// Every node given for this broker, in the order tried (the first is
    /// `amqp`/`management` until `failover` picks one that answers).
    pub nodes: Vec<NodeUrls>,
    /// What the AMQP broker said of itself when `failover` reached it; the
    /// same-broker proof then needs no handshake of its own.
    pub identity: Option<crate::broker_identity::Identity>,
    pub vhost: String,
    pub username: String,
    pub password: String,
    pub timeout: Duration,
    /// TLS settings of this broker, shared by all its vhosts.
    pub tls: Arc<Tls>,
}

impl Target {
    /// The full AMQP URI, password included: only for the AMQP client.
    pub fn amqp_uri(&self) -> &str {
        self.amqp.as_str()
    }

    /// The AMQP URI as it may be shown to people.
    pub fn amqp_display(&self) -> String {
        mask(self.amqp.as_str())
    }

    /// Every node's AMQP URI as it may be shown, comma-separated: names the
    /// broker whichever node is in use.
    pub fn nodes_display(&self) -> String {
        if self.nodes.is_empty() {
            return self.amqp_display();
        }
        let nodes: Vec<String> = self.nodes.iter().map(|n| mask(n.amqp.as_str())).collect();
        nodes.join(",")
    }

    pub fn management_display(&self) -> String {
        mask(self.management.as_str())
    }

    /// A copy of this target for another vhost on the same broker.
    pub fn with_vhost(&self, vhost: &str) -> Target {
        let mut target = self.clone();
        let path = format!("/{}", encode_vhost(vhost));
        target.amqp.set_path(&path);
        for node in &mut target.nodes {
            node.amqp.set_path(&path);
        }
        target.vhost = vhost.to_string();
        target
    }

    /// A copy of this target that uses node `index` of `nodes`.
    pub fn on_node(&self, index: usize) -> Target {
        let mut target = self.clone();
        target.amqp = self.nodes[index].amqp.clone();
        target.management = self.nodes[index].management.clone();
        target
    }
}

/// One node's AMQP URI (with this target's vhost) and management API base.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeUrls {
    pub amqp: Url,
    pub management: Url,
}

/// What the user gave for one broker beyond the topology file; each `None`
/// falls back to the file's `broker:` key.
#[derive(Default)]
pub struct Overrides<'a> {
    /// `--url`, repeated for several nodes; empty: the file's.
    pub url: &'a [String],
    /// `--management-url`: one, or one per `--url`; empty: the file's.
    pub management_url: &'a [String],
    pub access: Access,
    pub vhosts: &'a [String],
    pub timeout_seconds: f64,
}

/// The credentials and TLS files given for one broker outside its URL.
#[derive(Debug, Default)]
pub struct Access {
    /// The password itself, from a variable (never from argv).
    pub password: Option<String>,
    pub password_file: Option<FileOption>,
    pub tls: TlsOptions,
}

/// The files the command line names for one broker, by option.
pub struct GivenFiles<'a> {
    pub password_file: &'a Option<PathBuf>,
    pub tls_ca_cert_file: &'a Option<PathBuf>,
    pub tls_cert_file: &'a Option<PathBuf>,
    pub tls_key_file: &'a Option<PathBuf>,
}

impl Access {
    /// What the command line gives for a broker: `prefix` is "" for the
    /// main broker and "to-" for transfer's target, in option names
    /// (`--to-tls-cert-file`) and variables (`DELAYTOPO_TO_PASSWORD`).
    pub fn given(prefix: &str, files: GivenFiles<'_>) -> Access {
        let option = |path: &Option<PathBuf>, name: &str| {
            path.as_ref()
                .map(|path| FileOption::new(path, format!("--{prefix}{name}")))
        };
        let variable = format!(
            "DELAYTOPO_{}PASSWORD",
            prefix.replace('-', "_").to_uppercase()
        );
        Access {
            password: std::env::var(variable).ok().filter(|v| !v.is_empty()),
            password_file: option(files.password_file, "password-file"),
            tls: TlsOptions {
                ca_cert_file: option(files.tls_ca_cert_file, "tls-ca-cert-file"),
                cert_file: option(files.tls_cert_file, "tls-cert-file"),
                key_file: option(files.tls_key_file, "tls-key-file"),
            },
        }
    }
}

/// The file options of a broker: the command line's, else the topology file's.
fn file_option(
    given: &Option<FileOption>,
    from_file: Option<&Path>,
    key: &str,
) -> Option<FileOption> {
    given
        .clone()
        .or_else(|| from_file.map(|path| FileOption::new(path, format!("broker.{key}"))))
}

/// Reads a password file: the whole file without its final line break, the
/// way Kubernetes and Docker mount secrets.
fn read_password(file: &FileOption) -> anyhow::Result<String> {
    let bytes = file.read()?;
    let text = String::from_utf8(bytes).map_err(|_| {
        bad_input(format!(
            "{}: {} is not UTF-8 text",
            file.origin,
            file.path.display()
        ))
    })?;
    let password = text.strip_suffix('\n').unwrap_or(&text);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        return Err(bad_input(format!(
            "{}: {} is empty",
            file.origin,
            file.path.display()
        )));
    }
    Ok(password.to_string())
}

/// The targets a command acts on: one per vhost, in the order given.
pub fn resolve(topology: &Topology, overrides: &Overrides<'_>) -> anyhow::Result<Vec<Target>> {
    let (raw_urls, origin) = if overrides.url.is_empty() {
        (topology.broker.url.as_slice(), "broker.url")
    } else {
        (overrides.url, "--url")
    };
    if raw_urls.len() > MAX_URLS {
        return Err(bad_input(format!(
            "{origin}: {} URLs; at most {MAX_URLS} (one per node) are taken",
            raw_urls.len()
        )));
    }
    let amqp_urls = raw_urls
        .iter()
        .map(|raw| amqp_url(raw, origin))
        .collect::<anyhow::Result<Vec<Url>>>()?;
    let amqp = amqp_urls[0].clone();
    let username = decode(amqp.username()).unwrap_or_else(|| "guest".to_string());
    let username = if username.is_empty() {
        "guest".to_string()
    } else {
        username
    };
    let broker_file = &topology.broker;
    let password_file = file_option(
        &overrides.access.password_file,
        broker_file.password_file.as_deref(),
        "password_file",
    );
    let password = match (&overrides.access.password, &password_file) {
        (Some(password), _) => password.clone(),
        (None, Some(file)) => read_password(file)?,
        (None, None) => amqp
            .password()
            .and_then(decode)
            .unwrap_or_else(|| "guest".to_string()),
    };
    let tls = Tls::load(&TlsOptions {
        ca_cert_file: file_option(
            &overrides.access.tls.ca_cert_file,
            broker_file.tls_ca_cert_file.as_deref(),
            "tls_ca_cert_file",
        ),
        cert_file: file_option(
            &overrides.access.tls.cert_file,
            broker_file.tls_cert_file.as_deref(),
            "tls_cert_file",
        ),
        key_file: file_option(
            &overrides.access.tls.key_file,
            broker_file.tls_key_file.as_deref(),
            "tls_key_file",
        ),
    })?;
    let url_vhost = vhost_of(&amqp);
    if let Some(other) = amqp_urls.iter().find(|url| vhost_of(url) != url_vhost) {
        return Err(bad_input(format!(
            "{origin}: `{}` names vhost `{}` but `{}` names `{url_vhost}`: a cluster's URLs \
             name the same vhost (use --vhost for several)",
            mask(other.as_str()),
            vhost_of(other),
            mask(amqp.as_str())
        )));
    }
    let mut amqp_urls = amqp_urls;
    if overrides.access.password.is_some() || password_file.is_some() {
        // The AMQP client reads the password from the URI.
        for url in &mut amqp_urls {
            let _ = url.set_password(Some(&encode_userinfo(&password)));
        }
    }

    let given_management = if !overrides.management_url.is_empty() {
        Some((overrides.management_url, "--management-url"))
    } else {
        topology
            .broker
            .management_url
            .as_deref()
            .map(|urls| (urls, "broker.management_url"))
    };
    let managements = match given_management {
        Some((raws, origin)) => {
            if raws.len() != 1 && raws.len() != amqp_urls.len() {
                return Err(bad_input(format!(
                    "{origin}: {} URLs for {} AMQP URLs: give one for all nodes, or one per node",
                    raws.len(),
                    amqp_urls.len()
                )));
            }
            raws.iter()
                .map(|raw| management_url(raw, origin))
                .collect::<anyhow::Result<Vec<Url>>>()?
        }
        None => amqp_urls
            .iter()
            .map(|url| derived_management_url(url, origin))
            .collect::<anyhow::Result<Vec<Url>>>()?,
    };
    // Credentials in the management URL win for the management API.
    let (username, password) = if managements[0].username().is_empty() {
        (username, password)
    } else {
        (
            decode(managements[0].username()).unwrap_or_default(),
            managements[0]
                .password()
                .and_then(decode)
                .unwrap_or_default(),
        )
    };
    let managements: Vec<Url> = managements
        .into_iter()
        .map(|url| {
            let mut url = api_base(url);
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url
        })
        .collect();
    let nodes: Vec<NodeUrls> = amqp_urls
        .iter()
        .enumerate()
        .map(|(index, amqp)| NodeUrls {
            amqp: amqp.clone(),
            management: managements[index.min(managements.len() - 1)].clone(),
        })
        .collect();

    let timeout = timeout(overrides.timeout_seconds)?;

    let base = Target {
        amqp: nodes[0].amqp.clone(),
        management: nodes[0].management.clone(),
        nodes,
        identity: None,
        vhost: url_vhost.clone(),
        username,
        password,
        timeout,
        tls: Arc::new(tls),
    };
    let (vhosts, origin): (&[String], &str) = if !overrides.vhosts.is_empty() {
        (overrides.vhosts, "--vhost")
    } else if let Some(vhosts) = &topology.broker.vhosts {
        (vhosts, "broker.vhosts")
    } else {
        (std::slice::from_ref(&url_vhost), origin)
    };
    Ok(distinct_vhosts(vhosts, origin)?
        .into_iter()
        .map(|v| base.with_vhost(v))
        .collect())
}

/// The longest `--timeout`: one day (longer is a mistake, not a wish).
pub const MAX_TIMEOUT_SECONDS: f64 = 86_400.0;

/// The vhosts to act on, each once, in the order first given.
fn distinct_vhosts<'a>(vhosts: &'a [String], origin: &str) -> anyhow::Result<Vec<&'a String>> {
    let mut seen = std::collections::HashSet::new();
    let mut distinct = Vec::new();
    for (index, vhost) in vhosts.iter().enumerate() {
        if let Some(problem) = vhost_problem(vhost) {
            return Err(bad_input(format!(
                "{origin}: vhost #{}: {problem}",
                index + 1
            )));
        }
        if seen.insert(vhost.as_str()) {
            distinct.push(vhost);
        }
    }
    if distinct.len() > MAX_VHOSTS {
        return Err(bad_input(format!(
            "{origin}: {} vhosts in one run; at most {MAX_VHOSTS} are taken (split the run)",
            distinct.len()
        )));
    }
    Ok(distinct)
}

/// `--timeout` as a duration: positive, finite and at most a day.
fn timeout(seconds: f64) -> anyhow::Result<Duration> {
    seconds_option("--timeout", seconds)
}

/// A number of seconds given as `option`: positive, finite and at most a day.
pub fn seconds_option(option: &str, seconds: f64) -> anyhow::Result<Duration> {
    if !(seconds.is_finite() && seconds > 0.0 && seconds <= MAX_TIMEOUT_SECONDS) {
        return Err(bad_input(format!(
            "{option}: must be a number of seconds above 0 and at most {MAX_TIMEOUT_SECONDS} \
             (a day), got {seconds}"
        )));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
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
        let t =
            &resolve_with(Some("amqp://u:p%40ss@rabbit:5673/sales%2Feu"), None, &[]).unwrap()[0];
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
}
