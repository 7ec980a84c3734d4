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
use hyper::{Method, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
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
    /// The overview the proof read: a command that needs it too (verify)
    /// takes this one instead of asking again.
    overview: Arc<OnceLock<Answer>>,
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
            overview: Arc::new(OnceLock::new()),
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
        crate::lenient_json::from_slice(&answer.body)
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
        if method == Method::GET && path == "overview" && self.proven_same_broker().await.is_ok() {
            if let Some(answer) = self.overview.get() {
                return Ok(answer.clone());
            }
        }
        let (proven, answer) = tokio::join!(
            self.proven_same_broker(),
            self.unproven_request(method, path, body)
        );
        match proven {
            Ok(()) => answer,
            Err(error) if NotProvenSameBroker::is(&error) => Err(error),
            // The management API itself failed (refused credentials, say):
            // this request's own answer tells it, naming what was asked.
            Err(error) => match answer {
                Ok(answer) if !answer.status.is_success() => Ok(answer),
                Ok(_) => Err(error),
                Err(failed) => Err(failed),
            },
        }
    }

    async fn proven_same_broker(&self) -> Result<()> {
        let outcome = self
            .same_broker
            .get_or_init(|| async {
                // A node picked by `failover` has already said who it is.
                let known = self.target.identity.clone();
                let over_amqp = async {
                    match known {
                        Some(identity) => Ok(identity),
                        None => broker_identity::over_amqp(&self.target).await,
                    }
                };
                let (over_amqp, overview) = tokio::join!(
                    over_amqp,
                    self.unproven_request(Method::GET, "overview", None)
                );
                // The management API failing is its own error (install then
                // works over AMQP alone); a proof that fails is not.
                let over_http = overview
                    .and_then(|answer| self.checked("overview", answer))
                    .and_then(|answer| {
                        let decoded = self.decode::<serde_json::Value>("overview", &answer);
                        let _ = self.overview.set(answer);
                        decoded
                    })
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
            Ok(Err(TransportError::Refused(cause))) => Err(self.failure(
                path,
                &format!(
                    "cannot connect (is the management plugin enabled? \
                     `rabbitmq-plugins enable rabbitmq_management`): {}",
                    scrub(&cause, &self.target.password)
                ),
            )),
            Ok(Err(TransportError::Other(cause))) => {
                Err(self.failure(path, &scrub(&cause, &self.target.password)))
            }
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
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Err(self.failure(path, &self.refusal(answer.status, &answer.body)))
            }
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

    /// A 401/403 in words: the broker's own `reason` says whether the
    /// credentials were wrong or the user lacks a tag or the vhost.
    fn refusal(&self, status: StatusCode, body: &[u8]) -> String {
        let reason = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["reason"].as_str().map(str::to_string))
            .unwrap_or_default();
        let user = &self.target.username;
        let vhost = &self.target.vhost;
        let code = status.as_u16();
        let hint = match reason.as_str() {
            "Login failed" => "wrong credentials".to_string(),
            "Not management user" => format!(
                "give it the `management` tag: rabbitmqctl set_user_tags {user} management"
            ),
            "Not monitor user" => "it needs the `monitoring` tag".to_string(),
            "Not administrator user" => "it needs the `administrator` tag".to_string(),
            r if r.contains("virtual host") => format!(
                "it has no permissions on vhost `{vhost}`: rabbitmqctl set_permissions -p {vhost} {user} ... \
                 (see `delaytopo permissions`)"
            ),
            _ => format!("it needs the `management` tag and permissions on vhost `{vhost}`"),
        };
        let said = if reason.is_empty() {
            String::new()
        } else {
            format!(" \"{}\"", scrub(&reason, &self.target.password))
        };
        format!("user `{user}` was refused ({code}{said}): {hint}")
    }

    /// `reason` is our own words, or client text already scrubbed.
    fn failure(&self, path: &str, reason: &str) -> anyhow::Error {
        broker(format!(
            "management API {}api/{path}: {reason}",
            self.target.management_display()
        ))
    }
}

/// A whole answer: management API answers are small, and reading them at
/// once keeps the timeout covering the body too.
#[derive(Clone)]
struct Answer {
    status: StatusCode,
    body: Bytes,
}

enum TransportError {
    /// Nothing listens on the port: the management plugin may be off.
    Refused(String),
    Other(String),
}

impl TransportError {
    fn new(error: &hyper_util::client::legacy::Error, target: &Target) -> TransportError {
        if let Some(tls) = crate::tls::describe_failure(error, &target.tls) {
            return TransportError::Other(tls);
        }
        let mut cause: &(dyn std::error::Error + 'static) = error;
        while let Some(source) = cause.source() {
            cause = source;
        }
        let refused = cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused);
        let hint = match target.management.scheme() {
            "https" => crate::tls::reset_hint(error, &target.tls),
            _ => None,
        };
        match (refused, hint) {
            (true, _) => TransportError::Refused(root_cause(error)),
            (false, Some(hint)) => TransportError::Other(format!("{}; {hint}", root_cause(error))),
            (false, None) => TransportError::Other(root_cause(error)),
        }
    }
}

/// How requests travel: one HTTP client (hyper), with TLS (hyper-rustls,
/// our own rustls configuration) only for `https://`. Plain `http://` never
/// builds a TLS configuration: loading the system certificate store costs
/// more than a whole verify on loopback.
#[derive(Clone, Debug)]
pub(crate) enum Transport {
    Plain(Client<HttpConnector, Full<Bytes>>),
    Tls(Client<HttpsConnector<HttpConnector>, Full<Bytes>>),
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
        let response = match self {
            Transport::Plain(client) => client.request(request).await,
            Transport::Tls(client) => client.request(request).await,
        }
        .map_err(|e| TransportError::new(&e, target))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| TransportError::Other(format!("reading the answer failed: {e}")))?
            .to_bytes();
        Ok(Answer { status, body })
    }
}

/// The transport for `target`: the plain one is shared by the whole process,
/// a TLS one by every vhost of one broker (it carries that broker's client
/// identity), so that one connection pool serves a run and set-up is paid once.
fn shared_transport(target: &Target) -> Result<Transport> {
    static PLAIN: OnceLock<Transport> = OnceLock::new();
    let connector = || {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(target.timeout));
        connector.set_nodelay(true);
        connector
    };
    if target.management.scheme() == "http" {
        return Ok(PLAIN
            .get_or_init(|| {
                Transport::Plain(Client::builder(TokioExecutor::new()).build(connector()))
            })
            .clone());
    }
    if let Some(transport) = target.tls.http_transport.get() {
        return Ok(transport.clone());
    }
    let mut http = connector();
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(Arc::unwrap_or_clone(target.tls.client_config()?))
        .https_only()
        .enable_http1()
        .wrap_connector(http);
    let transport = Transport::Tls(Client::builder(TokioExecutor::new()).build(https));
    Ok(target.tls.http_transport.get_or_init(|| transport).clone())
}

/// The innermost cause of a client error: the outer texts mostly repeat the URL.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}
