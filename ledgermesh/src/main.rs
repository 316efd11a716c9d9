//! The `ledgermesh` binary: parse, set up logging, run.

mod cli;

use cli::run;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() {
    // A benchmark's child process runs on the cores it was given.
    ledgermesh_dev::bench::cpus::pin_from_env();
    raise_open_files();
    tracing_subscriber::fmt()
        .with_writer(ledgermesh_node::logs::RedactingStderr::stderr())
        .with_ansi(colour())
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| {
            EnvFilter::new("warn,yamux=error,ledgermesh_node=info,ledgermesh=info")
        }))
        .init();
    // The command line, with a role's config file and LEDGERMESH_… variables.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match crate::cli::config::load(&argv) {
        Ok(loaded) => loaded.cli,
        Err(crate::cli::config::LoadError::Clap(e)) => e.exit(),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
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

/// Colour in the log only for a person at a terminal: never into a file or
/// a pipe, and never where `NO_COLOR` is set (to anything but empty).
fn colour() -> bool {
    use std::io::IsTerminal;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stderr().is_terminal()
}

/// Raises the soft limit on open files to the hard one (at most 65,536):
/// a node holds up to 1,024 connections, and a hard-NAT attempt opens up to
/// 512 sockets, which the common default soft limit of 1,024 would not allow
/// beside each other. Where it cannot be raised, the node runs as it is.
fn raise_open_files() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let want = hard.min(65_536);
        if soft < want {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, want, hard);
        }
    }
}
