//! The `vantage` binary: parses the command line, loads and validates
//! configuration and calls the library. Everything that prints lives here.
//!
//! Exit codes: 0 success, 1 a runtime failure (unreachable node, refused
//! request), 2 a usage or configuration error.

/// Prints a line on standard output; a reader that went away (`| head -1`)
/// ends the command quietly instead of with a panic.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::say(format_args!($($arg)*), true)
    };
}

/// Like [`say!`], without the line end.
macro_rules! say_part {
    ($($arg:tt)*) => {
        $crate::say(format_args!($($arg)*), false)
    };
}

mod args;
mod cluster;
mod data;
mod demo;
mod query;
mod render;
mod run;
mod tls;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Cmd, ConfigCmd, DataCmd, DnsCmd, EndpointCmd, PoolsCmd};

/// A failure with the exit code it maps to.
pub struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Self {
        Failure {
            code: 2,
            message: message.into(),
        }
    }
    pub fn runtime(message: impl Into<String>) -> Self {
        Failure {
            code: 1,
            message: message.into(),
        }
    }
}

/// Writes to standard output; exits 0 when the reader has closed the pipe.
pub fn say(args: std::fmt::Arguments<'_>, newline: bool) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let written = if newline {
        writeln!(out, "{args}")
    } else {
        write!(out, "{args}")
    };
    match written.and_then(|_| out.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("error: cannot write to standard output: {e}");
            std::process::exit(1);
        }
    }
}

/// Runs a client command on a fresh runtime (an agent sizes its own, see [`run::agent`]).
fn block(command: impl std::future::Future<Output = Result<(), Failure>>) -> Result<(), Failure> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime(format!("cannot start the async runtime: {e}")))?;
    rt.block_on(command)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(f) = cluster::set_client_tls(&cli.tls) {
        eprintln!("error: {}", f.message);
        return ExitCode::from(f.code);
    }
    let result = match cli.command {
        Cmd::Tls { cmd } => tls::run(cmd),
        Cmd::Run { config } => run::agent(&config),
        Cmd::Demo { net, dir, auto } => block(async move {
            demo::run(demo::DemoOptions { net, dir, auto })
                .await
                .map_err(Failure::runtime)
        }),
        Cmd::Config {
            cmd: ConfigCmd::Check { file },
        } => query::config_check(&file),
        Cmd::Cluster { cmd } => block(cluster::run(cmd)),
        Cmd::Replay {
            addr,
            quorum,
            observation_ttl,
            hold_down,
            panic_threshold,
            panic_window,
            json,
        } => {
            let ms = |d: Option<vantage::config::Dur>| d.map(|d| d.0.as_millis().min(u64::MAX as u128) as u64);
            let req = vantage::proto::v1::ReplayRequest {
                quorum,
                observation_ttl_ms: ms(observation_ttl),
                hold_down_ms: ms(hold_down),
                panic_threshold,
                panic_window_ms: ms(panic_window),
            };
            block(async move { cluster::replay(&addr, req, json).await })
        }
        Cmd::Explain { id, addr, json } => block(async move { cluster::explain(&addr, id, json).await }),
        Cmd::Endpoint {
            cmd:
                EndpointCmd::Drain {
                    id,
                    addr,
                    reason,
                    until,
                    force,
                    json,
                },
        } => block(async move { cluster::drain(&addr, id, reason, until.map(|u| u.0), force, json).await }),
        Cmd::Endpoint {
            cmd: EndpointCmd::Undrain { id, addr, json },
        } => block(async move { cluster::undrain(&addr, id, json).await }),
        Cmd::Dns {
            cmd: DnsCmd::Pause { addr, reason, json },
        } => block(async move { cluster::pause_dns(&addr, true, reason, json).await }),
        Cmd::Dns {
            cmd: DnsCmd::Resume { addr, json },
        } => block(async move { cluster::pause_dns(&addr, false, String::new(), json).await }),
        Cmd::Pools {
            cmd: PoolsCmd::Apply { file, addr, yes, json },
        } => block(async move { cluster::pools_apply(&file, &addr, yes, json).await }),
        Cmd::Data {
            cmd: DataCmd::Check { dir, json },
        } => data::check(&dir, json),
        Cmd::Data {
            cmd: DataCmd::Recover { config, addr, wait },
        } => block(async move { data::recover(&config, &addr, wait.0).await }),
        Cmd::History {
            addr,
            endpoint,
            after,
            limit,
            json,
        } => block(query::history(addr, endpoint, after, limit, json)),
        Cmd::Watch {
            addr,
            endpoint,
            after,
            json,
        } => block(query::watch(addr, endpoint, after, json)),
        Cmd::Plan { addr, json } => block(query::plan(addr, json)),
        Cmd::Endpoints {
            addr,
            prefix,
            linearizable,
            json,
        } => block(query::endpoints(addr, prefix, linearizable, json)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}
