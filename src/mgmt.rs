//! Management HTTP API edge: a small client that reads a vhost in bulk.
//!
//! AMQP cannot list bindings or read arguments (SPEC §1), so everything that
//! compares the broker with the topology reads it here: a handful of GETs per
//! vhost, issued at once, each bounded by the target's timeout. Failures are
//! exit 3 with a one-line reason and the password masked.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::OnceCell;

use anyhow::Result;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;

use crate::amqp::seconds;
use crate::broker_identity;
use crate::exit::broker;
use crate::target::{encode_vhost, scrub, Target};

#[derive(Clone)]
pub struct Management {
    http: Transport,
    target: Target,
    requests: Arc<AtomicUsize>,
    /// Whether this API belongs to the AMQP URL's broker: checked once, by
    /// the first requests, alongside them (see `broker_identity`).
    same_broker: Arc<OnceCell<Result<(), Unproven>>>,
}

#[derive(Clone)]
enum Unproven {
    ManagementFailed(String),
    NotSameBroker(String),
}

/// Marks an error of the same-broker proof: the management API answered, but
/// cannot be trusted for the AMQP URL's broker (or AMQP could not be reached
/// to tell), so no command may fall back to AMQP-only work on it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotProvenSameBroker(String);

impl NotProvenSameBroker {
    /// Whether `error` (anywhere in its chain) is a failed same-broker proof.
    pub fn is(error: &anyhow::Error) -> bool {
        error.chain().any(|cause| cause.is::<NotProvenSameBroker>())
    }
}

impl Management {
    pub fn new(target: &Target) -> Result<Management> {
        Ok(Management {
            http: shared_transport(target)?,
            target: target.clone(),
            requests: Arc::new(AtomicUsize::new(0)),
            same_broker: Arc::new(OnceCell::new()),
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
        let answer = self.send(Method::GET, &path, None).await?;
        self.decode(&path, &answer)
    }

    /// GET /api/{path} where the user may lack the tag it needs (feature
    /// flags need `administrator`, nodes `monitoring`) or the broker the
    /// endpoint (deprecated features: 3.13+): `None` when refused with
    /// 401/403 or answered 404, so that the rest can still be checked.
    pub async fn get_if_permitted<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>> {
        let answer = self.request(Method::GET, path, None).await?;
        if matches!(
            answer.status,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND
        ) {
            return Ok(None);
        }
        let answer = self.checked(path, answer)?;
        self.decode(path, &answer).map(Some)
    }

    fn decode<T: DeserializeOwned>(&self, path: &str, answer: &Answer) -> Result<T> {
        serde_json::from_slice(&answer.body)
            .map_err(|e| self.failure(path, &format!("unexpected answer: {e}")))
    }

    /// A request whose answer body does not matter (PUT, DELETE, POST).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<()> {
        self.send(method, path, body).await.map(|_| ())
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer> {
        let answer = self.request(method, path, body).await?;
        self.checked(path, answer)
    }

    /// Sends a request and reads the whole answer, whatever its status;
    /// the answer counts only once this API is proven to be the AMQP
    /// broker's. The first requests wait for the proof in parallel.
    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer> {
        let (proven, answer) = tokio::join!(
            self.proven_same_broker(),
            self.unproven_request(method, path, body)
        );
        proven?;
        answer
    }

    async fn proven_same_broker(&self) -> Result<()> {
        let outcome = self
            .same_broker
            .get_or_init(|| async {
                let (over_amqp, overview) = tokio::join!(
                    broker_identity::over_amqp(&self.target),
                    self.unproven_request(Method::GET, "overview", None)
                );
                // The management API failing is its own error (install then
                // works over AMQP alone); a proof that fails is not.
                let over_http = overview
                    .and_then(|answer| self.checked("overview", answer))
                    .and_then(|answer| self.decode::<serde_json::Value>("overview", &answer))
                    .map_err(|e| Unproven::ManagementFailed(format!("{e:#}")))?;
                let over_http = broker_identity::from_overview(&over_http);
                over_amqp
                    .and_then(|over_amqp| {
                        broker_identity::ensure_same(&self.target, &over_amqp, &over_http)
                    })
                    .map_err(|e| Unproven::NotSameBroker(format!("{e:#}")))
            })
            .await;
        match outcome.clone() {
            Ok(()) => Ok(()),
            Err(Unproven::ManagementFailed(reason)) => Err(broker(reason)),
            Err(Unproven::NotSameBroker(reason)) => Err(NotProvenSameBroker(reason).into()),
        }
    }

    async fn unproven_request(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer> {
        let url = self
            .target
            .management
            .join(&format!("api/{path}"))
            .map_err(|e| self.failure(path, &format!("bad URL: {e}")))?;
        let body = body.map(|b| Bytes::from(b.to_string()));
        self.requests.fetch_add(1, Ordering::Relaxed);
        let exchange = self.http.exchange(&self.target, method, &url, body);
        match tokio::time::timeout(self.target.timeout, exchange).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(TransportError::Connect(cause))) => Err(self.failure(
                path,
                &format!(
                    "cannot connect (is the management plugin enabled? \
                     `rabbitmq-plugins enable rabbitmq_management`): {cause}"
                ),
            )),
            Ok(Err(TransportError::Other(cause))) => Err(self.failure(path, &cause)),
            Err(_) => Err(self.failure(
                path,
                &format!("no answer within {}", seconds(self.target.timeout)),
            )),
        }
    }

    /// The answer if it is a success, else an error that says why in words.
    fn checked(&self, path: &str, answer: Answer) -> Result<Answer> {
        match answer.status {
            status if status.is_success() => Ok(answer),
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
                let text: String = String::from_utf8_lossy(&answer.body)
                    .chars()
                    .take(200)
                    .collect();
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

/// A whole answer: management API answers are small, and reading them at
/// once keeps the timeout covering the body too.
struct Answer {
    status: StatusCode,
    body: Bytes,
}

enum TransportError {
    Connect(String),
    Other(String),
}

impl TransportError {
    fn new(is_connect: bool, error: &(dyn std::error::Error + 'static)) -> TransportError {
        if is_connect {
            TransportError::Connect(root_cause(error))
        } else {
            TransportError::Other(root_cause(error))
        }
    }
}

/// How requests travel. Plain `http://` goes through hyper directly: a
/// TLS-capable client loads the system certificate store when it is built,
/// which costs more than a whole verify on loopback. `https://` uses reqwest.
#[derive(Clone)]
enum Transport {
    Plain(hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>),
    Tls(reqwest::Client),
}

const USER_AGENT: &str = concat!("delaytopo/", env!("CARGO_PKG_VERSION"));

impl Transport {
    async fn exchange(
        &self,
        target: &Target,
        method: Method,
        url: &url::Url,
        body: Option<Bytes>,
    ) -> Result<Answer, TransportError> {
        match self {
            Transport::Plain(client) => {
                let credentials = format!("{}:{}", target.username, target.password);
                let mut request = hyper::Request::builder()
                    .method(method)
                    .uri(url.as_str())
                    .header(header::USER_AGENT, USER_AGENT)
                    .header(
                        header::AUTHORIZATION,
                        format!("Basic {}", BASE64.encode(credentials)),
                    );
                if body.is_some() {
                    request = request.header(header::CONTENT_TYPE, "application/json");
                }
                let request = request
                    .body(Full::new(body.unwrap_or_default()))
                    .map_err(|e| TransportError::Other(e.to_string()))?;
                let response = client
                    .request(request)
                    .await
                    .map_err(|e| TransportError::new(e.is_connect(), &e))?;
                let status = response.status();
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| TransportError::Other(format!("reading the answer failed: {e}")))?
                    .to_bytes();
                Ok(Answer { status, body })
            }
            Transport::Tls(client) => {
                let mut request = client
                    .request(method, url.clone())
                    .basic_auth(&target.username, Some(&target.password));
                if let Some(body) = body {
                    request = request
                        .header(header::CONTENT_TYPE, "application/json")
                        .body(body);
                }
                let response = request
                    .send()
                    .await
                    .map_err(|e| TransportError::new(e.is_connect(), &e))?;
                let status = response.status();
                let body = response.bytes().await.map_err(|e| {
                    TransportError::Other(format!("reading the answer failed: {e}"))
                })?;
                Ok(Answer { status, body })
            }
        }
    }
}

/// One transport per process: its connection pool serves every vhost of a
/// run, and building it is paid once.
fn shared_transport(target: &Target) -> Result<Transport> {
    // One per scheme: a transfer may read an http:// and an https:// broker.
    static PLAIN: OnceLock<Transport> = OnceLock::new();
    static TLS: OnceLock<Transport> = OnceLock::new();
    if target.management.scheme() == "http" {
        return Ok(PLAIN
            .get_or_init(|| {
                let mut connector = HttpConnector::new();
                connector.set_connect_timeout(Some(target.timeout));
                connector.set_nodelay(true);
                Transport::Plain(
                    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
                        .build(connector),
                )
            })
            .clone());
    }
    if let Some(transport) = TLS.get() {
        return Ok(transport.clone());
    }
    let client = reqwest::Client::builder()
        .timeout(target.timeout)
        .connect_timeout(target.timeout)
        .no_proxy()
        .user_agent(USER_AGENT)
        .build()
        .map_err(|e| broker(format!("cannot set up an HTTP client: {e}")))?;
    Ok(TLS.get_or_init(|| Transport::Tls(client)).clone())
}

/// The innermost cause of a reqwest error: its own text is mostly the URL.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}
