//! The URLs of a broker: checking the ones given, deriving the management
//! URL from the AMQP one, the vhost in a URI's path, and masking passwords
//! wherever a URL or a client library's text may carry one.

use url::Url;

use crate::exit::bad_input;

const MANAGEMENT_PORT: u16 = 15672;
const MANAGEMENT_TLS_PORT: u16 = 15671;

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

/// Masks secrets in text that came from a client library (never our own
/// sentences): the password of every URL in it, and `secret` where it
/// stands as a word of its own, not where it is part of a longer word (a
/// one-letter password must not eat the letters of vhost names).
pub fn scrub(text: &str, secret: &str) -> String {
    static USERINFO: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let userinfo = USERINFO.get_or_init(|| {
        regex::Regex::new(r"([A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*:)[^\s@/]*@").expect("valid regex")
    });
    let text = userinfo.replace_all(text, "${1}****@");
    if secret.is_empty() {
        return text.into_owned();
    }
    let is_word = |c: char| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '%');
    let mut masked = String::with_capacity(text.len());
    let mut rest: &str = &text;
    while let Some(at) = rest.find(secret) {
        let before = rest[..at].chars().last().or(masked.chars().last());
        let after = rest[at + secret.len()..].chars().next();
        masked.push_str(&rest[..at]);
        if before.is_some_and(is_word) || after.is_some_and(is_word) {
            masked.push_str(secret);
        } else {
            masked.push_str("****");
        }
        rest = &rest[at + secret.len()..];
    }
    masked.push_str(rest);
    masked
}

/// One `amqp://` or `amqps://` URI of `origin`, checked.
pub(super) fn amqp_url(raw: &str, origin: &str) -> anyhow::Result<Url> {
    let url = Url::parse(raw)
        .map_err(|e| bad_input(format!("{origin}: `{}` is not a URL: {e}", mask(raw))))?;
    if !matches!(url.scheme(), "amqp" | "amqps") {
        return Err(bad_input(format!(
            "{origin}: `{}` must start with amqp:// or amqps://",
            mask(raw)
        )));
    }
    if url.host_str().is_none() {
        return Err(bad_input(format!("{origin}: `{}` has no host", mask(raw))));
    }
    Ok(url)
}

/// One `http://` or `https://` management URL of `origin`, checked.
pub(super) fn management_url(raw: &str, origin: &str) -> anyhow::Result<Url> {
    let url = Url::parse(raw)
        .map_err(|e| bad_input(format!("{origin}: `{}` is not a URL: {e}", mask(raw))))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad_input(format!(
            "{origin}: `{}` must start with http:// or https://",
            mask(raw)
        )));
    }
    Ok(url)
}

/// The management URL of an AMQP node when none is given: same host, port
/// 15672 over http, or 15671 over https for amqps:// (credentials go over
/// plain HTTP only when the user wrote http://).
pub(super) fn derived_management_url(amqp: &Url, origin: &str) -> anyhow::Result<Url> {
    let host = amqp.host_str().unwrap_or("localhost");
    let derived = if amqp.scheme() == "amqps" {
        format!("https://{host}:{MANAGEMENT_TLS_PORT}/")
    } else {
        format!("http://{host}:{MANAGEMENT_PORT}/")
    };
    Url::parse(&derived)
        .map_err(|e| bad_input(format!("{origin}: cannot derive the management URL: {e}")))
}

/// The management API's base, ending in `/` so that `api/...` joins below
/// it: behind a reverse proxy at `/rabbitmq` the API is `/rabbitmq/api/`.
/// A URL given with its `api` segment (`…/api/`) means the same base.
pub(super) fn api_base(mut url: Url) -> Url {
    let path = url.path().trim_end_matches('/');
    let path = path.strip_suffix("/api").unwrap_or(path);
    let base = format!("{path}/");
    url.set_path(&base);
    url
}

/// The vhost an AMQP URI names: its path without the leading slash,
/// percent-decoded; "/" when the path is empty.
pub(super) fn vhost_of(url: &Url) -> String {
    let path = url.path().strip_prefix('/').unwrap_or(url.path());
    if path.is_empty() {
        "/".to_string()
    } else {
        decode(path).unwrap_or_else(|| path.to_string())
    }
}

/// Percent-encodes a password for the userinfo of a URL.
pub(super) fn encode_userinfo(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, PATH_SEGMENT).to_string()
}

pub(super) fn decode(text: &str) -> Option<String> {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}
