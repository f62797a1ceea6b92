//! SIGHUP: re-read the configuration file and apply what can change while
//! the agent runs.
//!
//! A file that does not validate changes nothing: one error names the file
//! and the key, as `vantage config check` would, and the running
//! configuration stays. A valid file updates, at once:
//! - the catalog: proposed for the cluster (through the leader) when its
//!   `catalog_version` is higher than the committed one, otherwise compared
//!   with it (config drift in `cluster status`);
//! - the TLS files and the DNS credentials, when they changed;
//! - the probed endpoints and control targets, and `probe.max_concurrency`;
//! - `log_level` (unless `VANTAGE_LOG` set the filter).
//!
//! Other keys (addresses, members, Raft timings, the data directory, the
//! provider) take effect at the next restart; the log says which.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use crate::agent::Agent;
use crate::config::Config;
use crate::propose::Observer;
use crate::reconcile::Reconciler;
use crate::types::Command;

type LogLevelHook = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// How the process changes its log filter (the binary owns the subscriber).
static LOG_LEVEL: OnceLock<LogLevelHook> = OnceLock::new();

/// Registers how `log_level` is applied at a reload; without it, a new
/// `log_level` waits for a restart.
pub fn on_log_level(apply: impl Fn(&str) -> Result<(), String> + Send + Sync + 'static) {
    let _ = LOG_LEVEL.set(Box::new(apply));
}

/// Reloads on every SIGHUP until the task is dropped.
pub async fn on_sighup(agent: Arc<Agent>, observer: Arc<Observer>, reconciler: Option<Arc<Reconciler>>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; TLS and credential files are still re-read when they change");
            return;
        };
        while hup.recv().await.is_some() {
            reload(&agent, &observer, reconciler.as_deref()).await;
        }
    }
    #[cfg(not(unix))]
    let _ = (agent, observer, reconciler);
}

/// The keys whose new value waits for a restart, by name.
fn restart_keys(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let mut differs = |key: &'static str, changed: bool| {
        if changed {
            keys.push(key);
        }
    };
    differs("node_id", old.node_id != new.node_id);
    differs("listen", old.listen != new.listen);
    differs("advertise", old.advertise != new.advertise);
    differs("data_dir", old.data_dir != new.data_dir);
    differs("log_level", old.log_level != new.log_level && LOG_LEVEL.get().is_none());
    differs("worker_threads", old.worker_threads != new.worker_threads);
    differs("members", format!("{:?}", old.members) != format!("{:?}", new.members));
    differs("raft", format!("{:?}", old.raft) != format!("{:?}", new.raft));
    differs("probe.heartbeat or probe.batch_window", {
        let (a, b) = (&old.probe, &new.probe);
        (a.heartbeat.0, a.batch_window.0) != (b.heartbeat.0, b.batch_window.0)
    });
    differs("dns", format!("{:?}", old.dns) != format!("{:?}", new.dns));
    differs("insecure_plaintext", old.insecure_plaintext != new.insecure_plaintext);
    differs("http", old.http != new.http);
    differs("notify", old.notify != new.notify);
    differs("log_format", old.log_format != new.log_format);
    keys
}

/// One reload.
pub async fn reload(agent: &Agent, observer: &Observer, reconciler: Option<&Reconciler>) {
    let path = PathBuf::from(&agent.config().source);
    let new = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("SIGHUP: {e}; nothing was reloaded, the running configuration stays");
            return;
        }
    };
    if let Some(tls) = agent.connector().tls() {
        match tls.reload_if_changed() {
            Ok(true) => tracing::info!("SIGHUP: TLS files changed: reloaded"),
            Ok(false) => {}
            Err(e) => tracing::error!("SIGHUP: TLS files cannot be used, keeping the current ones: {e}"),
        }
    }
    if let Some(r) = reconciler {
        r.reload_if_changed().await;
    }
    for sched in [&observer.endpoints, &observer.control] {
        let was = sched.set_concurrency(new.probe.max_concurrency);
        if was != new.probe.max_concurrency.max(1) {
            tracing::info!("SIGHUP: probe.max_concurrency {was} -> {}", new.probe.max_concurrency);
        }
    }
    // What this node probes: the endpoints and control targets of the new file.
    match (new.endpoints(), new.control_targets()) {
        (Ok(endpoints), Ok(control)) => {
            for (what, sched, specs) in [
                ("endpoints", &observer.endpoints, endpoints),
                ("control targets", &observer.control, control),
            ] {
                match sched.update(&specs) {
                    Ok((0, 0)) => {}
                    Ok((started, stopped)) => {
                        tracing::info!("SIGHUP: {what}: {started} started, {stopped} stopped probing")
                    }
                    Err(e) => tracing::error!("SIGHUP: {}: {e}; the {what} probed stay", path.display()),
                }
            }
        }
        (Err(e), _) | (_, Err(e)) => tracing::error!("SIGHUP: {e}; the probes stay"),
    }
    if new.log_level != agent.config().log_level {
        if let Some(apply) = LOG_LEVEL.get() {
            match apply(&new.log_level) {
                Ok(()) => tracing::info!("SIGHUP: log_level is now {:?}", new.log_level),
                Err(e) => tracing::error!("SIGHUP: {}: log_level: {e}; the log filter stays", path.display()),
            }
        }
    }
    let restart = restart_keys(agent.config(), &new);
    if !restart.is_empty() {
        tracing::warn!(
            "SIGHUP: {}: changes to {} take effect at the next restart",
            path.display(),
            restart.join(", ")
        );
    }
    let catalog = match new.catalog() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("SIGHUP: {e}; the catalog stays");
            return;
        }
    };
    agent.set_local_catalog(catalog.clone());
    let committed = agent.read(|sm| sm.app.catalog.as_ref().map(|c| c.version)).await;
    match committed {
        Some(v) if catalog.version > v => {
            let by = format!("SIGHUP on node {} ({})", agent.id(), path.display());
            match agent.propose(Command::ApplyCatalog { catalog, by }).await {
                Ok(c) if c.reply.accepted => tracing::info!("SIGHUP: {}", c.reply.detail),
                Ok(c) => tracing::error!("SIGHUP: catalog refused: {}", c.reply.detail),
                Err(e) => tracing::error!("SIGHUP: could not propose the catalog: {e}"),
            }
        }
        Some(v) => tracing::info!(
            "SIGHUP: {} has catalog_version {} (committed: {v}); the cluster's catalog is unchanged",
            path.display(),
            catalog.version
        ),
        None => tracing::info!("SIGHUP: no catalog committed yet; the leader proposes its own"),
    }
}
