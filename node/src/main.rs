//! The `ledgermesh` binary: parse, set up logging, run.

use clap::Parser;
use ledgermesh_node::cli::{run, Cli};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() {
    // A benchmark's child process runs on the cores it was given.
    ledgermesh_node::bench::cpus::pin_from_env();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("warn,ledgermesh_node=info,ledgermesh=info")),
        )
        .init();
    // The config file and LEDGERMESH_… variables become flags first.
    let layered = match ledgermesh_node::cli::config::layer(std::env::args_os().collect()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    };
    let cli = Cli::parse_from(layered.argv);
    let code = match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            2
        }
    };
    ledgermesh_node::events::flush_stdout();
    std::process::exit(code);
}
