//! Mutual TLS: who is on the other end of a connection.
//!
//! Every certificate is issued by the cluster's CA and names its holder in a
//! SAN URI (design rule 10):
//!
//! - `vantage://CLUSTER/node/ID`: an agent; it may speak only for node ID on
//!   the internal service;
//! - `vantage://CLUSTER/operator/NAME`: an operator; every admin call;
//! - `vantage://CLUSTER/reader/NAME`: status, endpoints, history and watch.
//!
//! The agent's own certificate names the cluster; a peer of another cluster,
//! even one signed by the same CA, is not a member. The files are re-read
//! when they change, so a rotated key or CA bundle takes effect without a
//! restart (new connections use the new files; see [`Tls::watch`]).

pub(crate) mod expiry;
pub mod issue;
mod verify;

pub use expiry::not_after;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::model::NodeId;

/// A certificate that expires within this many days is an alarm.
pub const EXPIRY_WARNING_DAYS: u64 = 30;

/// The URI scheme of Vantage identities.
pub const SCHEME: &str = "vantage://";

/// What a client certificate may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Status, endpoints, history, watch.
    Reader,
    /// Everything a reader may, and every change: bootstrap, join, remove, notes, plan.
    Operator,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Operator => "operator",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "reader" => Some(Role::Reader),
            "operator" => Some(Role::Operator),
            _ => None,
        }
    }
}

/// Who a certificate names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    Node(NodeId),
    Client { name: String, role: Role },
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::Node(id) => write!(f, "node {id}"),
            Identity::Client { name, role } => write!(f, "{} {name}", role.as_str()),
        }
    }
}

/// The SAN URI naming `who` in `cluster`.
pub fn uri(cluster: &str, who: &Identity) -> String {
    match who {
        Identity::Node(id) => format!("{SCHEME}{cluster}/node/{id}"),
        Identity::Client { name, role } => format!("{SCHEME}{cluster}/{}/{name}", role.as_str()),
    }
}

/// Parses one SAN URI into its cluster and identity.
pub fn parse_uri(uri: &str) -> Option<(String, Identity)> {
    let rest = uri.strip_prefix(SCHEME)?;
    let mut parts = rest.split('/');
    let (cluster, kind, name) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || cluster.is_empty() || name.is_empty() {
        return None;
    }
    let who = match kind {
        "node" => Identity::Node(name.parse().ok().filter(|id| *id != 0)?),
        other => Identity::Client {
            name: name.to_string(),
            role: Role::parse(other)?,
        },
    };
    Some((cluster.to_string(), who))
}

/// The Vantage identities a certificate carries, with their clusters.
pub fn identities(cert: &CertificateDer<'_>) -> Vec<(String, Identity)> {
    match webpki::EndEntityCert::try_from(cert) {
        Ok(ee) => ee.valid_uri_names().filter_map(parse_uri).collect(),
        Err(_) => Vec::new(),
    }
}

/// The identity a peer's certificate gives it in `cluster`, if exactly one.
pub fn identity_in(cert: &CertificateDer<'_>, cluster: &str) -> Option<Identity> {
    let mut mine = identities(cert)
        .into_iter()
        .filter(|(c, _)| c == cluster)
        .map(|(_, i)| i);
    let first = mine.next()?;
    mine.next().is_none().then_some(first)
}

/// A TLS setup problem, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{file}: cannot read: {source}")]
    Read { file: String, source: std::io::Error },
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        file: path.display().to_string(),
        source,
    })
}

fn invalid(path: &Path, message: impl Into<String>) -> TlsError {
    TlsError::Invalid {
        file: path.display().to_string(),
        message: message.into(),
    }
}

/// Reads every certificate of a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(path, "holds no certificate"));
    }
    Ok(certs)
}

/// Reads the private key of a PEM file; refuses one other users can read.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    crate::secret::check_private(path).map_err(|m| invalid(path, m))?;
    let pem = read(path)?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| invalid(path, format!("not a PEM private key file: {e}")))?
        .ok_or_else(|| invalid(path, "holds no private key"))
}

fn roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for c in load_certs(path)? {
        store
            .add(c)
            .map_err(|e| invalid(path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(Arc::new(store))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Where a node's or client's certificate, key and CA bundle are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The cluster CA bundle (one or more CA certificates, for rotation).
    pub ca: PathBuf,
    /// This holder's certificate (chain), PEM.
    pub cert: PathBuf,
    /// This holder's private key, PEM, mode 0600.
    pub key: PathBuf,
}

/// What the files say, ready for rustls.
struct Loaded {
    cluster: String,
    identity: Identity,
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    /// HTTP/1.1 for the `[http]` listener: asking for a client certificate, and not.
    http_mutual: Arc<ServerConfig>,
    http_open: Arc<ServerConfig>,
    /// Modification times of the three files when they were read.
    stamps: [Option<SystemTime>; 3],
    /// When this holder's certificate expires.
    not_after: Option<SystemTime>,
}

fn stamps(f: &TlsFiles) -> [Option<SystemTime>; 3] {
    [&f.ca, &f.cert, &f.key].map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
}

fn h2(mut alpn: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    alpn.push(b"h2".to_vec());
    alpn
}

impl Loaded {
    fn read(files: &TlsFiles) -> Result<Loaded, TlsError> {
        let stamps = stamps(files);
        let roots = roots(&files.ca)?;
        let chain = load_certs(&files.cert)?;
        let key = load_key(&files.key)?;
        let not_after = expiry::not_after(&chain[0]);
        let mine = identities(&chain[0]);
        let (cluster, identity) =
            match mine.as_slice() {
                [one] => one.clone(),
                [] => return Err(invalid(
                    &files.cert,
                    "names no Vantage identity (a SAN URI like vantage://CLUSTER/node/ID); issue it with `vantage tls`",
                )),
                _ => return Err(invalid(&files.cert, "names more than one Vantage identity")),
            };
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| invalid(&files.ca, format!("cannot verify clients with it: {e}")))?;
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(&files.cert, e.to_string()))?
            .with_client_cert_verifier(verifier.clone())
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| invalid(&files.key, format!("does not match the certificate: {e}")))?;
        let mut http_mutual = server.clone();
        server.alpn_protocols = h2(Vec::new());
        http_mutual.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut http_open = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(&files.cert, e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| invalid(&files.key, format!("does not match the certificate: {e}")))?;
        http_open.alpn_protocols = vec![b"http/1.1".to_vec()];
        let verifier = verify::NodeVerifier::new(roots, provider(), cluster.clone());
        let mut client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(&files.cert, e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_auth_cert(chain, key)
            .map_err(|e| invalid(&files.key, format!("does not match the certificate: {e}")))?;
        client.alpn_protocols = h2(Vec::new());
        Ok(Loaded {
            cluster,
            identity,
            server: Arc::new(server),
            client: Arc::new(client),
            http_mutual: Arc::new(http_mutual),
            http_open: Arc::new(http_open),
            stamps,
            not_after,
        })
    }
}

/// A holder's TLS material, re-read when the files change.
pub struct Tls {
    files: TlsFiles,
    current: RwLock<Loaded>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

impl Tls {
    /// Reads the files; every problem names the file.
    pub fn load(files: TlsFiles) -> Result<Arc<Tls>, TlsError> {
        let current = Loaded::read(&files)?;
        Ok(Arc::new(Tls {
            files,
            current: RwLock::new(current),
        }))
    }

    fn now(&self) -> std::sync::RwLockReadGuard<'_, Loaded> {
        self.current.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The cluster this holder's certificate names.
    pub fn cluster(&self) -> String {
        self.now().cluster.clone()
    }

    /// Who this holder's certificate says it is.
    pub fn identity(&self) -> Identity {
        self.now().identity.clone()
    }

    /// A warning when this holder's certificate expires within `days`
    /// (or is expired), naming the file and the date.
    pub fn expiry_warning(&self, days: u64) -> Option<String> {
        let at = self.now().not_after?;
        let left = at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO);
        if left > Duration::from_secs(days * 86_400) {
            return None;
        }
        let when = humantime::format_rfc3339_seconds(at);
        Some(if left.is_zero() {
            format!("TLS certificate {} expired at {when}", self.files.cert.display())
        } else {
            format!(
                "TLS certificate {} expires in {} days, at {when}; issue a new one with `vantage tls`",
                self.files.cert.display(),
                left.as_secs() / 86_400
            )
        })
    }

    /// The server side of the current files.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.now().server.clone()
    }

    /// The `[http]` listener's side of the current files (HTTP/1.1), asking
    /// for a client certificate of the cluster CA or not.
    pub fn http_server_config(&self, client_cert: bool) -> Arc<ServerConfig> {
        let now = self.now();
        if client_cert {
            now.http_mutual.clone()
        } else {
            now.http_open.clone()
        }
    }

    /// The client side of the current files.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.now().client.clone()
    }

    /// Re-reads the files if one changed. A change that does not load keeps
    /// the current material and says why; one that names another identity is
    /// refused too (a node's id and cluster do not change under it).
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        if stamps(&self.files) == self.now().stamps {
            return Ok(false);
        }
        let fresh = Loaded::read(&self.files)?;
        let (cluster, identity) = (self.cluster(), self.identity());
        if fresh.cluster != cluster || fresh.identity != identity {
            return Err(invalid(
                &self.files.cert,
                format!(
                    "the new certificate names {} of cluster {}, not {identity} of cluster {cluster}; keeping the old one",
                    fresh.identity, fresh.cluster
                ),
            ));
        }
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(true)
    }

    /// Re-reads the files whenever they change, checking every `every`.
    pub async fn watch(self: Arc<Self>, every: Duration) {
        if let Some(w) = self.expiry_warning(EXPIRY_WARNING_DAYS) {
            tracing::warn!("{w}");
        }
        loop {
            tokio::time::sleep(every).await;
            match self.reload_if_changed() {
                Ok(true) => {
                    tracing::info!(cert = %self.files.cert.display(), "TLS files changed: reloaded");
                    if let Some(w) = self.expiry_warning(EXPIRY_WARNING_DAYS) {
                        tracing::warn!("{w}");
                    }
                }
                Ok(false) => {}
                Err(e) => tracing::error!("TLS files changed but cannot be used: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_uris_round_trip_and_reject_odd_shapes() {
        let cases = [
            Identity::Node(3),
            Identity::Client {
                name: "alice".into(),
                role: Role::Operator,
            },
            Identity::Client {
                name: "grafana".into(),
                role: Role::Reader,
            },
        ];
        for who in cases {
            let u = uri("prod", &who);
            assert_eq!(parse_uri(&u), Some(("prod".to_string(), who)), "{u}");
        }
        for bad in [
            "vantage://prod/node/0",
            "vantage://prod/node/x",
            "vantage://prod/admin/alice",
            "vantage://prod/node",
            "vantage:///node/1",
            "vantage://prod/node/1/extra",
            "https://prod/node/1",
        ] {
            assert_eq!(parse_uri(bad), None, "{bad}");
        }
    }
}
