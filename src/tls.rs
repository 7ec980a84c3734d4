//! TLS for AMQP and the management API alike: which CAs to trust, which
//! client certificate to show, and TLS failures named in an operator's words.
//!
//! One rustls configuration per broker serves both protocols. The PEM files
//! are read when the command line is resolved (a missing file is bad input,
//! exit 2), the configuration is built only when a connection needs TLS: the
//! system certificate store costs more to load than a whole verify on
//! loopback, so plain `amqp://` and `http://` runs never touch it.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use anyhow::Result;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{AlertDescription, CertificateError, ClientConfig, RootCertStore};

use crate::exit::{bad_input, broker};

/// A file named on the command line, by a variable or in the topology file;
/// `origin` is what an error message calls it (`--tls-cert-file`, `broker.tls_cert_file`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOption {
    pub path: PathBuf,
    pub origin: String,
}

impl FileOption {
    pub fn new(path: impl Into<PathBuf>, origin: impl Into<String>) -> FileOption {
        FileOption {
            path: path.into(),
            origin: origin.into(),
        }
    }

    pub fn read(&self) -> Result<Vec<u8>> {
        std::fs::read(&self.path).map_err(|e| {
            bad_input(format!(
                "{}: cannot read {}: {e}",
                self.origin,
                self.path.display()
            ))
        })
    }

    fn invalid(&self, what: &str) -> anyhow::Error {
        bad_input(format!("{}: {} {what}", self.origin, self.path.display()))
    }
}

/// The TLS files for one broker, as given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM CA certificates trusted instead of the system store.
    pub ca_cert_file: Option<FileOption>,
    /// PEM client certificate chain (client identity), with `key_file`.
    pub cert_file: Option<FileOption>,
    /// PEM private key of `cert_file` (PKCS#8, PKCS#1 or SEC1, unencrypted).
    pub key_file: Option<FileOption>,
}

/// TLS settings of one broker, shared by every target (vhost) on it.
#[derive(Debug)]
pub struct Tls {
    /// `None`: the system store.
    ca: Option<Vec<CertificateDer<'static>>>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    /// Whether the user gave a CA file, for the hint on an unknown issuer.
    ca_origin: Option<String>,
    config: OnceLock<Result<Arc<ClientConfig>, String>>,
    /// The management API's HTTPS client for this broker, built on first use.
    pub(crate) http_transport: OnceLock<crate::mgmt::Transport>,
}

impl Tls {
    /// Reads and checks the PEM files; nothing here touches the network.
    pub fn load(options: &TlsOptions) -> Result<Tls> {
        let ca = match &options.ca_cert_file {
            Some(file) => {
                let certs = certificates(file)?;
                Some(certs)
            }
            None => None,
        };
        let identity = match (&options.cert_file, &options.key_file) {
            (Some(cert), Some(key)) => {
                let chain = certificates(cert)?;
                let private = PrivateKeyDer::from_pem_slice(&key.read()?).map_err(|e| {
                    key.invalid(&format!("holds no unencrypted PEM private key: {e}"))
                })?;
                Some((chain, private))
            }
            (None, None) => None,
            (Some(cert), None) => {
                return Err(bad_input(format!(
                    "{}: a client certificate needs its key too (--tls-key-file)",
                    cert.origin
                )))
            }
            (None, Some(key)) => {
                return Err(bad_input(format!(
                    "{}: a private key needs its certificate too (--tls-cert-file)",
                    key.origin
                )))
            }
        };
        Ok(Tls {
            ca,
            identity,
            ca_origin: options.ca_cert_file.as_ref().map(|f| f.origin.clone()),
            config: OnceLock::new(),
            http_transport: OnceLock::new(),
        })
    }

    /// Whether a client certificate is configured.
    pub fn has_identity(&self) -> bool {
        self.identity.is_some()
    }

    /// The rustls configuration, built on first use and shared afterwards.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>> {
        self.config
            .get_or_init(|| self.build().map(Arc::new))
            .clone()
            .map_err(broker)
    }

    fn build(&self) -> Result<ClientConfig, String> {
        let mut roots = RootCertStore::empty();
        match &self.ca {
            Some(certs) => {
                let (added, _) = roots.add_parsable_certificates(certs.iter().cloned());
                if added == 0 {
                    return Err("no usable CA certificate in the CA file".to_string());
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err("no trusted CA certificates in the system store: \
                         give the broker's CA with --tls-ca-cert-file"
                        .to_string());
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS set-up: {e}"))?
            .with_root_certificates(roots);
        match &self.identity {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(|e| format!("the client certificate and key do not fit: {e}")),
            None => Ok(builder.with_no_client_auth()),
        }
    }
}

fn certificates(file: &FileOption) -> Result<Vec<CertificateDer<'static>>> {
    let bytes = file.read()?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file.invalid(&format!("is not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(file.invalid("holds no PEM certificate"));
    }
    Ok(certs)
}

/// The TLS failure somewhere in `error`'s chain, in words, or `None` when
/// the failure was not about TLS. `tls` says which options could fix it.
pub fn describe_failure(error: &(dyn std::error::Error + 'static), tls: &Tls) -> Option<String> {
    let mut cause = Some(error);
    while let Some(current) = cause {
        if let Some(found) = rustls_error(current) {
            return Some(format!("TLS handshake failed: {}", in_words(found, tls)));
        }
        cause = current.source();
    }
    None
}

/// A hint for a connection the broker dropped right after the TLS handshake:
/// with TLS 1.3 the broker checks the client certificate after the client
/// thinks the handshake is done, and may close the connection before its
/// alert can be read, so only a reset arrives.
pub fn reset_hint(error: &(dyn std::error::Error + 'static), tls: &Tls) -> Option<&'static str> {
    let mut cause = Some(error);
    while let Some(current) = cause {
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            ) {
                return Some(if tls.has_identity() {
                    "the broker closed the TLS connection: it may have refused our client \
                     certificate (not signed by a CA it trusts, or expired)"
                } else {
                    "the broker closed the TLS connection: it may require a client \
                     certificate (certificate required; --tls-cert-file and --tls-key-file)"
                });
            }
        }
        cause = current.source();
    }
    None
}

/// `io::Error` hides the error it wraps from `source()`, so look inside it.
fn rustls_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(found) = error.downcast_ref::<rustls::Error>() {
        return Some(found);
    }
    let inner = error.downcast_ref::<std::io::Error>()?.get_ref()?;
    rustls_error(inner)
}

fn in_words(error: &rustls::Error, tls: &Tls) -> String {
    let ca_hint = match &tls.ca_origin {
        Some(origin) => format!("not signed by the CA of {origin}"),
        None => {
            "signed by a CA the system does not trust; give it with --tls-ca-cert-file".to_string()
        }
    };
    match error {
        rustls::Error::InvalidCertificate(certificate) => match certificate {
            CertificateError::UnknownIssuer => {
                format!("unknown CA: the broker's certificate is {ca_hint}")
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "host name mismatch: the broker's certificate does not name the host in the URL"
                    .to_string()
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the broker's certificate has expired".to_string()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the broker's certificate is not valid yet".to_string()
            }
            other => format!("the broker's certificate was refused: {other:?}"),
        },
        rustls::Error::AlertReceived(alert) => match alert {
            AlertDescription::CertificateRequired | AlertDescription::HandshakeFailure
                if !tls.has_identity() =>
            {
                "certificate required: the broker wants a client certificate \
                 (--tls-cert-file and --tls-key-file)"
                    .to_string()
            }
            AlertDescription::UnknownCA
            | AlertDescription::BadCertificate
            | AlertDescription::CertificateUnknown => {
                "the broker refused our client certificate (unknown CA or bad certificate)"
                    .to_string()
            }
            AlertDescription::CertificateExpired => {
                "the broker says our client certificate has expired".to_string()
            }
            other => format!("the broker ended the handshake: {other:?}"),
        },
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::{code_for, BAD_INPUT};

    fn file(text: &str, origin: &str) -> (tempfile::NamedTempFile, FileOption) {
        let temp = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(temp.path(), text).unwrap();
        let option = FileOption::new(temp.path(), origin);
        (temp, option)
    }

    fn refused(options: TlsOptions) -> String {
        let error = Tls::load(&options).unwrap_err();
        assert_eq!(code_for(&error), BAD_INPUT);
        error.to_string()
    }

    #[test]
    fn bad_tls_files_are_bad_input_naming_the_option() {
        let missing = FileOption::new("/nonexistent/ca.pem", "--tls-ca-cert-file");
        let said = refused(TlsOptions {
            ca_cert_file: Some(missing),
            ..TlsOptions::default()
        });
        assert!(
            said.starts_with("--tls-ca-cert-file: cannot read /nonexistent/ca.pem"),
            "{said}"
        );
        let (_keep, not_pem) = file("no certificate here", "broker.tls_ca_cert_file");
        let said = refused(TlsOptions {
            ca_cert_file: Some(not_pem),
            ..TlsOptions::default()
        });
        assert!(
            said.contains("broker.tls_ca_cert_file") && said.contains("no PEM certificate"),
            "{said}"
        );
        let (_keep, key) = file("", "--tls-key-file");
        let said = refused(TlsOptions {
            key_file: Some(key),
            ..TlsOptions::default()
        });
        assert!(said.contains("needs its certificate too"), "{said}");
    }

    #[test]
    fn nothing_is_built_until_tls_is_used() {
        let tls = Tls::load(&TlsOptions::default()).unwrap();
        assert!(tls.config.get().is_none() && !tls.has_identity());
    }
}
