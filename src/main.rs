//! The `raftlot` binary: parse flags, set up logging, hand over to the library.

use clap::Parser;
use raftlot::config::{Cli, Command, Config, LogFormat, ServeArgs};

/// Logs to stderr, filtered by RUST_LOG. In JSON each line is one object whose `span` holds the
/// request's method, consistency level and node, so collectors can index them.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    // Colours only on a terminal: node logs usually land in files and `docker logs`.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).init(),
    }
}

/// A node's runtime has the worker threads `serve` was given; every other command keeps tokio's
/// default of one per core.
///
/// A node's runtime also runs woken tasks in turn, without tokio's LIFO slot. With the slot, a
/// request task that finishes wakes its HTTP/2 connection's task, which then runs next and writes
/// that one answer: one `writev` per answer, however many requests the connection brought in
/// together. In turn, the connection's task runs once after all of them and writes their answers
/// together. The load generator keeps tokio's defaults, so etcd's figures do not move with it.
fn runtime(command: &Command) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Command::Serve(ServeArgs { worker_threads, .. }) = command {
        if let Some(n) = worker_threads {
            builder.worker_threads(usize::from(*n));
        }
        #[cfg(tokio_unstable)]
        builder.disable_lifo_slot();
    }
    builder.enable_all().build()
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match runtime(&cli.command) {
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
            Command::Health(args) => raftlot::cli::health(args).await,
            Command::Bench(args) => raftlot::cli::bench(args).await,
            Command::Member(args) => raftlot::cli::member(args).await,
            Command::TransferLeader(args) => raftlot::cli::transfer_leader(args).await,
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
