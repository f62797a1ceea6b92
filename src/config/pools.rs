//! Pools and their endpoints as written: the hostnames they serve and what
//! their endpoints share.

use serde::Deserialize;

use super::probe::CheckConfig;
use super::Dur;

/// One monitored endpoint as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// IPv4 or IPv6 address; also the A/AAAA record content.
    pub address: String,
    /// Overrides the pool's check.
    #[serde(default)]
    pub check: Option<CheckConfig>,
}

/// A pool: endpoints that serve the same hostnames.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Unique name; part of every endpoint id (`pool/address`).
    pub name: String,
    /// DNS names whose A/AAAA records point at these endpoints.
    #[serde(default)]
    pub hostnames: Vec<String>,
    #[serde(default)]
    pub interval: Option<Dur>,
    #[serde(default)]
    pub timeout: Option<Dur>,
    #[serde(default)]
    pub fall: Option<u32>,
    #[serde(default)]
    pub rise: Option<u32>,
    /// A probe slower than this fails (overrides `probe.max_rtt`).
    #[serde(default)]
    pub max_rtt: Option<Dur>,
    /// Overrides `probe.recheck_interval`.
    #[serde(default)]
    pub recheck_interval: Option<Dur>,
    /// Overrides `probe.min_confirm`.
    #[serde(default)]
    pub min_confirm: Option<Dur>,
    /// Default check of the pool's endpoints.
    #[serde(default)]
    pub check: Option<CheckConfig>,
    /// Endpoints kept in DNS even when more are decided down (the healthiest).
    #[serde(default)]
    pub min_healthy: u32,
    /// `"regions"`: decide by regions (a majority of regions, each by a
    /// majority of its counted agents) instead of by a count of agents.
    #[serde(default)]
    pub quorum: Option<String>,
    pub endpoints: Vec<EndpointConfig>,
}
