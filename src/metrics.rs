//! Prometheus metrics (OpenMetrics text, served at `/metrics` by [`crate::http`]).
//!
//! Two kinds, encoded into one answer:
//!
//! - what happened on this node since it started (probes run, provider
//!   requests, abandoned batches, leader changes, notifications): counters
//!   and histograms in [`Instruments`], bumped where the work is done;
//! - what is true now (local views, decisions, DNS placement, report ages,
//!   Raft progress, alarms): read from the replicated state at scrape time by
//!   [`scrape`], so a gauge can never disagree with `vantage endpoints`.
//!
//! Every label set is bounded: endpoints and agents come from the catalog and
//! the membership, everything else from a fixed list. Names follow the
//! Prometheus conventions: the `vantage_` prefix, base units (seconds),
//! `_total` on counters.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::agent::Agent;
use crate::detect::Health;
use crate::model::Decision;
use crate::probe::LocalView;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeLabels {
    pub endpoint: String,
    /// `success` or `failure`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// `icmp`, `tcp` or `http`.
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DnsLabels {
    /// `list` or `apply`.
    pub operation: &'static str,
    /// `ok`, `failed` (some changes not applied), `refused` (credentials or
    /// zone) or `error` (transient, or an unknown outcome).
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabel {
    pub operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotifyLabels {
    pub notifier: String,
    /// `delivered`, `retried` or `rejected` (a permanent refusal, not retried).
    pub outcome: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn probe_buckets() -> Histogram {
    // 0.5 ms to ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

fn dns_buckets() -> Histogram {
    // 5 ms to ~40 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// What happened on this node: bumped where the work is done.
pub struct Instruments {
    pub probes: Family<ProbeLabels, Counter>,
    pub probe_seconds: Histograms<KindLabel>,
    pub dns_requests: Family<DnsLabels, Counter>,
    pub dns_seconds: Histograms<OperationLabel>,
    pub dns_rate_limited: Counter,
    pub dns_abandoned: Counter,
    /// Unix time of this node's last reconcile round that left the provider
    /// holding the decided set (0 until one did).
    pub dns_last_success: Gauge<f64, AtomicU64>,
    pub leader_changes: Counter,
    pub notifications: Family<NotifyLabels, Counter>,
    pub http_requests: Counter,
}

impl Default for Instruments {
    fn default() -> Self {
        Instruments {
            probes: Family::default(),
            probe_seconds: Family::new_with_constructor(probe_buckets),
            dns_requests: Family::default(),
            dns_seconds: Family::new_with_constructor(dns_buckets),
            dns_rate_limited: Counter::default(),
            dns_abandoned: Counter::default(),
            dns_last_success: Gauge::default(),
            leader_changes: Counter::default(),
            notifications: Family::default(),
            http_requests: Counter::default(),
        }
    }
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Instruments {
    /// One probe of `endpoint` finished.
    pub fn probed(&self, endpoint: &str, kind: &'static str, ok: bool, seconds: f64) {
        let outcome = if ok { "success" } else { "failure" };
        self.probes
            .get_or_create(&ProbeLabels {
                endpoint: endpoint.to_string(),
                outcome,
            })
            .inc();
        self.probe_seconds.get_or_create(&KindLabel { kind }).observe(seconds);
    }

    /// `endpoint` is no longer probed: its series go.
    pub fn forget_endpoint(&self, endpoint: &str) {
        for outcome in ["success", "failure"] {
            self.probes.remove(&ProbeLabels {
                endpoint: endpoint.to_string(),
                outcome,
            });
        }
    }

    /// One provider request finished.
    pub fn dns_request(&self, operation: &'static str, outcome: &'static str, seconds: f64) {
        self.dns_requests.get_or_create(&DnsLabels { operation, outcome }).inc();
        self.dns_seconds
            .get_or_create(&OperationLabel { operation })
            .observe(seconds);
    }

    pub fn notified(&self, notifier: &str, outcome: &'static str) {
        self.notifications
            .get_or_create(&NotifyLabels {
                notifier: notifier.to_string(),
                outcome,
            })
            .inc();
    }

    fn register(&self, r: &mut Registry) {
        r.register(
            "probes",
            "Probes this agent ran, by endpoint and outcome",
            self.probes.clone(),
        );
        r.register_with_unit(
            "probe_duration",
            "Time this agent's probes took, by check kind",
            Unit::Seconds,
            self.probe_seconds.clone(),
        );
        r.register(
            "dns_requests",
            "DNS provider operations this node made, by operation and outcome",
            self.dns_requests.clone(),
        );
        r.register_with_unit(
            "dns_request_duration",
            "Time a DNS provider operation took (retries included)",
            Unit::Seconds,
            self.dns_seconds.clone(),
        );
        r.register(
            "dns_rate_limited",
            "HTTP 429 answers from the DNS provider (each one waited out)",
            self.dns_rate_limited.clone(),
        );
        r.register(
            "dns_batches_abandoned",
            "DNS write batches given up because leadership could not be confirmed",
            self.dns_abandoned.clone(),
        );
        r.register_with_unit(
            "dns_last_reconcile_success_timestamp",
            "Unix time of this node's last reconcile that left the provider holding the decided set (0: never)",
            Unit::Seconds,
            self.dns_last_success.clone(),
        );
        r.register(
            "raft_leader_changes",
            "Times the leader this node knows of changed",
            self.leader_changes.clone(),
        );
        r.register(
            "notifications",
            "Notification deliveries, by notifier and outcome",
            self.notifications.clone(),
        );
        r.register(
            "http_requests",
            "Requests served on the [http] listener",
            self.http_requests.clone(),
        );
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointStatus {
    endpoint: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabel {
    endpoint: String,
    pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgentLabel {
    agent: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabel {
    role: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlarmLabel {
    alarm: &'static str,
}

const HEALTH: [(Health, &str); 3] = [(Health::Up, "up"), (Health::Down, "down"), (Health::Unknown, "unknown")];
const DECISIONS: [(Decision, &str); 3] = [
    (Decision::Up, "up"),
    (Decision::Down, "down"),
    (Decision::Unknown, "unknown"),
];
const ROLES: [&str; 5] = ["Leader", "Follower", "Candidate", "Learner", "Shutdown"];

/// Alarms a rule can fire on, each 0 or 1.
pub const ALARMS: [&str; 6] = [
    "panic_freeze",
    "fail_open",
    "catalog_drift",
    "dns_write_failed",
    "dns_refused",
    "dns_paused",
];

/// What is true now, read once from the agent and its state.
struct Now {
    local: Vec<(String, Health, bool)>,
    decisions: Vec<(String, String, Decision, bool)>,
    agents: Vec<(u64, f64, bool)>,
    alarms: BTreeMap<&'static str, bool>,
    catalog_version: u64,
}

async fn read_now(agent: &Agent, local: &LocalView) -> Now {
    let local: Vec<(String, Health, bool)> = local
        .read()
        .map(|v| {
            v.iter()
                .map(|(id, e)| (id.clone(), e.state, e.warning.is_some()))
                .collect()
        })
        .unwrap_or_default();
    let mine = agent.local_catalog();
    let mine_hash = mine.as_ref().map(|c| c.content_digest());
    agent
        .read(|sm| {
            let app = &sm.app;
            let decisions = app
                .endpoints
                .iter()
                .map(|(id, e)| (id.clone(), e.pool.clone(), e.decision, e.in_dns))
                .collect();
            let agents = app
                .agents
                .iter()
                .map(|(id, a)| {
                    let age = app.log_time_ms.saturating_sub(a.last_seen_ms) as f64 / 1000.0;
                    (*id, age, a.abstain)
                })
                .collect();
            let committed_hash = app.catalog.as_ref().map(|c| c.content_digest());
            let failed = app.last_dns.as_ref().filter(|d| !d.ok && !d.dry_run);
            let alarms = BTreeMap::from([
                ("panic_freeze", app.panic.is_some()),
                (
                    "fail_open",
                    app.endpoints
                        .values()
                        .any(|e| e.decision == Decision::Down && e.in_dns && e.drained.is_none()),
                ),
                (
                    "catalog_drift",
                    mine_hash.is_some() && committed_hash.is_some() && mine_hash != committed_hash,
                ),
                ("dns_write_failed", failed.is_some()),
                ("dns_refused", failed.is_some_and(|d| d.refused)),
                ("dns_paused", app.dns_paused.is_some()),
            ]);
            Now {
                local,
                decisions,
                agents,
                alarms,
                catalog_version: app.catalog.as_ref().map(|c| c.version).unwrap_or(0),
            }
        })
        .await
}

fn gauge(v: i64) -> Gauge {
    let g = Gauge::default();
    g.set(v);
    g
}

/// The whole `/metrics` answer: this node's instruments, then what is true now.
pub async fn scrape(agent: &Agent, local: &LocalView) -> String {
    let now = read_now(agent, local).await;
    let mut r = Registry::with_prefix("vantage");
    agent.instruments().register(&mut r);

    let local_state = Family::<EndpointStatus, Gauge>::default();
    let warning = Family::<EndpointLabel, Gauge>::default();
    for (id, health, warned) in &now.local {
        let pool = id.split_once('/').map(|(p, _)| p).unwrap_or("").to_string();
        warning
            .get_or_create(&EndpointLabel {
                endpoint: id.clone(),
                pool,
            })
            .set(i64::from(*warned));
        for (h, name) in HEALTH {
            local_state
                .get_or_create(&EndpointStatus {
                    endpoint: id.clone(),
                    status: name,
                })
                .set(i64::from(*health == h));
        }
    }
    r.register(
        "endpoint_local_status",
        "This agent's own view of each endpoint it probes (1 for the current status)",
        local_state,
    );
    r.register(
        "endpoint_warning",
        "1 while this agent's last probe warned without failing (a certificate expiring within cert_expiry_warn)",
        warning,
    );
    let decision = Family::<EndpointStatus, Gauge>::default();
    let in_dns = Family::<EndpointLabel, Gauge>::default();
    for (id, pool, d, dns) in &now.decisions {
        for (x, name) in DECISIONS {
            decision
                .get_or_create(&EndpointStatus {
                    endpoint: id.clone(),
                    status: name,
                })
                .set(i64::from(*d == x));
        }
        in_dns
            .get_or_create(&EndpointLabel {
                endpoint: id.clone(),
                pool: pool.clone(),
            })
            .set(i64::from(*dns));
    }
    r.register(
        "endpoint_decision",
        "The cluster's replicated decision per endpoint (1 for the current one)",
        decision,
    );
    r.register(
        "endpoint_in_dns",
        "Whether the endpoint's records belong in DNS (1) or are held out (0)",
        in_dns,
    );
    let age = Family::<AgentLabel, Gauge<f64, AtomicU64>>::default();
    let abstaining = Family::<AgentLabel, Gauge>::default();
    for (id, secs, abstain) in &now.agents {
        let label = AgentLabel { agent: id.to_string() };
        age.get_or_create(&label).set(*secs);
        abstaining.get_or_create(&label).set(i64::from(*abstain));
    }
    r.register_with_unit(
        "agent_report_age",
        "Log time since each agent's latest report (heartbeat or transition) was applied",
        Unit::Seconds,
        age,
    );
    r.register(
        "agent_abstaining",
        "Whether the agent abstains because its own network is suspect",
        abstaining,
    );

    let m = agent.metrics();
    let role = Family::<RoleLabel, Gauge>::default();
    for name in ROLES {
        role.get_or_create(&RoleLabel { role: name })
            .set(i64::from(crate::grpc::role_name(m.state) == name));
    }
    r.register("raft_role", "This node's Raft role (1 for the current one)", role);
    let to_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    r.register(
        "raft_term",
        "This node's current Raft term",
        gauge(to_i64(m.current_term)),
    );
    r.register(
        "raft_commit_index",
        "Highest log index this node knows committed",
        gauge(to_i64(agent.committed_index())),
    );
    r.register(
        "raft_applied_index",
        "Highest log index this node applied",
        gauge(to_i64(m.last_applied.map(|l| l.index).unwrap_or(0))),
    );
    r.register(
        "raft_last_log_index",
        "Highest log index this node holds",
        gauge(to_i64(m.last_log_index.unwrap_or(0))),
    );
    r.register(
        "raft_leader",
        "Node id of the leader this node knows (0: none)",
        gauge(to_i64(m.current_leader.unwrap_or(0))),
    );
    let (members, voters) = agent.members();
    r.register(
        "raft_members",
        "Members in this node's membership",
        gauge(members.len() as i64),
    );
    r.register(
        "raft_voters",
        "Voters in this node's membership",
        gauge(voters.len() as i64),
    );
    r.register(
        "catalog_version",
        "Version of the committed catalog (0: none)",
        gauge(to_i64(now.catalog_version)),
    );
    let alarms = Family::<AlarmLabel, Gauge>::default();
    for (name, on) in &now.alarms {
        alarms.get_or_create(&AlarmLabel { alarm: name }).set(i64::from(*on));
    }
    r.register("alarm", "Conditions an operator must see (1: raised)", alarms);

    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = encode_registry(&mut out, &r);
    let _ = encode_eof(&mut out);
    out
}

/// Counts changes of the leader this node knows, until the agent stops.
pub async fn count_leader_changes(agent: Arc<Agent>) {
    let mut watch = agent.role_watch();
    let mut last = watch.borrow().current_leader;
    while watch.changed().await.is_ok() {
        let now = watch.borrow().current_leader;
        if now != last {
            if now.is_some() {
                agent.instruments().leader_changes.inc();
            }
            last = now;
        }
    }
}
