//! The `vantage` binary: parses arguments and hands over to [`vantage::cli`].

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = vantage::cli::Cli::parse();
    vantage::cli::main(cli)
}
