//! The `data` commands: verify a stopped node's data directory, and bring a
//! node whose directory cannot be trusted back into the cluster.

use std::path::Path;
use std::time::{Duration, Instant};

use vantage::proto::v1::{AddNodeRequest, RemoveNodeRequest};
use vantage::store::{self, CheckError, Facts};

use crate::cluster::{get_status, load, membership_out, print_json, rpc_failure, service_client};
use crate::render::opt;
use crate::Failure;

fn describe(dir: &Path, f: &Facts) -> String {
    if f.fresh {
        return format!("ok: {} holds no Raft state yet (a fresh node)", dir.display());
    }
    let verdict = if f.unguarded {
        "was written by an earlier version, without a guard file; the agent adopts it as it is on its next start"
    } else {
        "is consistent with its guard file"
    };
    format!(
        "ok: {} {verdict}\n  vote: term {} for node {}{}\n  log: entries {}..{} \
         (last term {}), purged up to {}, snapshot up to {}\n  guard: last acknowledged entry {}, vote term {}",
        dir.display(),
        opt(f.vote_term),
        opt(f.voted_for),
        if f.vote_committed { " (committed)" } else { "" },
        opt(f.first_index),
        opt(f.last_index),
        opt(f.last_term),
        opt(f.purged_index),
        opt(f.snapshot_index),
        opt(f.guard_last_index),
        opt(f.guard_vote_term),
    )
}

/// `vantage data check DIR`: exit 0 when the directory can be started from,
/// 1 with the damaged file named when it cannot.
pub fn check(dir: &Path, json: bool) -> Result<(), Failure> {
    let facts = store::check_stopped(dir).map_err(|e| Failure::runtime(e.to_string()))?;
    if json {
        return print_json(&facts);
    }
    say!("{}", describe(dir, &facts));
    Ok(())
}

/// `vantage data recover`: removes the node from the cluster (a voter that
/// forgot its vote must not vote again), moves its directory aside, waits for
/// the agent to come up empty and joins it back: as a learner that copies the
/// log, then a voter.
pub async fn recover(config: &Path, addr: &str, wait: Duration) -> Result<(), Failure> {
    let config = load(config)?;
    let dir = config.data_dir.clone();
    let id = config.node_id;
    let node_addr = config.advertise_addr().to_string();
    match store::check_stopped(&dir) {
        Err(e @ CheckError::InUse { .. }) => return Err(Failure::runtime(format!("{e}; recover only a stopped node"))),
        Err(e) => say!("node {id}: {e}"),
        Ok(f) if f.fresh => say!("node {id}: {} holds no Raft state", dir.display()),
        Ok(_) => say!(
            "node {id}: {} is consistent, and is replaced anyway as asked",
            dir.display()
        ),
    }
    let status = get_status(addr, false).await?;
    if status.members.iter().any(|m| m.id == id) {
        say!("removing node {id} from the cluster (through {addr})");
        let r = service_client(addr)?
            .remove_node(RemoveNodeRequest { id })
            .await
            .map_err(|s| rpc_failure(addr, s))?
            .into_inner();
        say!("{}", r.message);
    } else {
        say!("node {id} is not a member of the cluster at {addr}; nothing to remove");
    }
    if dir.exists() {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let aside = dir.with_file_name(format!(
            "{}.damaged-{secs}",
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "data".into())
        ));
        std::fs::rename(&dir, &aside)
            .map_err(|e| Failure::runtime(format!("cannot move {} to {}: {e}", dir.display(), aside.display())))?;
        say!("moved {} to {} (kept for inspection)", dir.display(), aside.display());
    }
    say!(
        "waiting up to {} for node {id} to answer at {node_addr}: start its agent now (systemd restarts it on its own)",
        humantime::format_duration(wait)
    );
    let deadline = Instant::now() + wait;
    loop {
        match get_status(&node_addr, false).await {
            Ok(s) if !s.initialized => break,
            Ok(_) => {
                return Err(Failure::runtime(format!(
                    "node {id} at {node_addr} answers with Raft state already: is it running on another directory?"
                )))
            }
            Err(f) if Instant::now() >= deadline => {
                return Err(Failure::runtime(format!(
                    "node {id} did not answer at {node_addr} within {}: {}",
                    humantime::format_duration(wait),
                    f.message
                )))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
    say!("node {id} is up and empty; joining it as a learner, then a voter once it has the log");
    let r = service_client(addr)?
        .add_node(AddNodeRequest { id, addr: node_addr })
        .await
        .map_err(|s| rpc_failure(addr, s))?
        .into_inner();
    membership_out(&r, false)
}
