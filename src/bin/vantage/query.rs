//! The query commands: `endpoints`, `history`, `watch`, `plan` and `config check`.

use std::path::Path;

use vantage::proto::v1::dns_client::DnsClient;
use vantage::proto::v1::endpoints_client::EndpointsClient;
use vantage::proto::v1::history_client::HistoryClient;
use vantage::proto::v1::{ListEndpointsRequest, ListHistoryRequest, PlanRequest, WatchRequest};

use crate::cluster::{channel, load, print_json, rpc_failure};
use crate::render::{render_endpoints, render_event};
use crate::Failure;

/// `vantage config check FILE`: validates and summarises a configuration.
pub fn config_check(file: &Path) -> Result<(), Failure> {
    let c = load(file)?;
    // The provider's credentials must resolve too, or `run` would fail where `check` said ok.
    vantage::dns::from_config(&c).map_err(Failure::usage)?;
    let endpoints = c.endpoints().map(|e| e.len()).unwrap_or(0);
    say!(
        "{}: ok (node {}, {} members, {} endpoints in {} pools, {} control targets, data_dir {})",
        file.display(),
        c.node_id,
        c.members.len(),
        endpoints,
        c.pools.len(),
        c.control.len(),
        c.data_dir.display()
    );
    Ok(())
}

/// `vantage history`: one page of the replicated audit history.
pub async fn history(addr: String, endpoint: String, after: u64, limit: u32, json: bool) -> Result<(), Failure> {
    let mut c = HistoryClient::new(channel(&addr)?).max_decoding_message_size(64 * 1024 * 1024);
    let r = c
        .list(ListHistoryRequest {
            endpoint,
            after_id: after,
            limit,
            linearizable: false,
        })
        .await
        .map_err(|s| rpc_failure(&addr, s))?
        .into_inner();
    if json {
        return print_json(&r);
    }
    for e in &r.events {
        say!("{}", render_event(e));
    }
    if r.more {
        say!("(more: --after {})", r.next_after_id);
    }
    Ok(())
}

/// `vantage watch`: history events as they are applied, until the stream ends.
pub async fn watch(addr: String, endpoint: String, after: u64, json: bool) -> Result<(), Failure> {
    let mut c = HistoryClient::new(channel(&addr)?);
    let mut stream = c
        .watch(WatchRequest {
            endpoint,
            after_id: after,
        })
        .await
        .map_err(|s| rpc_failure(&addr, s))?
        .into_inner();
    while let Some(e) = stream.message().await.map_err(|s| rpc_failure(&addr, s))? {
        if json {
            let line = serde_json::to_string(&e).map_err(|e| Failure::runtime(e.to_string()))?;
            say!("{line}");
        } else {
            say!("{}", render_event(&e));
        }
    }
    Err(Failure::runtime(format!(
        "{addr}: the stream ended (the agent stopped?)"
    )))
}

/// `vantage plan`: the DNS changes the leader would apply now.
pub async fn plan(addr: String, json: bool) -> Result<(), Failure> {
    let mut c = DnsClient::new(channel(&addr)?);
    let r = c
        .plan(PlanRequest {})
        .await
        .map_err(|s| rpc_failure(&addr, s))?
        .into_inner();
    if json {
        return print_json(&r);
    }
    if r.provider.is_empty() {
        say!("no DNS provider configured (dns.provider = \"none\"): nothing to write");
        return Ok(());
    }
    say!(
        "leader node {} (term {}), provider {}{}, decisions up to index {}",
        r.leader_id,
        r.term,
        r.provider,
        if r.dry_run { " (dry run)" } else { "" },
        r.served_index
    );
    if r.changes.is_empty() {
        say!("in sync: {} records", r.desired.len());
    }
    for c in &r.changes {
        say!("  {c}");
    }
    Ok(())
}

/// `vantage endpoints`: every endpoint with this agent's view and every agent's observation.
pub async fn endpoints(addr: String, prefix: String, linearizable: bool, json: bool) -> Result<(), Failure> {
    let mut c = EndpointsClient::new(channel(&addr)?).max_decoding_message_size(64 * 1024 * 1024);
    let r = c
        .list(ListEndpointsRequest { linearizable, prefix })
        .await
        .map_err(|s| rpc_failure(&addr, s))?
        .into_inner();
    if json {
        return print_json(&r);
    }
    say_part!("{}", render_endpoints(&r));
    Ok(())
}
