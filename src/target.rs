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
mod tests;
