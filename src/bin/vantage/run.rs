//! `vantage run`: one agent, on a runtime sized from its configuration.

use std::path::Path;
use std::sync::Arc;

use vantage::clock::SystemClock;
use vantage::config::Config;
use vantage::network::Connector;

use crate::cluster::load;
use crate::Failure;

/// Loads and validates the configuration, then runs the agent until SIGINT or SIGTERM.
pub fn agent(path: &Path) -> Result<(), Failure> {
    let config = load(path)?;
    fail_stop_on_panic();
    // Agents are meant to be light: one worker unless the configuration asks for more.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.worker_threads)
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime(format!("cannot start the async runtime: {e}")))?;
    let result = rt.block_on(serve(config));
    // Blocking work still running (a flush on a failing disk) must not hold
    // the exit back: the supervisor restarts on the exit code.
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    result
}

/// A panic anywhere is a bug that may leave a task dead and the agent
/// half-running: report it and end the process, so it is restarted whole.
fn fail_stop_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        eprintln!("error: vantage hit an internal error (the panic above); exiting so the supervisor restarts it");
        std::process::exit(70);
    }));
}

/// The filter a `log_level` stands for.
fn directive(level: &str) -> String {
    match level {
        // openraft logs every failed replication RPC (four a second per dead
        // peer); the network layer summarises those per peer instead.
        "info" | "warn" | "error" => format!(
            "{level},openraft=warn,openraft::replication=off,openraft::engine::handler::replication_handler=error,\
             sled=warn,h2=warn,tower=warn,hyper=warn"
        ),
        other => other.to_string(),
    }
}

fn init_tracing(level: &str, json: bool) {
    let from_env = tracing_subscriber::EnvFilter::try_from_env("VANTAGE_LOG").ok();
    let pinned = from_env.is_some();
    let filter = from_env.unwrap_or_else(|| tracing_subscriber::EnvFilter::new(directive(level)));
    // Colour only on a terminal: files and journald get plain text.
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal() && !json)
        .with_writer(std::io::stderr);
    // The two formats are two builder types; each installs the same way.
    macro_rules! install {
        ($builder:expr) => {{
            let builder = $builder.with_filter_reloading();
            let handle = builder.reload_handle();
            if builder.try_init().is_ok() && !pinned {
                // SIGHUP applies a new log_level (VANTAGE_LOG, when set, stays in force).
                vantage::reload::on_log_level(move |level| {
                    let filter = tracing_subscriber::EnvFilter::try_new(directive(level)).map_err(|e| e.to_string())?;
                    handle.reload(filter).map_err(|e| e.to_string())
                });
            }
        }};
    }
    if json {
        // One JSON object per line, for log shippers.
        install!(builder.json().flatten_event(true))
    } else {
        install!(builder)
    }
}

async fn serve(config: Config) -> Result<(), Failure> {
    init_tracing(&config.log_level, config.log_format == "json");
    let addr = config.listen_addr().map_err(|e| Failure::usage(e.to_string()))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Failure::runtime(format!("{}: listen: cannot bind {addr}: {e}", config.source)))?;
    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        Failure::runtime(format!(
            "{}: data_dir: cannot create {}: {e}",
            config.source,
            config.data_dir.display()
        ))
    })?;
    let tls = config.tls_material().map_err(|e| Failure::usage(e.to_string()))?;
    let connector = Connector::new(config.raft.connect_timeout.0, config.raft.max_message_bytes)
        .with_local_ip(addr.ip())
        .with_tls(tls);
    vantage::run(config, listener, connector, Arc::new(SystemClock), shutdown_signal())
        .await
        .map_err(|e| Failure::runtime(e.to_string()))
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
