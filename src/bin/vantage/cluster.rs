//! The `cluster` commands (bootstrap, status, join, remove, note) and the
//! connection helpers every client command shares.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use tonic::transport::Channel;
use vantage::config::Config;
use vantage::network::Connector;
use vantage::proto::v1::cluster_client::ClusterClient;
use vantage::proto::v1::{
    AddNodeRequest, ApplyCatalogRequest, BootstrapRequest, ClusterStatus, DrainRequest, ExplainRequest,
    GetStatusRequest, Member, MembershipResponse, OverrideResponse, PauseDnsRequest, ProposeNoteRequest,
    RemoveNodeRequest, UndrainRequest,
};
use vantage::tls::{Tls, TlsFiles};

use crate::args::{ClientTls, ClusterCmd};
use crate::render::{fmt_time, render_members, render_status};
use crate::Failure;

pub fn load(path: &Path) -> Result<Config, Failure> {
    Config::load(path).map_err(|e| Failure::usage(e.to_string()))
}

/// The client certificate every command presents, set once by `main`.
static CLIENT_TLS: OnceLock<Option<Arc<Tls>>> = OnceLock::new();

/// Loads the operator's certificate named by `--ca/--cert/--key` (or the
/// environment); all three or none.
pub fn set_client_tls(t: &ClientTls) -> Result<(), Failure> {
    let tls =
        match (&t.ca, &t.cert, &t.key) {
            (None, None, None) => None,
            (Some(ca), Some(cert), Some(key)) => Some(
                Tls::load(TlsFiles {
                    ca: ca.clone(),
                    cert: cert.clone(),
                    key: key.clone(),
                })
                .map_err(|e| Failure::usage(e.to_string()))?,
            ),
            _ => return Err(Failure::usage(
                "--ca, --cert and --key (or VANTAGE_CA, VANTAGE_CERT, VANTAGE_KEY) go together: give all three or none",
            )),
        };
    let _ = CLIENT_TLS.set(tls);
    Ok(())
}

fn connector() -> Connector {
    Connector::new(Duration::from_secs(2), 64 * 1024 * 1024).with_tls(CLIENT_TLS.get().cloned().flatten())
}

pub fn channel(addr: &str) -> Result<Channel, Failure> {
    connector()
        .channel(addr)
        .map_err(|e| Failure::usage(format!("--addr: {e}")))
}

pub fn service_client(addr: &str) -> Result<ClusterClient<Channel>, Failure> {
    connector()
        .cluster_client(addr)
        .map_err(|e| Failure::usage(format!("--addr: {e}")))
}

pub fn rpc_failure(addr: &str, s: tonic::Status) -> Failure {
    Failure::runtime(format!("{addr}: {:?}: {}", s.code(), s.message()))
}

pub fn print_json<T: Serialize>(v: &T) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(v).map_err(|e| Failure::runtime(e.to_string()))?;
    say!("{text}");
    Ok(())
}

pub async fn get_status(addr: &str, linearizable: bool) -> Result<ClusterStatus, Failure> {
    let mut c = service_client(addr)?;
    let mut req = tonic::Request::new(GetStatusRequest { linearizable });
    req.set_timeout(Duration::from_secs(10));
    c.get_status(req)
        .await
        .map(|r| r.into_inner())
        .map_err(|s| rpc_failure(addr, s))
}

pub async fn run(cmd: ClusterCmd) -> Result<(), Failure> {
    match cmd {
        ClusterCmd::Bootstrap { config, wait, json } => bootstrap(&config, wait.0, json).await,
        ClusterCmd::Status {
            addr,
            linearizable,
            json,
        } => {
            let s = get_status(&addr, linearizable).await?;
            if json {
                return print_json(&s);
            }
            // Replication progress is known only to the leader: show its view of the members.
            let leader_view = if s.role != "Leader" && !s.leader_addr.is_empty() {
                get_status(&s.leader_addr, false).await.ok()
            } else {
                None
            };
            say_part!("{}", render_status(&s, leader_view.as_ref()));
            Ok(())
        }
        ClusterCmd::Join {
            addr,
            id,
            node_addr,
            json,
        } => {
            let mut c = service_client(&addr)?;
            let r = c
                .add_node(AddNodeRequest { id, addr: node_addr })
                .await
                .map_err(|s| rpc_failure(&addr, s))?
                .into_inner();
            membership_out(&r, json)
        }
        ClusterCmd::Remove { addr, id, json } => {
            let mut c = service_client(&addr)?;
            let r = c
                .remove_node(RemoveNodeRequest { id })
                .await
                .map_err(|s| rpc_failure(&addr, s))?
                .into_inner();
            membership_out(&r, json)
        }
        ClusterCmd::Note { addr, text, json } => {
            let mut c = service_client(&addr)?;
            let r = c
                .propose_note(ProposeNoteRequest { text })
                .await
                .map_err(|s| rpc_failure(&addr, s))?
                .into_inner();
            if json {
                return print_json(&r);
            }
            say!(
                "committed at index {} (log time {})",
                r.log_index,
                fmt_time(r.log_time_ms)
            );
            Ok(())
        }
    }
}

fn override_out(
    addr: &str,
    r: Result<tonic::Response<OverrideResponse>, tonic::Status>,
    json: bool,
) -> Result<(), Failure> {
    let r = r.map_err(|s| rpc_failure(addr, s))?.into_inner();
    if json {
        print_json(&r)?;
    } else {
        say!("{}", r.message);
    }
    if r.applied {
        Ok(())
    } else {
        Err(Failure::runtime(format!("refused: {}", r.message)))
    }
}

/// `vantage explain`.
pub async fn explain(addr: &str, endpoint: String, json: bool) -> Result<(), Failure> {
    let r = service_client(addr)?
        .explain(ExplainRequest { endpoint })
        .await
        .map_err(|s| rpc_failure(addr, s))?
        .into_inner();
    let v: serde_json::Value = serde_json::from_str(&r.json).map_err(|e| Failure::runtime(e.to_string()))?;
    if json {
        return print_json(&v);
    }
    say_part!("{}", crate::render::render_explanation(&v));
    Ok(())
}

/// `vantage replay`.
pub async fn replay(addr: &str, req: vantage::proto::v1::ReplayRequest, json: bool) -> Result<(), Failure> {
    let r = service_client(addr)?
        .replay(req)
        .await
        .map_err(|s| rpc_failure(addr, s))?
        .into_inner();
    let v: serde_json::Value = serde_json::from_str(&r.json).map_err(|e| Failure::runtime(e.to_string()))?;
    if json {
        return print_json(&v);
    }
    let run = |k: &str| {
        format!(
            "{} decisions, {} DNS changes, {} panic freezes",
            v[k]["decisions"], v[k]["dns_changes"], v[k]["panics"]
        )
    };
    let tried: Vec<String> = v["settings"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, val)| !val.is_null())
        .map(|(k, val)| format!("{k} = {val}"))
        .collect();
    say!(
        "replayed {} entries kept by {addr} (log index {}..{})",
        v["entries"],
        v["from_index"],
        v["to_index"]
    );
    say!("  live settings:  {}", run("live"));
    say!(
        "  {}: {}",
        if tried.is_empty() {
            "the same settings".to_string()
        } else {
            tried.join(", ")
        },
        run("tried")
    );
    for d in v["first_differences"].as_array().into_iter().flatten() {
        say!("  {}", d.as_str().unwrap_or(""));
    }
    Ok(())
}

/// `vantage endpoint drain`.
pub async fn drain(
    addr: &str,
    endpoint: String,
    reason: String,
    until: Option<Duration>,
    force: bool,
    json: bool,
) -> Result<(), Failure> {
    let for_ms = until.map(|u| u.as_millis().min(u64::MAX as u128) as u64).unwrap_or(0);
    let r = service_client(addr)?
        .drain(DrainRequest {
            endpoint,
            reason,
            for_ms,
            force,
        })
        .await;
    override_out(addr, r, json)
}

/// `vantage endpoint undrain`.
pub async fn undrain(addr: &str, endpoint: String, json: bool) -> Result<(), Failure> {
    let r = service_client(addr)?.undrain(UndrainRequest { endpoint }).await;
    override_out(addr, r, json)
}

/// `vantage dns pause` / `resume`.
pub async fn pause_dns(addr: &str, pause: bool, reason: String, json: bool) -> Result<(), Failure> {
    let r = service_client(addr)?.pause_dns(PauseDnsRequest { pause, reason }).await;
    override_out(addr, r, json)
}

/// `vantage pools apply`: the difference first; the change only with `--yes`.
pub async fn pools_apply(file: &Path, addr: &str, yes: bool, json: bool) -> Result<(), Failure> {
    let config = load(file)?;
    let catalog = config.catalog().map_err(|e| Failure::usage(e.to_string()))?;
    let catalog_json = serde_json::to_string(&catalog).map_err(|e| Failure::runtime(e.to_string()))?;
    let r = service_client(addr)?
        .apply_catalog(ApplyCatalogRequest {
            catalog_json,
            commit: yes,
        })
        .await
        .map_err(|s| rpc_failure(addr, s))?
        .into_inner();
    if json {
        return print_json(&r);
    }
    say!(
        "committed catalog: version {}; {}: version {}",
        r.committed_version,
        file.display(),
        r.version
    );
    for d in &r.diff {
        say!("  {d}");
    }
    say!("{}", r.message);
    if yes && !r.applied && r.version != r.committed_version {
        return Err(Failure::runtime("the catalog was not applied"));
    }
    Ok(())
}

pub fn membership_out(r: &MembershipResponse, json: bool) -> Result<(), Failure> {
    if json {
        return print_json(r);
    }
    say!("{}", r.message);
    say_part!("{}", render_members(&r.members));
    Ok(())
}

/// Bootstrap output in `--json` form.
#[derive(Serialize)]
struct BootstrapOutput {
    initialized_now: bool,
    message: String,
    members: Vec<Member>,
    leader_id: Option<u64>,
    leader_addr: String,
    term: u64,
}

async fn bootstrap(path: &Path, wait: Duration, json: bool) -> Result<(), Failure> {
    let config = load(path)?;
    if !config.members.iter().any(|m| m.id == config.node_id) {
        return Err(Failure::usage(format!(
            "{}: members: this node (id {}) is not listed; bootstrap with the config of one of the voters",
            config.source, config.node_id
        )));
    }
    let addr = config.advertise_addr().to_string();
    let members: Vec<Member> = config
        .members
        .iter()
        .map(|m| Member {
            id: m.id,
            addr: m.addr.clone(),
            voter: true,
            matched_index: None,
            lag: None,
        })
        .collect();
    let mut c = service_client(&addr)?;
    // The agents may still be starting: retry while the node is not reachable.
    let deadline = Instant::now() + wait;
    let r = loop {
        match c
            .bootstrap(BootstrapRequest {
                members: members.clone(),
            })
            .await
        {
            Ok(r) => break r.into_inner(),
            Err(s) if s.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(s) => return Err(rpc_failure(&addr, s)),
        }
    };
    if !json {
        say!("{}", r.message);
    }
    // Wait for an elected leader so the command's success means a working cluster.
    let status = loop {
        match get_status(&addr, false).await {
            Ok(s) if s.leader_id.is_some() => break s,
            Ok(_) | Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            Ok(_) => {
                return Err(Failure::runtime(format!(
                    "no leader was elected within {}; are a majority of the members running?",
                    humantime::format_duration(wait)
                )))
            }
            Err(f) => return Err(f),
        }
    };
    if json {
        return print_json(&BootstrapOutput {
            initialized_now: r.initialized_now,
            message: r.message,
            members: status.members,
            leader_id: status.leader_id,
            leader_addr: status.leader_addr,
            term: status.term,
        });
    }
    say!(
        "leader: node {} at {} (term {})",
        status.leader_id.unwrap_or(0),
        status.leader_addr,
        status.term
    );
    say_part!("{}", render_members(&status.members));
    Ok(())
}
