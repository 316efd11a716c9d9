//! Separate OS processes of the `ledgermesh` binary, driven through their
//! `--json` events, and always cleaned up (SIGTERM, then SIGKILL) on drop,
//! also when a test fails.

use crate::keep_tmp;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The `ledgermesh` binary: `$LEDGERMESH_BIN`, else next to the test executable's
/// `deps/` directory (where cargo puts workspace binaries).
pub fn bin_path() -> PathBuf {
    if let Ok(p) = std::env::var("LEDGERMESH_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("ledgermesh");
    assert!(
        bin.is_file(),
        "{} not built: run `cargo build -p ledgermesh` (nextest --workspace builds it) or set LEDGERMESH_BIN",
        bin.display()
    );
    bin
}

/// The project root (for `.tools`).
pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Whether anvil is installed; under `CI=true` its absence is a failure, not a skip.
pub fn anvil_available(test: &str) -> bool {
    let anvil = project_root().join(".tools/node_modules/.bin/anvil");
    if anvil.is_file() || std::env::var_os("LEDGERMESH_ANVIL").is_some() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "{test}: anvil is not installed ({}) and CI=true: run scripts/setup.sh",
            anvil.display()
        );
    }
    eprintln!("SKIP {test}: anvil not installed; run scripts/setup.sh");
    false
}

/// playwright-core (from `.tools`) and Debian's chromium, when both are
/// installed; under `CI=true` their absence is a failure, not a skip.
pub fn browser_available(test: &str) -> Option<(PathBuf, PathBuf)> {
    let driver = project_root().join(".tools/node_modules/playwright-core");
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    match chromium {
        Some(c) if driver.is_dir() => return Some((driver, c)),
        _ => {}
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: chromium or playwright-core is missing and CI=true: run scripts/setup.sh (as root)");
    }
    eprintln!("SKIP {test}: chromium or playwright-core missing; run scripts/setup.sh as root");
    None
}

/// A running `ledgermesh` process.
pub struct Proc {
    /// Label for messages.
    pub name: String,
    child: Option<Child>,
    lines: mpsc::Receiver<Value>,
    /// Every JSON line seen so far.
    pub seen: Vec<Value>,
    stderr_path: PathBuf,
}

impl Proc {
    /// Starts `ledgermesh ARGS`; stderr goes to `dir/NAME.log`.
    pub fn start(name: &str, dir: &Path, args: &[&str]) -> Self {
        Self::start_program(name, dir, &bin_path(), &[], args)
    }

    /// [`Proc::start`] with extra environment variables.
    pub fn start_env(name: &str, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn(name, dir, &bin_path(), &[], args, env)
    }

    /// Starts `PROGRAM PREFIX... ARGS` (e.g. `ip netns exec NS ledgermesh ...`).
    pub fn start_program(
        name: &str,
        dir: &Path,
        program: &Path,
        prefix: &[&str],
        args: &[&str],
    ) -> Self {
        Self::spawn(name, dir, program, prefix, args, &[])
    }

    fn spawn(
        name: &str,
        dir: &Path,
        program: &Path,
        prefix: &[&str],
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let stderr_path = dir.join(format!("{name}.log"));
        let stderr = std::fs::File::create(&stderr_path).expect("log file");
        let mut child = Command::new(program)
            // Anything a node writes relative to its working directory
            // (its default data dir) stays in the test's scratch space.
            .current_dir(dir)
            .args(prefix)
            .args(args)
            .env("RUST_LOG", "info,ledgermesh_node=debug")
            // Everything here runs on loopback or on the NAT lab's
            // documentation-range internet: neither is globally routable.
            .env("LEDGERMESH_ALLOW_PRIVATE_ADDRS", "true")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        // Kept runs (LEDGERMESH_KEEP_TMP) also write the events beside the log.
        let mut copy = keep_tmp()
            .then(|| std::fs::File::create(dir.join(format!("{name}.jsonl"))).ok())
            .flatten();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(f) = copy.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
            }
        });
        Self {
            name: name.into(),
            child: Some(child),
            lines: rx,
            seen: Vec::new(),
            stderr_path,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Waits for a JSON event matching `pred`, returning it.
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        if let Some(v) = self.seen.iter().find(|v| pred(v)) {
            return v.clone();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                Err(_) => panic!(
                    "{}: no {what} within {timeout:?}\nlast events: {:#?}\nstderr tail:\n{}",
                    self.name,
                    &self.seen[self.seen.len().saturating_sub(10)..],
                    self.log_tail()
                ),
            }
        }
    }

    /// Like [`Proc::wait_for`], but only events that arrive after this call
    /// (and any not yet pulled) count.
    pub fn wait_for_next(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let already = self.seen.len();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = self.seen[already..].iter().find(|v| pred(v)) {
                return v.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) => self.seen.push(v),
                Err(_) => panic!(
                    "{}: no new {what} within {timeout:?}\nlast events: {:#?}\nstderr tail:\n{}",
                    self.name,
                    &self.seen[self.seen.len().saturating_sub(10)..],
                    self.log_tail()
                ),
            }
        }
    }

    /// Events seen so far (after pulling whatever has arrived) matching `pred`.
    pub fn matching(&mut self, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        while let Ok(v) = self.lines.try_recv() {
            self.seen.push(v);
        }
        self.seen.iter().filter(|v| pred(v)).cloned().collect()
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                let code = status.code().unwrap_or(-1);
                // Pull the remaining output.
                let _ = self.matching(|_| false);
                self.child = None;
                return code;
            }
            if Instant::now() > deadline {
                panic!(
                    "{}: did not exit within {timeout:?}\nstderr tail:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The next event within `timeout`, or `None` (no panic: for loops that
    /// watch several processes at once).
    pub fn next_event(&mut self, timeout: Duration) -> Option<Value> {
        let v = self.lines.recv_timeout(timeout).ok()?;
        self.seen.push(v.clone());
        Some(v)
    }

    /// Its exit code if it has exited (reaped, its output pulled), else `None`.
    pub fn try_exit(&mut self) -> Option<i32> {
        let status = self.child.as_mut()?.try_wait().expect("try_wait")?;
        let _ = self.matching(|_| false);
        self.child = None;
        Some(status.code().unwrap_or(-1))
    }

    /// SIGKILL: no clean-up, no last words (a crash or a power cut); reaped,
    /// and whatever it printed before pulled.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The reader thread ends at EOF; take what it had.
        while let Ok(v) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.seen.push(v);
        }
    }

    /// Sends SIGTERM and returns at once (see [`Proc::wait_exit`]).
    pub fn terminate(&self) {
        if let Some(child) = &self.child {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
    }

    /// Stops the process (SIGTERM, then SIGKILL after 5 s) and reaps it.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free TCP port on loopback (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The `event` field of a JSON event.
pub fn event_is(v: &Value, name: &str) -> bool {
    v["event"] == name
}

/// A fresh identity key file `dir/NAME.key` (via `ledgermesh keygen`): its path and PeerId.
pub fn keygen(dir: &Path, name: &str) -> (String, String) {
    let path = dir.join(format!("{name}.key"));
    let out = Command::new(bin_path())
        .args([
            "keygen",
            "--force",
            "--out",
            path.to_str().expect("utf-8 path"),
        ])
        .output()
        .expect("run ledgermesh keygen");
    assert!(
        out.status.success(),
        "keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string();
    (path.to_str().expect("utf-8 path").to_string(), id)
}

/// What `ledgermesh devchain --json` reports once the chain is up.
#[derive(Debug, Clone)]
pub struct DevchainReady {
    /// The `--ledger` spec for nodes.
    pub spec: String,
    /// The JSON-RPC endpoint.
    pub rpc: String,
    /// The SignalBoard address.
    pub contract: String,
    /// Funded ledger key files.
    pub keys: Vec<String>,
}

impl DevchainReady {
    /// Waits for the `devchain_ready` event of `proc`.
    pub fn wait(proc: &mut Proc, timeout: Duration) -> Self {
        let v = proc.wait_for("devchain_ready", timeout, |v| event_is(v, "devchain_ready"));
        let s = |k: &str| v[k].as_str().expect("devchain_ready field").to_string();
        DevchainReady {
            spec: s("spec"),
            rpc: s("rpc"),
            contract: s("contract"),
            keys: v["ledger_keys"]
                .as_array()
                .expect("ledger_keys")
                .iter()
                .filter_map(|k| k.as_str().map(String::from))
                .collect(),
        }
    }
}
