//! Management HTTP API edge: a small client that reads a vhost in bulk.
//!
//! AMQP cannot list bindings or read arguments (SPEC §1), so everything that
//! compares the broker with the topology reads it here: a handful of GETs per
//! vhost, issued at once, each bounded by the target's timeout. Failures are
//! exit 3 with a one-line reason and the password masked.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use anyhow::Result;
use reqwest::StatusCode;
use serde::de::DeserializeOwned;

use crate::amqp::seconds;
use crate::exit::broker;
use crate::target::{encode_vhost, scrub, Target};

#[derive(Clone)]
pub struct Management {
    http: reqwest::Client,
    target: Target,
    requests: Arc<AtomicUsize>,
}

impl Management {
    pub fn new(target: &Target) -> Result<Management> {
        Ok(Management {
            http: shared_client(target)?,
            target: target.clone(),
            requests: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// How many HTTP requests this client has made (benchmarks report it).
    pub fn request_count(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }

    /// `/api/{kind}/{vhost}` for this client's vhost.
    pub fn vhost_path(&self, kind: &str) -> String {
        format!("{kind}/{}", encode_vhost(&self.target.vhost))
    }

    pub fn vhost(&self) -> &str {
        &self.target.vhost
    }

    /// GET /api/{path}, decoded as `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: impl Into<String>) -> Result<T> {
        let path = path.into();
        let path = path.as_str();
        let response = self.send(reqwest::Method::GET, path, None).await?;
        self.decode(path, response).await
    }

    /// GET /api/{path} where the user may lack the tag it needs (feature
    /// flags need `administrator`, nodes `monitoring`): `None` when refused
    /// with 401/403, so that a monitoring user can still check the rest.
    pub async fn get_if_permitted<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>> {
        let response = self.request(reqwest::Method::GET, path, None).await?;
        if matches!(
            response.status(),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        ) {
            return Ok(None);
        }
        let response = self.checked(path, response).await?;
        self.decode(path, response).await.map(Some)
    }

    async fn decode<T: DeserializeOwned>(
        &self,
        path: &str,
        response: reqwest::Response,
    ) -> Result<T> {
        let body = response
            .bytes()
            .await
            .map_err(|e| self.failure(path, &format!("reading the answer failed: {e}")))?;
        serde_json::from_slice(&body)
            .map_err(|e| self.failure(path, &format!("unexpected answer: {e}")))
    }

    /// A request whose answer body does not matter (PUT, DELETE, POST).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<()> {
        self.send(method, path, body).await.map(|_| ())
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<reqwest::Response> {
        let response = self.request(method, path, body).await?;
        self.checked(path, response).await
    }

    /// Sends a request; any answer is Ok, whatever its status.
    async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<reqwest::Response> {
        let url = self
            .target
            .management
            .join(&format!("api/{path}"))
            .map_err(|e| self.failure(path, &format!("bad URL: {e}")))?;
        let mut request = self
            .http
            .request(method, url)
            .basic_auth(&self.target.username, Some(&self.target.password));
        if let Some(body) = body {
            request = request.json(body);
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let response = request.send().await.map_err(|e| {
            let reason = if e.is_timeout() {
                format!("no answer within {}", seconds(self.target.timeout))
            } else if e.is_connect() {
                format!(
                    "cannot connect (is the management plugin enabled? \
                     `rabbitmq-plugins enable rabbitmq_management`): {}",
                    root_cause(&e)
                )
            } else {
                root_cause(&e)
            };
            self.failure(path, &reason)
        })?;
        Ok(response)
    }

    /// The answer if it is a success, else an error that says why in words.
    async fn checked(&self, path: &str, response: reqwest::Response) -> Result<reqwest::Response> {
        match response.status() {
            status if status.is_success() => Ok(response),
            StatusCode::UNAUTHORIZED => Err(self.failure(
                path,
                &format!(
                    "user `{}` was refused (401): wrong credentials",
                    self.target.username
                ),
            )),
            StatusCode::FORBIDDEN => Err(self.failure(
                path,
                &format!(
                    "user `{}` may not do this (403): it needs the `monitoring` or \
                     `management` tag and permissions on vhost `{}`",
                    self.target.username, self.target.vhost
                ),
            )),
            StatusCode::NOT_FOUND => Err(self.failure(
                path,
                &format!("not found (404): does vhost `{}` exist?", self.target.vhost),
            )),
            status => {
                let text = response.text().await.unwrap_or_default();
                let text: String = text.chars().take(200).collect();
                Err(self.failure(path, &format!("{status}: {text}")))
            }
        }
    }

    fn failure(&self, path: &str, reason: &str) -> anyhow::Error {
        broker(scrub(
            &format!(
                "management API {}api/{path}: {reason}",
                self.target.management_display()
            ),
            &self.target.password,
        ))
    }
}

/// One HTTP client per process: its connection pool serves every vhost of a
/// run, and building it (TLS set-up, certificate store) is paid once. Plain
/// `http://` management URLs skip loading the system certificates, which
/// otherwise dominates a quick verify's start-up.
fn shared_client(target: &Target) -> Result<reqwest::Client> {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    if let Some(client) = CLIENT.get() {
        return Ok(client.clone());
    }
    let mut builder = reqwest::Client::builder()
        .timeout(target.timeout)
        .connect_timeout(target.timeout)
        .no_proxy()
        .user_agent(concat!("delaytopo/", env!("CARGO_PKG_VERSION")));
    if target.management.scheme() == "http" {
        builder = builder.tls_certs_only(Vec::new());
    }
    let client = builder
        .build()
        .map_err(|e| broker(format!("cannot set up an HTTP client: {e}")))?;
    Ok(CLIENT.get_or_init(|| client).clone())
}

/// The innermost cause of a reqwest error: its own text is mostly the URL.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}
