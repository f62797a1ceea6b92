//! Mutual TLS settings: where a node's files are, and the rule that an
//! agent without TLS serves loopback only unless told otherwise, loudly.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::{Config, ConfigError};

/// Where a node's TLS files are; relative paths are taken from the
/// configuration file's directory. `vantage tls` writes them.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The cluster CA bundle (several CA certificates while rotating).
    pub ca: PathBuf,
    /// This node's certificate, naming `vantage://CLUSTER/node/ID`.
    pub cert: PathBuf,
    /// Its private key (mode 0600).
    pub key: PathBuf,
}

impl TlsConfig {
    pub fn files(&self) -> crate::tls::TlsFiles {
        crate::tls::TlsFiles {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }
}

impl Config {
    /// Secure by default: TLS, or loopback only, or a loud explicit opt-out.
    pub(super) fn validate_transport(&self, listen: SocketAddr) -> Result<(), ConfigError> {
        match (&self.tls, self.insecure_plaintext) {
            (Some(_), true) => Err(self.invalid(
                "insecure_plaintext",
                "cannot be set together with [tls]; remove one of them",
            )),
            (None, false) if !listen.ip().is_loopback() => Err(self.invalid(
                "listen",
                format!(
                    "{listen} is not a loopback address and no [tls] is configured: peers and operators would be \
                     unauthenticated. Configure [tls] (certificates from `vantage tls`), or set \
                     insecure_plaintext = true to accept that"
                ),
            )),
            _ => Ok(()),
        }
    }

    /// The node's TLS material, checked: readable, a key only its owner can
    /// read, and a certificate naming this very node.
    pub fn tls_material(&self) -> Result<Option<std::sync::Arc<crate::tls::Tls>>, ConfigError> {
        let Some(t) = &self.tls else { return Ok(None) };
        let tls = crate::tls::Tls::load(t.files()).map_err(|e| self.invalid("tls", e.to_string()))?;
        match tls.identity() {
            crate::tls::Identity::Node(id) if id == self.node_id => Ok(Some(tls)),
            other => Err(self.invalid(
                "tls.cert",
                format!(
                    "{} names {other}, but this is node {}; issue it with `vantage tls node --id {}`",
                    t.cert.display(),
                    self.node_id,
                    self.node_id
                ),
            )),
        }
    }
}
