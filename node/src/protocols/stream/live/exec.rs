//! An `exec:` source: `sh -c COMMAND` in its own process group (killed
//! with it), without the node's `LEDGERMESH_*` variables, its stdout into
//! the feed and its stderr into the log.

use super::sources::pump;
use super::LiveFeed;
use std::io;
use tokio::io::{AsyncBufReadExt, AsyncReadExt};

/// Kills a command's whole process group when dropped (the provider
/// stopping, or the command's stdout closing first).
struct Group(Option<i32>);

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            use nix::sys::signal::{killpg, Signal};
            let _ = killpg(nix::unistd::Pid::from_raw(pgid), Signal::SIGKILL);
        }
    }
}

/// Runs `sh -c cmd` in its own process group, its stdout into `feed`, its
/// stderr to the log (line by line, each cut at 4 KiB); returns how it exited.
pub(super) async fn run_command(
    feed: &LiveFeed,
    cmd: &str,
) -> io::Result<std::process::ExitStatus> {
    let mut sh = tokio::process::Command::new("sh");
    // The node's own secrets (the API token, the ledger key) stay with it.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("LEDGERMESH_") {
            sh.env_remove(&k);
        }
    }
    let mut child = sh
        .arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()?;
    let group = Group(child.id().and_then(|id| i32::try_from(id).ok()));
    let mut stdout = child.stdout.take().expect("piped");
    let stderr = log_stderr(child.stderr.take(), feed.name());
    let work = async {
        let pumped = pump(feed, &mut stdout).await;
        let status = child.wait().await;
        drop(group);
        pumped?;
        status
    };
    tokio::pin!(stderr, work);
    let mut logging = true;
    let status = loop {
        tokio::select! {
            status = &mut work => break status,
            () = &mut stderr, if logging => logging = false,
        }
    };
    // What the command wrote last, unless something it left holds the pipe.
    if logging {
        let _ = tokio::time::timeout(std::time::Duration::from_millis(200), stderr).await;
    }
    status
}

/// A command's stderr to the log, line by line, each cut at 4 KiB, until it
/// closes.
async fn log_stderr(stderr: Option<tokio::process::ChildStderr>, name: &str) {
    let Some(stderr) = stderr else { return };
    let mut lines = tokio::io::BufReader::new(stderr);
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = (&mut lines).take(4096).read_until(b'\n', &mut line).await;
        match read {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                tracing::info!(stream = %name, "stderr: {}", text.trim_end());
            }
        }
    }
}
