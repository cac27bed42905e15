//! The `raftlot` binary: parse flags, set up logging, hand over to the library.

use clap::Parser;
use raftlot::config::{Cli, Command, Config};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("raftlot: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => {
                let config = Config::try_from(args)?;
                raftlot::node::serve(config, raftlot::node::shutdown_signal()).await
            }
            Command::Cluster(args) => raftlot::cli::cluster(args).await,
            Command::Status(args) => raftlot::cli::status(args).await,
            Command::Bench(args) => raftlot::cli::bench(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raftlot: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
