//! Where to connect: the AMQP URI and management URL for each vhost, from
//! the topology file overridden by the command line. Passwords never leave
//! this module unmasked except to the clients that need them.

use std::time::Duration;

use url::Url;

use crate::exit::bad_input;
use crate::topology::{vhost_problem, Topology, MAX_VHOSTS};

const MANAGEMENT_PORT: u16 = 15672;

/// One vhost on one broker.
#[derive(Debug, Clone)]
pub struct Target {
    /// AMQP URI whose path is this target's vhost.
    pub amqp: Url,
    /// Management API base, without credentials.
    pub management: Url,
    pub vhost: String,
    pub username: String,
    pub password: String,
    pub timeout: Duration,
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

    pub fn management_display(&self) -> String {
        mask(self.management.as_str())
    }

    /// A copy of this target for another vhost on the same broker.
    pub fn with_vhost(&self, vhost: &str) -> Target {
        let mut target = self.clone();
        target.amqp.set_path(&format!("/{}", encode_vhost(vhost)));
        target.vhost = vhost.to_string();
        target
    }
}

/// Escapes all but letters, digits, `-`, `_` and `~` in a path segment; `.`
/// stays escaped so that a vhost named `..` cannot become a dot-segment.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes a vhost for a URL path segment ("/" becomes "%2F").
pub fn encode_vhost(vhost: &str) -> String {
    percent_encoding::utf8_percent_encode(vhost, PATH_SEGMENT).to_string()
}

/// Replaces the password of any URL-looking string with `****`.
pub fn mask(text: &str) -> String {
    match Url::parse(text) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("****"));
            url.to_string()
        }
        _ => text.to_string(),
    }
}

/// Replaces every occurrence of `secret` in `text` (for error messages from clients).
pub fn scrub(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        text.to_string()
    } else {
        text.replace(secret, "****")
    }
}

pub struct Overrides<'a> {
    pub url: Option<&'a str>,
    pub management_url: Option<&'a str>,
    pub vhosts: &'a [String],
    pub timeout_seconds: f64,
}

/// The targets a command acts on: one per vhost, in the order given.
pub fn resolve(topology: &Topology, overrides: &Overrides<'_>) -> anyhow::Result<Vec<Target>> {
    let (raw_url, origin) = match overrides.url {
        Some(url) => (url, "--url"),
        None => (topology.broker.url.as_str(), "broker.url"),
    };
    let amqp = Url::parse(raw_url)
        .map_err(|e| bad_input(format!("{origin}: `{}` is not a URL: {e}", mask(raw_url))))?;
    if !matches!(amqp.scheme(), "amqp" | "amqps") {
        return Err(bad_input(format!(
            "{origin}: `{}` must start with amqp:// or amqps://",
            mask(raw_url)
        )));
    }
    let host = amqp
        .host_str()
        .ok_or_else(|| bad_input(format!("{origin}: `{}` has no host", mask(raw_url))))?;
    let username = decode(amqp.username()).unwrap_or_else(|| "guest".to_string());
    let username = if username.is_empty() {
        "guest".to_string()
    } else {
        username
    };
    let password = amqp
        .password()
        .and_then(decode)
        .unwrap_or_else(|| "guest".to_string());
    let url_vhost = vhost_of(&amqp);

    let management = match overrides
        .management_url
        .map(|u| (u, "--management-url"))
        .or(topology
            .broker
            .management_url
            .as_deref()
            .map(|u| (u, "broker.management_url")))
    {
        Some((raw, origin)) => {
            let url = Url::parse(raw)
                .map_err(|e| bad_input(format!("{origin}: `{}` is not a URL: {e}", mask(raw))))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(bad_input(format!(
                    "{origin}: `{}` must start with http:// or https://",
                    mask(raw)
                )));
            }
            url
        }
        None => Url::parse(&format!("http://{host}:{MANAGEMENT_PORT}/"))
            .map_err(|e| bad_input(format!("{origin}: cannot derive the management URL: {e}")))?,
    };
    // Credentials in the management URL win for the management API.
    let (username, password) = if management.username().is_empty() {
        (username, password)
    } else {
        (
            decode(management.username()).unwrap_or_default(),
            management.password().and_then(decode).unwrap_or_default(),
        )
    };
    let mut management = api_base(management);
    let _ = management.set_username("");
    let _ = management.set_password(None);

    let timeout = timeout(overrides.timeout_seconds)?;

    let base = Target {
        amqp,
        management,
        vhost: url_vhost.clone(),
        username,
        password,
        timeout,
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

/// The management API's base, ending in `/` so that `api/...` joins below
/// it: behind a reverse proxy at `/rabbitmq` the API is `/rabbitmq/api/`.
/// A URL given with its `api` segment (`…/api/`) means the same base.
fn api_base(mut url: Url) -> Url {
    let path = url.path().trim_end_matches('/');
    let path = path.strip_suffix("/api").unwrap_or(path);
    let base = format!("{path}/");
    url.set_path(&base);
    url
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
    if !(seconds.is_finite() && seconds > 0.0 && seconds <= MAX_TIMEOUT_SECONDS) {
        return Err(bad_input(format!(
            "--timeout: must be a number of seconds above 0 and at most {MAX_TIMEOUT_SECONDS} \
             (a day), got {seconds}"
        )));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// The vhost an AMQP URI names: its path without the leading slash,
/// percent-decoded; "/" when the path is empty.
fn vhost_of(url: &Url) -> String {
    let path = url.path().strip_prefix('/').unwrap_or(url.path());
    if path.is_empty() {
        "/".to_string()
    } else {
        decode(path).unwrap_or_else(|| path.to_string())
    }
}

fn decode(text: &str) -> Option<String> {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
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
        resolve(
            &topology(),
            &Overrides {
                url,
                management_url: management,
                vhosts,
                timeout_seconds: 30.0,
            },
        )
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
    fn management_credentials_win_and_are_not_kept_in_the_url() {
        let t = &resolve_with(None, Some("https://admin:pw@mgmt:443/"), &[]).unwrap()[0];
        assert_eq!((t.username.as_str(), t.password.as_str()), ("admin", "pw"));
        assert_eq!(t.management.as_str(), "https://mgmt/");
    }
}
