//! AMQP edge: connecting with a bound on time, and turning lapin's errors
//! into messages that name the broker (password masked) and the entity.

use std::future::Future;
use std::time::Duration;

use anyhow::Result;
use async_rs::traits::{Reactor, RuntimeKit};
use async_rs::Runtime;
use lapin::tcp::{AMQPUriTcpExt, AsyncTcpStream};
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{Channel, Connection, ConnectionProperties};
use tcp_stream::RustlsConnector;

use crate::exit::broker;
use crate::target::{scrub, Target};

/// Opens an AMQP connection to `target`'s vhost, or fails with exit 3 within
/// the target's timeout. lapin can wait forever when the broker refuses
/// `connection.open` (an unknown vhost), so the whole handshake is bounded.
pub async fn connect(target: &Target) -> Result<Connection> {
    let properties = ConnectionProperties::default()
        .with_connection_name(format!("delaytopo {}", env!("CARGO_PKG_VERSION")).into());
    let runtime =
        lapin::runtime::default_runtime().map_err(|e| broker(format!("no async runtime: {e}")))?;
    let uri: AMQPUri = target.amqp_uri().parse().map_err(|e: String| {
        broker(format!(
            "cannot connect to {}: {}",
            target.amqp_display(),
            scrub(&e, &target.password)
        ))
    })?;
    let attempt = async {
        let connector = tls_connector(target)?;
        Ok::<_, anyhow::Error>(
            Connection::connector(
                uri,
                runtime,
                async move |uri: AMQPUri, runtime| {
                    transport(&uri, connector.as_ref(), &runtime)
                        .await
                        .map_err(lapin::Error::from)
                },
                properties,
            )
            .await,
        )
    };
    match tokio::time::timeout(target.timeout, attempt).await {
        Ok(Err(setup)) => Err(setup),
        Ok(Ok(Ok(connection))) => Ok(connection),
        Ok(Ok(Err(error))) => Err(broker(format!(
            "cannot connect to {}: {}",
            target.amqp_display(),
            describe_connect(target, &error)
        ))),
        Err(_) => Err(broker(format!(
            "cannot connect to {}: no answer within {} (is the broker up, and does vhost `{}` exist?)",
            target.amqp_display(),
            seconds(target.timeout),
            target.vhost
        ))),
    }
}

/// Our TLS settings (CA, client identity) for an `amqps://` target, `None`
/// for plain AMQP: built only when TLS is used.
pub fn tls_connector(target: &Target) -> Result<Option<RustlsConnector>> {
    match target.amqp.scheme() {
        "amqps" => Ok(Some(RustlsConnector::from(target.tls.client_config()?))),
        _ => Ok(None),
    }
}

/// TCP to the broker of `uri`, with our TLS on top when `tls` is given:
/// lapin's connections and the broker identity check reach the broker the
/// same way.
pub async fn transport<RK: RuntimeKit + Send + Sync>(
    uri: &AMQPUri,
    tls: Option<&RustlsConnector>,
    runtime: &Runtime<RK>,
) -> std::io::Result<AsyncTcpStream<<RK as Reactor>::TcpStream>> {
    let mut plain = uri.clone();
    plain.scheme = AMQPScheme::AMQP;
    let stream = plain.connect_async(runtime).await?;
    match tls {
        Some(connector) => stream.into_rustls(connector, &uri.authority.host).await,
        None => Ok(stream),
    }
}

/// Why a connection attempt failed: the TLS check that failed, or lapin's
/// words, with a hint when the broker dropped a TLS connection unexplained.
pub fn describe_connect(
    target: &Target,
    error: &(dyn std::error::Error + Send + Sync + 'static),
) -> String {
    if let Some(tls) = crate::tls::describe_failure(error, &target.tls) {
        return tls;
    }
    let text = match error.downcast_ref::<lapin::Error>() {
        Some(lapin) => describe(target, lapin),
        None => scrub(&error.to_string(), &target.password),
    };
    let hint = match target.amqp.scheme() {
        "amqps" => crate::tls::reset_hint(error, &target.tls),
        _ => None,
    };
    match hint {
        Some(hint) => format!("{text}; {hint}"),
        None => text,
    }
}

/// Runs one broker operation with the target's timeout; `what` names it in errors.
pub async fn bounded<T>(
    target: &Target,
    what: &str,
    operation: impl Future<Output = lapin::Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(target.timeout, operation).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(broker(format!("{what}: {}", describe(target, &error)))),
        Err(_) => Err(broker(format!(
            "{what}: no answer from {} within {}",
            target.amqp_display(),
            seconds(target.timeout)
        ))),
    }
}

/// A lapin error in words, with the password scrubbed.
pub fn describe(target: &Target, error: &lapin::Error) -> String {
    if let Some(tls) = crate::tls::describe_failure(error, &target.tls) {
        return tls;
    }
    let text = match error.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => {
            format!("{} {}", amqp.get_id(), amqp.get_message())
        }
        lapin::ErrorKind::IOError(io) => io.to_string(),
        _ => error.to_string(),
    };
    scrub(&text, &target.password)
}

/// The reply code of a refusal that closed only the channel (403, 404, 405,
/// 406): the connection and its other channels carry on.
pub fn channel_refusal_code(error: &lapin::Error) -> Option<u16> {
    match error.kind() {
        lapin::ErrorKind::ProtocolError(amqp)
            if matches!(amqp.kind(), lapin::protocol::AMQPErrorKind::Soft(_)) =>
        {
            Some(amqp.get_id())
        }
        _ => None,
    }
}

/// A new channel on `connection`, bounded by the target's timeout.
pub async fn open_channel(connection: &Connection, target: &Target) -> Result<Channel> {
    bounded(target, "opening a channel", connection.create_channel()).await
}

/// Closes the connection politely, so the broker logs no abrupt disconnect;
/// a failure here changes nothing about the work already done.
pub async fn close(connection: &Connection, target: &Target) {
    let _ = bounded(
        target,
        "closing the connection",
        connection.close(200, "done".into()),
    )
    .await;
}

/// The AMQP reply code of a broker refusal (404, 406, 403, 530...), if it was one.
pub fn reply_code(error: &lapin::Error) -> Option<u16> {
    match error.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => Some(amqp.get_id()),
        _ => None,
    }
}

pub fn seconds(duration: Duration) -> String {
    format!("{:.1} s", duration.as_secs_f64())
}
