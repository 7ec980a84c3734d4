//! Proof that the management API and the AMQP URL reach the same broker.
//!
//! The management URL is usually derived from the AMQP URL's host, or typed
//! separately: with AMQP on another port (a second node, a port-forward) the
//! two can name different brokers, and a command would then act on one while
//! reading the other (teardown deleting queues whose dead-letter backlog it
//! never saw). Every management API answer is only trusted once the cluster
//! name it reports equals the one the AMQP broker announces in
//! `connection.start`.
//!
//! lapin does not expose `connection.start`'s server properties, so the AMQP
//! side is a short handshake of its own (start, tune, open the vhost, close)
//! over the same transport lapin uses: it also proves the AMQP path, its
//! credentials and the vhost. It completes and closes politely because the
//! broker logs a warning for every connection dropped mid-handshake.

use anyhow::Result;
use futures::{AsyncReadExt, AsyncWriteExt};
use lapin::protocol::{connection, AMQPClass};
use lapin::types::{AMQPValue, FieldTable};
use lapin::uri::{AMQPUri, SASLMechanism};

use amq_protocol::auth::Credentials;
use amq_protocol::frame::{gen_frame, parse_frame, AMQPFrame, ProtocolVersion, WriteContext};

use crate::amqp::{describe_connect, seconds, tls_connector, transport};
use crate::exit::broker;
use crate::target::{scrub, Target};

/// What a broker says of itself on both protocols.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub cluster_name: String,
    pub version: String,
}

/// Refuses unless both sides are one cluster: a cluster's nodes share a
/// name, while separate brokers have their own (by default their first
/// node's name). Versions may differ inside a cluster during an upgrade.
pub fn ensure_same(target: &Target, over_amqp: &Identity, over_http: &Identity) -> Result<()> {
    if over_amqp.cluster_name == over_http.cluster_name {
        return Ok(());
    }
    Err(broker(format!(
        "the management API {} belongs to broker `{}` (RabbitMQ {}), but {} reaches broker `{}` \
         (RabbitMQ {}): refusing to act on one broker while reading another; point \
         --management-url at the management API of the AMQP URL's broker",
        target.management_display(),
        over_http.cluster_name,
        over_http.version,
        target.amqp_display(),
        over_amqp.cluster_name,
        over_amqp.version,
    )))
}

/// The identity the AMQP broker announces, after opening `target`'s vhost
/// with its credentials; bounded by the target's timeout.
pub async fn over_amqp(target: &Target) -> Result<Identity> {
    let what = format!("checking which broker {} is", target.amqp_display());
    match tokio::time::timeout(target.timeout, handshake(target)).await {
        Ok(Ok(identity)) => Ok(identity),
        Ok(Err(reason)) => Err(broker(format!(
            "{what}: {}",
            scrub(&reason, &target.password)
        ))),
        Err(_) => Err(broker(format!(
            "{what}: no answer within {} (is the broker up, and does vhost `{}` exist?)",
            seconds(target.timeout),
            target.vhost
        ))),
    }
}

async fn handshake(target: &Target) -> Result<Identity, String> {
    let uri: AMQPUri = target.amqp_uri().parse()?;
    let runtime = lapin::runtime::default_runtime().map_err(|e| e.to_string())?;
    let connector = tls_connector(target).map_err(|e| format!("{e:#}"))?;
    let stream = transport(&uri, connector.as_ref(), &runtime)
        .await
        .map_err(|e| format!("cannot connect: {}", describe_connect(target, &e)))?;
    let mut wire = Wire {
        stream,
        buffer: Vec::new(),
    };
    wire.send(&AMQPFrame::ProtocolHeader(ProtocolVersion::amqp_0_9_1()))
        .await?;
    let start = match wire.method().await? {
        connection::AMQPMethod::Start(start) => start,
        other => return Err(format!("expected connection.start, got {other:?}")),
    };
    let identity = Identity {
        cluster_name: property(&start.server_properties, "cluster_name"),
        version: property(&start.server_properties, "version"),
    };

    let mechanism = uri.query.auth_mechanism.unwrap_or(SASLMechanism::Plain);
    let credentials = Credentials::from(uri.authority.userinfo.clone());
    let mut client_properties = FieldTable::default();
    let mut capabilities = FieldTable::default();
    capabilities.insert("authentication_failure_close".into(), true.into());
    client_properties.insert("capabilities".into(), AMQPValue::FieldTable(capabilities));
    client_properties.insert(
        "connection_name".into(),
        AMQPValue::LongString("delaytopo broker identity check".into()),
    );
    wire.send(&method(connection::AMQPMethod::StartOk(
        connection::StartOk {
            client_properties,
            mechanism: mechanism.name().into(),
            response: credentials.sasl_auth_string(mechanism),
            locale: "en_US".into(),
        },
    )))
    .await?;
    let tune = match wire.method().await? {
        connection::AMQPMethod::Tune(tune) => tune,
        connection::AMQPMethod::Close(close) => return Err(refusal(&close)),
        other => return Err(format!("expected connection.tune, got {other:?}")),
    };
    wire.send(&method(connection::AMQPMethod::TuneOk(
        connection::TuneOk {
            channel_max: tune.channel_max,
            frame_max: tune.frame_max,
            heartbeat: 0,
        },
    )))
    .await?;
    wire.send(&method(connection::AMQPMethod::Open(connection::Open {
        virtual_host: uri.vhost.clone().into(),
    })))
    .await?;
    match wire.method().await? {
        connection::AMQPMethod::OpenOk(_) => {}
        connection::AMQPMethod::Close(close) => return Err(refusal(&close)),
        other => return Err(format!("expected connection.open-ok, got {other:?}")),
    }
    wire.send(&method(connection::AMQPMethod::Close(connection::Close {
        reply_code: 200,
        reply_text: "identity checked".into(),
        class_id: 0,
        method_id: 0,
    })))
    .await?;
    // The close-ok only confirms a polite goodbye; the identity is known.
    let _ = wire.method().await;
    Ok(identity)
}

fn method(method: connection::AMQPMethod) -> AMQPFrame {
    AMQPFrame::Method(0, AMQPClass::Connection(method))
}

fn refusal(close: &connection::Close) -> String {
    format!("{} {}", close.reply_code, close.reply_text)
}

fn property(properties: &FieldTable, key: &str) -> String {
    match properties.inner().get(key) {
        Some(AMQPValue::LongString(value)) => value.to_string(),
        Some(AMQPValue::ShortString(value)) => value.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// Frames over one stream: what was read but not yet parsed stays buffered.
struct Wire<S> {
    stream: S,
    buffer: Vec<u8>,
}

impl<S: futures::AsyncRead + futures::AsyncWrite + Unpin> Wire<S> {
    async fn send(&mut self, frame: &AMQPFrame) -> Result<(), String> {
        let written = gen_frame(frame)(WriteContext::from(Vec::new()))
            .map_err(|e| format!("encoding a frame: {e}"))?;
        self.stream
            .write_all(&written.write)
            .await
            .map_err(|e| format!("sending: {e}"))?;
        self.stream
            .flush()
            .await
            .map_err(|e| format!("sending: {e}"))
    }

    /// The next connection-class method on channel 0 (heartbeats skipped).
    async fn method(&mut self) -> Result<connection::AMQPMethod, String> {
        loop {
            match parse_frame(self.buffer.as_slice()) {
                Ok((rest, frame)) => {
                    let used = self.buffer.len() - rest.len();
                    self.buffer.drain(..used);
                    match frame {
                        AMQPFrame::Method(0, AMQPClass::Connection(method)) => return Ok(method),
                        AMQPFrame::Heartbeat => continue,
                        other => return Err(format!("unexpected frame {other:?}")),
                    }
                }
                Err(error) if error.is_incomplete() => {}
                Err(_) if self.buffer.starts_with(b"AMQP") => {
                    return Err("the broker does not speak AMQP 0-9-1".into())
                }
                Err(_) => return Err("the peer does not speak AMQP (is this an AMQP port?)".into()),
            }
            let mut chunk = [0u8; 4096];
            let read = self
                .stream
                .read(&mut chunk)
                .await
                .map_err(|e| format!("reading: {e}"))?;
            if read == 0 && self.buffer.is_empty() {
                return Err("the peer closed the connection without an AMQP greeting \
                            (is this an AMQP port?)"
                    .into());
            }
            if read == 0 {
                return Err("the broker closed the connection".into());
            }
            self.buffer.extend_from_slice(&chunk[..read]);
        }
    }
}

/// The identity the management API reports (`/api/overview`).
pub fn from_overview(overview: &serde_json::Value) -> Identity {
    let text = |key: &str| overview[key].as_str().unwrap_or_default().to_string();
    Identity {
        cluster_name: text("cluster_name"),
        version: text("rabbitmq_version"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn target() -> Target {
        let topology =
            crate::topology::Topology::parse(std::path::Path::new("t.yaml"), "").unwrap();
        crate::target::resolve(
            &topology,
            &crate::target::Overrides {
                url: &["amqp://u:secret@rabbit:5673/v".to_string()],
                management_url: &["http://other:15672".to_string()],
                vhosts: &[],
                timeout_seconds: 5.0,
                ..Default::default()
            },
        )
        .unwrap()
        .remove(0)
    }

    fn identity(cluster_name: &str, version: &str) -> Identity {
        Identity {
            cluster_name: cluster_name.into(),
            version: version.into(),
        }
    }

    #[test]
    fn one_cluster_is_one_broker_even_across_versions() {
        let t = target();
        assert!(ensure_same(
            &t,
            &identity("rabbit@a", "3.13.7"),
            &identity("rabbit@a", "4.0.5")
        )
        .is_ok());
    }

    #[test]
    fn different_cluster_names_are_refused_naming_both_and_masking_the_password() {
        let t = target();
        let error = ensure_same(
            &t,
            &identity("rabbit@a", "3.10.8"),
            &identity("rabbit@b", "3.10.8"),
        )
        .unwrap_err();
        let text = format!("{error:#}");
        assert!(
            text.contains("`rabbit@a`") && text.contains("`rabbit@b`"),
            "{text}"
        );
        assert!(
            text.contains("--management-url") && !text.contains("secret"),
            "{text}"
        );
        assert_eq!(crate::exit::code_for(&error), crate::exit::BROKER_UNUSABLE);
    }

    #[test]
    fn the_overview_names_the_cluster() {
        let id = from_overview(&json!({"cluster_name": "rabbit@h", "rabbitmq_version": "3.10.8"}));
        assert_eq!(id, identity("rabbit@h", "3.10.8"));
    }
}
