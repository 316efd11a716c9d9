//! The `ledgermesh` binary: parse, set up logging, run.

use clap::Parser;
use ledgermesh_node::cli::{run, Cli};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("warn,ledgermesh_node=info,ledgermesh=info")),
        )
        .init();
    let cli = Cli::parse();
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
