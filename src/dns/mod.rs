//! DNS providers: where the decided record set is written.
//!
//! A provider lists the records this configuration owns and applies changes,
//! reporting an outcome per change. Only owned records (a configured hostname
//! × a configured endpoint address, type A or AAAA) are ever listed, created
//! or deleted; everything else in the zone is left alone.

pub mod cloudflare;
pub mod memory;
pub mod rfc2136;
pub mod route53;
pub mod zonefile;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use crate::model::{Record, RecordType};

/// A record as a provider holds it, with the provider's id for it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Existing {
    pub record: Record,
    pub id: String,
}

/// One change to apply.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Change {
    Create(Record),
    Delete(Existing),
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Create(r) => write!(f, "create {r}"),
            Change::Delete(e) => write!(f, "delete {} (id {})", e.record, e.id),
        }
    }
}

/// What happened to one change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Done (including "already exists" on create, "does not exist" on delete).
    Applied,
    /// Refused for good (e.g. validation); retrying will not help.
    Failed(String),
    /// Unknown: the answer was lost; the next listing tells.
    Unknown(String),
}

/// The records this configuration may touch: per hostname, the allowed addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Owned {
    pub names: BTreeMap<String, BTreeSet<String>>,
}

impl Owned {
    /// Whether `r` is one of ours (name and address both configured).
    pub fn owns(&self, r: &Record) -> bool {
        self.names.get(&r.name).is_some_and(|a| a.contains(&r.content)) && RecordType::of(&r.content) == r.rtype
    }
}

/// A provider failure for a whole call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// Worth retrying later (rate limit, 5xx, timeout, connection).
    #[error("temporary provider failure: {0}")]
    Transient(String),
    /// Retrying will not help until someone fixes something (auth, config).
    #[error("provider refused: {0}")]
    Permanent(String),
}

/// A DNS provider.
#[tonic::async_trait]
pub trait Provider: Send + Sync + 'static {
    /// Short name for logs and the audit history, e.g. `cloudflare zone example.com`.
    fn describe(&self) -> String;

    /// Every record the provider holds that `owned` covers. A failure is an
    /// error, never an empty list.
    async fn list(&self, owned: &Owned) -> Result<Vec<Existing>, ProviderError>;

    /// Applies `changes` (deletes first, then creates) and reports each one's outcome.
    async fn apply(&self, changes: &[Change]) -> Result<Vec<(Change, Outcome)>, ProviderError>;

    /// Tells the provider which node writes, in which term (sent along where
    /// the provider can carry it, for the audit trail on the provider's side).
    fn set_context(&self, _node: u64, _term: u64) {}

    /// Rate-limit answers (HTTP 429, throttling) this provider waited out since it was built.
    fn rate_limited(&self) -> u64 {
        0
    }

    /// What the last `apply` learned beyond the outcomes (Route 53: when the
    /// change was in sync), for the DNS audit entry; taken once.
    fn write_note(&self) -> Option<String> {
        None
    }
}

/// The files the provider's credentials are read from (watched for a change).
pub fn credential_files(config: &crate::config::Config) -> Vec<std::path::PathBuf> {
    match &config.dns.provider {
        crate::config::ProviderConfig::Cloudflare(c) => c.token_file.iter().cloned().collect(),
        crate::config::ProviderConfig::Route53(r) => r.credentials_file.iter().cloned().collect(),
        crate::config::ProviderConfig::Rfc2136(r) => r.tsig_secret_file.iter().cloned().collect(),
        _ => Vec::new(),
    }
}

/// The provider the configuration names, or None for `provider = "none"`.
/// The configuration was validated when it was loaded; what can still fail
/// here is reading the credentials.
pub fn from_config(config: &crate::config::Config) -> Result<Option<Arc<dyn Provider>>, String> {
    use crate::config::ProviderConfig;
    match &config.dns.provider {
        ProviderConfig::None => Ok(None),
        ProviderConfig::Memory => Ok(Some(Arc::new(memory::Memory::default()))),
        ProviderConfig::ZoneFile(z) => {
            let origin = z.origin.trim_end_matches('.').to_ascii_lowercase();
            Ok(Some(Arc::new(zonefile::ZoneFile::new(zonefile::ZoneSettings {
                path: z.path.clone(),
                hostmaster: z.hostmaster.clone().unwrap_or_else(|| format!("hostmaster.{origin}")),
                nameservers: if z.nameservers.is_empty() {
                    vec!["localhost".into()]
                } else {
                    z.nameservers.clone()
                },
                origin,
                ttl: z.ttl,
                static_records: z.static_records.clone(),
            }))))
        }
        ProviderConfig::Rfc2136(r) => {
            let fail = |m: String| format!("{}: dns.rfc2136: {m}", config.source);
            let text = match (&r.tsig_secret_file, &r.tsig_secret_env) {
                (Some(f), _) => crate::config::read_secret(f).map_err(|m| fail(format!("tsig_secret_file: {m}")))?,
                (None, Some(v)) => {
                    std::env::var(v).map_err(|_| fail(format!("tsig_secret_env: the variable {v} is not set")))?
                }
                (None, None) => return Err(fail("give tsig_secret_file or tsig_secret_env".into())),
            };
            let secret = data_encoding::BASE64
                .decode(text.trim().as_bytes())
                .map_err(|e| fail(format!("the TSIG secret is not base64 (as tsig-keygen writes it): {e}")))?;
            let server = r.server.parse().map_err(|_| {
                fail(format!(
                    "server: expected an address like \"192.0.2.53:53\", got {:?}",
                    r.server
                ))
            })?;
            let client = rfc2136::Rfc2136::new(rfc2136::Rfc2136Config {
                server,
                zone: r.zone.trim_end_matches('.').to_ascii_lowercase(),
                key_name: r.tsig_key_name.clone(),
                algorithm: r.tsig_algorithm.clone(),
                secret,
                ttl: r.ttl,
                timeout: r.timeout.0,
            })
            .map_err(fail)?;
            Ok(Some(Arc::new(client)))
        }
        ProviderConfig::Route53(r) => {
            let mut cfg = route53::Route53Config::new(&r.zone);
            cfg.zone_id = r.zone_id.clone();
            cfg.private_zone = r.private_zone;
            cfg.ttl = r.ttl;
            cfg.endpoint = r.endpoint.clone();
            cfg.region = r.region.clone();
            cfg.sources.profile = r.profile.clone();
            cfg.sources.file = r.credentials_file.clone();
            cfg.sources.imds = r.instance_metadata;
            cfg.request_timeout = r.request_timeout.0;
            cfg.max_attempts = r.max_attempts;
            cfg.insync_timeout = (!r.insync_timeout.0.is_zero()).then_some(r.insync_timeout.0);
            let client = route53::Route53::new(cfg).map_err(|e| format!("{}: dns.route53: {e}", config.source))?;
            Ok(Some(Arc::new(client)))
        }
        ProviderConfig::Cloudflare(c) => {
            // CLOUDFLARE_API_TOKEN unless the configuration names another source.
            let default_env = c.token_file.is_none() && c.email_env.is_none() && c.key_env.is_none();
            let token_env = c
                .token_env
                .as_deref()
                .or(default_env.then_some(cloudflare::DEFAULT_TOKEN_ENV));
            let credentials = cloudflare::Credentials::from_env_or_file(
                token_env,
                c.token_file.as_deref(),
                c.email_env.as_deref(),
                c.key_env.as_deref(),
            )
            .map_err(|e| format!("{}: dns.cloudflare: {e}", config.source))?;
            let mut cfg = cloudflare::CloudflareConfig::new(c.zone.clone(), credentials);
            cfg.api_base = c.api_base.clone();
            cfg.zone_id = c.zone_id.clone();
            cfg.proxied = c.proxied;
            cfg.ttl = c.ttl;
            cfg.comment = c.comment.clone();
            cfg.batch_limit = c.batch_limit;
            cfg.use_batch = c.use_batch;
            cfg.request_timeout = c.request_timeout.0;
            cfg.rate_limit = (c.rate_limit, c.rate_window.0);
            cfg.max_attempts = c.max_attempts;
            let client =
                cloudflare::Cloudflare::new(cfg).map_err(|e| format!("{}: dns.cloudflare: {e}", config.source))?;
            Ok(Some(Arc::new(client)))
        }
    }
}

/// The changes that turn `actual` into `desired`, touching owned records only.
/// Duplicates of a desired record beyond the first are deleted too.
pub fn diff(desired: &BTreeSet<Record>, actual: &[Existing], owned: &Owned) -> Vec<Change> {
    let mut seen: BTreeSet<&Record> = BTreeSet::new();
    let mut changes = Vec::new();
    let mut sorted: Vec<&Existing> = actual.iter().filter(|e| owned.owns(&e.record)).collect();
    sorted.sort();
    for e in sorted {
        if !desired.contains(&e.record) || !seen.insert(&e.record) {
            changes.push(Change::Delete(e.clone()));
        }
    }
    for r in desired {
        if owned.owns(r) && !actual.iter().any(|e| &e.record == r) {
            changes.push(Change::Create(r.clone()));
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(name: &str, content: &str) -> Record {
        Record::new(name, content)
    }

    fn ex(id: &str, name: &str, content: &str) -> Existing {
        Existing {
            record: rec(name, content),
            id: id.into(),
        }
    }

    #[test]
    fn diff_touches_only_owned_records_and_removes_duplicates() {
        let mut owned = Owned::default();
        owned.names.insert(
            "www.example.com".into(),
            ["10.0.0.1", "10.0.0.2", "2001:db8::1"].map(String::from).into(),
        );
        let desired: BTreeSet<Record> = [
            rec("www.example.com", "10.0.0.1"),
            rec("www.example.com", "2001:db8::1"),
        ]
        .into();
        let actual = vec![
            ex("a", "www.example.com", "10.0.0.1"),
            ex("b", "www.example.com", "10.0.0.1"),
            ex("c", "www.example.com", "10.0.0.2"),
            ex("d", "www.example.com", "192.0.2.9"),
            ex("e", "mail.example.com", "10.0.0.2"),
        ];
        let changes = diff(&desired, &actual, &owned);
        assert_eq!(
            changes,
            vec![
                Change::Delete(ex("b", "www.example.com", "10.0.0.1")),
                Change::Delete(ex("c", "www.example.com", "10.0.0.2")),
                Change::Create(rec("www.example.com", "2001:db8::1")),
            ]
        );
    }
}
